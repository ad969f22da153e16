//! `order-engine config validate`: every key the engine reads, its value in
//! the environment (legacy) beside the config service's, MATCH, MISMATCH or
//! ERROR, with a summary (seed 003's validation before switching modes).
//! Values are masked; the report is data, the CLI prints it.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::mask;
use super::source::{from_environment, LoadError, StartEnv};
use crate::configsvc::client::ConfigServiceClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
    Error,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Match => "MATCH",
            Self::Mismatch => "MISMATCH",
            Self::Error => "ERROR",
        })
    }
}

/// One key's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    pub key: String,
    /// Masked; None when the environment does not set it.
    pub legacy: Option<String>,
    /// Masked value, or None (absent), or the error.
    pub config_service: Result<Option<String>, String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub keys: Vec<KeyReport>,
    /// Keys the engine reads that neither source sets (their defaults apply).
    pub unset_in_both: usize,
}

impl Report {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.keys.iter().filter(|k| k.verdict == verdict).count()
    }

    /// Whether switching is safe: no MISMATCH and no ERROR.
    pub fn passed(&self) -> bool {
        self.keys.iter().all(|k| k.verdict == Verdict::Match)
    }

    /// The printed report: one line per key, then the summary.
    pub fn render(&self) -> String {
        let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "(unset)".to_owned());
        let width = self.keys.iter().map(|k| k.key.len()).max().unwrap_or(0);
        let mut text = String::new();
        for line in &self.keys {
            let service = match &line.config_service {
                Ok(value) => show(value),
                Err(error) => format!("(error: {error})"),
            };
            text.push_str(&format!(
                "{:<8} {:<width$}  legacy={}  config_service={}\n",
                line.verdict.to_string(),
                line.key,
                show(&line.legacy),
                service,
            ));
        }
        text.push_str(&format!(
            "summary: {} keys, {} MATCH, {} MISMATCH, {} ERROR ({} more unset in both)\n",
            self.keys.len(),
            self.count(Verdict::Match),
            self.count(Verdict::Mismatch),
            self.count(Verdict::Error),
            self.unset_in_both,
        ));
        text
    }
}

/// Compares the environment with the config service, key by key (single-key
/// reads, so one failing key is one ERROR). The keys: every key the settings
/// read, and every key the service lists for the engine.
pub async fn validate(env: &dyn Fn(&str) -> Option<String>) -> Result<Report, LoadError> {
    let start = StartEnv::read(env)?;
    let client = start.client()?;
    // The legacy side as the engine would read it (a bad value is an error of the environment).
    let (_, provenance) = from_environment(env)?;
    let mut keys: BTreeSet<String> = provenance.0.keys().cloned().collect();
    // Keys the service lists that the engine never asks for are reported too: they are migration debris.
    if let Ok(listed) = client.load_all().await {
        keys.extend(listed.into_keys());
    }
    let legacy: BTreeMap<&str, Option<&str>> = keys
        .iter()
        .map(|key| {
            let value = provenance.0.get(key).and_then(|read| read.value.as_deref());
            (key.as_str(), value)
        })
        .collect();
    Ok(compare_keys(&client, legacy).await)
}

async fn compare_keys(client: &ConfigServiceClient, legacy: BTreeMap<&str, Option<&str>>) -> Report {
    let mut report = Report::default();
    for (key, legacy) in legacy {
        let service = client.get(key).await;
        let verdict = match (&service, legacy) {
            (Err(_), _) => Verdict::Error,
            (Ok(None), None) => {
                report.unset_in_both += 1;
                continue;
            }
            (Ok(new), old) if new.as_deref().map(str::trim) == old.map(str::trim) => Verdict::Match,
            (Ok(_), _) => Verdict::Mismatch,
        };
        report.keys.push(KeyReport {
            key: key.to_owned(),
            legacy: legacy.map(|value| mask(key, value)),
            config_service: service
                .map(|value| value.map(|value| mask(key, &value)))
                .map_err(|error| error.to_string()),
            verdict,
        });
    }
    report
}

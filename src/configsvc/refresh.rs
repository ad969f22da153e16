//! Refresh without restart: every TTL the configuration is loaded again; a
//! changed run-time value (log level, limits) is applied and published on a
//! `watch` channel other code reads; a changed value that needs a restart is
//! logged as such; a failed reload keeps the last values (stale on error).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cache::ConfigCache;
use crate::config::keys::{contract_key, Origin};
use crate::config::source::{env_value, settings_with_provenance};
use crate::config::{RuntimeValues, Settings, INTERNAL_API_KEY_ENV, RUNTIME_KEYS};

/// The process environment, or a stand-in (tests).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// Nothing changed.
    Unchanged,
    /// The keys whose value changed: those applied now, those that need a restart.
    Changed { applied: Vec<String>, restart: Vec<String> },
    /// A changed value did not parse: the values in force stay.
    Refused(String),
    /// The service failed: the last values stay in force (stale).
    Stale(String),
}

/// Reloads the configuration from the config service behind `cache`.
pub struct Refresher {
    cache: Arc<ConfigCache>,
    env: Env,
    /// new_with_fallback: keys the service lacks come from the environment.
    fallback: bool,
    runtime: watch::Sender<RuntimeValues>,
}

impl Refresher {
    /// `initial` are the values the engine started with.
    pub fn new(cache: Arc<ConfigCache>, env: Env, fallback: bool, initial: RuntimeValues) -> Self {
        let (runtime, _) = watch::channel(initial);
        Self {
            cache,
            env,
            fallback,
            runtime,
        }
    }

    /// The run-time values as they change; a receiver sees the latest at once.
    pub fn subscribe(&self) -> watch::Receiver<RuntimeValues> {
        self.runtime.subscribe()
    }

    /// Reloads once.
    pub async fn refresh(&self) -> Refreshed {
        let values = match self.cache.client().load_all().await {
            Ok(values) => values,
            Err(error) => {
                let metrics = self.cache.metrics();
                metrics.refresh_failures_total.inc();
                for key in self.cache.snapshot().keys() {
                    metrics.stale_served_total.with_label_values(&[key]).inc();
                }
                tracing::warn!(%error, "config service failed on reload; the last values stay in force (stale)");
                return Refreshed::Stale(error.to_string());
            }
        };
        let before = self.cache.snapshot();
        let changed: Vec<String> = before
            .keys()
            .chain(values.keys())
            .filter(|key| before.get(*key) != values.get(*key))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if changed.is_empty() {
            return Refreshed::Unchanged;
        }
        let settings = match self.settings(&values) {
            Ok(settings) => settings,
            Err(reason) => {
                tracing::warn!(
                    reason,
                    "a changed configuration value is not valid; the values in force stay"
                );
                return Refreshed::Refused(reason);
            }
        };
        self.cache.fill(&values);
        let (applied, restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|key| RUNTIME_KEYS.contains(&key.as_str()));
        for key in &restart {
            tracing::warn!(
                key,
                "{key} changed in the config service; it needs a restart to take effect"
            );
        }
        let previous = self.runtime.borrow().clone();
        if settings.runtime != previous {
            if settings.runtime.log_level != previous.log_level {
                if let Some(level) = &settings.runtime.log_level {
                    if let Err(error) = crate::telemetry::set_log_level(level) {
                        tracing::warn!(%error, "ORDER_SERVICE_LOG_LEVEL changed to a filter that does not parse; kept the old one");
                    }
                }
            }
            self.runtime.send_replace(settings.runtime);
        }
        for key in &applied {
            tracing::info!(key, "{key} changed in the config service; applied without a restart");
        }
        Refreshed::Changed { applied, restart }
    }

    /// Settings from fresh values, as the mode reads them.
    fn settings(&self, values: &BTreeMap<String, String>) -> Result<Settings, String> {
        let env = &*self.env;
        settings_with_provenance(|variable| {
            if variable == INTERNAL_API_KEY_ENV {
                return env(variable).map(|value| (value, Origin::Env));
            }
            match values.get(&contract_key(variable)) {
                Some(value) => Some((value.clone(), Origin::ConfigService)),
                None if self.fallback => env_value(env, variable).map(|value| (value, Origin::Env)),
                None => None,
            }
        })
        .map(|(settings, _)| settings)
        .map_err(|error| error.to_string())
    }

    /// Reloads every `interval` until the task is aborted.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.refresh().await;
            }
        })
    }
}

//! Prints what the other benches measured, from criterion's own estimates,
//! as one table with rates per element, then the targets: the store's
//! append rate as a share of the raw baseline at the same batch size,
//! hydration per event, replay per second. Also writes it as Markdown to
//! `<criterion dir>/summary.md`.
//!
//! `cargo bench` runs it last (targets run by name); alone:
//! `cargo bench --bench summary`. It measures nothing itself.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What criterion stored for one benchmark.
struct Measured {
    /// Time of one iteration, ns (criterion's slope, else its mean).
    ns_per_iter: f64,
    elements: Option<u64>,
    at: DateTime<Utc>,
}

impl Measured {
    fn ns_per_element(&self) -> f64 {
        self.ns_per_iter / self.elements.unwrap_or(1) as f64
    }

    fn per_second(&self) -> f64 {
        1e9 / self.ns_per_element()
    }
}

/// Where criterion writes: as criterion itself decides (CRITERION_HOME, then
/// CARGO_TARGET_DIR, then the target dir this binary was built in).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // <target>/release/deps/summary-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion")
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn collect(dir: &Path, found: &mut BTreeMap<String, Measured>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some((id, measured)) = measured(&path) {
                found.insert(id, measured);
            }
        } else {
            collect(&path, found);
        }
    }
}

fn measured(new: &Path) -> Option<(String, Measured)> {
    let benchmark = read_json(&new.join("benchmark.json"))?;
    let estimates_path = new.join("estimates.json");
    let estimates = read_json(&estimates_path)?;
    let point = |key: &str| estimates.get(key)?.get("point_estimate")?.as_f64();
    let ns_per_iter = point("slope").or_else(|| point("mean"))?;
    let elements = benchmark
        .get("throughput")
        .and_then(|t| t.get("Elements"))
        .and_then(Value::as_u64);
    let at = std::fs::metadata(&estimates_path)
        .and_then(|m| m.modified())
        .ok()?
        .into();
    let id = benchmark.get("full_id")?.as_str()?.to_owned();
    Some((
        id,
        Measured {
            ns_per_iter,
            elements,
            at,
        },
    ))
}

fn duration(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

fn rate(per_second: f64) -> String {
    match per_second {
        r if r >= 1e6 => format!("{:.2} M/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1} k/s", r / 1e3),
        r => format!("{r:.0} /s"),
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let dir = criterion_dir();
    let mut found = BTreeMap::new();
    collect(&dir, &mut found);
    if found.is_empty() {
        println!("No criterion results under {}; run `cargo bench` first.", dir.display());
        return;
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "| benchmark | time / iteration | time / element | elements / s | measured (UTC) |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | --- |");
    for (id, m) in &found {
        let _ = writeln!(
            md,
            "| {id} | {} | {} | {} | {} |",
            duration(m.ns_per_iter),
            duration(m.ns_per_element()),
            rate(m.per_second()),
            m.at.format("%Y-%m-%d %H:%M")
        );
    }

    let _ = writeln!(
        md,
        "\n**Append rate as a share of the raw baseline** (same rows, same server, same batch; target ≥ 50%)\n"
    );
    let _ = writeln!(
        md,
        "| shape / events per batch | store | raw INSERT…UNNEST | store ÷ unnest | raw COPY | store ÷ COPY |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (key, m) in found.range("append_postgres/".to_owned().."append_postgres0".to_owned()) {
        let Some(rest) = key.strip_prefix("append_postgres/") else {
            continue;
        };
        let Some((shape, n)) = rest.split_once('/') else {
            continue;
        };
        if !(shape == "one_stream" || shape == "many_streams") {
            continue;
        }
        let raw = |way: &str| {
            found
                .get(&format!("append_postgres/{way}_{shape}/{n}"))
                .map(Measured::per_second)
        };
        let share = |raw: Option<f64>| match raw {
            Some(raw) => {
                let share = m.per_second() / raw;
                format!("{:.1}% ({})", share * 100.0, verdict(share >= 0.5))
            }
            None => "not measured".to_owned(),
        };
        let shown = |raw: Option<f64>| raw.map_or("not measured".to_owned(), rate);
        let (unnest, copy) = (raw("raw_unnest"), raw("raw_copy"));
        let _ = writeln!(
            md,
            "| {shape} / {n} | {} | {} | {} | {} | {} |",
            rate(m.per_second()),
            shown(unnest),
            share(unnest),
            shown(copy),
            share(copy)
        );
    }

    let _ = writeln!(md, "\n**Targets**\n");
    for backend in ["postgres", "sqlite"] {
        if let Some(m) = found.get(&format!("hydrate/{backend}/1000")) {
            let per_event = m.ns_per_element();
            let _ = writeln!(
                md,
                "- hydration from 1,000 events on {backend}, reading included: {} per event (target ≤ 1 µs): {}",
                duration(per_event),
                verdict(per_event <= 1_000.0)
            );
        }
    }
    for (id, m) in found.range("replay/".to_owned().."replay0".to_owned()) {
        let _ = writeln!(
            md,
            "- {id}: {} events (target ≥ 300,000/s): {}",
            rate(m.per_second()),
            verdict(m.per_second() >= 300_000.0)
        );
    }

    println!("\n== order-engine bench summary, from {} ==\n\n{md}", dir.display());
    let out = dir.join("summary.md");
    match std::fs::write(&out, &md) {
        Ok(()) => println!("(also written to {})", out.display()),
        Err(error) => println!("(could not write {}: {error})", out.display()),
    }
}

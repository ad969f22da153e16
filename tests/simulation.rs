//! Deterministic simulation of the real engine (after TigerBeetle's VOPR and
//! FoundationDB): order actors, the saga runner, the matcher and the embedded
//! ledger over the in-memory log, on one thread in virtual time, driven by a
//! seeded workload with duplicated and reordered deliveries, injected store
//! faults and crashes (the whole engine dropped, a fresh one built over the
//! surviving log). After every step: money conserved, nothing negative,
//! nothing moved twice for an order, no money moved for an order that did not
//! execute. At the end: every order terminal with its saga complete, nothing
//! reserved, verify's log checks and the hash chain clean, every execution
//! published once by message id.
//!
//! Must never touch a database, a broker or the wall clock: a seed replays exactly.
//! `SIM_SEEDS=n` runs n seeds, `SIM_SEED_START=s` moves the range, `SIM_SEED=s`
//! replays one; a failure prints its seed and the command that replays it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod simulation_support;

use std::time::Instant;

use simulation_support::{run_seed, SeedSummary};

/// Seeds per CI run: about 20 s of the 60 s budget on this 2-core machine
/// (measured: see the report line the test prints).
const DEFAULT_SEEDS: u64 = 2_000;
/// The first seed of the default range; fixed so CI is reproducible.
const DEFAULT_SEED_START: u64 = 0;
/// Seeds in the determinism test, each run twice.
const DETERMINISM_SEEDS: u64 = 20;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?} is not a whole number: {e}")),
    )
}

/// Runs `seeds` on a few threads (each seed on its own single-threaded runtime),
/// returning the summaries and every failure with its seed.
fn run_seeds(seeds: Vec<u64>) -> (Vec<SeedSummary>, Vec<(u64, String)>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let chunks: Vec<Vec<u64>> = (0..threads)
        .map(|t| seeds.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(|s| (s, run_seed(s))).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for (seed, result) in results {
        match result {
            Ok(summary) => summaries.push(summary),
            Err(failure) => failures.push((seed, failure)),
        }
    }
    failures.sort_by_key(|(seed, _)| *seed);
    (summaries, failures)
}

#[test]
fn every_seed_conserves_money_and_finishes_every_order() {
    // Proves, over thousands of seeded runs of the real engine with crashes,
    // store faults and duplicated, reordered deliveries, that money is
    // conserved after every step and every order ends settled.
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let start = env_u64("SIM_SEED_START").unwrap_or(DEFAULT_SEED_START);
            let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            (start..start + count).collect()
        }
    };
    let started = Instant::now();
    let (summaries, failures) = run_seeds(seeds.clone());
    let elapsed = started.elapsed();
    let total = |f: fn(&SeedSummary) -> u64| summaries.iter().map(f).sum::<u64>();
    eprintln!(
        "simulation: {} seeds ({}..={}) in {:.1} s, {:.0} seeds/s; {} orders, {} executed, {} deliveries \
         ({} duplicates), {} crashes ({} mid-write), {} injected faults, {} events, {} invariant checks",
        seeds.len(),
        seeds.first().copied().unwrap_or(0),
        seeds.last().copied().unwrap_or(0),
        elapsed.as_secs_f64(),
        seeds.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        total(|s| s.orders),
        total(|s| s.executed),
        total(|s| s.deliveries),
        total(|s| s.duplicates),
        total(|s| s.crashes),
        total(|s| s.mid_write_crashes),
        total(|s| s.faults),
        total(|s| s.events),
        total(|s| s.checks),
    );
    for (seed, failure) in &failures {
        eprintln!(
            "simulation seed {seed} FAILED: {failure}\n  replay: SIM_SEED={seed} cargo test --test simulation \
             every_seed -- --nocapture"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed; first: seed {} ({}); replay with SIM_SEED={} cargo test --test simulation every_seed",
        failures.len(),
        seeds.len(),
        failures[0].0,
        failures[0].1,
        failures[0].0
    );
}

#[test]
fn the_same_seed_replays_to_the_same_log() {
    // Proves determinism: each seed run twice ends with the same head log hash
    // (the chain covers every event and position), and different seeds differ.
    let mut hashes = Vec::new();
    for seed in 0..DETERMINISM_SEEDS {
        let first = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let second = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(first.head_hash.is_some(), "seed {seed} wrote nothing");
        assert_eq!(
            (first.head_hash, first.events),
            (second.head_hash, second.events),
            "seed {seed} told two stories; replay with SIM_SEED={seed}"
        );
        hashes.push(format!("{:?}", first.head_hash));
    }
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len() as u64, DETERMINISM_SEEDS, "two seeds wrote the same log");
}

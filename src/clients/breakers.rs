//! The circuit breakers of the clients `serve` built, by service name, for
//! `/health/circuit-breaker` and `/metrics`.
//!
//! Must never hold a client: only its breaker, shared, so a report never
//! keeps a client alive nor calls a service.

use std::sync::Arc;

use super::resilience::{BreakerSnapshot, CircuitBreaker};

/// Each remote client's breaker, in the order the clients were built. Empty
/// when everything is embedded (ledger, accounts, simulator): nothing to break.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    entries: Vec<(&'static str, Arc<CircuitBreaker>)>,
}

impl Breakers {
    /// Adds `service`'s breaker (`balance`, `accounts`, `market_data`).
    pub fn add(&mut self, service: &'static str, breaker: Arc<CircuitBreaker>) {
        self.entries.push((service, breaker));
    }

    /// Each service's breaker as it stands now.
    pub fn snapshots(&self) -> Vec<(&'static str, BreakerSnapshot)> {
        self.entries
            .iter()
            .map(|(service, breaker)| (*service, breaker.snapshot()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::{BreakerConfig, BreakerState};

    #[tokio::test(start_paused = true)]
    async fn snapshots_count_what_each_breaker_saw() {
        // Proves the report's counts: successes, failures, the opening and refusals while open.
        let breaker = Arc::new(CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            open_for: std::time::Duration::from_secs(30),
        }));
        let mut breakers = Breakers::default();
        breakers.add("balance", Arc::clone(&breaker));
        breaker.try_acquire().unwrap().succeeded();
        breaker.try_acquire().unwrap().failed();
        let one_failure = breakers.snapshots()[0].1;
        assert_eq!(
            (one_failure.state, one_failure.consecutive_failures),
            (BreakerState::Closed, 1)
        );
        breaker.try_acquire().unwrap().failed();
        assert!(breaker.try_acquire().is_err());
        let snapshots = breakers.snapshots();
        assert_eq!(snapshots.len(), 1);
        let (service, open) = snapshots[0];
        assert_eq!(service, "balance");
        assert_eq!(open.state, BreakerState::Open);
        assert_eq!(
            (
                open.succeeded_total,
                open.failed_total,
                open.opened_total,
                open.refused_total
            ),
            (1, 2, 1, 1)
        );
    }
}

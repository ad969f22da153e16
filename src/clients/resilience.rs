//! Retries with backoff, a circuit breaker and per-attempt timeouts around any
//! async call to a remote service. The retry loop and the backoff schedule are
//! backon's; the breaker is this file's own (docs/adr/0004-circuit-breaker-stays-hand-written.md).
//!
//! Never retries an error its type calls permanent, and never calls through an
//! open breaker: a caller sees the refusal at once instead of a timeout.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Attempts per call when nothing is configured.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 3;
/// The first backoff's upper bound; each further retry doubles it.
pub const BASE_DELAY_DEFAULT: Duration = Duration::from_millis(100);
/// No single backoff waits longer than this.
pub const MAX_DELAY_DEFAULT: Duration = Duration::from_secs(2);
/// Consecutive transient failures that open a closed breaker.
pub const FAILURE_THRESHOLD_DEFAULT: u32 = 5;
/// How long an open breaker refuses calls before letting one probe through.
pub const OPEN_FOR_DEFAULT: Duration = Duration::from_secs(30);
/// Doublings after which any cap has reached `max_delay` (2^64 × a nanosecond
/// is past any `Duration`), so `backoff_cap` never walks further.
const DOUBLINGS_MAX: u32 = 64;

/// Whether an error may go away if the same call is tried again.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

/// How often and how patiently a call is retried.
///
/// Backoff is exponential with full jitter: the wait after attempt `n` is
/// uniform in `[0, min(max_delay, base_delay × 2^(n-1))]`, so clients that
/// failed together do not retry together. The caps are backon's exponential
/// schedule; the jitter is drawn here, because backon's own adds up to one
/// more cap on top (`[cap, 2 × cap)`), which would break "no single backoff
/// waits longer than `max_delay`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 means no retry.
    pub attempts_max: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            base_delay: BASE_DELAY_DEFAULT,
            max_delay: MAX_DELAY_DEFAULT,
        }
    }
}

impl RetryPolicy {
    /// A policy that tries once.
    pub fn no_retry() -> Self {
        Self {
            attempts_max: 1,
            ..Self::default()
        }
    }

    /// backon's doubling schedule from `base_delay` to `max_delay`, unjittered: the caps.
    fn caps(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
    }

    /// The longest wait after failed attempt `attempt` (1-based).
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(DOUBLINGS_MAX) as usize;
        self.caps()
            .without_max_times()
            .build()
            .nth(doublings)
            .map_or(self.max_delay, |cap| cap.min(self.max_delay))
    }

    /// The wait after failed attempt `attempt` (1-based): full jitter below the cap.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        full_jitter(self.backoff_cap(attempt), rng)
    }
}

/// Uniform in `[0, cap]`.
fn full_jitter(cap: Duration, rng: &mut impl Rng) -> Duration {
    if cap.is_zero() {
        return cap;
    }
    rng.gen_range(Duration::ZERO..=cap)
}

/// The waits between the attempts of one call, as backon's retry loop asks
/// for them: one per retry (`attempts_max - 1`), each fully jittered below its cap.
#[derive(Debug)]
pub struct JitteredBackoff {
    caps: ExponentialBackoff,
    max_delay: Duration,
    /// Seeded per call from the thread's generator; `ThreadRng` itself is not
    /// `Send`, and a call's future must be.
    rng: SmallRng,
}

impl Iterator for JitteredBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let cap = self.caps.next()?.min(self.max_delay);
        Some(full_jitter(cap, &mut self.rng))
    }
}

impl BackoffBuilder for RetryPolicy {
    type Backoff = JitteredBackoff;

    fn build(self) -> JitteredBackoff {
        let retries_max = self.attempts_max.max(1) - 1;
        JitteredBackoff {
            caps: self.caps().with_max_times(retries_max as usize).build(),
            max_delay: self.max_delay,
            rng: SmallRng::seed_from_u64(rand::thread_rng().gen()),
        }
    }
}

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long it stays open before one probe call is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: FAILURE_THRESHOLD_DEFAULT,
            open_for: OPEN_FOR_DEFAULT,
        }
    }
}

/// What a breaker currently does with calls; for health checks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are being counted.
    Closed,
    /// Calls are refused without reaching the service.
    Open,
    /// The open period is over: the next call is a probe that decides.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// Why a breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerRefusal {
    /// Open; a probe will be let through after `retry_in`.
    Open { retry_in: Duration },
    /// Half-open and the single probe is still out.
    ProbeInFlight,
}

/// Closed → open after `failure_threshold` consecutive transient failures →
/// half-open once `open_for` has passed, where one probe is let through: its
/// success closes the breaker, its failure opens it again.
///
/// Time is `tokio::time::Instant`, so tests can run it on virtual time.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Mutex<Phase>,
    /// What the breaker has seen since start, for `/health/circuit-breaker` and `/metrics`.
    counts: BreakerCounts,
}

/// Counters since start; relaxed atomics: each is read on its own, for reports.
#[derive(Debug, Default)]
struct BreakerCounts {
    succeeded: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    opened: AtomicU64,
}

/// A breaker's state and counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Transient failures in a row while closed (0 when open or half-open).
    pub consecutive_failures: u32,
    /// Calls the service answered (a permanent refusal included: the service is up).
    pub succeeded_total: u64,
    /// Calls that failed transiently or timed out.
    pub failed_total: u64,
    /// Calls refused without reaching the service (open, or a probe already out).
    pub refused_total: u64,
    /// Times the breaker opened.
    pub opened_total: u64,
    pub config: BreakerConfig,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            phase: Mutex::new(Phase::Closed {
                consecutive_failures: 0,
            }),
            counts: BreakerCounts::default(),
        }
    }

    /// The state and the counts since start.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let consecutive_failures = match *self.lock() {
            Phase::Closed { consecutive_failures } => consecutive_failures,
            Phase::Open { .. } | Phase::HalfOpen { .. } => 0,
        };
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BreakerSnapshot {
            state: self.state(),
            consecutive_failures,
            succeeded_total: count(&self.counts.succeeded),
            failed_total: count(&self.counts.failed),
            refused_total: count(&self.counts.refused),
            opened_total: count(&self.counts.opened),
            config: self.config,
        }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// The state a call arriving now would meet.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if Instant::now() < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make one call. The permit must be settled with
    /// [`BreakerPermit::succeeded`] or [`BreakerPermit::failed`]; a permit
    /// dropped unsettled (the caller was cancelled) says nothing about the
    /// service, so a probe slot it held is simply freed.
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, BreakerRefusal> {
        let acquired = self.acquire();
        if acquired.is_err() {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
        }
        acquired
    }

    fn acquire(&self) -> Result<BreakerPermit<'_>, BreakerRefusal> {
        let mut phase = self.lock();
        match *phase {
            Phase::Closed { .. } => Ok(BreakerPermit::new(self, false)),
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(BreakerRefusal::Open { retry_in: until - now });
                }
                *phase = Phase::HalfOpen { probe_in_flight: true };
                Ok(BreakerPermit::new(self, true))
            }
            Phase::HalfOpen { probe_in_flight: true } => Err(BreakerRefusal::ProbeInFlight),
            Phase::HalfOpen { probe_in_flight: false } => {
                *phase = Phase::HalfOpen { probe_in_flight: true };
                Ok(BreakerPermit::new(self, true))
            }
        }
    }

    fn record_success(&self) {
        self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
        let mut phase = self.lock();
        if matches!(*phase, Phase::HalfOpen { .. }) {
            tracing::info!("circuit breaker closed: the probe call succeeded");
        }
        *phase = Phase::Closed {
            consecutive_failures: 0,
        };
    }

    fn record_failure(&self) {
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        let mut phase = self.lock();
        let open = Phase::Open {
            until: Instant::now() + self.config.open_for,
        };
        match *phase {
            Phase::Closed { consecutive_failures } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.config.failure_threshold.max(1) {
                    tracing::warn!(
                        failures,
                        open_for_ms = self.config.open_for.as_millis() as u64,
                        "circuit breaker opened after consecutive transient failures"
                    );
                    *phase = open;
                    self.counts.opened.fetch_add(1, Ordering::Relaxed);
                } else {
                    *phase = Phase::Closed {
                        consecutive_failures: failures,
                    };
                }
            }
            Phase::HalfOpen { .. } => {
                tracing::warn!("circuit breaker re-opened: the probe call failed");
                *phase = open;
                self.counts.opened.fetch_add(1, Ordering::Relaxed);
            }
            // A call admitted while closed that failed after the breaker opened:
            // the breaker already knows; restarting the open period would let a
            // burst of slow failures keep it open for longer than configured.
            Phase::Open { .. } => {}
        }
    }

    fn release_probe(&self) {
        let mut phase = self.lock();
        if let Phase::HalfOpen { probe_in_flight: true } = *phase {
            *phase = Phase::HalfOpen { probe_in_flight: false };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        // The phase is a plain value replaced whole; a panic elsewhere cannot leave it torn.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leave to make one call through a [`CircuitBreaker`].
#[derive(Debug)]
#[must_use = "settle the permit with succeeded() or failed()"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl<'a> BreakerPermit<'a> {
    fn new(breaker: &'a CircuitBreaker, probe: bool) -> Self {
        Self {
            breaker,
            probe,
            settled: false,
        }
    }

    /// The service answered (a permanent refusal counts: the service is up).
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.record_success();
    }

    /// The call failed in a way that may be the service's health.
    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.record_failure();
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.release_probe();
        }
    }
}

/// Why a resilient call gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResilienceError<E> {
    /// Not called: the breaker is open after repeated failures.
    #[error("circuit open after repeated failures; not calling for another {} ms", retry_in.as_millis())]
    CircuitOpen { retry_in: Duration },
    /// Not called: the breaker is half-open and its one probe is still out.
    #[error("circuit open (half-open, a probe call is in flight); try again shortly")]
    ProbeInFlight,
    /// The last attempt got no answer within the per-attempt timeout.
    #[error("no answer within {} ms (attempt {attempts})", timeout.as_millis())]
    TimedOut { timeout: Duration, attempts: u32 },
    /// The last attempt failed with this error (permanent, or transient and out of attempts).
    #[error("{error} (attempt {attempts})")]
    Failed { error: E, attempts: u32 },
}

impl<E: Transient> ResilienceError<E> {
    fn refused(refusal: BreakerRefusal) -> Self {
        match refusal {
            BreakerRefusal::Open { retry_in } => Self::CircuitOpen { retry_in },
            BreakerRefusal::ProbeInFlight => Self::ProbeInFlight,
        }
    }

    /// Whether another attempt of the same call may help: a timeout or a
    /// transient failure. A refusal by the breaker is not retried (the caller
    /// hears it at once), nor is a permanent failure.
    fn is_worth_retrying(&self) -> bool {
        match self {
            Self::TimedOut { .. } => true,
            Self::Failed { error, .. } => error.is_transient(),
            Self::CircuitOpen { .. } | Self::ProbeInFlight => false,
        }
    }
}

impl<E: Transient> Transient for ResilienceError<E> {
    fn is_transient(&self) -> bool {
        match self {
            Self::CircuitOpen { .. } | Self::ProbeInFlight | Self::TimedOut { .. } => true,
            Self::Failed { error, .. } => error.is_transient(),
        }
    }
}

/// A retry policy, a breaker and a per-attempt timeout, applied together.
#[derive(Debug)]
pub struct Resilience {
    retry: RetryPolicy,
    timeout: Duration,
    /// Shared with the health report (`clients::Breakers`).
    breaker: Arc<CircuitBreaker>,
}

impl Resilience {
    pub fn new(retry: RetryPolicy, breaker: BreakerConfig, timeout: Duration) -> Self {
        Self {
            retry,
            timeout,
            breaker: Arc::new(CircuitBreaker::new(breaker)),
        }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The breaker, to report on beside the client (`clients::Breakers`).
    pub fn shared_breaker(&self) -> Arc<CircuitBreaker> {
        Arc::clone(&self.breaker)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `call` (given the 1-based attempt number) until it succeeds, fails
    /// permanently, or runs out of attempts. Each attempt is bounded by the
    /// timeout and must get through the breaker; a refusal ends the call at
    /// once, without calling. Only the caller may make a retried call safe
    /// (idempotency keys): this helper retries whatever it is given.
    pub async fn run<T, E, F, Fut>(&self, mut call: F) -> Result<T, ResilienceError<E>>
    where
        E: Transient + std::fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempts = 0;
        let attempt = || {
            attempts += 1;
            let attempt = attempts;
            // The breaker is asked before `call` runs: a refused attempt never
            // reaches the caller's code (nor, through it, the service).
            let admitted = self.breaker.try_acquire().map(|permit| (permit, call(attempt)));
            async move {
                let (permit, pending) = admitted.map_err(ResilienceError::refused)?;
                let outcome = tokio::time::timeout(self.timeout, pending).await;
                self.settle(permit, outcome, attempt)
            }
        };
        attempt
            .retry(self.retry)
            .sleep(tokio::time::sleep)
            .when(ResilienceError::is_worth_retrying)
            .notify(|failure, delay| {
                tracing::debug!(delay_ms = delay.as_millis() as u64, error = %failure, "retrying after a transient failure");
            })
            .await
    }

    /// Tells the breaker how attempt `attempt` went and names its failure.
    fn settle<T, E: Transient>(
        &self,
        permit: BreakerPermit<'_>,
        outcome: Result<Result<T, E>, tokio::time::error::Elapsed>,
        attempt: u32,
    ) -> Result<T, ResilienceError<E>> {
        match outcome {
            Ok(Ok(value)) => {
                permit.succeeded();
                Ok(value)
            }
            Ok(Err(error)) => {
                // A refusal is an answer: the service is up.
                if error.is_transient() {
                    permit.failed();
                } else {
                    permit.succeeded();
                }
                Err(ResilienceError::Failed {
                    error,
                    attempts: attempt,
                })
            }
            Err(_elapsed) => {
                permit.failed();
                Err(ResilienceError::TimedOut {
                    timeout: self.timeout,
                    attempts: attempt,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Fake {
        Down,
        Refused,
    }

    impl Transient for Fake {
        fn is_transient(&self) -> bool {
            matches!(self, Self::Down)
        }
    }

    impl std::fmt::Display for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    fn breaker(threshold: u32, open_for_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_millis(open_for_ms),
        })
    }

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().unwrap().failed();
    }

    fn succeed(b: &CircuitBreaker) {
        b.try_acquire().unwrap().succeeded();
    }

    fn policy(attempts_max: u32) -> RetryPolicy {
        RetryPolicy {
            attempts_max,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_caps_double_from_the_base_up_to_the_max() {
        // Proves the exponential schedule and its ceiling, also for absurd attempt numbers.
        let p = policy(10);
        let caps: Vec<u128> = (1..=7).map(|n| p.backoff_cap(n).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.backoff_cap(0), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jittered_backoff_stays_within_zero_and_the_cap() {
        // Proves full jitter never waits longer than the cap and spreads below it.
        let p = policy(10);
        let mut rng = SmallRng::seed_from_u64(7);
        for attempt in 1..=8 {
            let cap = p.backoff_cap(attempt);
            let delays: Vec<Duration> = (0..200).map(|_| p.backoff(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= cap), "attempt {attempt}: over {cap:?}");
            assert!(delays.iter().any(|d| *d < cap / 2), "attempt {attempt}: no spread");
        }
        let zero = RetryPolicy {
            base_delay: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.backoff(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn one_call_waits_once_per_retry_each_within_its_cap() {
        // Proves the schedule backon's retry loop is given: attempts_max - 1 waits, the n-th within cap n.
        let p = policy(5);
        let waits: Vec<Duration> = p.build().collect();
        assert_eq!(waits.len(), 4);
        for (n, wait) in (1..).zip(&waits) {
            assert!(*wait <= p.backoff_cap(n), "wait {n}: {wait:?}");
        }
        assert_eq!(policy(1).build().count(), 0);
        assert_eq!(policy(0).build().count(), 0);
        let absurd = RetryPolicy {
            base_delay: Duration::from_secs(10),
            ..p
        };
        assert!(absurd.build().all(|wait| wait <= absurd.max_delay));
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_the_threshold_of_consecutive_failures() {
        // Proves only consecutive failures count and the threshold-th one opens the breaker.
        let b = breaker(3, 1000);
        fail(&b);
        fail(&b);
        succeed(&b);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err(),
            BreakerRefusal::Open {
                retry_in: Duration::from_millis(1000)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_lets_one_probe_through_after_open_for() {
        // Proves open → half-open on time, with a single probe at a time.
        let b = breaker(1, 1000);
        fail(&b);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.try_acquire(), Err(BreakerRefusal::Open { .. })));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert_eq!(b.try_acquire().unwrap_err(), BreakerRefusal::ProbeInFlight);
        probe.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_full_period() {
        // Proves a failed probe re-opens the breaker and restarts the open period.
        let b = breaker(2, 500);
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_millis(500)).await;
        b.try_acquire().unwrap().failed();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_the_probe_slot() {
        // Proves a probe dropped unsettled does not wedge the breaker half-open.
        let b = breaker(1, 100);
        fail(&b);
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().unwrap().succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    fn resilience(attempts_max: u32, threshold: u32) -> Resilience {
        Resilience::new(
            policy(attempts_max),
            BreakerConfig {
                failure_threshold: threshold,
                open_for: Duration::from_secs(30),
            },
            Duration::from_millis(50),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        // Proves a transient error is retried and the later success is returned.
        let r = resilience(3, 5);
        let calls = AtomicU32::new(0);
        let result = r
            .run(|attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt < 3 {
                        Err(Fake::Down)
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(r.breaker().state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried_and_do_not_trip_the_breaker() {
        // Proves a permanent error returns after one call and counts as the service being up.
        let r = resilience(3, 1);
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = r
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Fake::Refused) }
            })
            .await;
        assert_eq!(
            result,
            Err(ResilienceError::Failed {
                error: Fake::Refused,
                attempts: 1
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(r.breaker().state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_time_out_and_the_retries_wait_at_most_the_backoff_caps() {
        // Proves the per-attempt timeout, the attempt count, and the total time bound on virtual time.
        let r = resilience(3, 5);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<(), ResilienceError<Fake>> = r
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(())
                }
            })
            .await;
        assert_eq!(
            result,
            Err(ResilienceError::TimedOut {
                timeout: Duration::from_millis(50),
                attempts: 3
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let elapsed = started.elapsed();
        // Three timeouts, plus at most 100 ms and 200 ms of backoff.
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(450), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_without_calling() {
        // Proves the breaker opens mid-retry and later calls are refused before reaching the service.
        let r = resilience(5, 2);
        let calls = AtomicU32::new(0);
        let down = |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Fake::Down) }
        };
        let first = r.run(down).await;
        assert!(matches!(first, Err(ResilienceError::CircuitOpen { .. })), "{first:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let second = r.run(down).await;
        assert!(matches!(second, Err(ResilienceError::CircuitOpen { .. })));
        assert!(second.as_ref().unwrap_err().to_string().starts_with("circuit open"));
        assert!(second.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = r.run(|_| async { Ok::<_, Fake>(1) }).await;
        assert_eq!(probe, Ok(1));
        assert_eq!(r.breaker().state(), BreakerState::Closed);
    }
}

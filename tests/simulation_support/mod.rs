//! The simulator behind tests/simulation.rs: a virtual clock, a seeded fault
//! plan for the in-memory log, the seeded workload, the driver that runs the
//! real engine through crashes, and the books that check it after every step.
//!
//! Must never read the wall clock (but for a watchdog, and the engine's
//! metering, which times appends and steers nothing) or an unseeded random
//! source: everything a run does follows from its seed.

mod books;
mod workload;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::join_all;
use order_engine::amqp::OrderSubmitter;
use order_engine::app::Application;
use order_engine::clock::Clock;
use order_engine::config::Settings;
use order_engine::engine::{Engine, EngineError, ENGINE_NAMESPACE};
use order_engine::market::{MarketData, MarketSimulator, SimulatorConfig};
use order_engine::store::{AppendFault, EventHash, EventStore, FaultPlan, MemoryStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

use books::Books;
use workload::{Action, Delivery, Workload};

/// Money each account opens with (the embedded ledger's demo funding).
const OPENING_BALANCE: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
/// Seed 004's ladder (5 min, 15 min, 1 h, 6 h) divided by 300: the same
/// shape, climbed in fewer timer wake-ups of the virtual clock.
const RETRY_DELAYS_S: [u64; 4] = [1, 3, 12, 72];
/// Crashes in the middle of a write, at most, per seed (boundary crashes come from the workload).
const MID_WRITE_CRASHES_MAX: u32 = 2;
/// How often an incarnation runs two engine processes on the one log.
const TWO_PROCESSES_PROBABILITY: f64 = 0.3;
/// How long a crashed engine stays down before the next one starts.
const DOWNTIME_MAX_S: i64 = 30;
/// Virtual time the drain gives the engine between two looks, past the whole ladder.
const DRAIN_WINDOW: Duration = Duration::from_secs(120);
/// How often the drain moves the market, so resting orders see prices.
const DRAIN_TICK: Duration = Duration::from_secs(5);
/// How long the drain goes on once every order is settled.
const SETTLED_GRACE: Duration = Duration::from_secs(15);
/// Drain windows before an order still working is called stuck.
const DRAIN_ROUNDS_MAX: u32 = 4;
/// Wall time one seed may take (it takes milliseconds): a watchdog, read
/// only to fail a run that stopped making progress, never to steer one.
const SEED_WALL_MAX: Duration = Duration::from_secs(60);
/// Actions one seed may take, redeliveries included, before it is called a livelock.
const ACTIONS_MAX: usize = 2_000;

/// What one seed did, for the test's figures and the determinism check.
#[derive(Debug, Clone, Default)]
pub struct SeedSummary {
    pub orders: u64,
    pub executed: u64,
    pub deliveries: u64,
    pub duplicates: u64,
    pub crashes: u64,
    pub mid_write_crashes: u64,
    pub faults: u64,
    pub events: u64,
    pub checks: u64,
    pub head_hash: Option<EventHash>,
}

/// Runs one seed to the end; Err names the first broken rule.
pub fn run_seed(seed: u64) -> Result<SeedSummary, String> {
    match catch_unwind(AssertUnwindSafe(|| Simulation::new(seed).run())) {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    }
}

/// UTC time that follows the current runtime's virtual clock, carried from
/// one engine incarnation (runtime) to the next.
pub struct SimClock {
    state: Mutex<ClockState>,
}

struct ClockState {
    /// The time at `anchor`.
    base: DateTime<Utc>,
    /// The runtime instant `base` corresponds to; None while no engine runs.
    anchor: Option<tokio::time::Instant>,
}

impl SimClock {
    fn new(start: DateTime<Utc>) -> Self {
        Self {
            state: Mutex::new(ClockState {
                base: start,
                anchor: None,
            }),
        }
    }

    /// Ties the clock to the current runtime, `downtime` after it stopped.
    fn start(&self, downtime: chrono::Duration) {
        let mut state = self.state.lock().unwrap();
        state.base += downtime;
        state.anchor = Some(tokio::time::Instant::now());
    }

    /// Stops the clock where it is, before the runtime goes.
    fn stop(&self) {
        let now = self.now();
        let mut state = self.state.lock().unwrap();
        state.base = now;
        state.anchor = None;
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        let state = self.state.lock().unwrap();
        match state.anchor {
            Some(anchor) => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(anchor);
                state.base + chrono::Duration::from_std(elapsed).unwrap_or_else(|_| chrono::Duration::zero())
            }
            None => state.base,
        }
    }
}

/// The faults of one engine incarnation: each write or read fails with a
/// seeded probability, and at a seeded write the process "dies": that write
/// fails before or after its commit, and everything after it fails.
struct SimFaults {
    rng: Mutex<StdRng>,
    write_fault_per_mille: u32,
    read_fault_per_mille: u32,
    /// The write that kills the process (1-based), and where.
    crash_at: Option<(u64, AppendFault)>,
    writes: AtomicU64,
    crashed: AtomicBool,
    /// Set for the drain: the engine must finish on a healthy store.
    quiet: AtomicBool,
    injected: AtomicU64,
}

impl SimFaults {
    fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn draw(&self, per_mille: u32) -> bool {
        per_mille > 0 && self.rng.lock().unwrap().gen_range(0..1_000) < per_mille
    }
}

impl FaultPlan for SimFaults {
    fn write(&self) -> Option<AppendFault> {
        if self.crashed() {
            return Some(AppendFault::BeforeCommit);
        }
        if self.quiet.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, fault)) = self.crash_at {
            if n == at {
                self.crashed.store(true, Ordering::SeqCst);
                return Some(fault);
            }
        }
        if self.draw(self.write_fault_per_mille) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let fault = if self.rng.lock().unwrap().gen_bool(0.5) {
                AppendFault::BeforeCommit
            } else {
                AppendFault::AfterCommit
            };
            return Some(fault);
        }
        None
    }

    fn read(&self) -> bool {
        if self.crashed() {
            return true;
        }
        if self.quiet.load(Ordering::SeqCst) {
            return false;
        }
        let failed = self.draw(self.read_fault_per_mille);
        if failed {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        failed
    }
}

/// How one incarnation of the engine ended.
enum Ended {
    /// Killed (at a workload boundary or in the middle of a write); the log survives.
    Crashed,
    /// Every action done and every order settled.
    Finished,
}

struct Simulation {
    rng: StdRng,
    /// The log as it survives crashes; read by the checks, never faulted.
    log: MemoryStore,
    clock: Arc<SimClock>,
    market: Arc<MarketSimulator>,
    workload: Workload,
    actions: VecDeque<Action>,
    books: Books,
    summary: SeedSummary,
    mid_write_crashes: u32,
    incarnation: u32,
    actions_taken: usize,
    started: std::time::Instant,
}

impl Simulation {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // A Monday, in trading hours, so nothing depends on the day a run happens.
        let start = Utc
            .with_ymd_and_hms(2026, 3, 2, 14, 30, 0)
            .single()
            .expect("a valid start time");
        let clock = Arc::new(SimClock::new(start));
        let market = Arc::new(MarketSimulator::new(
            SimulatorConfig {
                seed: rng.gen(),
                ..SimulatorConfig::default()
            },
            clock.clone(),
        ));
        let workload = Workload::generate(&mut rng, &market);
        let actions = workload.actions.iter().cloned().collect();
        let log = MemoryStore::new().with_clock(clock.clone());
        Self {
            rng,
            log,
            clock,
            market,
            actions,
            books: Books::new(OPENING_BALANCE),
            summary: SeedSummary {
                orders: workload.orders.len() as u64,
                ..SeedSummary::default()
            },
            workload,
            mid_write_crashes: 0,
            incarnation: 0,
            actions_taken: 0,
            started: std::time::Instant::now(),
        }
    }

    fn run(mut self) -> Result<SeedSummary, String> {
        loop {
            self.incarnation += 1;
            let faults = Arc::new(self.faults());
            let system = actix_rt::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .expect("a current-thread runtime")
            });
            let ended = system.block_on(self.incarnation(Arc::clone(&faults)));
            // Dropping the system drops the engine, its actors and every task:
            // nothing but the log survives, as after kill -9.
            drop(system);
            self.summary.faults += faults.injected.load(Ordering::SeqCst);
            match ended? {
                Ended::Crashed => {
                    self.summary.crashes += 1;
                    if faults.crashed() {
                        self.summary.mid_write_crashes += 1;
                    }
                }
                Ended::Finished => break,
            }
        }
        self.finish()
    }

    fn faults(&mut self) -> SimFaults {
        let crash_at = (self.mid_write_crashes < MID_WRITE_CRASHES_MAX && self.rng.gen_bool(0.5)).then(|| {
            self.mid_write_crashes += 1;
            let fault = if self.rng.gen_bool(0.5) {
                AppendFault::BeforeCommit
            } else {
                AppendFault::AfterCommit
            };
            (self.rng.gen_range(1..=80), fault)
        });
        let per_mille = [0, 0, 10, 30, 60];
        SimFaults {
            rng: Mutex::new(StdRng::seed_from_u64(self.rng.gen())),
            write_fault_per_mille: per_mille[self.rng.gen_range(0..per_mille.len())],
            read_fault_per_mille: per_mille[self.rng.gen_range(0..per_mille.len())] / 2,
            crash_at,
            writes: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
            quiet: AtomicBool::new(false),
            injected: AtomicU64::new(0),
        }
    }

    /// One engine process: starts over the surviving log, takes actions
    /// until it is killed or none are left, then drains.
    async fn incarnation(&mut self, faults: Arc<SimFaults>) -> Result<Ended, String> {
        let downtime = if self.incarnation == 1 {
            0
        } else {
            self.rng.gen_range(0..=DOWNTIME_MAX_S)
        };
        self.clock.start(chrono::Duration::seconds(downtime));
        let result = self.drive(faults).await;
        self.clock.stop();
        result
    }

    /// One engine process over the surviving log, with `faults` in front of
    /// its store, built through the composition root as `serve` builds it
    /// (metering, the embedded ledger), but on the in-memory log, in virtual
    /// time, quoting from the simulation's own market and without group commit.
    async fn start_engine(&self, faults: &Arc<SimFaults>) -> Result<Arc<Engine>, String> {
        let clock: Arc<dyn Clock> = self.clock.clone();
        let store: Arc<dyn EventStore> = Arc::new(
            self.log
                .connect()
                .with_clock(clock.clone())
                .with_faults(faults.clone() as Arc<dyn FaultPlan>),
        );
        let mut settings = Settings::from_lookup(|_| None).map_err(|e| e.to_string())?;
        settings.database_url = "memory:".into();
        settings.demo_balance = OPENING_BALANCE;
        settings.retry_delays = RETRY_DELAYS_S.iter().map(|s| Duration::from_secs(*s)).collect();
        // One thread for the order actors, the runtime's own: actors spread
        // over arbiter threads run in an order the seed does not decide.
        settings.actor_threads = 1;
        let stack = Application::builder(settings)
            .engine_log(store)
            .clock(clock)
            .market(self.market.clone())
            .build_stack()
            .await
            .map_err(|e| format!("building the engine: {e}"))?;
        Ok(stack.engine)
    }

    async fn drive(&mut self, faults: Arc<SimFaults>) -> Result<Ended, String> {
        // Sometimes two engine processes share the log, as two `serve`s may
        // share a database: each drives every saga, and optimistic
        // concurrency with idempotency must keep the effects single.
        let processes = if self.rng.gen_bool(TWO_PROCESSES_PROBABILITY) {
            2
        } else {
            1
        };
        let mut engines: Vec<Arc<Engine>> = Vec::with_capacity(processes);
        for _ in 0..processes {
            engines.push(self.start_engine(&faults).await?);
        }
        let engine = Arc::clone(&engines[0]);
        while let Some(action) = self.actions.pop_front() {
            self.actions_taken += 1;
            if self.actions_taken > ACTIONS_MAX {
                return Err(format!("more than {ACTIONS_MAX} actions: deliveries keep failing"));
            }
            if matches!(action, Action::Crash) {
                return Ok(Ended::Crashed);
            }
            let target = Arc::clone(&engines[self.rng.gen_range(0..engines.len())]);
            let gap = self.act(&target, action).await?;
            tokio::time::sleep(gap).await;
            self.check().await?;
            if faults.crashed() {
                return Ok(Ended::Crashed);
            }
        }
        faults.quiet.store(true, Ordering::SeqCst);
        if faults.crashed() {
            return Ok(Ended::Crashed);
        }
        self.drain(&engine).await?;
        Ok(Ended::Finished)
    }

    /// Performs one action; returns how long to let the engine run after it.
    async fn act(&mut self, engine: &Arc<Engine>, action: Action) -> Result<Duration, String> {
        match action {
            Action::Deliver(deliveries) => {
                let submitter: Arc<dyn OrderSubmitter> = engine.clone();
                let sends = deliveries.iter().map(|d| {
                    let submitter = Arc::clone(&submitter);
                    let request = self.workload.request(d);
                    async move { submitter.submit(request).await }
                });
                let results = join_all(sends).await;
                for (delivery, result) in deliveries.into_iter().zip(results) {
                    self.summary.deliveries += 1;
                    if delivery.copy > 0 {
                        self.summary.duplicates += 1;
                    }
                    self.settle_delivery(delivery, result)?;
                }
            }
            Action::Cancel { order, attempt } => {
                let planned = &self.workload.orders[order];
                let command_id = Uuid::new_v5(
                    &ENGINE_NAMESPACE,
                    format!("{}:sim-cancel:{attempt}", planned.order_id).as_bytes(),
                );
                // Not found, already final, or the store failing: a user would simply try again later.
                let _ = engine
                    .cancel_as(
                        planned.order_id,
                        planned.user_id,
                        "cancelled by the simulated user",
                        command_id,
                    )
                    .await;
            }
            Action::Tick => {
                self.market.step();
            }
            Action::Jump { symbol, bps } => {
                if let Ok(quote) = self.market.current_price(symbol).await {
                    let moved = quote.price * Decimal::from(10_000 + bps) / Decimal::from(10_000);
                    let _ = self.market.set_price(symbol, moved.round_dp(2));
                }
            }
            Action::Crash => {}
        }
        Ok(Duration::from_millis(self.rng.gen_range(0..4u64).pow(3) * 40))
    }

    /// A broker's answer to one delivery: acknowledged, or put back (out of order).
    fn settle_delivery(
        &mut self,
        delivery: Delivery,
        result: Result<order_engine::order::Order, EngineError>,
    ) -> Result<(), String> {
        match result {
            Ok(_) | Err(EngineError::Rejected(_)) | Err(EngineError::AccountNotAllowed(_)) => Ok(()),
            Err(EngineError::Unavailable(_)) => {
                // Nacked with requeue: it comes back later, behind others.
                let at = self.rng.gen_range(0..=self.actions.len());
                self.actions.insert(at, Action::Deliver(vec![delivery]));
                Ok(())
            }
            Err(error) => Err(format!(
                "delivery of order {} was refused for good (it would be dead-lettered): {error}",
                self.workload.orders[delivery.order].order_id
            )),
        }
    }

    async fn check(&mut self) -> Result<(), String> {
        self.summary.checks += 1;
        if self.started.elapsed() > SEED_WALL_MAX {
            return Err(format!(
                "still running after {} s of wall time",
                SEED_WALL_MAX.as_secs()
            ));
        }
        self.books.catch_up(&self.log).await?;
        self.books.check()
    }

    /// Lets virtual time run past the whole ladder, moving the market; orders
    /// still working after a window are cancelled, as their users would.
    async fn drain(&mut self, engine: &Arc<Engine>) -> Result<(), String> {
        for round in 0..DRAIN_ROUNDS_MAX {
            let mut waited = Duration::ZERO;
            while waited < DRAIN_WINDOW {
                self.market.step();
                tokio::time::sleep(DRAIN_TICK).await;
                waited += DRAIN_TICK;
                self.check().await?;
                if self.books.unsettled().is_empty() {
                    // Settled: a little longer, for anything late (a duplicate
                    // reaction, a stale fill) to show itself, then stop.
                    tokio::time::sleep(SETTLED_GRACE).await;
                    return self.check().await;
                }
            }
            let open = self.books.unsettled();
            for order_id in open {
                if let Some(index) = self.workload.orders.iter().position(|o| o.order_id == order_id) {
                    self.act(
                        engine,
                        Action::Cancel {
                            order: index,
                            attempt: 1_000 + round,
                        },
                    )
                    .await?;
                }
            }
        }
        Err(format!(
            "orders still not settled after {DRAIN_ROUNDS_MAX} drain windows of {} s: {}",
            DRAIN_WINDOW.as_secs(),
            self.books.describe_unsettled()
        ))
    }

    fn finish(mut self) -> Result<SeedSummary, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(async {
            self.books.catch_up(&self.log).await?;
            self.books.check()?;
            self.books.finish(&self.log, &self.workload).await
        })?;
        self.summary.executed = self.books.executed();
        self.summary.events = self.books.events();
        self.summary.head_hash = self.log.head_hash();
        Ok(self.summary)
    }
}

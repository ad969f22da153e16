//! The engine: order actors, the balance saga and the matcher, wired to a
//! store and the outside services, behind a small facade (submit, cancel, get).
//!
//! Must be started inside an actix system: the order actors live on the
//! calling arbiter, or on arbiters of their own (`ActorConfig::actor_threads`).

mod attempts;
mod colocated;
mod crash;
mod health;
mod matching;
mod reactor;
mod saga_runner;

use std::sync::Arc;

use rust_decimal::Decimal;
use tokio::sync::watch;
use uuid::Uuid;

pub use attempts::ATTEMPT_RECORD_TIMEOUT;
pub use crash::{CrashPoint, Halted};
pub use health::{EngineHealth, EngineHealthSnapshot, STALLED_SAGAS_LISTED_MAX};
pub use matching::{on_price, MatchAction, WorkingOrder};
pub use reactor::{partition_checkpoint, REACTOR_CHECKPOINT};
pub use saga_runner::{SagaConfig, ENGINE_NAMESPACE, LOCAL_RETRIES_MAX};

use crate::accounts::{AccountError, Accounts};
use crate::actors::{ActorConfig, ActorError, CommandReply, ExecuteCommand, OrderRegistry, StartError};
use crate::balance::BalanceService;
use crate::clock::Clock;
use crate::cluster::ClusterView;
use crate::controls::trading_day::{Admission, ControlError, OrderFacts, UserControls};
use crate::events::EventMetadata;
use crate::market::{MarketData, MarketError};
use crate::order::{CancelOrder, Order, OrderCommand, OrderEvent, OrderRejection, OrderType, Quote, Side, SubmitOrder};
use crate::projections::LogFeed;
use crate::store::EventStore;
use crate::trading_day::TradingDayRejection;
use reactor::Reactor;
use saga_runner::SagaContext;

/// The services the engine runs against.
#[derive(Clone)]
pub struct EngineDeps {
    pub store: Arc<dyn EventStore>,
    pub balance: Arc<dyn BalanceService>,
    pub market: Arc<dyn MarketData>,
    pub accounts: Arc<dyn Accounts>,
    pub clock: Arc<dyn Clock>,
    /// Which users' sagas and orders this process drives (all, standalone).
    pub cluster: ClusterView,
    /// The per-user pre-trade controls: each order and cancellation is
    /// counted on its user's trading day in the commit that records it.
    pub controls: Arc<UserControls>,
}

/// Lost races for a user's trading day before a submission gives up (503):
/// each loser reads the day again and decides at once, so only a user
/// submitting from many processes at once comes near it.
pub const TRADING_DAY_RETRIES_MAX: u32 = 16;

/// What a command counts on its user's trading day.
enum Counted<'a> {
    Order(OrderFacts<'a>),
    Cancellation {
        user_id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub actors: ActorConfig,
    pub saga: SagaConfig,
}

/// An order as a caller asks for it.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// The caller's id for the order (the idempotency key of queue producers); new when None.
    pub order_id: Option<Uuid>,
    pub user_id: Uuid,
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub metadata: EventMetadata,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rejected(#[from] OrderRejection),
    #[error("account {0} is not active or may not trade")]
    AccountNotAllowed(Uuid),
    /// A per-user pre-trade control refused the order (the daily limit, the
    /// rate limit, a hold after an anomaly); nothing was written.
    #[error("{rejection}")]
    Refused {
        rejection: TradingDayRejection,
        /// Whole seconds until a new try can pass (the engine's clock).
        retry_after_secs: u64,
    },
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error("a service the engine needs is unavailable; retry later: {0}")]
    Unavailable(String),
    /// No trustworthy price or market status for the order's symbol (the
    /// market data service is down, slow, behind an open breaker or answering
    /// nonsense): the order is refused, never quoted at a made-up price.
    #[error("market data is unavailable; the order was not accepted: {0}")]
    MarketDataUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ActorError> for EngineError {
    fn from(error: ActorError) -> Self {
        match error {
            ActorError::Rejected(rejection) => Self::Rejected(rejection),
            other if other.is_transient() => Self::Unavailable(other.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

pub struct Engine {
    deps: EngineDeps,
    registry: OrderRegistry,
    shutdown: watch::Sender<bool>,
    reactor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    health: Arc<EngineHealth>,
    /// Submissions handed straight to the reactor, so a saga starts without
    /// waiting for the log tail.
    submissions: tokio::sync::mpsc::Sender<reactor::Submitted>,
    feed: LogFeed,
}

impl Engine {
    /// Starts the actors' registry (and its threads) and the reactor; returns at once.
    pub fn start(config: EngineConfig, deps: EngineDeps, crash: Option<Arc<CrashPoint>>) -> Result<Self, StartError> {
        let registry = OrderRegistry::new(Arc::clone(&deps.store), config.actors.clone())?;
        let health = Arc::new(EngineHealth::default());
        let (rematch_tx, rematch_rx) = tokio::sync::mpsc::channel(reactor::REMATCH_QUEUE_MAX);
        let ctx = Arc::new(SagaContext {
            store: Arc::clone(&deps.store),
            registry: registry.clone(),
            balance: Arc::clone(&deps.balance),
            market: Arc::clone(&deps.market),
            filling: std::sync::Mutex::default(),
            rematch: rematch_tx,
            clock: Arc::clone(&deps.clock),
            config: config.saga.clone(),
            crash,
            health: Arc::clone(&health),
            cluster: deps.cluster.clone(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (submissions, submissions_rx) = tokio::sync::mpsc::channel(reactor::IN_PROCESS_STARTS_QUEUE_MAX);
        let feed = LogFeed::start(Arc::clone(&deps.store));
        let reactor = tokio::spawn(Reactor::run(
            ctx,
            Arc::clone(&deps.market),
            feed.clone(),
            submissions_rx,
            rematch_rx,
            shutdown_rx,
        ));
        Ok(Self {
            deps,
            registry,
            shutdown,
            reactor: std::sync::Mutex::new(Some(reactor)),
            health,
            submissions,
            feed,
        })
    }

    /// The process's one reader of the log; the read side follows it too.
    pub fn feed(&self) -> &LogFeed {
        &self.feed
    }

    /// The reactor stopped on an event, and sagas that ran out of local retries.
    pub fn health(&self) -> EngineHealthSnapshot {
        self.health.snapshot()
    }

    pub fn registry(&self) -> &OrderRegistry {
        &self.registry
    }

    pub fn deps(&self) -> &EngineDeps {
        &self.deps
    }

    /// Validates, quotes and records a new order. Returns it as PENDING; the
    /// saga then reserves funds and the market fills it.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Order, EngineError> {
        let status = self.deps.accounts.status(request.user_id).await.map_err(|e| match e {
            AccountError::NotFound(id) => EngineError::AccountNotAllowed(id),
            other if other.is_transient() => EngineError::Unavailable(other.to_string()),
            other => EngineError::Internal(other.to_string()),
        })?;
        if !status.active || !status.can_trade {
            return Err(EngineError::AccountNotAllowed(request.user_id));
        }
        let quote = match self.deps.market.current_price(&request.symbol).await {
            Ok(price) => {
                let market_open = self
                    .deps
                    .market
                    .is_market_open(&request.symbol)
                    .await
                    .map_err(|e| EngineError::MarketDataUnavailable(e.to_string()))?;
                Some(Quote {
                    price: price.price,
                    as_of: price.as_of,
                    market_open,
                })
            }
            Err(MarketError::UnknownSymbol(_)) => None,
            Err(error @ MarketError::Unavailable(_)) => {
                return Err(EngineError::MarketDataUnavailable(error.to_string()))
            }
        };
        let order_id = request.order_id.unwrap_or_else(Uuid::now_v7);
        let submitted_at = self.deps.clock.now();
        let price = request.limit_price.or(quote.as_ref().map(|q| q.price));
        let counted = Counted::Order(OrderFacts {
            user_id: request.user_id,
            order_id,
            symbol: &request.symbol,
            quantity: request.quantity,
            value: price.and_then(|price| price.checked_mul(request.quantity)),
            at: submitted_at,
        });
        let command = OrderCommand::Submit(SubmitOrder {
            order_id,
            user_id: request.user_id,
            symbol: request.symbol.clone(),
            side: request.side,
            order_type: request.order_type,
            quantity: request.quantity,
            limit_price: request.limit_price,
            stop_price: request.stop_price,
            quote,
            submitted_at,
        });
        let mut metadata = request.metadata;
        metadata.correlation_id = metadata.correlation_id.or(Some(order_id));
        let message = ExecuteCommand {
            command,
            // Submitting one order id twice records it once.
            command_id: Uuid::new_v5(&ENGINE_NAMESPACE, format!("{order_id}:submit").as_bytes()),
            metadata,
            co_write: None,
        };
        let reply = self.execute_counted(order_id, message, &counted).await?;
        let submitted = reply.written.iter().find_map(|(event_id, event)| match event {
            OrderEvent::OrderSubmitted(event) => Some((*event_id, event.clone())),
            _ => None,
        });
        if let (Some((event_id, event)), Some(appended)) = (submitted, &reply.appended) {
            // Full: the reactor meets the submission on the log, a little later.
            let _ = self.submissions.try_send(reactor::Submitted {
                order_id,
                event_id,
                position: appended.first_position,
                event,
                trace: reply.trace.clone(),
            });
        }
        reply
            .order
            .ok_or_else(|| EngineError::Internal(format!("order {order_id} missing after submission")))
    }

    /// Cancels a user's order while it is not final.
    pub async fn cancel(&self, order_id: Uuid, user_id: Uuid, reason: &str) -> Result<Order, EngineError> {
        self.cancel_as(order_id, user_id, reason, Uuid::now_v7()).await
    }

    /// [`Engine::cancel`] under a command id the caller chose: a redelivered
    /// cancel with the same id is applied once, and a seeded simulation gets
    /// the same events on every run.
    pub async fn cancel_as(
        &self,
        order_id: Uuid,
        user_id: Uuid,
        reason: &str,
        command_id: Uuid,
    ) -> Result<Order, EngineError> {
        self.owned(order_id, user_id).await?;
        let cancelled_at = self.deps.clock.now();
        let message = ExecuteCommand {
            command: OrderCommand::Cancel(CancelOrder {
                reason: reason.to_owned(),
                cancelled_at,
            }),
            command_id,
            metadata: EventMetadata {
                correlation_id: Some(order_id),
                who: Some(format!("user:{user_id}")),
                ..EventMetadata::default()
            },
            co_write: None,
        };
        let counted = Counted::Cancellation {
            user_id,
            at: cancelled_at,
        };
        let reply = self.execute_counted(order_id, message, &counted).await?;
        reply.order.ok_or(EngineError::NotFound(order_id))
    }

    /// Runs an order command with its count on the user's trading day in the
    /// same commit. A lost race for the day decides the count again at once;
    /// a refused count of an order already recorded is a resend, answered by
    /// the order's own command (which writes nothing new).
    async fn execute_counted(
        &self,
        order_id: Uuid,
        mut message: ExecuteCommand,
        counted: &Counted<'_>,
    ) -> Result<CommandReply, EngineError> {
        let controls = &self.deps.controls;
        let mut conflicts = 0;
        loop {
            let admitted = match counted {
                Counted::Order(facts) => controls.admit_order(facts, message.command_id, &message.metadata).await,
                Counted::Cancellation { user_id, at } => {
                    controls
                        .admit_cancellation(*user_id, order_id, *at, message.command_id, &message.metadata)
                        .await
                }
            };
            let admission: Option<Admission> = match admitted {
                Ok(admission) => admission,
                Err(ControlError::Refused(rejection)) => {
                    if self.registry.get(order_id).await?.is_none() {
                        let retry_after_secs = rejection.retry_after_secs(self.deps.clock.now());
                        return Err(EngineError::Refused {
                            rejection,
                            retry_after_secs,
                        });
                    }
                    None
                }
                Err(error) if error.is_transient() => return Err(EngineError::Unavailable(error.to_string())),
                Err(error) => return Err(EngineError::Internal(error.to_string())),
            };
            message.co_write = admission.as_ref().map(Admission::co_write);
            let result = self.registry.execute(order_id, message.clone()).await;
            match (result, admission) {
                (Err(ActorError::CoWriteConflict { .. }), Some(admission)) if conflicts < TRADING_DAY_RETRIES_MAX => {
                    admission.conflicted();
                    conflicts += 1;
                }
                (result, admission) => {
                    if let Some(admission) = admission {
                        let co_written = result.as_ref().ok().and_then(|reply| reply.co_written.first());
                        admission.settle(controls, co_written);
                    }
                    return Ok(result?);
                }
            }
        }
    }

    /// A forced refresh: the order folded again from the first event of its
    /// stream, past every cache (the actor's state included), if `user_id` owns it.
    pub async fn reread(&self, order_id: Uuid, user_id: Uuid) -> Result<Order, EngineError> {
        let mut hydrated = crate::store::Hydrated::<crate::order::OrderAggregate>::default();
        hydrated
            .catch_up(self.deps.store.as_ref(), &crate::events::StreamId::order(order_id))
            .await
            .map_err(|error| match error {
                crate::store::FoldError::Store(error) if error.is_transient() => {
                    EngineError::Unavailable(error.to_string())
                }
                other => EngineError::Internal(other.to_string()),
            })?;
        match hydrated.state.order() {
            Some(order) if order.user_id == user_id => Ok(order.clone()),
            _ => Err(EngineError::NotFound(order_id)),
        }
    }

    /// The order as its stream says now, if `user_id` owns it.
    pub async fn owned(&self, order_id: Uuid, user_id: Uuid) -> Result<Order, EngineError> {
        match self.registry.get(order_id).await? {
            Some(order) if order.user_id == user_id => Ok(order),
            // Another user's order is indistinguishable from a missing one.
            _ => Err(EngineError::NotFound(order_id)),
        }
    }

    /// The order as its stream says now.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, EngineError> {
        Ok(self.registry.get(order_id).await?)
    }

    /// Stops the reactor (saving its checkpoint), then the order actors once
    /// the commands queued to them have run, then the actors' threads.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let reactor = self
            .reactor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(reactor) = reactor {
            if let Err(error) = reactor.await {
                tracing::warn!(%error, "reactor ended abnormally");
            }
        }
        self.registry.stop_all().await;
    }
}

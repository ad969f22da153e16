//! The engine and everything it depends on, wired as `serve` runs it: the log
//! behind group commit (when configured) and metering, the balance service
//! (embedded ledger or remote client, metered), accounts, market data (the
//! simulator, or the gRPC client when `ORDER_ENGINE_MARKET_DATA=grpc`), the clock. No front end and no follower: `Application` adds
//! those; the engine benches use this alone. Must never read the environment.

use std::str::FromStr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::AppError;
use crate::accounts::http::HttpAccountsClient;
use crate::accounts::{Accounts, EmbeddedAccounts};
use crate::balance::embedded::{EmbeddedLedger, LedgerConfig};
use crate::balance::http::HttpBalanceClient;
use crate::balance::BalanceService;
use crate::clients::{Breakers, RemoteServiceConfig};
use crate::clock::{Clock, SystemClock};
use crate::cluster::{Cluster, ClusterError, ClusterView, FencedStore, MembershipConfig, Partitioning};
use crate::config::source::{ACCOUNT_SERVICE_NAME, BALANCE_SERVICE_NAME, MARKET_DATA_SERVICE_NAME};
use crate::config::{ClusterMode, MarketDataSource, Settings};
use crate::configsvc::discovery::RegistryLookup;
use crate::controls::trading_day::UserControls;
use crate::engine::{CrashPoint, Engine, EngineConfig, EngineDeps};
use crate::market::{GrpcMarketData, MarketData, MarketSimulator, SimulatorConfig};
use crate::projections::{self, ReadModels};
use crate::store::{redact_url, EventStore, GroupCommitStore, PostgresConfig, StoreConfig, StoreError};
use crate::telemetry::metered::{MeteredBalance, MeteredStore};
use crate::telemetry::metrics::Metrics;

/// What a caller may put in place of the production parts. Each is optional;
/// what is not given is built from the settings exactly as `serve` builds it,
/// and the production wrappers (group commit, metering) go around whatever
/// is given.
#[derive(Default)]
pub struct Overrides {
    /// A log already open (a test's database with raw SQL access beside it,
    /// or a store that spies on or hooks its commits), instead of opening
    /// `settings.database_url`. Give the bare backend: group commit and
    /// metering are added here, around it.
    pub log: Option<GivenLog>,
    /// Time for the engine, the ledger, the market and request signatures (a
    /// manual clock in tests); the system clock otherwise.
    pub clock: Option<Arc<dyn Clock>>,
    /// A balance service in place of the embedded ledger or the remote client
    /// (a stub, a fault-injecting wrapper); still metered.
    pub balance: Option<Arc<dyn BalanceService>>,
    /// Halts the saga at a chosen step, to test recovery from a crash there.
    pub crash: Option<Arc<CrashPoint>>,
    /// Prices move only when the caller sets them: no feed ticks the market.
    pub frozen_market: bool,
    /// A market the caller owns and moves itself (the simulation's, which
    /// outlives each engine it restarts and moves in virtual time); no feed
    /// ticks it.
    pub market: Option<Arc<MarketSimulator>>,
    /// The engine's bounds and ladders in place of [`engine_config`] of the
    /// settings, for a bound `serve` does not read from its environment (a
    /// test that runs a saga out of its local retries). A shorter ladder is a
    /// setting (`retry_delays`), not this.
    pub engine: Option<EngineConfig>,
    /// The run-time values (the daily order limit, its reset time) and the
    /// feature flags from the config service; without them the settings'
    /// values hold for the whole run and every flag is off.
    pub live: Option<LiveInputs>,
    /// The config service whose registry the balance, account and market data
    /// clients ask again when their address stops answering; None: addresses are fixed.
    pub registry: Option<crate::configsvc::ConfigServiceClient>,
}

/// Values that change at run time, and the feature flags.
pub struct LiveInputs {
    pub runtime: tokio::sync::watch::Receiver<crate::config::RuntimeValues>,
    pub flags: Arc<crate::configsvc::flags::FeatureFlags>,
}

/// A log the caller opened.
pub struct GivenLog {
    pub store: Arc<dyn EventStore>,
    /// The read models beside it; None for a log that has none (the
    /// simulation's in-memory log), which only the engine stack can run on:
    /// the HTTP API and the orders projection read them.
    pub models: Option<Arc<dyn ReadModels>>,
}

/// The running engine and its dependencies. Dropping it leaves the engine's
/// actors to the actix system; call `Engine::shutdown` to stop them first.
pub struct EngineStack {
    pub engine: Arc<Engine>,
    /// The log as the engine sees it: group commit (when configured) and metering included.
    pub store: Arc<dyn EventStore>,
    /// None when the log was given without them (`ApplicationBuilder::engine_log`).
    pub models: Option<Arc<dyn ReadModels>>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// The simulator when it is the market data (the default, or a caller's);
    /// None with the gRPC market data client.
    pub market: Option<Arc<MarketSimulator>>,
    /// What the engine quotes from: the simulator or the gRPC client.
    pub market_data: Arc<dyn MarketData>,
    /// The embedded ledger when it is the balance service; None with a remote
    /// balance service or an override.
    pub ledger: Option<Arc<EmbeddedLedger>>,
    /// The remote clients' circuit breakers (none when all is embedded).
    pub breakers: Breakers,
    /// The task that ticks the market (the simulator's walk, or the gRPC
    /// client's poll); None when the market is frozen or the caller's.
    pub(super) feed: Option<JoinHandle<()>>,
    /// This process's membership of the cluster on PostgreSQL; None standalone.
    pub cluster: Option<Arc<Cluster>>,
}

impl EngineStack {
    /// Opens the log (unless given) and starts the engine on it. Needs an
    /// actix system: the order actors run on it (on arbiters of their own
    /// with more than one actor thread).
    pub async fn build(settings: &Settings, overrides: Overrides) -> Result<Self, AppError> {
        let store_error = |source| AppError::Store {
            database: redact_url(&settings.database_url),
            source,
        };
        let node = node_id(settings);
        let (store, models) = match overrides.log {
            Some(GivenLog { store, models }) => (store, models),
            None => {
                let mut config = StoreConfig::from_url(&settings.database_url).map_err(store_error)?;
                if let StoreConfig::Postgres(pg) = &mut config {
                    // Which process wrote what shows in pg_stat_activity (and to a test's trigger).
                    pg.application_name = format!("{}@{node}", PostgresConfig::ENGINE_APPLICATION_NAME);
                    pg.idle_in_transaction_timeout = pg
                        .idle_in_transaction_timeout
                        .min(settings.cluster.lease_ttl.mul_f64(5.0 / 6.0));
                }
                let (store, models) = projections::open(&config).await.map_err(store_error)?;
                (store, Some(models))
            }
        };
        let clock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let metrics = Arc::new(Metrics::new().map_err(AppError::Metrics)?);
        let cluster = join_cluster(settings, &node)
            .await
            .map_err(|source| AppError::Cluster {
                database: redact_url(&settings.database_url),
                source,
            })?;
        if let Some(cluster) = &cluster {
            cluster
                .register_metrics(metrics.registry())
                .map_err(AppError::Metrics)?;
        }
        let partitioning = Partitioning::new(settings.cluster.partitions);
        let view = cluster
            .as_ref()
            .map_or_else(|| ClusterView::standalone(partitioning), |c| c.view());
        // Innermost, so the check sits right before the commit.
        let store: Arc<dyn EventStore> = match &cluster {
            Some(_) => Arc::new(FencedStore::new(store, view.clone())),
            None => store,
        };
        let store: Arc<dyn EventStore> = if settings.group_commit {
            Arc::new(GroupCommitStore::new(store))
        } else {
            store
        };
        // Every append the engine makes (orders, sagas, ledger) is timed, queueing included.
        let store: Arc<dyn EventStore> = Arc::new(MeteredStore::new(store, Arc::clone(&metrics)));

        let mut breakers = Breakers::default();
        let (balance, ledger) = match (overrides.balance, &settings.balance_service_url) {
            (Some(balance), _) => (balance, None),
            (None, Some(url)) => {
                let mut client =
                    HttpBalanceClient::new(&remote(settings, url)).map_err(|source| AppError::RemoteClient {
                        variable: "BALANCE_SERVICE_URL",
                        url: url.clone(),
                        source,
                    })?;
                breakers.add("balance", client.breaker());
                if let Some(registry) = &overrides.registry {
                    client =
                        client.with_discovery(Arc::new(RegistryLookup::new(registry.clone(), BALANCE_SERVICE_NAME)));
                }
                (Arc::new(client) as Arc<dyn BalanceService>, None)
            }
            (None, None) => {
                let ledger = Arc::new(EmbeddedLedger::new(
                    Arc::clone(&store),
                    Arc::clone(&clock),
                    LedgerConfig {
                        demo_balance: settings.demo_balance,
                        ..LedgerConfig::default()
                    },
                ));
                (Arc::clone(&ledger) as Arc<dyn BalanceService>, Some(ledger))
            }
        };
        let balance: Arc<dyn BalanceService> = Arc::new(MeteredBalance::new(balance, Arc::clone(&metrics)));
        let accounts: Arc<dyn Accounts> = match &settings.account_service_url {
            Some(url) => {
                let client =
                    HttpAccountsClient::new(&remote(settings, url)).map_err(|source| AppError::RemoteClient {
                        variable: "ACCOUNT_SERVICE_URL",
                        url: url.clone(),
                        source,
                    })?;
                breakers.add("accounts", client.breaker());
                match &overrides.registry {
                    Some(registry) => Arc::new(
                        client.with_discovery(Arc::new(RegistryLookup::new(registry.clone(), ACCOUNT_SERVICE_NAME))),
                    ),
                    None => Arc::new(client),
                }
            }
            None => Arc::new(EmbeddedAccounts),
        };
        let (runtime, flags) = match overrides.live {
            Some(LiveInputs { runtime, flags }) => (runtime, Some(flags)),
            None => (tokio::sync::watch::channel(settings.runtime.clone()).1, None),
        };
        let controls = Arc::new(
            UserControls::new(
                Arc::clone(&store),
                settings.pretrade.clone(),
                runtime,
                flags,
                Arc::clone(&clock),
                metrics.registry(),
            )
            .map_err(AppError::Metrics)?,
        );
        let (market, market_data, feed): (_, Arc<dyn MarketData>, _) = match (overrides.market, &settings.market_data) {
            (Some(market), _) => (Some(Arc::clone(&market)), market as Arc<dyn MarketData>, None),
            (None, MarketDataSource::Simulator) => {
                let market = Arc::new(MarketSimulator::new(
                    SimulatorConfig {
                        seed: settings.simulator_seed,
                        tick_interval: settings.tick_interval,
                        ..SimulatorConfig::default()
                    },
                    Arc::clone(&clock),
                ));
                let feed = (!overrides.frozen_market).then(|| Arc::clone(&market).spawn());
                (Some(Arc::clone(&market)), market as Arc<dyn MarketData>, feed)
            }
            (None, MarketDataSource::Grpc { address, config }) => {
                let mut client =
                    GrpcMarketData::connect(address, config)
                        .await
                        .map_err(|source| AppError::MarketData {
                            address: address.0.clone(),
                            source,
                        })?;
                breakers.add("market_data", client.breaker());
                if let Some(registry) = &overrides.registry {
                    client = client.with_discovery(Arc::new(RegistryLookup::new(
                        registry.clone(),
                        MARKET_DATA_SERVICE_NAME,
                    )));
                }
                let client = Arc::new(client);
                let feed = (!overrides.frozen_market).then(|| Arc::clone(&client).spawn_feed());
                (None, client as Arc<dyn MarketData>, feed)
            }
        };

        let engine = Arc::new(
            Engine::start(
                overrides.engine.unwrap_or_else(|| engine_config(settings)),
                EngineDeps {
                    store: Arc::clone(&store),
                    balance,
                    market: Arc::clone(&market_data),
                    accounts,
                    clock: Arc::clone(&clock),
                    cluster: view,
                    controls: Arc::clone(&controls),
                },
                overrides.crash,
            )
            .map_err(AppError::Actors)?,
        );
        Ok(Self {
            engine,
            store,
            models,
            metrics,
            clock,
            market,
            market_data,
            ledger,
            breakers,
            feed,
            cluster,
        })
    }
}

/// The followers of the whole log that run once in a cluster, by checkpoint
/// name. The same list on every member, whatever it runs: the share each
/// member computes must agree (a cluster's members run one configuration).
pub fn leader_roles() -> Vec<String> {
    [
        crate::projections::ORDERS_PROJECTION,
        crate::controls::audit::AUDIT_CHECKPOINT,
    ]
    .into_iter()
    .chain(crate::amqp::Route::ALL.iter().map(|route| route.checkpoint()))
    .map(str::to_owned)
    .collect()
}

/// Joins the other processes on this PostgreSQL (clustered by default); None
/// on SQLite or with `ORDER_ENGINE_CLUSTER=off`.
async fn join_cluster(settings: &Settings, node: &str) -> Result<Option<Arc<Cluster>>, ClusterError> {
    let url = &settings.database_url;
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if settings.cluster.mode == ClusterMode::Off || !postgres {
        return Ok(None);
    }
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| ClusterError::Store(StoreError::Config(format!("invalid PostgreSQL URL: {e}"))))?
        .application_name(&format!("{}@{node} cluster", PostgresConfig::ENGINE_APPLICATION_NAME))
        // A beat stuck in the database must not outlast the lease it renews.
        .options([(
            "statement_timeout",
            format!("{}ms", settings.cluster.heartbeat.as_millis().max(500)),
        )]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(settings.cluster.heartbeat.max(std::time::Duration::from_secs(1)))
        .connect_with(options)
        .await
        .map_err(|e| ClusterError::Store(StoreError::from(e)))?;
    let cluster = Cluster::join(
        pool,
        MembershipConfig {
            node: node.to_owned(),
            partitioning: Partitioning::new(settings.cluster.partitions),
            roles: leader_roles(),
            lease_ttl: settings.cluster.lease_ttl,
            heartbeat: settings.cluster.heartbeat,
        },
    )
    .await?;
    Ok(Some(Arc::new(cluster)))
}

/// `ORDER_ENGINE_NODE_ID`, else `host:port` (stable across restarts, so a
/// restarted process takes its predecessor's leases at once), else, with
/// port 0 (tests), `host:` and a fresh id.
fn node_id(settings: &Settings) -> String {
    if let Some(node) = &settings.cluster.node_id {
        return node.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    match settings.http_addr.port() {
        0 => format!("{host}:{}", uuid::Uuid::new_v4()),
        port => format!("{host}:{port}"),
    }
}

/// The engine's bounds and ladders from the settings; the rest at their defaults.
pub fn engine_config(settings: &Settings) -> EngineConfig {
    let mut config = EngineConfig::default();
    config.actors.passivate_after = settings.passivate_after;
    config.actors.live_actors_max = settings.live_actors_max;
    config.actors.actor_threads = settings.actor_threads;
    config.saga.retry_delays = settings.retry_delays.clone();
    config.saga.market_buffer_bps = settings.market_buffer_bps;
    config
}

/// A remote service at `url`, signed with the engine's outbound credentials.
fn remote(settings: &Settings, url: &str) -> RemoteServiceConfig {
    RemoteServiceConfig {
        credentials: settings.outbound_credentials.clone(),
        ..RemoteServiceConfig::new(url.to_owned())
    }
}

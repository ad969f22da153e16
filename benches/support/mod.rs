//! What every bench shares: a database of its own per benchmark, the store
//! opened the way the engine opens it, realistic order events, and one
//! criterion configuration so a full `cargo bench` stays within minutes.
//!
//! A bench that cannot set up panics with the reason: criterion's closures
//! cannot return errors, and a bench that skipped silently would report
//! nothing while looking green.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod events;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use order_engine::projections::{PostgresReadModels, ReadModels, SqliteReadModels};
use order_engine::store::{EventStore, PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The local server the tests use; benches default to it too.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Seconds each benchmark measures for, unless `ORDER_ENGINE_BENCH_SECONDS` says otherwise.
const MEASUREMENT_SECONDS_DEFAULT: f64 = 3.0;

/// Criterion as every bench here uses it: short warm-up and measurement (the
/// whole run must fit in minutes on two cores), ten samples at least.
pub fn criterion() -> Criterion {
    let seconds = std::env::var("ORDER_ENGINE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(MEASUREMENT_SECONDS_DEFAULT);
    Criterion::default()
        .warm_up_time(Duration::from_secs_f64((seconds / 3.0).max(0.5)))
        .measurement_time(Duration::from_secs_f64(seconds))
        .sample_size(10)
        .configure_from_args()
}

/// The runtime async benches drive the store on: two workers, as the machine has two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime for the benches")
}

/// Runs `iters` rounds of `round` and returns the time spent inside them only:
/// each round prepares its input untimed, then times the part that counts.
pub fn timed_rounds<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut round: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Duration>,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for i in 0..iters {
            total += round(i).await;
        }
        total
    })
}

/// Times one future.
pub async fn time<T>(future: impl Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let out = future.await;
    (started.elapsed(), out)
}

/// A number from the environment, or `default` when the variable is unset or empty.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a whole number")),
        _ => Ok(default),
    }
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Which database a benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A database of one benchmark's own: a fresh PostgreSQL database
/// (`oe_bench_<random>`, dropped with this value) or a SQLite file in a temp dir.
pub enum BenchDb {
    Postgres {
        admin_url: String,
        url: String,
        name: String,
    },
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
}

impl BenchDb {
    pub async fn new(backend: Backend, bench: &str) -> Self {
        match backend {
            Backend::Postgres => Self::postgres(bench).await,
            Backend::Sqlite => Self::sqlite(),
        }
    }

    /// Never skips: a PostgreSQL bench without PostgreSQL is a failed run.
    pub async fn postgres(bench: &str) -> Self {
        let admin_url = database_url();
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|error| {
            panic!(
                "bench {bench}: PostgreSQL is unreachable at {}: {error}. Start it or point DATABASE_URL at one; \
                 the PostgreSQL benches never skip",
                order_engine::store::redact_url(&admin_url)
            )
        });
        let name = format!("oe_bench_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("bench {bench}: cannot create database {name}: {error}"));
        let url = replace_database(&admin_url, &name);
        Self::Postgres { admin_url, url, name }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temp dir for the SQLite bench database");
        let url = format!("sqlite:{}", dir.path().join("log.db").display());
        Self::Sqlite { _dir: dir, url }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Postgres { url, .. } | Self::Sqlite { url, .. } => url,
        }
    }

    /// The store, its read models and raw SQL access, opened as the engine opens them.
    ///
    /// The one place a bench builds its store: to measure a decorator (group
    /// commit, say), wrap `store` here and every bench measures it.
    pub async fn open(&self) -> Opened {
        match self {
            Self::Postgres { url, .. } => {
                // The engine's write pool; a smaller read pool than its default,
                // since other work shares this server's connection limit.
                let config = PostgresConfig {
                    read_connections: 4,
                    ..PostgresConfig::new(url.clone())
                };
                let store = PostgresStore::open(config)
                    .await
                    .unwrap_or_else(|error| panic!("cannot open the PostgreSQL store: {error}"));
                let raw = Raw::Postgres(store.writer_pool().clone());
                let models = Arc::new(PostgresReadModels::new(store.reader_pool().clone()));
                Opened {
                    store: Arc::new(store),
                    models,
                    raw,
                }
            }
            Self::Sqlite { url, .. } => {
                let store = SqliteStore::open(SqliteConfig::new(url.clone()))
                    .await
                    .unwrap_or_else(|error| panic!("cannot open the SQLite store: {error}"));
                let raw = Raw::Sqlite(store.writer_pool().clone());
                let models = Arc::new(SqliteReadModels::new(
                    store.writer_pool().clone(),
                    store.reader_pool().clone(),
                ));
                Opened {
                    store: Arc::new(store),
                    models,
                    raw,
                }
            }
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name, .. } = self {
            let (admin_url, database) = (admin_url.clone(), name.clone());
            // Drop may run inside a runtime; a thread with its own may block.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("warning: the bench database {name} could not be dropped; drop it by hand");
            }
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A store opened on a bench database.
pub struct Opened {
    pub store: Arc<dyn EventStore>,
    pub models: Arc<dyn ReadModels>,
    pub raw: Raw,
}

/// The store's own pool, for the untimed resets between rounds.
pub enum Raw {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Raw {
    pub async fn execute(&self, sql: &str) {
        let done = match self {
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        };
        done.unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let count = match self {
            Raw::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Raw::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        };
        count.unwrap_or_else(|error| panic!("{sql}: {error}"))
    }
}

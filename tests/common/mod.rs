//! Shared test harness: a fresh PostgreSQL database or SQLite file per test,
//! and the rule for missing services (fail under ORDER_ENGINE_REQUIRE_SERVICES=1,
//! otherwise skip loudly).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod amqp;
pub mod engine;
pub mod http;
pub mod ops;

use std::io::Write;
use std::sync::Arc;

use order_engine::projections::{PostgresReadModels, ReadModels, SqliteReadModels};
use order_engine::store::{
    BeforeCommitHook, EventStore, GroupCommitStore, MemoryStore, PostgresConfig, PostgresStore, SqliteConfig,
    SqliteStore,
};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The local server CI runs; used when DATABASE_URL is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn services_required() -> bool {
    std::env::var("ORDER_ENGINE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Reports a skipped test on the real stderr, past the test harness's capture.
pub fn report_skip(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set ORDER_ENGINE_REQUIRE_SERVICES=1 to make this a failure)"
    );
}

/// A database for one test; dropped (with its connections) when the test ends.
pub enum TestDb {
    Postgres {
        admin_url: String,
        url: String,
        name: String,
        group_commit: bool,
    },
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
        group_commit: bool,
    },
    /// The in-memory log: no SQL side, so only `open_log` opens it.
    Memory { log: MemoryStore, group_commit: bool },
}

/// A store opened on a test database, without the SQL access of [`TestStore`].
pub struct OpenLog {
    pub store: Arc<dyn EventStore>,
}

impl TestDb {
    /// A new PostgreSQL database, or `None` (after reporting) when the server is
    /// unreachable and services are not required.
    pub async fn postgres(test: &str) -> Option<Self> {
        let admin_url = database_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(connection) => connection,
            Err(error) if services_required() => {
                panic!("{test}: PostgreSQL is required (ORDER_ENGINE_REQUIRE_SERVICES=1) but unreachable at {admin_url}: {error}")
            }
            Err(error) => {
                report_skip(test, &format!("PostgreSQL unreachable at {admin_url}: {error}"));
                return None;
            }
        };
        let name = format!("oe_test_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = replace_database(&admin_url, &name);
        Some(Self::Postgres {
            admin_url,
            url,
            name,
            group_commit: false,
        })
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("log.db").display());
        Self::Sqlite {
            _dir: dir,
            url,
            group_commit: false,
        }
    }

    pub fn memory() -> Self {
        Self::Memory {
            log: MemoryStore::new(),
            group_commit: false,
        }
    }

    /// Stores opened on this database merge concurrent appends (group commit).
    pub fn with_group_commit(mut self) -> Self {
        match &mut self {
            Self::Postgres { group_commit, .. }
            | Self::Sqlite { group_commit, .. }
            | Self::Memory { group_commit, .. } => *group_commit = true,
        }
        self
    }

    fn group_commit(&self) -> bool {
        match self {
            Self::Postgres { group_commit, .. }
            | Self::Sqlite { group_commit, .. }
            | Self::Memory { group_commit, .. } => *group_commit,
        }
    }

    fn decorate(&self, store: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
        if self.group_commit() {
            Arc::new(GroupCommitStore::new(store))
        } else {
            store
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Postgres { url, .. } | Self::Sqlite { url, .. } => url,
            Self::Memory { .. } => "memory:",
        }
    }

    /// Opens the log alone (another "process" when called twice); every backend has this.
    pub async fn open_log(&self, hook: Option<BeforeCommitHook>) -> OpenLog {
        match self {
            Self::Memory { log, .. } => {
                let mut store = log.connect();
                if let Some(hook) = hook {
                    store = store.with_before_commit_hook(hook);
                }
                OpenLog {
                    store: self.decorate(Arc::new(store)),
                }
            }
            _ => OpenLog {
                store: self.open(hook).await.store,
            },
        }
    }

    /// Opens a store on this database (another "process" when called twice).
    pub async fn open(&self, hook: Option<BeforeCommitHook>) -> TestStore {
        let opened = self.open_backend(hook).await;
        TestStore {
            store: self.decorate(opened.store),
            ..opened
        }
    }

    /// [`open`](Self::open) without the group-commit decorator, for callers
    /// that add the production wrappers themselves (`Application::builder().log`).
    pub async fn open_backend(&self, hook: Option<BeforeCommitHook>) -> TestStore {
        match self {
            Self::Postgres { url, .. } => {
                // Small pools: many tests, each with several stores, share one server.
                let config = PostgresConfig {
                    read_connections: 3,
                    write_connections: 2,
                    ..PostgresConfig::new(url.clone())
                };
                let mut store = PostgresStore::open(config).await.unwrap();
                if let Some(hook) = hook {
                    store = store.with_before_commit_hook(hook);
                }
                let raw = Raw::Postgres(store.writer_pool().clone());
                let models = Arc::new(PostgresReadModels::new(store.reader_pool().clone()));
                TestStore {
                    store: Arc::new(store),
                    raw,
                    models,
                }
            }
            Self::Sqlite { url, .. } => {
                let mut store = SqliteStore::open(SqliteConfig::new(url.clone())).await.unwrap();
                if let Some(hook) = hook {
                    store = store.with_before_commit_hook(hook);
                }
                let raw = Raw::Sqlite(store.writer_pool().clone());
                let models = Arc::new(SqliteReadModels::new(
                    store.writer_pool().clone(),
                    store.reader_pool().clone(),
                ));
                TestStore {
                    store: Arc::new(store),
                    raw,
                    models,
                }
            }
            Self::Memory { .. } => panic!("the memory backend has no SQL side: open it with `open_log`"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name, .. } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; a thread with its own runtime may block.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                    }
                });
            })
            .join();
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

/// A store plus raw SQL access to its database, for tests that tamper.
pub struct TestStore {
    pub store: Arc<dyn EventStore>,
    pub raw: Raw,
    pub models: Arc<dyn ReadModels>,
}

pub enum Raw {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Raw {
    /// Runs one statement, returning the database's error message on failure.
    pub async fn execute(&self, sql: &str) -> Result<u64, String> {
        match self {
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
        }
        .map_err(|e| e.to_string())
    }
}

/// Generates one `#[tokio::test]` per backend for each named async test body
/// `fn(TestDb) -> impl Future`, so every backend runs the same code.
#[macro_export]
macro_rules! on_every_backend {
    (with_group_commit: $($name:ident),* $(,)?) => {
        $crate::on_every_backend!($($name),*);
        /// The same bodies through the group-commit decorator, as `serve` runs.
        mod postgres_group_commit {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let test = concat!("postgres_group_commit::", stringify!($name));
                    if let Some(db) = $crate::common::TestDb::postgres(test).await {
                        super::$name(db.with_group_commit()).await;
                    }
                }
            )*
        }
        mod sqlite_group_commit {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::TestDb::sqlite().with_group_commit()).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let test = concat!("postgres::", stringify!($name));
                    if let Some(db) = $crate::common::TestDb::postgres(test).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::TestDb::sqlite()).await;
                }
            )*
        }
    };
}

/// The memory backend's half of `on_every_backend!(with_group_commit: …)`, for
/// the bodies that need no SQL (they open their store with `open_log`).
#[macro_export]
macro_rules! on_memory_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::TestDb::memory()).await;
                }
            )*
        }
        /// The same bodies through the group-commit decorator.
        mod memory_group_commit {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::TestDb::memory().with_group_commit()).await;
                }
            )*
        }
    };
}

/// Like `on_every_backend!`, for tests that need an actix system (the engine).
#[macro_export]
macro_rules! on_every_backend_in_actix {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[actix_rt::test]
                async fn $name() {
                    let test = concat!("postgres::", stringify!($name));
                    if let Some(db) = $crate::common::TestDb::postgres(test).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
        mod sqlite {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name($crate::common::TestDb::sqlite()).await;
                }
            )*
        }
    };
}

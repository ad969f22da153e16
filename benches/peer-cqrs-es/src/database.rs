//! The run's own database: created empty with postgres-es's tables at the
//! start, emptied between concurrency levels, dropped at the end. Must never
//! touch any database it did not create: it only drops the name it made.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

/// The tables postgres-es 0.5 expects (events and snapshots).
const SCHEMA: &str = include_str!("../sql/schema.sql");

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("cannot {action} database {name}")]
    Admin {
        action: &'static str,
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot {action} in database {name}")]
    Query {
        action: &'static str,
        name: String,
        #[source]
        source: sqlx::Error,
    },
}

/// A database this process created and will drop.
pub struct RunDatabase {
    admin: PgConnectOptions,
    name: String,
}

impl RunDatabase {
    /// Creates `name` (dropping a leftover of the same name first) and its tables.
    /// `name` is made by the caller from digits and underscores only.
    pub async fn create(admin_url: &str, name: String) -> Result<Self, DatabaseError> {
        let admin = PgConnectOptions::from_str(admin_url).map_err(DatabaseError::Url)?;
        let database = Self { admin, name };
        database.admin_execute("recreate", &database.drop_sql()).await?;
        database
            .admin_execute("create", &format!("CREATE DATABASE \"{}\"", database.name))
            .await?;
        let mut connection = database
            .options()
            .connect()
            .await
            .map_err(|source| database.query_error("connect", source))?;
        // raw_sql: the schema file holds several statements.
        sqlx::raw_sql(SCHEMA)
            .execute(&mut connection)
            .await
            .map_err(|source| database.query_error("create the tables", source))?;
        let _ = connection.close().await;
        Ok(database)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the peer's pool connects.
    pub fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name).application_name("peer-cqrs-es")
    }

    /// Empties both tables, so each concurrency level starts from an empty log
    /// (append cost depends on the size of the primary-key index).
    pub async fn reset(&self, pool: &PgPool) -> Result<(), DatabaseError> {
        pool.execute("TRUNCATE events, snapshots")
            .await
            .map_err(|source| self.query_error("empty the tables", source))?;
        Ok(())
    }

    /// Events stored so far: the check that each order wrote its four.
    pub async fn event_count(&self, pool: &PgPool) -> Result<u64, DatabaseError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .map_err(|source| self.query_error("count the events", source))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The server's version, for the report.
    pub async fn server_version(&self, pool: &PgPool) -> Result<String, DatabaseError> {
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(pool)
            .await
            .map_err(|source| self.query_error("read the server version", source))
    }

    /// Drops the database, closing whatever connections are still open to it.
    pub async fn drop_database(self) -> Result<(), DatabaseError> {
        self.admin_execute("drop", &self.drop_sql()).await
    }

    fn drop_sql(&self) -> String {
        format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)
    }

    async fn admin_execute(&self, action: &'static str, sql: &str) -> Result<(), DatabaseError> {
        let admin_error = |source| DatabaseError::Admin {
            action,
            name: self.name.clone(),
            source,
        };
        let mut connection = PgConnection::connect_with(&self.admin).await.map_err(admin_error)?;
        let result = connection.execute(sql).await.map(|_| ()).map_err(admin_error);
        let _ = connection.close().await;
        result
    }

    fn query_error(&self, action: &'static str, source: sqlx::Error) -> DatabaseError {
        DatabaseError::Query {
            action,
            name: self.name.clone(),
            source,
        }
    }
}

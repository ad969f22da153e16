//! The membership and lease tables on PostgreSQL. Every expiry is computed
//! by the database's clock, so no two processes disagree about whether a
//! lease has run out; each statement is one round trip on a small table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row;
use uuid::Uuid;

use crate::store::StoreError;

/// This process as the tables know it.
#[derive(Debug, Clone)]
pub struct Me {
    pub node: String,
    pub incarnation: Uuid,
    pub partitions: u16,
    pub version: &'static str,
}

/// A row of `cluster_members`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub node: String,
    pub incarnation: Uuid,
    pub partitions: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Whether it had not expired when read.
    pub live: bool,
}

/// A row of `cluster_leases`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRow {
    pub name: String,
    pub node: String,
    pub incarnation: Uuid,
    pub token: i64,
    pub acquired_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub live: bool,
}

/// What a heartbeat of the membership row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Alive,
    /// A newer process started under this node name: this one must stop acting.
    Replaced,
}

fn interval(ttl: Duration) -> String {
    format!("{} milliseconds", ttl.as_millis())
}

pub struct Leases {
    pool: PgPool,
    ttl: Duration,
}

impl Leases {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl }
    }

    /// Joins (or keeps up) the membership. `takeover` on a process's first
    /// beat: it replaces an older incarnation of its node, whose leases it
    /// takes with new tokens (that incarnation is dead, or will find it
    /// was replaced and stop).
    pub async fn beat(&self, me: &Me, takeover: bool) -> Result<Heartbeat, StoreError> {
        let mut tx = self.pool.begin().await?;
        let kept = sqlx::query(
            "INSERT INTO cluster_members (node, incarnation, partitions, version, started_at, heartbeat_at, expires_at) \
             VALUES ($1, $2, $3, $4, now(), now(), now() + $5::interval) \
             ON CONFLICT (node) DO UPDATE SET incarnation = EXCLUDED.incarnation, partitions = EXCLUDED.partitions, \
             version = EXCLUDED.version, heartbeat_at = now(), expires_at = EXCLUDED.expires_at, \
             started_at = CASE WHEN cluster_members.incarnation = EXCLUDED.incarnation \
                          THEN cluster_members.started_at ELSE now() END \
             WHERE cluster_members.incarnation = EXCLUDED.incarnation OR $6 \
             RETURNING node",
        )
        .bind(&me.node)
        .bind(me.incarnation)
        .bind(i32::from(me.partitions))
        .bind(me.version)
        .bind(interval(self.ttl))
        .bind(takeover)
        .fetch_optional(&mut *tx)
        .await?;
        if kept.is_none() {
            tx.rollback().await?;
            return Ok(Heartbeat::Replaced);
        }
        if takeover {
            sqlx::query(
                "UPDATE cluster_leases SET incarnation = $2, token = token + 1, acquired_at = now(), \
                 renewed_at = now(), expires_at = now() + $3::interval \
                 WHERE node = $1 AND incarnation <> $2 AND expires_at > now()",
            )
            .bind(&me.node)
            .bind(me.incarnation)
            .bind(interval(self.ttl))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Heartbeat::Alive)
    }

    /// The partition count of live members that disagree with `partitions`.
    pub async fn disagreeing(&self, me: &Me) -> Result<Vec<(String, i32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, partitions FROM cluster_members \
             WHERE expires_at > now() AND partitions <> $1 AND node <> $2",
        )
        .bind(i32::from(me.partitions))
        .bind(&me.node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("node")?, r.try_get("partitions")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Extends every unexpired lease this incarnation holds; returns them with their tokens.
    pub async fn renew(&self, me: &Me) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "UPDATE cluster_leases SET renewed_at = now(), expires_at = now() + $3::interval \
             WHERE node = $1 AND incarnation = $2 AND expires_at > now() RETURNING name, token",
        )
        .bind(&me.node)
        .bind(me.incarnation)
        .bind(interval(self.ttl))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("token")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Takes the lease `name` when it is free or expired; its token when taken.
    pub async fn acquire(&self, me: &Me, name: &str) -> Result<Option<i64>, StoreError> {
        let token = sqlx::query_scalar(
            "INSERT INTO cluster_leases (name, node, incarnation, token, acquired_at, renewed_at, expires_at) \
             VALUES ($1, $2, $3, 1, now(), now(), now() + $4::interval) \
             ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node, incarnation = EXCLUDED.incarnation, \
             token = cluster_leases.token + 1, acquired_at = now(), renewed_at = now(), \
             expires_at = EXCLUDED.expires_at \
             WHERE cluster_leases.expires_at <= now() RETURNING token",
        )
        .bind(name)
        .bind(&me.node)
        .bind(me.incarnation)
        .bind(interval(self.ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(token)
    }

    /// Gives the lease up now (it expires; the next holder gets a higher token).
    pub async fn release(&self, me: &Me, name: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE cluster_leases SET expires_at = now() \
             WHERE name = $1 AND node = $2 AND incarnation = $3 AND expires_at > now()",
        )
        .bind(name)
        .bind(&me.node)
        .bind(me.incarnation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Leaves the cluster on a graceful stop: every lease free at once, the member gone.
    pub async fn leave(&self, me: &Me) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE cluster_leases SET expires_at = now() \
             WHERE node = $1 AND incarnation = $2 AND expires_at > now()",
        )
        .bind(&me.node)
        .bind(me.incarnation)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM cluster_members WHERE node = $1 AND incarnation = $2")
            .bind(&me.node)
            .bind(me.incarnation)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every member, live or not, by node name.
    pub async fn members(&self) -> Result<Vec<MemberRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, incarnation, partitions, version, started_at, heartbeat_at, expires_at, \
             expires_at > now() AS live FROM cluster_members ORDER BY node",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    node: r.try_get("node")?,
                    incarnation: r.try_get("incarnation")?,
                    partitions: r.try_get("partitions")?,
                    version: r.try_get("version")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    expires_at: r.try_get("expires_at")?,
                    live: r.try_get("live")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Every lease, live or not, by name.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, node, incarnation, token, acquired_at, renewed_at, expires_at, \
             expires_at > now() AS live FROM cluster_leases ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRow {
                    name: r.try_get("name")?,
                    node: r.try_get("node")?,
                    incarnation: r.try_get("incarnation")?,
                    token: r.try_get("token")?,
                    acquired_at: r.try_get("acquired_at")?,
                    renewed_at: r.try_get("renewed_at")?,
                    expires_at: r.try_get("expires_at")?,
                    live: r.try_get("live")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

//! The read models on PostgreSQL. Decimals cross as text (exact) and are cast
//! in SQL, so no float and no extra sqlx feature is involved.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::coalesce::{coalesce_page, RowBatch};
use super::order_rows::{OrderRow, OrderRowChange};
use super::read_models::{
    HistoryPage, IdempotencyClaim, IdempotencyRecord, ReadModels, HISTORY_LIMIT_MAX, IDEMPOTENCY_IN_FLIGHT,
};
use super::sql_common::{parse_enum, parse_opt_decimal};
use crate::order::OrderStatus;
use crate::store::StoreError;

const ORDER_COLUMNS: &str = "id, user_id, symbol, order_type, order_side, quantity::text AS quantity, \
     price::text AS price, stop_price::text AS stop_price, status, created_at, updated_at, executed_at, \
     execution_price::text AS execution_price, execution_value::text AS execution_value, \
     market_price_at_submission::text AS market_price_at_submission, market_data_timestamp, failure_reason";

pub struct PostgresReadModels {
    pool: PgPool,
}

impl PostgresReadModels {
    /// Uses the store's pool: the tables are created by the store's migrations.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn text(value: Option<Decimal>) -> Option<String> {
    value.map(|v| v.to_string())
}

fn row_to_order(row: &PgRow) -> Result<OrderRow, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { position: -1, reason };
    let quantity: String = row.try_get("quantity")?;
    Ok(OrderRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        symbol: row.try_get("symbol")?,
        order_type: parse_enum(&row.try_get::<String, _>("order_type")?)?,
        order_side: parse_enum(&row.try_get::<String, _>("order_side")?)?,
        quantity: Decimal::from_str(&quantity).map_err(|e| corrupt(format!("orders.quantity: {e}")))?,
        price: parse_opt_decimal(row.try_get("price")?)?,
        stop_price: parse_opt_decimal(row.try_get("stop_price")?)?,
        status: parse_enum(&row.try_get::<String, _>("status")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        executed_at: row.try_get("executed_at")?,
        execution_price: parse_opt_decimal(row.try_get("execution_price")?)?,
        execution_value: parse_opt_decimal(row.try_get("execution_value")?)?,
        market_price_at_submission: parse_opt_decimal(row.try_get("market_price_at_submission")?)?,
        market_data_timestamp: row.try_get("market_data_timestamp")?,
        failure_reason: row.try_get("failure_reason")?,
    })
}

fn row_to_idempotency(row: &PgRow) -> Result<IdempotencyRecord, StoreError> {
    Ok(IdempotencyRecord {
        idempotency_key: row.try_get("idempotency_key")?,
        user_id: row.try_get("user_id")?,
        order_id: row.try_get("order_id")?,
        status: row.try_get("status")?,
        request_hash: row.try_get("request_hash")?,
        response_data: row
            .try_get::<Option<serde_json::Value>, _>("response_data")?
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

#[async_trait]
impl ReadModels for PostgresReadModels {
    async fn commit(&self, projection: &str, changes: &[OrderRowChange], from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // An order's changes within the page fold into one row write; a page
        // is then a few bulk statements, not one round trip per event.
        for batch in coalesce_page(changes) {
            write_batch(&mut tx, "orders", &batch).await?;
        }
        // Last, so the locks are taken in the order `replay --swap` takes
        // them (the table, then the checkpoint row).
        let moved = sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at \
             WHERE checkpoints.position = $3 RETURNING name",
        )
        .bind(projection)
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        if moved.is_none() {
            tx.rollback().await?;
            return Err(StoreError::CheckpointMoved {
                name: projection.to_owned(),
                expected: from,
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
            .bind(projection)
            .fetch_optional(&self.pool)
            .await?;
        Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_order).transpose()
    }

    async fn history(
        &self,
        user_id: Uuid,
        status: Option<OrderStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<HistoryPage, StoreError> {
        let status = status.map(|s| s.as_str());
        let limit = i64::from(limit.clamp(1, HISTORY_LIMIT_MAX));
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(user_id)
        .bind(status)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)")
                .bind(user_id)
                .bind(status)
                .fetch_one(&self.pool)
                .await?;
        Ok(HistoryPage {
            orders: rows.iter().map(row_to_order).collect::<Result<_, _>>()?,
            total_count: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn idempotency(
        &self,
        user_id: Uuid,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM order_idempotency WHERE user_id = $1 AND idempotency_key = $2 AND expires_at > $3",
        )
        .bind(user_id)
        .bind(key)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_idempotency).transpose()
    }

    async fn claim(&self, record: IdempotencyRecord) -> Result<IdempotencyClaim, StoreError> {
        // The primary key decides: of concurrent claims exactly one inserts (or
        // replaces an expired record) and gets a row back; the others wait for
        // it to commit and see its row.
        let won = sqlx::query(
            "INSERT INTO order_idempotency (idempotency_key, user_id, order_id, status, request_hash, response_data, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_id, idempotency_key) DO UPDATE SET order_id = EXCLUDED.order_id, \
             status = EXCLUDED.status, request_hash = EXCLUDED.request_hash, response_data = EXCLUDED.response_data, \
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at \
             WHERE order_idempotency.expires_at <= EXCLUDED.created_at \
             RETURNING idempotency_key",
        )
        .bind(&record.idempotency_key)
        .bind(record.user_id)
        .bind(record.order_id)
        .bind(&record.status)
        .bind(&record.request_hash)
        .bind((!record.response_data.is_null()).then_some(&record.response_data))
        .bind(record.created_at)
        .bind(record.expires_at)
        .fetch_optional(&self.pool)
        .await?;
        if won.is_some() {
            return Ok(IdempotencyClaim::Won);
        }
        let row = sqlx::query("SELECT * FROM order_idempotency WHERE user_id = $1 AND idempotency_key = $2")
            .bind(record.user_id)
            .bind(&record.idempotency_key)
            .fetch_optional(&self.pool)
            .await?;
        let held = row.as_ref().map(row_to_idempotency).transpose()?;
        Ok(held.map_or(IdempotencyClaim::Released, IdempotencyClaim::Held))
    }

    async fn complete(
        &self,
        user_id: Uuid,
        key: &str,
        status: &str,
        response: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE order_idempotency SET status = $1, response_data = $2 WHERE user_id = $3 AND idempotency_key = $4",
        )
        .bind(status)
        .bind(response)
        .bind(user_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release(&self, user_id: Uuid, key: &str, claimed_at_or_before: DateTime<Utc>) -> Result<bool, StoreError> {
        let dropped = sqlx::query(
            "DELETE FROM order_idempotency \
             WHERE user_id = $1 AND idempotency_key = $2 AND status = $3 AND created_at <= $4",
        )
        .bind(user_id)
        .bind(key)
        .bind(IDEMPOTENCY_IN_FLIGHT)
        .bind(claimed_at_or_before)
        .execute(&self.pool)
        .await?;
        Ok(dropped.rows_affected() > 0)
    }
}

/// Bulk writes of a coalesced batch into `table` (`orders`, or a rebuild of it): one INSERT … UNNEST for new rows, one
/// UPDATE … FROM UNNEST for older ones. Decimals cross as text, cast to
/// numeric in SQL exactly as the live projection's statements do.
pub async fn write_batch(conn: &mut PgConnection, table: &str, batch: &RowBatch) -> Result<(), sqlx::Error> {
    let rows = batch.inserts();
    if !rows.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {table} (id, user_id, symbol, order_type, order_side, quantity, price, stop_price, status, \
             created_at, updated_at, executed_at, execution_price, execution_value, market_price_at_submission, \
             market_data_timestamp, failure_reason) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[]::numeric[], \
             $7::text[]::numeric[], $8::text[]::numeric[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
             $12::timestamptz[], $13::text[]::numeric[], $14::text[]::numeric[], $15::text[]::numeric[], \
             $16::timestamptz[], $17::text[]) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.user_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.symbol.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.order_type.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.order_side.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.quantity.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| text(r.price)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| text(r.stop_price)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.executed_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| text(r.execution_price)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| text(r.execution_value)).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| text(r.market_price_at_submission))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.market_data_timestamp).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.failure_reason.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let updates = batch.updates();
    if !updates.is_empty() {
        sqlx::query(&format!(
            "UPDATE {table} AS o SET status = COALESCE(u.status, o.status), updated_at = u.updated_at, \
             executed_at = COALESCE(u.executed_at, o.executed_at), \
             execution_price = COALESCE(u.execution_price, o.execution_price), \
             execution_value = COALESCE(u.execution_value, o.execution_value), \
             failure_reason = COALESCE(u.failure_reason, o.failure_reason) \
             FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[]::numeric[], \
             $6::text[]::numeric[], $7::text[]) \
             AS u(id, status, updated_at, executed_at, execution_price, execution_value, failure_reason) \
             WHERE o.id = u.id"
        ))
        .bind(updates.iter().map(|u| u.id).collect::<Vec<_>>())
        .bind(updates.iter().map(|u| u.status.map(|s| s.as_str())).collect::<Vec<_>>())
        .bind(updates.iter().map(|u| u.updated_at).collect::<Vec<_>>())
        .bind(updates.iter().map(|u| u.executed_at).collect::<Vec<_>>())
        .bind(updates.iter().map(|u| text(u.execution_price)).collect::<Vec<_>>())
        .bind(updates.iter().map(|u| text(u.execution_value)).collect::<Vec<_>>())
        .bind(updates.iter().map(|u| u.failure_reason.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

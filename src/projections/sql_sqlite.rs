//! The read models on SQLite: decimals, UUIDs and times as TEXT. Writes go
//! through the store's single writer connection, so they serialise with appends.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
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

pub struct SqliteReadModels {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteReadModels {
    pub fn new(writer: SqlitePool, reader: SqlitePool) -> Self {
        Self { writer, reader }
    }
}

fn text(value: Option<Decimal>) -> Option<String> {
    value.map(|v| v.to_string())
}

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let raw: String = row.try_get(column)?;
    Uuid::parse_str(&raw).map_err(|e| StoreError::Corrupt {
        position: -1,
        reason: format!("{column} {raw:?}: {e}"),
    })
}

fn row_to_order(row: &SqliteRow) -> Result<OrderRow, StoreError> {
    let quantity: String = row.try_get("quantity")?;
    Ok(OrderRow {
        id: uuid(row, "id")?,
        user_id: uuid(row, "user_id")?,
        symbol: row.try_get("symbol")?,
        order_type: parse_enum(&row.try_get::<String, _>("order_type")?)?,
        order_side: parse_enum(&row.try_get::<String, _>("order_side")?)?,
        quantity: Decimal::from_str(&quantity).map_err(|e| StoreError::Corrupt {
            position: -1,
            reason: format!("orders.quantity: {e}"),
        })?,
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

fn row_to_idempotency(row: &SqliteRow) -> Result<IdempotencyRecord, StoreError> {
    let response: Option<String> = row.try_get("response_data")?;
    Ok(IdempotencyRecord {
        idempotency_key: row.try_get("idempotency_key")?,
        user_id: uuid(row, "user_id")?,
        order_id: uuid(row, "order_id")?,
        status: row.try_get("status")?,
        request_hash: row.try_get("request_hash")?,
        response_data: response
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                position: -1,
                reason: format!("order_idempotency.response_data: {e}"),
            })?
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

#[async_trait]
impl ReadModels for SqliteReadModels {
    async fn commit(&self, projection: &str, changes: &[OrderRowChange], from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let at: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
            .bind(projection)
            .fetch_optional(&mut *tx)
            .await?;
        if at.and_then(|p| u64::try_from(p).ok()).unwrap_or(0) != from {
            tx.rollback().await?;
            return Err(StoreError::CheckpointMoved {
                name: projection.to_owned(),
                expected: from,
            });
        }
        // An order's changes within the page fold into one row write.
        for batch in coalesce_page(changes) {
            write_batch(&mut tx, "orders", &batch).await?;
        }
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(projection)
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
            .bind(projection)
            .fetch_optional(&self.reader)
            .await?;
        Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM orders WHERE id = ?")
            .bind(order_id.to_string())
            .fetch_optional(&self.reader)
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
        let rows = sqlx::query(
            "SELECT * FROM orders WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) \
             ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4",
        )
        .bind(user_id.to_string())
        .bind(status)
        .bind(i64::from(limit.clamp(1, HISTORY_LIMIT_MAX)))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2)")
                .bind(user_id.to_string())
                .bind(status)
                .fetch_one(&self.reader)
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
        let row =
            sqlx::query("SELECT * FROM order_idempotency WHERE user_id = ? AND idempotency_key = ? AND expires_at > ?")
                .bind(user_id.to_string())
                .bind(key)
                .bind(now)
                .fetch_optional(&self.reader)
                .await?;
        row.as_ref().map(row_to_idempotency).transpose()
    }

    async fn claim(&self, record: IdempotencyRecord) -> Result<IdempotencyClaim, StoreError> {
        // One statement, on the single writer connection: of concurrent claims
        // exactly one inserts (or replaces an expired record) and gets a row back.
        let won = sqlx::query(
            "INSERT INTO order_idempotency (idempotency_key, user_id, order_id, status, request_hash, response_data, \
             created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (user_id, idempotency_key) DO UPDATE SET order_id = excluded.order_id, \
             status = excluded.status, request_hash = excluded.request_hash, response_data = excluded.response_data, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE order_idempotency.expires_at <= excluded.created_at \
             RETURNING idempotency_key",
        )
        .bind(&record.idempotency_key)
        .bind(record.user_id.to_string())
        .bind(record.order_id.to_string())
        .bind(&record.status)
        .bind(&record.request_hash)
        .bind((!record.response_data.is_null()).then(|| record.response_data.to_string()))
        .bind(record.created_at)
        .bind(record.expires_at)
        .fetch_optional(&self.writer)
        .await?;
        if won.is_some() {
            return Ok(IdempotencyClaim::Won);
        }
        let row = sqlx::query("SELECT * FROM order_idempotency WHERE user_id = ? AND idempotency_key = ?")
            .bind(record.user_id.to_string())
            .bind(&record.idempotency_key)
            .fetch_optional(&self.writer)
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
            "UPDATE order_idempotency SET status = ?, response_data = ? WHERE user_id = ? AND idempotency_key = ?",
        )
        .bind(status)
        .bind(response.to_string())
        .bind(user_id.to_string())
        .bind(key)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn release(&self, user_id: Uuid, key: &str, claimed_at_or_before: DateTime<Utc>) -> Result<bool, StoreError> {
        let dropped = sqlx::query(
            "DELETE FROM order_idempotency WHERE user_id = ? AND idempotency_key = ? AND status = ? AND created_at <= ?",
        )
        .bind(user_id.to_string())
        .bind(key)
        .bind(IDEMPOTENCY_IN_FLIGHT)
        .bind(claimed_at_or_before)
        .execute(&self.writer)
        .await?;
        Ok(dropped.rows_affected() > 0)
    }
}

/// Rows per multi-row INSERT (17 columns: 1,700 parameters, far below
/// SQLite's limit of 32,766).
const INSERT_ROWS: usize = 100;

/// Writes a coalesced batch into `table` (`orders`, or a rebuild of it): multi-row INSERTs, then one prepared UPDATE per older
/// row (cheap inside one transaction). Values are bound as the live
/// projection binds them, so the stored text is the same.
pub async fn write_batch(conn: &mut SqliteConnection, table: &str, batch: &RowBatch) -> Result<(), sqlx::Error> {
    for chunk in batch.inserts().chunks(INSERT_ROWS) {
        let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO {table} (id, user_id, symbol, order_type, order_side, quantity, price, stop_price, status, \
             created_at, updated_at, executed_at, execution_price, execution_value, market_price_at_submission, \
             market_data_timestamp, failure_reason) VALUES {placeholders}"
        );
        let mut query = sqlx::query(&sql);
        for r in chunk {
            query = query
                .bind(r.id.to_string())
                .bind(r.user_id.to_string())
                .bind(&r.symbol)
                .bind(r.order_type.as_str())
                .bind(r.order_side.as_str())
                .bind(r.quantity.to_string())
                .bind(text(r.price))
                .bind(text(r.stop_price))
                .bind(r.status.as_str())
                .bind(r.created_at)
                .bind(r.updated_at)
                .bind(r.executed_at)
                .bind(text(r.execution_price))
                .bind(text(r.execution_value))
                .bind(text(r.market_price_at_submission))
                .bind(r.market_data_timestamp)
                .bind(&r.failure_reason);
        }
        query.execute(&mut *conn).await?;
    }
    let sql = format!(
        "UPDATE {table} SET status = COALESCE(?2, status), updated_at = ?3, \
         executed_at = COALESCE(?4, executed_at), execution_price = COALESCE(?5, execution_price), \
         execution_value = COALESCE(?6, execution_value), failure_reason = COALESCE(?7, failure_reason) WHERE id = ?1"
    );
    for u in batch.updates() {
        sqlx::query(&sql)
            .bind(u.id.to_string())
            .bind(u.status.map(|s| s.as_str()))
            .bind(u.updated_at)
            .bind(u.executed_at)
            .bind(text(u.execution_price))
            .bind(text(u.execution_value))
            .bind(&u.failure_reason)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

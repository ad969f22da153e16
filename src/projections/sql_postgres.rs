//! The read models on PostgreSQL. Decimals cross as text (exact) and are cast
//! in SQL, so no float and no extra sqlx feature is involved.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::order_rows::{OrderRow, OrderRowChange};
use super::read_models::{HistoryPage, IdempotencyRecord, ReadModels, HISTORY_LIMIT_MAX};
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
    async fn commit(&self, projection: &str, changes: &[OrderRowChange], position: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for change in changes {
            match change {
                OrderRowChange::Insert(row) => {
                    sqlx::query(
                        "INSERT INTO orders (id, user_id, symbol, order_type, order_side, quantity, price, stop_price, \
                         status, created_at, updated_at, market_price_at_submission, market_data_timestamp) \
                         VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::numeric, $8::numeric, $9, $10, $11, $12::numeric, $13)",
                    )
                    .bind(row.id)
                    .bind(row.user_id)
                    .bind(&row.symbol)
                    .bind(row.order_type.as_str())
                    .bind(row.order_side.as_str())
                    .bind(row.quantity.to_string())
                    .bind(text(row.price))
                    .bind(text(row.stop_price))
                    .bind(row.status.as_str())
                    .bind(row.created_at)
                    .bind(row.updated_at)
                    .bind(text(row.market_price_at_submission))
                    .bind(row.market_data_timestamp)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderRowChange::Update {
                    id,
                    status,
                    updated_at,
                    executed_at,
                    execution_price,
                    execution_value,
                    failure_reason,
                } => {
                    sqlx::query(
                        "UPDATE orders SET status = COALESCE($2, status), updated_at = $3, \
                         executed_at = COALESCE($4, executed_at), \
                         execution_price = COALESCE($5::numeric, execution_price), \
                         execution_value = COALESCE($6::numeric, execution_value), \
                         failure_reason = COALESCE($7, failure_reason) WHERE id = $1",
                    )
                    .bind(id)
                    .bind(status.map(|s| s.as_str()))
                    .bind(updated_at)
                    .bind(executed_at)
                    .bind(text(*execution_price))
                    .bind(text(*execution_value))
                    .bind(failure_reason)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
        )
        .bind(projection)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
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

    async fn remember(&self, record: IdempotencyRecord) -> Result<IdempotencyRecord, StoreError> {
        // An expired record gives way; a live one is kept and returned.
        let row = sqlx::query(
            "INSERT INTO order_idempotency (idempotency_key, user_id, order_id, status, request_hash, response_data, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_id, idempotency_key) DO UPDATE SET order_id = EXCLUDED.order_id, \
             status = EXCLUDED.status, request_hash = EXCLUDED.request_hash, response_data = EXCLUDED.response_data, \
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at \
             WHERE order_idempotency.expires_at <= EXCLUDED.created_at \
             RETURNING *",
        )
        .bind(&record.idempotency_key)
        .bind(record.user_id)
        .bind(record.order_id)
        .bind(&record.status)
        .bind(&record.request_hash)
        .bind(&record.response_data)
        .bind(record.created_at)
        .bind(record.expires_at)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => row_to_idempotency(&row),
            None => self
                .idempotency(record.user_id, &record.idempotency_key, record.created_at)
                .await?
                .ok_or(StoreError::Internal(
                    "an idempotency record vanished while it was being stored",
                )),
        }
    }
}

//! Stream ids: `<category>-<id>`, for example `order-0190…`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest stream id accepted; keeps index entries small.
pub const STREAM_ID_LEN_MAX: usize = 200;

/// The id of one stream in the log. Its category is the text before the first `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("stream id is empty")]
    Empty,
    #[error("stream id is {0} characters long; at most {STREAM_ID_LEN_MAX} are allowed")]
    TooLong(usize),
    #[error("stream id {0:?} contains whitespace or control characters")]
    BadCharacters(String),
}

impl StreamId {
    pub fn new(raw: impl Into<String>) -> Result<Self, StreamIdError> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if raw.len() > STREAM_ID_LEN_MAX {
            return Err(StreamIdError::TooLong(raw.len()));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(StreamIdError::BadCharacters(raw));
        }
        Ok(Self(raw))
    }

    /// The stream of one order.
    pub fn order(order_id: Uuid) -> Self {
        Self(format!("order-{order_id}"))
    }

    /// The stream of one order's saga.
    pub fn saga(order_id: Uuid) -> Self {
        Self(format!("saga-{order_id}"))
    }

    /// The ledger stream of one account.
    pub fn account(user_id: Uuid) -> Self {
        Self(format!("account-{user_id}"))
    }

    /// The failed tries of one order's submission: its own stream, because
    /// they happen before the order's stream has its first event.
    pub fn submission(order_id: Uuid) -> Self {
        Self(format!("submission-{order_id}"))
    }

    /// One user's trading day (the pre-trade controls): one stream a day, so
    /// no fold reads more than a day's orders.
    pub fn trading_day(user_id: Uuid, day: chrono::NaiveDate) -> Self {
        Self(format!("tradingday-{user_id}-{}", day.format("%Y%m%d")))
    }

    /// The uuid of a `<category>-<uuid>` stream (`order`, `saga`, `account`,
    /// `submission`), if it is one.
    pub fn uuid_in(&self, category: &str) -> Option<Uuid> {
        self.0
            .strip_prefix(category)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|id| Uuid::parse_str(id).ok())
    }

    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or(self.0.as_str(), |(category, _)| category)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        StreamId::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_validated_and_categorised() {
        let id = Uuid::nil();
        assert_eq!(StreamId::order(id).category(), "order");
        assert_eq!(StreamId::order(id).uuid_in("order"), Some(id));
        assert_eq!(StreamId::saga(id).uuid_in("order"), None);
        assert_eq!(StreamId::new("order-nope").ok().and_then(|s| s.uuid_in("order")), None);
        assert_eq!(StreamId::saga(id).as_str(), format!("saga-{id}"));
        assert_eq!(StreamId::submission(id).category(), "submission");
        assert_eq!(StreamId::submission(id).uuid_in("submission"), Some(id));
        assert_eq!(StreamId::submission(id).uuid_in("order"), None);
        assert_eq!(StreamId::new(""), Err(StreamIdError::Empty));
        assert!(matches!(StreamId::new("a b"), Err(StreamIdError::BadCharacters(_))));
        assert!(matches!(
            StreamId::new("x".repeat(201)),
            Err(StreamIdError::TooLong(201))
        ));
        assert_eq!(
            StreamId::new("plain").map(|s| s.category().to_owned()),
            Ok("plain".to_owned())
        );
    }
}

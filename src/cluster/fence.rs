//! Appends only while this process's leases hold: the last line of defence
//! for a process that was stopped past its lease time and resumes with work
//! in flight (a saga mid-step, a fill sent to an actor). Everything else the
//! store does passes straight through.

use std::sync::Arc;

use super::view::ClusterView;
use crate::store::{AppendRequest, Appended, Conflict, EventStore, StoreError};

pub struct FencedStore {
    inner: Arc<dyn EventStore>,
    view: ClusterView,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn EventStore>, view: ClusterView) -> Self {
        Self { inner, view }
    }
}

crate::store_wrapper!(FencedStore {
    async fn append_batch(&self, requests: Vec<AppendRequest>) -> Result<Vec<Result<Appended, Conflict>>, StoreError> {
        // The check and the commit are not one step; what closes the gap is
        // the server ending any session idle in a transaction before the
        // lease runs out (`PostgresConfig::idle_in_transaction_timeout`) and
        // the expected version every append carries.
        if !self.view.is_valid() {
            return Err(StoreError::Fenced);
        }
        self.inner.append_batch(requests).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        if !self.view.is_valid() {
            return Err(StoreError::Fenced);
        }
        self.inner.save_checkpoint(name, position).await
    }
});

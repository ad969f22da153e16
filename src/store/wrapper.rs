//! `store_wrapper!`: an `EventStore` that wraps another (`self.inner`) and
//! changes only its writes. The wrapper writes `append_batch` and
//! `save_checkpoint`; every read passes through unchanged. One macro instead
//! of the same ten pass-through methods in each decorator (metering, group
//! commit, the cluster's fence).

/// Implements `EventStore` for `$wrapper` (which has `inner: Arc<dyn EventStore>`):
/// the given methods, plus every read passed to `self.inner`.
#[macro_export]
#[doc(hidden)]
macro_rules! store_wrapper {
    ($wrapper:ty { $($writes:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::EventStore for $wrapper {
            $($writes)*

            async fn read_stream(
                &self,
                stream_id: &$crate::events::StreamId,
                from_version: u64,
                max_count: usize,
            ) -> Result<Vec<$crate::events::RecordedEvent>, $crate::store::StoreError> {
                self.inner.read_stream(stream_id, from_version, max_count).await
            }

            async fn read_all(
                &self,
                after_position: u64,
                max_count: usize,
            ) -> Result<Vec<$crate::events::RecordedEvent>, $crate::store::StoreError> {
                self.inner.read_all(after_position, max_count).await
            }

            async fn read_chained(
                &self,
                after_position: u64,
                max_count: usize,
            ) -> Result<Vec<$crate::store::ChainedEvent>, $crate::store::StoreError> {
                self.inner.read_chained(after_position, max_count).await
            }

            async fn import_chained(
                &self,
                events: Vec<$crate::store::ChainedEvent>,
            ) -> Result<(), $crate::store::StoreError> {
                self.inner.import_chained(events).await
            }

            async fn command_record(
                &self,
                stream_id: &$crate::events::StreamId,
                command_id: uuid::Uuid,
            ) -> Result<Option<$crate::store::Appended>, $crate::store::StoreError> {
                self.inner.command_record(stream_id, command_id).await
            }

            async fn stream_version(
                &self,
                stream_id: &$crate::events::StreamId,
            ) -> Result<u64, $crate::store::StoreError> {
                self.inner.stream_version(stream_id).await
            }

            async fn head_position(&self) -> Result<u64, $crate::store::StoreError> {
                self.inner.head_position().await
            }

            async fn wait_for_append(&self, after_position: u64, timeout: std::time::Duration) {
                self.inner.wait_for_append(after_position, timeout).await;
            }

            async fn load_checkpoint(&self, name: &str) -> Result<u64, $crate::store::StoreError> {
                self.inner.load_checkpoint(name).await
            }

            fn backend(&self) -> &'static str {
                self.inner.backend()
            }
        }
    };
}

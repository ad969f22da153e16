//! Running one command against one aggregate's stream: the one loop every
//! shell uses (the order actor, the saga runner, the embedded ledger).
//! Hydrate, decide, append at the expected version; when another writer got
//! there first, reload and decide again, a bounded number of times.
//!
//! Never writes anything `decide` did not produce, and never decides on a
//! state the log cannot justify: a state is only ever folded from the stream
//! or from events this loop just appended.

use std::time::Duration;

use uuid::Uuid;

use super::{append_atomic, fold_stream, AppendRequest, Appended, Conflict, EventStore, FoldError, StoreError};
use crate::aggregate::Aggregate;
use crate::events::{encode, EventFamily, EventMetadata, StreamId};

/// The id of the `index`-th event a command appends to `stream`. Derived,
/// never drawn: a retried command carries the same events, and a run replays
/// to the same log. The stream is in the name because the store keys a
/// command by stream and command id (one operator key, so one command id, may
/// fund several accounts), while an event id is unique in the whole log.
pub fn event_id(command_id: Uuid, stream: &StreamId, index: usize) -> Uuid {
    Uuid::new_v5(&command_id, format!("{stream}:{index}").as_bytes())
}

/// An aggregate's state as folded from its stream, and the stream version it
/// was folded up to.
pub struct Hydrated<A: Aggregate> {
    pub state: A::State,
    pub version: u64,
}

impl<A: Aggregate> Default for Hydrated<A> {
    fn default() -> Self {
        Self {
            state: A::State::default(),
            version: 0,
        }
    }
}

impl<A: Aggregate> Clone for Hydrated<A> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            version: self.version,
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for Hydrated<A>
where
    A::State: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hydrated")
            .field("state", &self.state)
            .field("version", &self.version)
            .finish()
    }
}

impl<A> Hydrated<A>
where
    A: Aggregate,
    A::Event: EventFamily,
{
    /// Folds whatever the stream holds past `version` (see [`fold_stream`]).
    pub async fn catch_up(&mut self, store: &dyn EventStore, stream: &StreamId) -> Result<(), FoldError> {
        fold_stream::<A>(store, stream, &mut self.state, &mut self.version).await
    }
}

/// When [`execute`] reads the stream before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Catch up before every decision: the state held may be behind (a cache
    /// shared with other callers).
    CatchUp,
    /// Decide on the state held, which only this caller writes in this
    /// process: the append's expected version finds out whether another
    /// process moved the stream, so no command pays a read it does not need.
    /// With `reload_on_refusal`, a refusal is decided again once after
    /// catching up, if that finds new events (it may have been decided on a
    /// state that was behind, or not loaded yet).
    Held { reload_on_refusal: bool },
}

/// How [`execute`] runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub freshness: Freshness,
    /// Lost races on the stream before giving up with `Contended`.
    pub conflict_retries_max: u32,
}

/// What a caller does around the append; every step defaults to nothing.
pub trait Around<A: Aggregate> {
    /// Why a caller stops before appending (a test's crash point).
    type Halt;

    /// Other streams to commit with the decided events, all or nothing,
    /// computed from them (and their ids). Called again after every reload.
    fn co_write(&mut self, _events: &[A::Event], _event_ids: &[Uuid]) -> Result<Vec<AppendRequest>, String> {
        Ok(Vec::new())
    }

    /// Just before each append.
    fn before_append(&mut self) -> Result<(), Self::Halt> {
        Ok(())
    }

    /// Just after each append that committed (or was found committed before).
    fn after_append(&mut self) {}

    /// How long to wait before reloading after the `conflicts`-th lost race:
    /// at once by default; a caller racing other processes for a hot stream
    /// backs off so they do not collide again in step.
    fn pause_after_conflict(&mut self, _conflicts: u32) -> Duration {
        Duration::ZERO
    }
}

/// Nothing around the append.
pub struct Plain;

impl<A: Aggregate> Around<A> for Plain {
    type Halt = std::convert::Infallible;
}

/// What a command came to.
#[derive(Debug)]
pub enum Executed<E> {
    /// `decide` produced no events: the state already reflects the command.
    Unchanged,
    /// Appended now; the hydrated state includes the events.
    Written {
        appended: Appended,
        /// Where the co-written streams landed, in the order `co_write` gave them.
        co_written: Vec<Appended>,
        /// The events written, with their ids.
        events: Vec<(Uuid, E)>,
    },
    /// The command id was applied before (a retry after an unknown outcome,
    /// or another process): nothing was written, and the hydrated state was
    /// caught up with the stream.
    Repeated {
        appended: Appended,
        co_written: Vec<Appended>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<R, H> {
    /// `decide` refused the command (after the reload its policy allows).
    #[error(transparent)]
    Rejected(R),
    #[error(transparent)]
    Fold(FoldError),
    #[error(transparent)]
    Store(StoreError),
    #[error("an event could not be encoded: {0}")]
    Encode(String),
    /// Every append lost the race for the stream's version.
    #[error("stream {stream}: {attempts} appends in a row lost the race to other writers")]
    Contended { stream: StreamId, attempts: u32 },
    /// A co-written stream had moved: nothing was written; whoever owns that
    /// stream reloads it and retries.
    #[error("a stream committed with it moved on: {0}")]
    CoWriteConflict(Conflict),
    #[error("the streams to commit with it could not be written: {0}")]
    CoWriteRefused(String),
    /// The caller's `before_append` stopped it.
    #[error("stopped before appending")]
    Halted(H),
}

impl<R, H> From<FoldError> for ExecuteError<R, H> {
    fn from(error: FoldError) -> Self {
        Self::Fold(error)
    }
}

/// Runs `command` against `stream`, starting from `hydrated` and leaving in
/// it the state after the command (or as far as the stream was read).
#[allow(clippy::too_many_arguments)]
pub async fn execute<A, W>(
    store: &dyn EventStore,
    stream: &StreamId,
    hydrated: &mut Hydrated<A>,
    command: &A::Command,
    command_id: Uuid,
    metadata: &EventMetadata,
    policy: Policy,
    around: &mut W,
) -> Result<Executed<A::Event>, ExecuteError<A::Rejection, W::Halt>>
where
    A: Aggregate,
    A::Event: EventFamily,
    W: Around<A>,
{
    let mut conflicts = 0_u32;
    let mut reloaded = false;
    loop {
        if policy.freshness == Freshness::CatchUp {
            hydrated.catch_up(store, stream).await?;
        }
        let events = match A::decide(&hydrated.state, command) {
            Ok(events) => events,
            Err(rejection) => {
                if matches!(
                    policy.freshness,
                    Freshness::Held {
                        reload_on_refusal: true
                    }
                ) && !reloaded
                {
                    let before = hydrated.version;
                    hydrated.catch_up(store, stream).await?;
                    reloaded = true;
                    if hydrated.version != before {
                        continue;
                    }
                }
                return Err(ExecuteError::Rejected(rejection));
            }
        };
        if events.is_empty() {
            return Ok(Executed::Unchanged);
        }
        let event_ids: Vec<Uuid> = (0..events.len()).map(|i| event_id(command_id, stream, i)).collect();
        let encoded = events
            .iter()
            .zip(&event_ids)
            .map(|(event, id)| encode(event, *id, metadata.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ExecuteError::Encode(e.to_string()))?;
        let mut requests = vec![AppendRequest {
            stream_id: stream.clone(),
            expected_version: hydrated.version,
            command_id: Some(command_id),
            events: encoded,
            linked: false,
        }];
        requests.extend(
            around
                .co_write(&events, &event_ids)
                .map_err(ExecuteError::CoWriteRefused)?,
        );
        around.before_append().map_err(ExecuteError::Halted)?;
        match append_atomic(store, requests).await.map_err(ExecuteError::Store)? {
            Ok(mut appended) => {
                around.after_append();
                let co_written = appended.split_off(1);
                let own = appended.pop().ok_or(ExecuteError::Store(StoreError::Internal(
                    "an atomic append lost its first result",
                )))?;
                if own.deduplicated {
                    hydrated.catch_up(store, stream).await?;
                    return Ok(Executed::Repeated {
                        appended: own,
                        co_written,
                    });
                }
                hydrated.state = A::fold(std::mem::take(&mut hydrated.state), &events);
                hydrated.version = own.last_version;
                return Ok(Executed::Written {
                    appended: own,
                    co_written,
                    events: event_ids.into_iter().zip(events).collect(),
                });
            }
            // Another stream of the commit moved: its owner reloads, not this one.
            Err(conflict) if &conflict.stream_id != stream => return Err(ExecuteError::CoWriteConflict(conflict)),
            Err(conflict) => {
                conflicts += 1;
                if conflicts > policy.conflict_retries_max {
                    return Err(ExecuteError::Contended {
                        stream: stream.clone(),
                        attempts: conflicts,
                    });
                }
                tracing::debug!(%stream, expected = conflict.expected, actual = conflict.actual, conflicts, "stream moved; reloading");
                let pause = around.pause_after_conflict(conflicts);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                // Another process appended: decide again on what it wrote.
                if policy.freshness != Freshness::CatchUp {
                    hydrated.catch_up(store, stream).await?;
                }
                reloaded = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::{DateTime, Utc};
    use rust_decimal_macros::dec;

    use super::*;
    use crate::account::{AccountAggregate, AccountCommand};
    use crate::store::MemoryStore;

    const USER: Uuid = Uuid::from_u128(7);

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn deposit(key: &str) -> AccountCommand {
        AccountCommand::Deposit {
            amount: dec!(10),
            idempotency_key: key.into(),
            at: at(),
        }
    }

    fn held() -> Policy {
        Policy {
            freshness: Freshness::Held {
                reload_on_refusal: true,
            },
            conflict_retries_max: 2,
        }
    }

    async fn run(
        store: &MemoryStore,
        hydrated: &mut Hydrated<AccountAggregate>,
        command: &AccountCommand,
        command_id: Uuid,
        policy: Policy,
    ) -> Result<
        Executed<crate::account::AccountEvent>,
        ExecuteError<crate::account::AccountRejection, std::convert::Infallible>,
    > {
        let metadata = EventMetadata::default();
        execute(
            store,
            &StreamId::account(USER),
            hydrated,
            command,
            command_id,
            &metadata,
            policy,
            &mut Plain,
        )
        .await
    }

    async fn opened(store: &MemoryStore) -> Hydrated<AccountAggregate> {
        let mut account = Hydrated::default();
        let open = AccountCommand::Open {
            user_id: USER,
            at: at(),
        };
        run(store, &mut account, &open, Uuid::from_u128(1), held())
            .await
            .unwrap();
        account
    }

    #[tokio::test]
    async fn a_lost_race_reloads_and_decides_on_what_the_other_writer_wrote() {
        // Proves a stale writer conflicts, catches up and appends after the other's events.
        let store = MemoryStore::new();
        let mut first = opened(&store).await;
        let mut stale = first.clone();
        run(&store, &mut first, &deposit("a"), Uuid::from_u128(2), held())
            .await
            .unwrap();
        let executed = run(&store, &mut stale, &deposit("b"), Uuid::from_u128(3), held())
            .await
            .unwrap();
        assert!(matches!(executed, Executed::Written { .. }), "{executed:?}");
        assert_eq!(stale.version, 3);
        assert_eq!(stale.state.account().unwrap().available, dec!(20));
    }

    #[tokio::test]
    async fn a_writer_that_keeps_losing_gives_up_past_its_bound() {
        // Proves the retries are bounded: with none allowed, one lost race is `Contended`.
        let store = MemoryStore::new();
        let mut first = opened(&store).await;
        let mut stale = first.clone();
        run(&store, &mut first, &deposit("a"), Uuid::from_u128(2), held())
            .await
            .unwrap();
        let policy = Policy {
            conflict_retries_max: 0,
            ..held()
        };
        let executed = run(&store, &mut stale, &deposit("b"), Uuid::from_u128(3), policy).await;
        assert!(
            matches!(executed, Err(ExecuteError::Contended { attempts: 1, .. })),
            "{executed:?}"
        );
    }

    #[tokio::test]
    async fn a_repeated_command_id_writes_nothing_and_catches_up() {
        // Proves a retry after an unknown outcome is answered from the log, not written twice.
        let store = MemoryStore::new();
        let mut first = opened(&store).await;
        let mut stale = first.clone();
        run(&store, &mut first, &deposit("a"), Uuid::from_u128(2), held())
            .await
            .unwrap();
        // The retry decides on the state before its first try (a new key to it).
        let executed = run(&store, &mut stale, &deposit("a"), Uuid::from_u128(2), held())
            .await
            .unwrap();
        assert!(matches!(executed, Executed::Repeated { .. }), "{executed:?}");
        assert_eq!((stale.version, stale.state), (first.version, first.state));
    }

    #[tokio::test]
    async fn a_refusal_on_a_state_behind_is_decided_again_after_reading() {
        // Proves `Held { reload_on_refusal }` reads once before refusing: an
        // actor that never loaded its account sees it opened.
        let store = MemoryStore::new();
        opened(&store).await;
        let mut unloaded = Hydrated::default();
        let executed = run(&store, &mut unloaded, &deposit("a"), Uuid::from_u128(2), held())
            .await
            .unwrap();
        assert!(matches!(executed, Executed::Written { .. }), "{executed:?}");
        let refused = run(
            &store,
            &mut Hydrated::default(),
            &deposit("b"),
            Uuid::from_u128(3),
            Policy {
                freshness: Freshness::Held {
                    reload_on_refusal: false,
                },
                ..held()
            },
        )
        .await;
        assert!(matches!(refused, Err(ExecuteError::Rejected(_))), "{refused:?}");
    }

    #[test]
    fn event_ids_derive_from_the_command_and_the_stream() {
        // Proves the one event-id rule: the same command gives the same ids, another stream others.
        let command = Uuid::from_u128(9);
        let (account, saga) = (StreamId::account(USER), StreamId::saga(USER));
        assert_eq!(event_id(command, &account, 0), event_id(command, &account, 0));
        assert_ne!(event_id(command, &account, 0), event_id(command, &account, 1));
        assert_ne!(event_id(command, &account, 0), event_id(command, &saga, 0));
    }
}

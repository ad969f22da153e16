//! Order actors: one actix actor per live order, found through a registry,
//! hydrated from its stream, handling one command at a time.
//!
//! The actor is the only effectful step around the order's pure core: load,
//! decide, append, evolve, reply. It never publishes or calls other services.

mod command_loop;
mod error;
mod order_actor;
mod registry;

pub use command_loop::{CoWrite, Decided};
pub use error::{ActorError, StartError};
pub use order_actor::{CommandReply, ExecuteCommand, OrderActor};
pub use registry::{ActorConfig, OrderRegistry, ACTOR_THREADS_MAX};

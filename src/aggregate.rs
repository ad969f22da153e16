//! The shape every pure core in the engine shares: `decide` and `evolve`.
//!
//! Nothing here (or in any implementor) may perform I/O, read the clock or
//! generate ids: time, ids and anything looked up arrive inside the command.

/// An event that would break what every state of an aggregate must satisfy
/// (versions in order, nothing after a final state, money never negative).
/// Names the rule and the values; the stream holding the event cannot be
/// folded past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant broken: {0}")]
pub struct InvariantViolation(pub String);

/// `Ok(())` when `holds`, else the violation `what` describes (built only then).
pub fn ensure(holds: bool, what: impl FnOnce() -> String) -> Result<(), InvariantViolation> {
    if holds {
        Ok(())
    } else {
        Err(InvariantViolation(what()))
    }
}

/// A command's outcome: the state after it, and the events to append.
pub type Handled<A> = (<A as Aggregate>::State, Vec<<A as Aggregate>::Event>);

/// A consistency boundary whose state is a left fold of its events.
pub trait Aggregate {
    /// The state folded from the stream; `Default` is the state of an empty stream.
    type State: Default + Clone;
    type Command;
    type Event: Clone;
    /// A typed refusal, named after the rule it enforces.
    type Rejection: std::error::Error;

    /// Decides which events a command produces, or why it is refused.
    /// A refusal produces no events.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// Applies one event, or names the invariant it breaks. Checked in every
    /// build: a log edited behind the engine's back, or a bug in `decide`,
    /// must stop the aggregate, not be folded into a state nobody can trust.
    fn try_evolve(state: Self::State, event: &Self::Event) -> Result<Self::State, InvariantViolation>;

    /// Applies one event that `decide` just produced. A violation here is a
    /// bug in this core (decide emitted what evolve refuses): it panics, as
    /// `assert!` would, rather than continue past it. Events read from the log
    /// go through `try_evolve` (see `store::fold_stream`), which stops only
    /// the aggregate concerned.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        match Self::try_evolve(state, event) {
            Ok(next) => next,
            Err(violation) => panic!("decide produced an event evolve refuses: {violation}"),
        }
    }

    /// Folds events onto a state.
    fn fold<'a, I>(state: Self::State, events: I) -> Self::State
    where
        I: IntoIterator<Item = &'a Self::Event>,
        Self::Event: 'a,
    {
        events.into_iter().fold(state, Self::evolve)
    }

    /// Decides and applies in one step, returning the new state and the events to append.
    fn handle(state: &Self::State, command: &Self::Command) -> Result<Handled<Self>, Self::Rejection>
    where
        Self: Sized,
    {
        let events = Self::decide(state, command)?;
        let next = Self::fold(state.clone(), &events);
        Ok((next, events))
    }
}

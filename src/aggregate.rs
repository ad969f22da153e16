//! The shape every pure core in the engine shares: `decide` and `evolve`.
//!
//! Nothing here (or in any implementor) may perform I/O, read the clock or
//! generate ids: time, ids and anything looked up arrive inside the command.

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

    /// Applies one event. Total: events come from `decide` or the log, both already valid.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

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

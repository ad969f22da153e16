//! The pure order core: `decide` + `evolve` (`Aggregate::handle`) per
//! command, from the state each command meets on the engine's paths.
//!
//! Run alone: `cargo bench --bench aggregate`.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use order_engine::aggregate::Aggregate;
use order_engine::order::{
    AcceptOrder, CancelOrder, ExecuteOrder, OrderAggregate, OrderCommand, OrderState, OrderStatus, TriggerOrder,
};
use rust_decimal_macros::dec;
use uuid::Uuid;

use support::events::{at, submit_market_buy, submit_stop_loss_sell};

fn after(state: &OrderState, command: &OrderCommand) -> OrderState {
    match OrderAggregate::handle(state, command) {
        Ok((next, _)) => next,
        Err(rejection) => panic!("{} must be accepted on this path: {rejection}", command.name()),
    }
}

fn accept(reserved: rust_decimal::Decimal) -> OrderCommand {
    OrderCommand::Accept(AcceptOrder {
        reserved_amount: reserved,
        accepted_at: at(1),
    })
}

fn execute(price: rust_decimal::Decimal) -> OrderCommand {
    OrderCommand::Execute(ExecuteOrder {
        execution_price: price,
        market_price: price,
        executed_at: at(2),
    })
}

/// Times one command against one state; panics if the path is refused, so a
/// refusal (cheaper) is never measured in place of the real work.
fn bench_command(c: &mut Criterion, name: &str, state: &OrderState, command: &OrderCommand, expect: OrderStatus) {
    let mut group = c.benchmark_group("decide_evolve");
    group.throughput(Throughput::Elements(1));
    assert_eq!(after(state, command).status(), Some(expect), "{name}");
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| OrderAggregate::handle(black_box(state), black_box(command)))
    });
    group.finish();
}

fn decide_evolve(c: &mut Criterion) {
    let order_id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let submit = OrderCommand::Submit(submit_market_buy(order_id));
    let pending = after(&OrderState::Empty, &submit);
    let buy_accept = accept(dec!(1600));
    let processing = after(&pending, &buy_accept);

    let stop_submit = OrderCommand::Submit(submit_stop_loss_sell(order_id));
    let stop_processing = after(&after(&OrderState::Empty, &stop_submit), &accept(dec!(0)));
    let trigger = OrderCommand::Trigger(TriggerOrder {
        market_price: dec!(139.5),
        triggered_at: at(2),
    });
    let cancel = OrderCommand::Cancel(CancelOrder {
        reason: "user asked".into(),
        cancelled_at: at(2),
    });

    bench_command(c, "submit", &OrderState::Empty, &submit, OrderStatus::Pending);
    bench_command(c, "accept", &pending, &buy_accept, OrderStatus::Processing);
    bench_command(c, "execute", &processing, &execute(dec!(150.25)), OrderStatus::Executed);
    bench_command(c, "trigger", &stop_processing, &trigger, OrderStatus::Processing);
    bench_command(c, "cancel", &processing, &cancel, OrderStatus::Cancelled);

    // A MARKET BUY's whole life on the order stream: three commands per iteration.
    let path = [submit, buy_accept, execute(dec!(150.25))];
    let mut group = c.benchmark_group("decide_evolve");
    group.throughput(Throughput::Elements(path.len() as u64));
    group.bench_function(BenchmarkId::from_parameter("submit_accept_execute"), |b| {
        b.iter(|| {
            let mut state = OrderState::Empty;
            for command in &path {
                state = after(&state, black_box(command));
            }
            state
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = decide_evolve
}
criterion_main!(benches);

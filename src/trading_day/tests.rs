#![allow(clippy::unwrap_used)]
//! Given a day's events, when a command arrives, then these events or this refusal.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;
use crate::aggregate::Aggregate;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 5, 0, 0).unwrap()
}

fn order(n: u128, at: DateTime<Utc>) -> CountOrder {
    CountOrder {
        order_id: Uuid::from_u128(n),
        symbol: "INFY".into(),
        quantity: dec!(10),
        value: Some(dec!(15000)),
        at,
        resets_at: t0() + TimeDelta::hours(20),
        in_session: true,
        session: "09:00-15:30 Asia/Kolkata".into(),
        limits: Limits::default(),
        thresholds: Thresholds::default(),
        hold_for: None,
    }
}

fn count(
    state: &TradingDayState,
    command: CountOrder,
) -> Result<(TradingDayState, Vec<TradingDayEvent>), TradingDayRejection> {
    TradingDayAggregate::handle(state, &TradingDayCommand::CountOrder(command))
}

fn anomalies(events: &[TradingDayEvent]) -> Vec<AnomalyType> {
    events
        .iter()
        .filter_map(|e| match e {
            TradingDayEvent::AnomalyDetected(d) => Some(d.anomaly),
            _ => None,
        })
        .collect()
}

/// `n` orders a second apart from `start`, each checked to pass.
fn given_orders(n: u128, start: DateTime<Utc>) -> TradingDayState {
    (0..n).fold(TradingDayState::default(), |state, i| {
        count(&state, order(i, start + TimeDelta::seconds(i as i64))).unwrap().0
    })
}

#[test]
fn thirty_orders_in_a_minute_pass_and_the_thirty_first_raises_one_high_frequency_anomaly() {
    let state = given_orders(30, t0());
    assert!(state.last_fired.is_empty(), "30 in a minute is within the rule");
    let (state, events) = count(&state, order(30, t0() + TimeDelta::seconds(30))).unwrap();
    assert_eq!(anomalies(&events), vec![AnomalyType::HighFrequencyOrders]);
    let TradingDayEvent::AnomalyDetected(detected) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (detected.severity, detected.observed.as_str()),
        (Severity::High, "31 orders in 60 s")
    );
    // The 32nd in the same minute is the same burst: no second alert.
    let (state, events) = count(&state, order(31, t0() + TimeDelta::seconds(31))).unwrap();
    assert!(anomalies(&events).is_empty());
    // A minute after the first alert, a burst that is still going raises again.
    let later = t0() + TimeDelta::seconds(91);
    let state = (0..31).fold(state, |s, i| {
        count(&s, order(100 + i, later + TimeDelta::milliseconds(i as i64)))
            .unwrap()
            .0
    });
    assert_eq!(
        state.last_fired[&AnomalyType::HighFrequencyOrders],
        later + TimeDelta::milliseconds(30)
    );
}

#[test]
fn the_daily_limit_refuses_the_order_after_the_last_with_the_limit_and_the_reset() {
    let limited = |n, at| CountOrder {
        limits: Limits {
            daily_orders: Some(10),
            orders_per_minute: None,
        },
        ..order(n, at)
    };
    let state = (0..10).fold(TradingDayState::default(), |s, i| {
        count(&s, limited(i, t0() + TimeDelta::minutes(i as i64))).unwrap().0
    });
    assert_eq!(state.orders, 10);
    let refused = count(&state, limited(10, t0() + TimeDelta::hours(1))).unwrap_err();
    assert_eq!(
        refused,
        TradingDayRejection::DailyOrderLimitReached {
            limit: 10,
            resets_at: t0() + TimeDelta::hours(20)
        }
    );
    assert_eq!(refused.code(), "daily_order_limit_reached");
    assert_eq!(refused.retry_after_secs(t0() + TimeDelta::hours(1)), 19 * 3600);
    // A limit raised at run time applies to the next order.
    let raised = CountOrder {
        limits: Limits {
            daily_orders: Some(11),
            orders_per_minute: None,
        },
        ..order(10, t0() + TimeDelta::hours(1))
    };
    assert!(count(&state, raised).is_ok());
}

#[test]
fn the_rate_limit_refuses_past_its_figure_and_says_when_a_slot_frees() {
    let rated = |n, at| CountOrder {
        limits: Limits {
            daily_orders: None,
            orders_per_minute: Some(120),
        },
        ..order(n, at)
    };
    let state = (0..120).fold(TradingDayState::default(), |s, i| {
        count(&s, rated(i, t0() + TimeDelta::milliseconds(250 * i as i64)))
            .unwrap()
            .0
    });
    let at = t0() + TimeDelta::seconds(40);
    assert_eq!(
        count(&state, rated(120, at)).unwrap_err(),
        TradingDayRejection::RateLimited {
            limit: 120,
            retry_after_secs: 20
        },
        "the oldest order, at t0, leaves the window at t0 + 60 s"
    );
    assert!(count(&state, rated(120, t0() + TimeDelta::seconds(60))).is_ok());
}

#[test]
fn a_large_order_raises_a_warning_above_either_threshold_and_not_at_it() {
    let sized = |quantity: Decimal, value: Decimal| CountOrder {
        quantity,
        value: Some(value),
        ..order(1, t0())
    };
    let none = TradingDayState::default();
    assert!(anomalies(&count(&none, sized(dec!(50000), dec!(1000000))).unwrap().1).is_empty());
    let (_, events) = count(&none, sized(dec!(50000.01), dec!(1))).unwrap();
    assert_eq!(anomalies(&events), vec![AnomalyType::LargeOrderSize]);
    let (_, events) = count(&none, sized(dec!(1), dec!(1000000.01))).unwrap();
    let TradingDayEvent::AnomalyDetected(detected) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (detected.severity, detected.observed.as_str()),
        (Severity::Medium, "value 1000000.01")
    );
}

#[test]
fn the_sixteenth_distinct_symbol_raises_once_a_day() {
    let symbol = |n: u128, s: &str| CountOrder {
        symbol: s.into(),
        ..order(n, t0() + TimeDelta::minutes(n as i64))
    };
    let state = (0..15).fold(TradingDayState::default(), |s, i| {
        let (s, events) = count(&s, symbol(i, &format!("S{i}"))).unwrap();
        assert!(anomalies(&events).is_empty());
        s
    });
    let (state, events) = count(&state, symbol(15, "S15")).unwrap();
    assert_eq!(anomalies(&events), vec![AnomalyType::UnusualSymbols]);
    let (state, events) = count(&state, symbol(16, "S16")).unwrap();
    assert!(anomalies(&events).is_empty(), "once a day");
    assert!(anomalies(&count(&state, symbol(17, "S0")).unwrap().1).is_empty());
}

#[test]
fn an_order_outside_the_session_raises_a_warning_once_a_minute() {
    let off = |n, at| CountOrder {
        in_session: false,
        ..order(n, at)
    };
    let (state, events) = count(&TradingDayState::default(), off(1, t0())).unwrap();
    assert_eq!(anomalies(&events), vec![AnomalyType::OffHoursActivity]);
    assert!(anomalies(&count(&state, off(2, t0() + TimeDelta::seconds(59))).unwrap().1).is_empty());
    assert_eq!(
        anomalies(&count(&state, off(2, t0() + TimeDelta::seconds(60))).unwrap().1),
        vec![AnomalyType::OffHoursActivity]
    );
}

fn cancel(n: u128, at: DateTime<Utc>, hold_for: Option<TimeDelta>) -> TradingDayCommand {
    TradingDayCommand::CountCancellation(CountCancellation {
        order_id: Uuid::from_u128(n),
        at,
        thresholds: Thresholds::default(),
        hold_for,
    })
}

#[test]
fn twenty_cancellations_in_a_minute_pass_and_the_twenty_first_is_critical() {
    let state = (0..20).fold(TradingDayState::default(), |s, i| {
        let (s, events) =
            TradingDayAggregate::handle(&s, &cancel(i, t0() + TimeDelta::seconds(i as i64), None)).unwrap();
        assert_eq!(events.len(), 1);
        s
    });
    let (_, events) = TradingDayAggregate::handle(&state, &cancel(20, t0() + TimeDelta::seconds(20), None)).unwrap();
    assert_eq!(anomalies(&events), vec![AnomalyType::RapidCancellations]);
    assert!(AnomalyType::RapidCancellations.severity().is_critical());
}

#[test]
fn with_enforcement_a_critical_anomaly_holds_orders_until_it_runs_out_or_is_lifted() {
    let hold = Some(TimeDelta::minutes(15));
    let state = given_orders(30, t0());
    let burst = CountOrder {
        hold_for: hold,
        ..order(30, t0() + TimeDelta::seconds(30))
    };
    let (state, events) = count(&state, burst).unwrap();
    let held_until = t0() + TimeDelta::seconds(30) + TimeDelta::minutes(15);
    assert!(matches!(events.last(), Some(TradingDayEvent::OrdersHeld(h)) if h.until == held_until));
    let refused = count(&state, order(31, t0() + TimeDelta::minutes(5))).unwrap_err();
    assert_eq!(
        refused,
        TradingDayRejection::OrdersHeld {
            anomaly: AnomalyType::HighFrequencyOrders,
            until: held_until
        }
    );
    assert!(count(&state, order(31, held_until)).is_ok(), "the hold runs out");
    let lift = TradingDayCommand::LiftHold(LiftHold {
        by: "operator:ana".into(),
        reason: "client confirmed the burst".into(),
        at: t0() + TimeDelta::minutes(6),
    });
    let (lifted, _) = TradingDayAggregate::handle(&state, &lift).unwrap();
    assert!(count(&lifted, order(31, t0() + TimeDelta::minutes(6))).is_ok());
    assert!(matches!(
        TradingDayAggregate::decide(&lifted, &lift),
        Err(TradingDayRejection::NotHeld { .. })
    ));
    // Medium anomalies never hold.
    let large = CountOrder {
        quantity: dec!(60000),
        hold_for: hold,
        ..order(1, t0())
    };
    let (_, events) = count(&TradingDayState::default(), large).unwrap();
    assert!(!events.iter().any(|e| matches!(e, TradingDayEvent::OrdersHeld(_))));
}

#[test]
fn a_stream_that_breaks_an_invariant_is_not_folded() {
    let lifted = TradingDayEvent::HoldLifted(HoldLifted {
        by: "x".into(),
        reason: "y".into(),
        at: t0(),
    });
    assert!(try_evolve(TradingDayState::default(), &lifted).is_err());
    let wrong = TradingDayEvent::AnomalyDetected(AnomalyDetected {
        anomaly: AnomalyType::LargeOrderSize,
        severity: Severity::High,
        order_id: Uuid::nil(),
        observed: "1".into(),
        threshold: "0".into(),
        at: t0(),
    });
    assert!(try_evolve(TradingDayState::default(), &wrong).is_err());
}

proptest! {
    /// Whatever the arrival times, the day never counts more than its limit,
    /// no minute more than the rate limit, and folding the recorded events
    /// again (a restart, a replay) gives the state the decisions left.
    #[test]
    fn limits_hold_for_any_arrivals_and_a_replay_agrees(
        gaps in proptest::collection::vec(0i64..3_000, 1..300),
        daily in 1u32..80,
        per_minute in 1u32..40,
    ) {
        let mut state = TradingDayState::default();
        let mut recorded = Vec::new();
        let mut accepted = Vec::new();
        let mut at = t0();
        for (i, gap) in gaps.iter().enumerate() {
            at += TimeDelta::milliseconds(*gap);
            let command = CountOrder {
                limits: Limits { daily_orders: Some(daily), orders_per_minute: Some(per_minute) },
                hold_for: Some(TimeDelta::minutes(1)),
                ..order(i as u128, at)
            };
            if let Ok((next, events)) = count(&state, command) {
                state = next;
                recorded.extend(events);
                accepted.push(at);
            }
        }
        prop_assert!(accepted.len() <= daily as usize);
        for (i, start) in accepted.iter().enumerate() {
            let in_minute = accepted[i..].iter().take_while(|t| **t < *start + TimeDelta::seconds(60)).count();
            prop_assert!(in_minute <= per_minute as usize, "{in_minute} orders within a minute of {start}");
        }
        prop_assert_eq!(TradingDayAggregate::fold(TradingDayState::default(), &recorded), state);
    }
}

//! When each order is due: an open-loop schedule fixed before the run, so a
//! slow engine cannot slow the offered load down (coordinated omission), and
//! latency is measured from the due time, not from when the send happened.
//! Pure.

use std::str::FromStr;
use std::time::Duration;

/// Highest fixed rate accepted: beyond it the schedule's spacing drops below
/// a microsecond and a single sender could not keep it anyway.
pub const RATE_MAX_PER_S: f64 = 1_000_000.0;

/// How fast orders are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop: order `i` is due at `i / rate` seconds after the start.
    PerSecond(f64),
    /// Closed loop: as fast as the engine completes them, with a bounded
    /// number in flight; each order is due when its slot frees.
    Max,
}

impl Rate {
    /// The offered rate, `None` for `max`.
    pub fn per_second(self) -> Option<f64> {
        match self {
            Rate::PerSecond(rate) => Some(rate),
            Rate::Max => None,
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match text.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate <= RATE_MAX_PER_S => Ok(Rate::PerSecond(rate)),
            _ => Err(format!(
                "{text:?} is not a rate: give orders per second above 0 and at most {RATE_MAX_PER_S}, or `max`"
            )),
        }
    }
}

/// The offset from the start at which order `index` (0-based) is due at
/// `rate` orders per second. Computed from the index, not by adding
/// intervals, so rounding never accumulates over a long run.
pub fn due_offset(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

/// How many orders a run sends: the explicit count, or what `rate` fits in
/// `duration`; `None` when only the clock ends it (`max` with a duration).
pub fn planned_orders(orders: Option<u64>, duration: Option<Duration>, rate: Rate) -> Option<u64> {
    let by_duration = match (duration, rate) {
        (Some(duration), Rate::PerSecond(rate)) => Some((duration.as_secs_f64() * rate).ceil() as u64),
        _ => None,
    };
    match (orders, by_duration) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_numbers_or_max() {
        // Proves the CLI's --rate forms and that nonsense is refused with the accepted forms named.
        assert_eq!("500".parse::<Rate>(), Ok(Rate::PerSecond(500.0)));
        assert_eq!("2.5".parse::<Rate>(), Ok(Rate::PerSecond(2.5)));
        assert_eq!("MAX".parse::<Rate>(), Ok(Rate::Max));
        for bad in ["0", "-3", "fast", "", "inf", "NaN", "2000000"] {
            let error = bad.parse::<Rate>().unwrap_err();
            assert!(error.contains("`max`"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_schedule_is_exact_at_every_index() {
        // Proves order i is due at i/rate with no drift after a million orders.
        assert_eq!(due_offset(0, 1_000.0), Duration::ZERO);
        assert_eq!(due_offset(1, 1_000.0), Duration::from_millis(1));
        assert_eq!(due_offset(3, 200.0), Duration::from_millis(15));
        assert_eq!(due_offset(1_000_000, 1_000.0), Duration::from_secs(1_000));
        assert_eq!(due_offset(7, 3.0), Duration::from_secs_f64(7.0 / 3.0));
    }

    #[test]
    fn a_run_ends_at_the_first_limit_reached() {
        // Proves --orders and --duration combine as "whichever comes first", and max with a duration is open-ended.
        let d = Some(Duration::from_secs(10));
        assert_eq!(planned_orders(Some(50), None, Rate::Max), Some(50));
        assert_eq!(planned_orders(None, d, Rate::PerSecond(100.0)), Some(1_000));
        assert_eq!(planned_orders(Some(50), d, Rate::PerSecond(100.0)), Some(50));
        assert_eq!(planned_orders(Some(5_000), d, Rate::PerSecond(100.0)), Some(1_000));
        assert_eq!(planned_orders(None, d, Rate::Max), None);
    }
}

//! The exchange's calendar as the controls need it: which trading day an
//! instant falls in (the day starts at the reset time, in the exchange's
//! time zone), when that day ends, and whether an instant is inside the
//! session's hours. Weekends and holidays are not modelled: an order on a
//! Sunday is counted in Sunday's day and raises the off-hours rule only if
//! its time of day is outside the session.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub timezone: Tz,
    /// When a trading day starts, local time.
    pub reset: NaiveTime,
    /// The session's hours, local time: open inclusive, close exclusive.
    pub open: NaiveTime,
    pub close: NaiveTime,
}

impl Calendar {
    /// The trading day `at` falls in: before the reset time it is still the
    /// previous date's day.
    pub fn trading_day(&self, at: DateTime<Utc>) -> NaiveDate {
        let local = at.with_timezone(&self.timezone).naive_local();
        (local - (self.reset - NaiveTime::MIN)).date()
    }

    /// When the trading day of `at` ends (the next reset), in UTC.
    pub fn day_ends(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let next = self.trading_day(at) + TimeDelta::days(1);
        let local = next.and_time(self.reset);
        // A reset inside a daylight-saving gap happens when the clocks resume;
        // inside an overlap, at its first occurrence.
        (0..4)
            .find_map(|hours| {
                self.timezone
                    .from_local_datetime(&(local + TimeDelta::hours(hours)))
                    .earliest()
            })
            .map_or_else(|| at + TimeDelta::days(1), |end| end.with_timezone(&Utc))
    }

    /// Whether `at` is inside the session's hours (local time of day).
    pub fn in_session(&self, at: DateTime<Utc>) -> bool {
        let time = at.with_timezone(&self.timezone).time();
        time >= self.open && time < self.close
    }

    /// The session as a person reads it: `09:00-15:30 Asia/Kolkata`.
    pub fn session(&self) -> String {
        format!(
            "{}-{} {}",
            self.open.format("%H:%M"),
            self.close.format("%H:%M"),
            self.timezone.name()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kolkata(reset: &str) -> Calendar {
        Calendar {
            timezone: chrono_tz::Asia::Kolkata,
            reset: NaiveTime::parse_from_str(reset, "%H:%M").unwrap(),
            open: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            close: NaiveTime::from_hms_opt(15, 30, 0).unwrap(),
        }
    }

    #[test]
    fn the_day_rolls_over_at_the_reset_time_in_the_exchanges_zone() {
        let calendar = kolkata("09:00");
        // 03:29 UTC is 08:59 in Kolkata: still the previous day's day.
        let before = Utc.with_ymd_and_hms(2026, 3, 2, 3, 29, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 2, 3, 30, 0).unwrap();
        assert_eq!(
            calendar.trading_day(before),
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
        );
        assert_eq!(
            calendar.trading_day(after),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
        );
        assert_eq!(calendar.day_ends(before), after);
        assert_eq!(calendar.day_ends(after), after + TimeDelta::days(1));
    }

    #[test]
    fn the_session_is_open_from_its_first_minute_to_before_its_close() {
        let calendar = kolkata("00:00");
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap();
        assert!(!calendar.in_session(at(3, 29)), "08:59 local");
        assert!(calendar.in_session(at(3, 30)), "09:00 local");
        assert!(calendar.in_session(at(9, 59)), "15:29 local");
        assert!(!calendar.in_session(at(10, 0)), "15:30 local");
        assert_eq!(calendar.session(), "09:00-15:30 Asia/Kolkata");
    }

    #[test]
    fn a_day_across_a_daylight_saving_change_ends_at_the_local_reset() {
        let calendar = Calendar {
            timezone: chrono_tz::America::New_York,
            reset: NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            ..kolkata("00:00")
        };
        // 2026-03-08 02:30 does not exist in New York: the day ends when clocks resume (03:30 EDT).
        let saturday = Utc.with_ymd_and_hms(2026, 3, 7, 20, 0, 0).unwrap();
        assert_eq!(
            calendar.day_ends(saturday),
            Utc.with_ymd_and_hms(2026, 3, 8, 7, 30, 0).unwrap()
        );
    }
}

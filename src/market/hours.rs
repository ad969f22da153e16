//! When the simulated market trades: always, or a daily UTC session.
//!
//! Pure: answers for the instant it is given and never reads the clock itself.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};

use super::TradingHours;
use crate::order::Symbol;

/// When the market is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketHours {
    /// Open every instant of every day; the embedded default, so a demo works at any hour.
    AlwaysOpen,
    /// Open during one session each day, in UTC.
    Session(Session),
}

/// A daily session `[open_utc, close_utc)` in UTC, on weekdays unless `weekends`.
///
/// Fields are private so that every session is a non-empty one within a single
/// UTC day: [`Session::new`] is the only way to build one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    open_utc: NaiveTime,
    close_utc: NaiveTime,
    weekends: bool,
}

/// Why a session cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    /// Overnight sessions are refused rather than guessed at: which calendar
    /// day a weekday rule applies to would be ambiguous.
    #[error("a session must open before it closes within one UTC day (open {open}, close {close})")]
    NotWithinOneDay { open: NaiveTime, close: NaiveTime },
}

impl Session {
    pub fn new(open_utc: NaiveTime, close_utc: NaiveTime, weekends: bool) -> Result<Self, HoursError> {
        if open_utc >= close_utc {
            return Err(HoursError::NotWithinOneDay {
                open: open_utc,
                close: close_utc,
            });
        }
        Ok(Self {
            open_utc,
            close_utc,
            weekends,
        })
    }

    pub fn open_utc(&self) -> NaiveTime {
        self.open_utc
    }

    pub fn close_utc(&self) -> NaiveTime {
        self.close_utc
    }

    pub fn weekends(&self) -> bool {
        self.weekends
    }

    /// Open from `open_utc` inclusive to `close_utc` exclusive, so the closing
    /// instant itself is closed and back-to-back sessions never overlap.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let weekend = matches!(at.weekday(), Weekday::Sat | Weekday::Sun);
        if weekend && !self.weekends {
            return false;
        }
        let time = at.time();
        self.open_utc <= time && time < self.close_utc
    }
}

impl MarketHours {
    /// A session from `open_utc` to `close_utc`; see [`Session::new`].
    pub fn session(open_utc: NaiveTime, close_utc: NaiveTime, weekends: bool) -> Result<Self, HoursError> {
        Session::new(open_utc, close_utc, weekends).map(MarketHours::Session)
    }

    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        match self {
            MarketHours::AlwaysOpen => true,
            MarketHours::Session(session) => session.is_open(at),
        }
    }

    /// These hours as the `MarketData` trait reports them for `symbol`.
    pub fn trading_hours(&self, symbol: Symbol) -> TradingHours {
        match self {
            MarketHours::AlwaysOpen => TradingHours {
                symbol,
                open_utc: None,
                close_utc: None,
                weekends: true,
            },
            MarketHours::Session(session) => TradingHours {
                symbol,
                open_utc: Some(session.open_utc),
                close_utc: Some(session.close_utc),
                weekends: session.weekends,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn time(hour: u32, minute: u32, second: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(hour, minute, second).unwrap()
    }

    /// 2026-01-05 is a Monday; 2026-01-10 a Saturday.
    fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, hour, minute, second)
            .single()
            .unwrap()
    }

    fn new_york_session(weekends: bool) -> MarketHours {
        MarketHours::session(time(14, 30, 0), time(21, 0, 0), weekends).unwrap()
    }

    #[test]
    fn always_open_is_open_at_any_instant() {
        // Proves the embedded default never closes, weekends and midnight included.
        for moment in [at(5, 0, 0, 0), at(10, 3, 15, 0), at(11, 23, 59, 59)] {
            assert!(MarketHours::AlwaysOpen.is_open(moment));
        }
    }

    #[test]
    fn a_session_opens_at_its_open_and_closes_at_its_close() {
        // Proves the session is [open, close): open at the opening instant, closed at the closing one.
        let hours = new_york_session(false);
        assert!(!hours.is_open(at(5, 14, 29, 59)));
        assert!(hours.is_open(at(5, 14, 30, 0)));
        assert!(hours.is_open(at(5, 20, 59, 59)));
        assert!(!hours.is_open(at(5, 21, 0, 0)));
    }

    #[test]
    fn a_weekday_session_is_closed_on_weekends() {
        // Proves Saturday and Sunday stay closed mid-session unless the session trades weekends.
        let weekdays = new_york_session(false);
        let every_day = new_york_session(true);
        for weekend_day in [10, 11] {
            assert!(!weekdays.is_open(at(weekend_day, 15, 0, 0)));
            assert!(every_day.is_open(at(weekend_day, 15, 0, 0)));
        }
        assert!(weekdays.is_open(at(9, 15, 0, 0)), "Friday trades");
        assert!(weekdays.is_open(at(12, 15, 0, 0)), "Monday trades");
    }

    #[test]
    fn an_empty_or_overnight_session_is_refused() {
        // Proves a session must open before it closes within one UTC day.
        assert!(matches!(
            MarketHours::session(time(21, 0, 0), time(14, 30, 0), false),
            Err(HoursError::NotWithinOneDay { .. })
        ));
        assert!(Session::new(time(9, 0, 0), time(9, 0, 0), true).is_err());
    }

    #[test]
    fn trading_hours_report_the_session() {
        // Proves the trait's TradingHours mirror the hours: None for always open, the session otherwise.
        let symbol = Symbol::parse("AAPL").unwrap();
        let always = MarketHours::AlwaysOpen.trading_hours(symbol.clone());
        assert_eq!((always.open_utc, always.close_utc, always.weekends), (None, None, true));
        let session = new_york_session(false).trading_hours(symbol.clone());
        assert_eq!(session.symbol, symbol);
        assert_eq!(session.open_utc, Some(time(14, 30, 0)));
        assert_eq!(session.close_utc, Some(time(21, 0, 0)));
        assert!(!session.weekends);
    }
}

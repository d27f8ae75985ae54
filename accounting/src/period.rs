//! Calendar periods in UTC: the day and the month usage is kept under, and
//! when each ends (for `Retry-After` on a limit).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

/// The gateway's clock. Real time, moved by a fixed offset where a test or an
/// operator replays another day (`LOOM_CLOCK_OFFSET`, seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset_secs: i64,
}

impl Clock {
    /// Real time plus `offset_secs`.
    pub fn with_offset(offset_secs: i64) -> Clock {
        Clock { offset_secs }
    }

    /// Seconds since the Unix epoch.
    pub fn now_unix(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        real.saturating_add_signed(self.offset_secs)
    }
}

/// Which calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    Day,
    Month,
}

/// One calendar period: its label (`2026-11-27` or `2026-11`) and its end.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Period {
    pub span: Span,
    pub label: Arc<str>,
    /// First second after the period, Unix time.
    pub ends: u64,
}

impl Period {
    /// The day that contains `unix`.
    pub fn day_of(unix: u64) -> Period {
        let date = date_of(unix);
        Period {
            span: Span::Day,
            label: Arc::from(&date[..10]),
            ends: (unix / DAY + 1) * DAY,
        }
    }

    /// The month that contains `unix`.
    pub fn month_of(unix: u64) -> Period {
        let date = date_of(unix);
        let (year, month) = year_month(&date).unwrap_or((1970, 1));
        Period {
            span: Span::Month,
            label: Arc::from(&date[..7]),
            ends: month_start(year, month + 1),
        }
    }

    /// Parses `day`, `month`, `YYYY-MM` or `YYYY-MM-DD` relative to `now`.
    pub fn parse(text: &str, now: u64) -> Option<Period> {
        match text {
            "day" | "today" => return Some(Period::day_of(now)),
            "month" => return Some(Period::month_of(now)),
            _ => {}
        }
        match text.len() {
            7 => {
                let (y, m) = year_month(text)?;
                (1..=12)
                    .contains(&m)
                    .then(|| Period::month_of(month_start(y, m)))
                    .filter(|p| &*p.label == text)
            }
            10 => {
                let t = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
                let unix = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
                Some(Period::day_of(unix)).filter(|p| &*p.label == text)
            }
            _ => None,
        }
    }

    /// Time from `now` until the period ends.
    pub fn remaining(&self, now: u64) -> Duration {
        Duration::from_secs(self.ends.saturating_sub(now))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn date_of(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn year_month(text: &str) -> Option<(u32, u32)> {
    let y = text.get(..4)?.parse().ok()?;
    if text.get(4..5)? != "-" {
        return None;
    }
    let m = text.get(5..7)?.parse().ok()?;
    Some((y, m))
}

/// Unix time of the first second of `month` (13 is January of the next year).
fn month_start(year: u32, month: u32) -> u64 {
    let (y, m) = if month > 12 {
        (year + 1, month - 12)
    } else {
        (year, month)
    };
    humantime::parse_rfc3339(&format!("{y:04}-{m:02}-01T00:00:00Z"))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T23:59:59Z, a leap day.
    const LEAP: u64 = 1_709_251_199;

    #[test]
    fn days_and_months_are_utc_calendar_periods() {
        let d = Period::day_of(LEAP);
        assert_eq!(&*d.label, "2024-02-29");
        assert_eq!(d.ends, LEAP + 1);
        assert_eq!(&*Period::day_of(LEAP + 1).label, "2024-03-01");
        let m = Period::month_of(LEAP);
        assert_eq!(&*m.label, "2024-02");
        assert_eq!(m.ends, LEAP + 1);
        assert_eq!(&*Period::month_of(LEAP + 1).label, "2024-03");
        let dec = Period::month_of(1_735_603_200); // 2024-12-31
        assert_eq!(&*dec.label, "2024-12");
        assert_eq!(&*Period::month_of(dec.ends).label, "2025-01");
    }

    #[test]
    fn queries_parse() {
        assert_eq!(
            Period::parse("2024-02", LEAP)
                .map(|p| p.label.to_string())
                .as_deref(),
            Some("2024-02")
        );
        assert_eq!(
            Period::parse("2024-02-29", 0).map(|p| p.span),
            Some(Span::Day)
        );
        assert_eq!(
            Period::parse("day", LEAP)
                .map(|p| p.label.to_string())
                .as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            Period::parse("month", LEAP)
                .map(|p| p.label.to_string())
                .as_deref(),
            Some("2024-02")
        );
        for bad in [
            "2023-02-29",
            "2024-13",
            "2024-00",
            "yesterday",
            "2024/02",
            "",
        ] {
            assert!(Period::parse(bad, LEAP).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_clock_offset_moves_time() {
        let real = Clock::default().now_unix();
        let tomorrow = Clock::with_offset(86_400).now_unix();
        assert!(tomorrow >= real + 86_400);
    }
}

/// Today and this month, as of one day: computed once a day rather than per
/// request (formatting a date costs thousands of instructions).
#[derive(Debug)]
pub struct Today {
    /// Days since the Unix epoch.
    pub day_number: u64,
    pub day: Period,
    pub month: Period,
}

impl Today {
    /// The periods that contain `unix`.
    pub fn of(unix: u64) -> Today {
        Today {
            day_number: unix / DAY,
            day: Period::day_of(unix),
            month: Period::month_of(unix),
        }
    }
}

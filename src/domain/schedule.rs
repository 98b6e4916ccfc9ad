//! [`Schedule`]: a client's cron expression (with seconds), parsed once when the policy
//! is validated and asked for the next time it fires.
//!
//! A parsed expression is about 5 KB and most policies give all their clients one
//! schedule, so a `Schedule` is a shared handle: clones (and every client the validator
//! gives the same expression) point at one parsed copy.
//! Not here: when the daemon wakes (that is `daemon`), what a pass does in or out of its
//! window (that is `rotation`).

use std::fmt;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// The built-in schedule: 03:00 UTC daily (README.md, "The policy").
pub const DEFAULT_SCHEDULE: &str = "0 0 3 * * *";

/// A cron expression with seconds (`sec min hour day month weekday`), parsed.
///
/// Two schedules are equal when their expressions are (as written, trimmed).
#[derive(Clone)]
pub struct Schedule(Arc<Parsed>);

struct Parsed {
    /// The expression, trimmed.
    text: String,
    /// `None` only for a built-in expression that did not parse (a test holds that it
    /// does): such a schedule never fires.
    cron: Option<Cron>,
}

/// A text that is not a cron expression with seconds; the message says what one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{expr}` is not a cron expression with seconds (e.g. \"0 0 3 * * *\" for 03:00 daily): {reason}"
)]
pub struct InvalidSchedule {
    expr: String,
    reason: String,
}

impl Schedule {
    /// Parses a cron expression with seconds (surrounding blanks ignored).
    pub fn parse(expr: &str) -> Result<Schedule, InvalidSchedule> {
        let text = expr.trim();
        CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(text)
            .map(|cron| {
                Schedule(Arc::new(Parsed {
                    text: text.to_owned(),
                    cron: Some(cron),
                }))
            })
            .map_err(|e| InvalidSchedule {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The first time this schedule fires after `t` (`None` past the end of croner's
    /// calendar).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.cron.as_ref()?.find_next_occurrence(&t, false).ok()
    }

    /// The expression, trimmed.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// Whether `self` and `other` share one parsed copy.
    pub fn shares_with(&self, other: &Schedule) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The built-in schedule, parsed once per process and shared.
static DEFAULT: LazyLock<Schedule> = LazyLock::new(|| {
    Schedule::parse(DEFAULT_SCHEDULE).unwrap_or_else(|_| {
        Schedule(Arc::new(Parsed {
            text: DEFAULT_SCHEDULE.to_owned(),
            cron: None,
        }))
    })
});

impl Default for Schedule {
    /// [`DEFAULT_SCHEDULE`].
    fn default() -> Self {
        DEFAULT.clone()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Schedule {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn schedules_need_seconds_and_fire_on_time() {
        let daily = Schedule::parse("0 0 3 * * *").unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 4, 0, 0).unwrap();
        assert_eq!(
            daily.next_after(after),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap())
        );
        assert!(Schedule::parse("0 3 * * *").is_err());
        assert!(Schedule::parse("every day").is_err());
    }

    #[test]
    fn an_invalid_schedule_says_what_a_schedule_is() {
        let e = Schedule::parse("every day").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "`every day` is not a cron expression with seconds (e.g. \"0 0 3 * * *\" for 03:00 daily): "
            ),
            "{e}"
        );
    }

    #[test]
    fn the_default_schedule_parses_and_is_shared() {
        let a = Schedule::default();
        assert_eq!(a, Schedule::parse(DEFAULT_SCHEDULE).unwrap());
        assert!(a.next_after(Utc::now()).is_some());
        assert!(a.shares_with(&Schedule::default()));
    }

    #[test]
    fn schedules_compare_by_their_trimmed_text() {
        let a = Schedule::parse(" 0 0 3 * * * ").unwrap();
        assert_eq!(a.as_str(), "0 0 3 * * *");
        assert_eq!(a, Schedule::default());
        assert!(!a.shares_with(&Schedule::default()));
        assert_ne!(a, Schedule::parse("0 0 4 * * *").unwrap());
    }
}

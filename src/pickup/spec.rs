//! What the pickup checks' policy entries share: the `timeout` key and the check of a
//! duration between bounds, with messages under `<owner>: pickup.`.
//!
//! Not here: each check's own keys (its folder's `spec.rs`), or the rules across
//! clients (`policy`).

use chrono::Duration;
use serde_saphyr::Location;

use crate::schema::{Entry, Key, Shape, duration};

/// The `timeout` key of every check but `grace`.
pub const TIMEOUT: Key = Key::optional(
    "timeout",
    Shape::Value,
    "how long after grace the check may stay unconfirmed before pickup_timeout, like 24h",
);

/// Reports `message` about the `pickup:` of the entry's owner ("client `app`",
/// "defaults").
pub fn problem(entry: &mut Entry<'_>, message: String) {
    let at = entry.at;
    problem_at(entry, at, message);
}

/// Reports `message` about the `pickup:` of the entry's owner at `at` (a key's value).
pub fn problem_at(entry: &mut Entry<'_>, at: Location, message: String) {
    let owner = entry.name;
    entry.problem_at(at, format!("{owner}: pickup.{message}"));
}

/// The duration `key`, from `min` to `max`, `default` when unset (or refused).
pub fn span(
    entry: &mut Entry<'_>,
    key: &str,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let Some(raw) = entry.fields.text(key) else {
        return default;
    };
    let (at, text) = (raw.referenced, raw.value);
    match duration::parse(&text) {
        Ok(d) if d >= min && d <= max => d,
        Ok(_) => {
            problem_at(
                entry,
                at,
                format!(
                    "{key} ({}) must be from {} to {}",
                    text.trim(),
                    duration::format(min),
                    duration::format(max)
                ),
            );
            default
        }
        Err(e) => {
            problem_at(entry, at, format!("{key}: {e}"));
            default
        }
    }
}

/// The `timeout` key: from 1s to 365d, 24h when unset.
pub fn timeout(entry: &mut Entry<'_>) -> Duration {
    span(
        entry,
        "timeout",
        Duration::hours(24),
        (Duration::seconds(1), Duration::days(365)),
    )
}

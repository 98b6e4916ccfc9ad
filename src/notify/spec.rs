//! What the notifiers' policy entries share: where a secret URL or key is read from
//! ([`ValueSource`]), the chat notifiers' spec ([`ChatSpec`], `slack` and `teams`), and
//! the checks of `timeout`, `retries` and the `_env`/`_file` pairs.
//!
//! Not here: each notifier's own keys (its folder's `spec.rs`), the rules across
//! notifiers (`policy`), or sending (the notifiers).

use std::time::Duration;

use secrecy::SecretString;

use super::registry::Backend;
use crate::domain::source::SourceError;
use crate::schema::{Declared, Entry, Key, Shape, duration, is_env_name};

/// Where a notifier's secret (a URL, an HMAC key) is read from when it is built.
pub use crate::domain::ValueSource;

/// The value of notifier `notifier`'s key `key`, trimmed; an error names both and where
/// it was looked for, never the value.
pub fn read_secret(
    source: &ValueSource,
    notifier: &str,
    key: &str,
) -> Result<SecretString, String> {
    let value = source.read().map_err(|e| match e {
        SourceError::NotSet(name) => {
            format!("notifier `{notifier}`: {key}: environment variable {name} is not set")
        }
        SourceError::Unreadable { path, error } => format!(
            "notifier `{notifier}`: {key}: cannot read {}: {error}",
            path.display()
        ),
        SourceError::Empty => {
            format!(
                "notifier `{notifier}`: {key}: {} is empty",
                source.describe()
            )
        }
    })?;
    // No program's output may show it in our log.
    crate::command::hold(&format!("notifier {notifier} {key}"), &value);
    Ok(value)
}

/// A `slack` or `teams` notifier: its incoming-webhook URL is a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSpec {
    /// Where the URL is.
    pub url: ValueSource,
    /// How long one notification may take, retries included.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// An HTTP notifier's timeout when the policy sets none.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts after the first when the policy sets none, and at most.
pub const RETRIES: u32 = 3;
const MAX_RETRIES: u32 = 10;

/// The `timeout` key of every notifier.
pub const TIMEOUT_KEY: Key = Key::optional(
    "timeout",
    Shape::Value,
    "a duration from 1s to 5m (10s by default; 30s for a command, up to 1h)",
);
/// The `retries` key of the HTTP notifiers.
pub const RETRIES_KEY: Key = Key::optional(
    "retries",
    Shape::Count,
    "attempts after the first, 0 to 10 (3 by default)",
);

impl Declared for ChatSpec {
    const KEYS: &'static [Key] = &[
        Key::optional(
            "webhook_url_env",
            Shape::Value,
            "the NAME of a variable holding the incoming-webhook URL",
        ),
        Key::optional(
            "webhook_url_file",
            Shape::Value,
            "a file holding the incoming-webhook URL",
        ),
        TIMEOUT_KEY,
        RETRIES_KEY,
    ];

    fn parse(entry: &mut Entry<'_>) -> ChatSpec {
        let url = source(entry, "webhook_url_env", "webhook_url_file", true);
        ChatSpec {
            url: url.unwrap_or(ValueSource::Env(String::new())),
            timeout: timeout(entry, HTTP_TIMEOUT, 300),
            retries: retries(entry),
        }
    }
}

impl Backend for ChatSpec {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn credential_sources(&self) -> Vec<&ValueSource> {
        vec![&self.url]
    }
}

/// One of an `_env` and a `_file` key; both unset is a problem when `required`.
pub fn source(
    entry: &mut Entry<'_>,
    env_key: &str,
    file_key: &str,
    required: bool,
) -> Option<ValueSource> {
    let (name, f) = (entry.name, entry.fields);
    match (f.text(env_key), f.path(file_key)) {
        (Some(var), None) if is_env_name(var.value.trim()) => {
            Some(ValueSource::Env(var.value.trim().to_owned()))
        }
        (Some(var), None) => {
            entry.problem_at(var.referenced, format!(
                "notifier `{name}`: {env_key} must be the NAME of an environment variable (letters, digits, `_`, not starting with a digit); the value given is not shown, in case it is the secret itself"
            ));
            None
        }
        (None, Some(path)) => Some(ValueSource::File(entry.resolve(&path.value))),
        (None, None) if required => {
            entry.problem(format!("notifier `{name}`: set {env_key} or {file_key}"));
            None
        }
        (None, None) => None,
        (Some(_), Some(second)) => {
            entry.problem_at(
                second.referenced,
                format!("notifier `{name}`: set one of {env_key} and {file_key}, not both"),
            );
            None
        }
    }
}

/// A notifier's `timeout`: from 1s to `max_secs` (5m, or 1h for a command).
pub fn timeout(entry: &mut Entry<'_>, default: Duration, max_secs: u64) -> Duration {
    let Some(raw) = entry.fields.text("timeout") else {
        return default;
    };
    let (name, at, text) = (entry.name, raw.referenced, raw.value);
    match duration::parse(&text) {
        Ok(d) if d.num_seconds() >= 1 && d.num_seconds() as u64 <= max_secs => {
            d.to_std().unwrap_or(default)
        }
        Ok(_) => {
            entry.problem_at(
                at,
                format!(
                    "notifier `{name}`: timeout ({}) must be from 1s to {}",
                    text.trim(),
                    if max_secs == 3600 { "1h" } else { "5m" }
                ),
            );
            default
        }
        Err(e) => {
            entry.problem_at(at, format!("notifier `{name}`: timeout: {e}"));
            default
        }
    }
}

/// An HTTP notifier's `retries`: 0 to 10.
pub fn retries(entry: &mut Entry<'_>) -> u32 {
    let raw = entry.fields.count("retries");
    match raw.as_ref().map(|n| n.value) {
        None => RETRIES,
        Some(n) if n <= u64::from(MAX_RETRIES) => n as u32,
        Some(n) => {
            let name = entry.name;
            let at = raw.map_or(entry.at, |r| r.referenced);
            entry.problem_at(
                at,
                format!("notifier `{name}`: retries ({n}) must be from 0 to {MAX_RETRIES}"),
            );
            RETRIES
        }
    }
}

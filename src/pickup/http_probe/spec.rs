//! The `http_probe` pickup check in the policy: its keys, how its mapping is checked
//! (the URLs, the JSON pointer), its preflight and how it is built.
//!
//! Not here: probing (`pickup::http_probe`).

use std::sync::Arc;

use chrono::Duration;
use serde_saphyr::Spanned;

use super::HttpProbe;
use crate::pickup::registry::Backend;
use crate::pickup::spec::{TIMEOUT, problem_at, span, timeout};
use crate::pickup::{ClientInfo, PickupCheck, Preflight};
use crate::schema::{Declared, Entry, Key, Shape};

/// `type: http_probe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbeSpec {
    /// Every URL (http or https, no user info).
    pub urls: Vec<String>,
    /// Where the fingerprint is in a JSON answer; `None`: the whole body, trimmed.
    pub json_pointer: Option<String>,
    /// How long between two probes while not confirmed.
    pub interval: Duration,
    /// See [`crate::pickup::registry::PickupSpec::timeout`].
    pub timeout: Duration,
}

impl HttpProbeSpec {
    /// How long one probe request may take (a pass waits for it).
    pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
}

/// A `type: http_probe` mapping as written.
/// At most this many probe URLs per client.
const MAX_URLS: usize = 32;

/// Whether `u` is a URL a probe may GET: http or https, a host, no user info (it would
/// end up in logs). The error is appended to `pickup.url`; it shows no part of the URL.
fn probe_url(u: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(u.trim())
        .map_err(|e| format!(": not a URL ({e}); write one like http://app:8080/cds-secret"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(" must be http or https".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(" needs a host, like http://app:8080/cds-secret".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            " must not carry a user or password (it would be logged); the probe sends no credentials"
                .to_owned(),
        );
    }
    Ok(())
}

impl Declared for HttpProbeSpec {
    const KEYS: &'static [Key] = &[
        Key::optional(
            "url",
            Shape::Value,
            "the URL that answers with the fingerprint the app loaded, like http://app:8080/cds-secret",
        ),
        Key::optional(
            "urls",
            Shape::Values,
            "a list of URLs, one per replica: every one must confirm",
        ),
        Key::optional(
            "json_pointer",
            Shape::Value,
            "where the fingerprint is in a JSON answer, like /fingerprint",
        ),
        Key::optional("interval", Shape::Value, "a duration like 30s"),
        TIMEOUT,
    ];

    fn parse(entry: &mut Entry<'_>) -> HttpProbeSpec {
        let (owner, f) = (entry.name, entry.fields);
        let all: Vec<Spanned<String>> = f.text("url").into_iter().chain(f.texts("urls")).collect();
        if all.is_empty() || all.len() > MAX_URLS {
            entry.problem(format!(
                "{owner}: pickup: set url, or urls with 1 to {MAX_URLS} URLs"
            ));
        }
        for u in &all {
            if let Err(why) = probe_url(&u.value) {
                problem_at(entry, u.referenced, format!("url{why}"));
            }
        }
        let json_pointer = f.text("json_pointer");
        if let Some(p) = &json_pointer
            && !(p.value.is_empty() || p.value.starts_with('/'))
        {
            problem_at(
                entry,
                p.referenced,
                "json_pointer must start with `/`, like /fingerprint".to_owned(),
            );
        }
        HttpProbeSpec {
            urls: all.into_iter().map(|u| u.value).collect(),
            json_pointer: json_pointer.map(|p| p.value).filter(|p| !p.is_empty()),
            interval: span(
                entry,
                "interval",
                Duration::seconds(30),
                (Duration::seconds(1), Duration::days(1)),
            ),
            timeout: timeout(entry),
        }
    }
}

impl Backend for HttpProbeSpec {
    /// Its URLs are asked at once.
    fn check_wait(&self) -> std::time::Duration {
        HttpProbeSpec::REQUEST_TIMEOUT
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn preflight(&self) -> Option<Preflight> {
        Some(HttpProbe::preflight_of(self))
    }

    fn build(&self, _client: ClientInfo) -> Arc<dyn PickupCheck> {
        Arc::new(HttpProbe::new(self.clone()))
    }
}

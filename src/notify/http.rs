//! The HTTP side of the `webhook`, `slack` and `teams` notifiers: one client, one
//! retry loop, and the notifier URL checked as a `ServiceUrl` (https unless its host is
//! loopback).
//!
//! A notifier URL is a secret (a Slack or Teams incoming-webhook URL is its own
//! credential; a webhook URL may carry a token in its path or query), so errors name
//! the notifier and at most the URL's host. [`HttpNotifier`] is all three: they differ
//! only in the body (built by `webhook`, `slack` and `teams`) and in whether it is signed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::time::Instant;

use super::NotifyError;
use super::spec::{ValueSource, read_secret};
use crate::domain::service_url::ServiceUrl;
use crate::http::Overflow;

/// The header a signed webhook carries.
pub const SIGNATURE_HEADER: &str = "X-CDS-Rotator-Signature";

/// How much of an error answer's body is read (the rest is dropped).
const ERROR_BODY_CAP: usize = 4096;

/// The first backoff between attempts, and the longest.
const BASE_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(8);

/// Checks a notifier URL (trimmed): a [`ServiceUrl`], https unless the host is
/// loopback. The error says what is wrong without quoting the URL (only its host, when
/// it has one).
pub fn check_url(text: &str) -> Result<ServiceUrl, String> {
    ServiceUrl::parse(text.trim()).map_err(|p| p.to_string())
}

/// A notifier's URL, read and checked; shown only by its host.
#[derive(Clone)]
pub struct Target {
    url: SecretString,
    host: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("host", &self.host).finish()
    }
}

impl Target {
    /// A URL written in the policy (checked there, once).
    pub fn plain(url: &ServiceUrl) -> Target {
        Target {
            host: url.host().to_owned(),
            url: SecretString::from(url.as_str().to_owned()),
        }
    }

    /// A URL read from where `source` says; the error never quotes what was read.
    pub fn read(notifier: &str, key: &str, source: &ValueSource) -> Result<Target, String> {
        let value = read_secret(source, notifier, key)?;
        let parsed = check_url(value.expose_secret()).map_err(|p| {
            format!(
                "notifier `{notifier}`: the URL in {} {p} (the URL is not shown)",
                source.describe()
            )
        })?;
        Ok(Target {
            host: parsed.host().to_owned(),
            url: value,
        })
    }

    /// The URL's host, the only part of it that may be shown.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &[u8], t: u64, body: &[u8]) -> String {
    // An HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One JSON POST to make.
pub struct Delivery<'a> {
    /// The notifier's name, for errors.
    pub notifier: &'a str,
    /// Where to.
    pub target: &'a Target,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The HMAC key, when the request is signed.
    pub key: Option<&'a SecretString>,
    /// The time all attempts together may take.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// The one HTTP client of the notifiers, built when the first notification is sent:
/// building it loads the system's root certificates (milliseconds, and memory), which a
/// policy without HTTP notifiers, or a pass that sends nothing, never needs.
#[derive(Clone, Debug, Default)]
pub struct HttpSender {
    client: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
}

impl HttpSender {
    pub fn new() -> HttpSender {
        HttpSender::default()
    }

    /// The client, built on first use. It never follows redirects (a redirect could
    /// carry a signed event, or a Slack URL's token, somewhere else).
    fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                format!(
                    "cannot set up the notifiers' HTTP client: {}",
                    crate::text::untrusted(&e.to_string())
                )
            })?;
        // Two first sends at once may both build one; the first stored is kept.
        Ok(self.client.get_or_init(|| client))
    }

    /// POSTs `d.body`, retrying 408, 429, 5xx and transport failures with exponential
    /// backoff and jitter (or the answer's `Retry-After`) while the timeout allows.
    pub async fn post(&self, d: Delivery<'_>) -> Result<(), NotifyError> {
        let fail = |detail: String| NotifyError {
            notifier: d.notifier.to_owned(),
            detail,
        };
        let deadline = Instant::now() + d.timeout;
        let client = self.client().map_err(fail)?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(format!(
                    "no answer from {} within {}s (timeout)",
                    d.target.host,
                    d.timeout.as_secs()
                )));
            }
            let mut request = client
                .post(d.target.url.expose_secret())
                .timeout(left)
                .header(CONTENT_TYPE, "application/json")
                .header(
                    USER_AGENT,
                    concat!("cds-rotator/", env!("CARGO_PKG_VERSION")),
                )
                .body(d.body.clone());
            if let Some(key) = d.key {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                request = request.header(
                    SIGNATURE_HEADER,
                    signature(key.expose_secret().as_bytes(), t, &d.body),
                );
            }
            let (problem, retry, wait) = match request.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = crate::http::retry_after(resp.headers());
                    let body = error_body(resp).await;
                    let problem = if body.is_empty() {
                        format!("HTTP {status} from {}", d.target.host)
                    } else {
                        format!("HTTP {status} from {}: {body}", d.target.host)
                    };
                    let retry = matches!(status, 408 | 429) || status >= 500;
                    (problem, retry, retry_after)
                }
                Err(e) => (transport_problem(&e, &d.target.host), true, None),
            };
            let tries = match attempt {
                1 => "1 attempt".to_owned(),
                n => format!("{n} attempts"),
            };
            if !retry || attempt > d.retries {
                return Err(fail(if attempt == 1 {
                    problem
                } else {
                    format!("{problem} (after {tries})")
                }));
            }
            let wait = wait.unwrap_or_else(|| backoff(attempt));
            if Instant::now() + wait >= deadline {
                return Err(fail(format!(
                    "{problem} (after {tries}; waiting {}s more would pass the {}s timeout)",
                    wait.as_secs_f32().ceil(),
                    d.timeout.as_secs()
                )));
            }
            tracing::debug!(
                notifier = d.notifier,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "{problem}; trying again"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Exponential backoff with jitter: between half and all of 0.5 s, 1 s, 2 s, … 8 s.
fn backoff(attempt: u32) -> Duration {
    crate::http::backoff(BASE_DELAY, MAX_DELAY, attempt)
}

/// The start of an error answer, escaped and clipped.
async fn error_body(mut resp: reqwest::Response) -> String {
    let mut kept = Vec::new();
    // A failed read keeps what came before it.
    let _ = crate::http::read_capped(&mut resp, &mut kept, ERROR_BODY_CAP, Overflow::Cut).await;
    crate::text::untrusted(String::from_utf8_lossy(&kept).trim())
}

/// A transport failure, without the URL reqwest would put in it.
fn transport_problem(e: &reqwest::Error, host: &str) -> String {
    if e.is_timeout() {
        return format!("no answer from {host} (timeout)");
    }
    if e.is_connect() {
        return format!("cannot connect to {host}");
    }
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        format!("request to {host} failed")
    } else {
        format!(
            "request to {host} failed: {}",
            crate::text::untrusted(&detail)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_built_on_first_use_and_shared_by_clones() {
        let sender = HttpSender::new();
        let clone = sender.clone();
        assert!(sender.client.get().is_none(), "built before any send");
        let first: *const reqwest::Client = sender.client().unwrap();
        assert!(std::ptr::eq(first, clone.client().unwrap()));
    }

    #[test]
    fn the_signature_is_hex_hmac_sha256_of_time_dot_body() {
        // python3: hmac.new(b"k3y", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"k3y", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
        );
    }

    #[test]
    fn https_is_required_except_for_loopback_hosts() {
        assert!(check_url("https://hooks.example.com/x?token=1").is_ok());
        for ok in [
            "http://127.0.0.1:8080/h",
            "http://127.1.2.3/h",
            "http://[::1]:9/h",
            "http://localhost/h",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        let e = check_url("http://example.com/secret-path").unwrap_err();
        assert!(
            e.contains("example.com") && !e.contains("secret-path"),
            "{e}"
        );
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn a_target_shows_only_its_host() {
        let url = ServiceUrl::parse("https://hooks.example.com/T0/B1/s3cr3t").unwrap();
        let t = Target::plain(&url);
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cr3t") && shown.contains("hooks.example.com"));
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        for attempt in 1..20 {
            let b = backoff(attempt);
            assert!(b >= BASE_DELAY / 2 && b <= MAX_DELAY, "{b:?}");
        }
    }
}

/// A notifier that POSTs a body built from each event: `webhook` (the event JSON, signed
/// when it has a key), `slack` and `teams` (their incoming-webhook messages).
#[derive(Debug)]
pub struct HttpNotifier {
    name: String,
    target: Target,
    key: Option<SecretString>,
    timeout: Duration,
    retries: u32,
    sender: HttpSender,
    body: fn(&crate::domain::Event) -> Vec<u8>,
}

impl HttpNotifier {
    /// A notifier named `name` posting `body(event)` to `target`, signed with `key` when
    /// set, each notification bounded by `timeout` (retries included).
    pub fn new(
        name: impl Into<String>,
        target: Target,
        key: Option<SecretString>,
        (timeout, retries): (Duration, u32),
        sender: HttpSender,
        body: fn(&crate::domain::Event) -> Vec<u8>,
    ) -> Self {
        HttpNotifier {
            name: name.into(),
            target,
            key,
            timeout,
            retries,
            sender,
            body,
        }
    }
}

#[async_trait::async_trait]
impl super::Notifier for HttpNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn notify(&self, event: &crate::domain::Event) -> Result<(), super::NotifyError> {
        self.sender
            .post(Delivery {
                notifier: &self.name,
                target: &self.target,
                body: (self.body)(event),
                key: self.key.as_ref(),
                timeout: self.timeout,
                retries: self.retries,
            })
            .await
    }
}

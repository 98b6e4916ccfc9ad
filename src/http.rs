//! What every HTTP client of the crate shares (CDS, Vault, the notifiers): the client
//! builder's timeouts, a body read capped at a size, `Retry-After`, exponential backoff
//! with jitter, and the one-line text of a transport error.
//!
//! Not here: what a request means, which answers are retried, or the messages that name
//! a service (those stay with `connect`, `store::vault` and `notify::http`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::text::untrusted;

/// A client builder whose requests end after `request_timeout`, and whose connections
/// are given at most 10 s of it.
pub fn client_builder(request_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
}

/// What to do with a body longer than the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse it: the answer is needed whole.
    Refuse,
    /// Keep the start (error bodies: a cut one reads as no body).
    Cut,
}

/// Why a capped read ended early.
#[derive(Debug)]
pub enum ReadError {
    /// The body is longer than the cap (only with [`Overflow::Refuse`]).
    TooLarge,
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// Reads `resp`'s body chunk by chunk into `body` (which may hold room already, or be a
/// zeroizing buffer), never letting it grow past `cap` bytes. On an error, `body` keeps
/// what was read before it.
pub async fn read_capped(
    resp: &mut reqwest::Response,
    body: &mut Vec<u8>,
    cap: usize,
    overflow: Overflow,
) -> Result<(), ReadError> {
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        let room = cap.saturating_sub(body.len());
        if chunk.len() > room {
            if overflow == Overflow::Refuse {
                return Err(ReadError::TooLarge);
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(())
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.to_utc();
    Some((at - Utc::now()).to_std().unwrap_or_default())
}

/// Exponential backoff with full jitter: between half and all of `base`, `2 × base`,
/// `4 × base`, … capped at `max`, for attempt 1, 2, 3, …
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let millis = exp.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

/// A reqwest transport error as one line naming where it went (`scheme://host:port`, or
/// `service` when the URL is unknown) and its causes, escaped. Shared by every HTTP
/// client of the crate (CDS, Vault).
pub fn describe_transport_error(e: &reqwest::Error, service: &str) -> String {
    let to = e
        .url()
        .and_then(origin)
        .unwrap_or_else(|| service.to_owned());
    let mut detail = if e.is_timeout() {
        format!("request to {to} timed out")
    } else if e.is_connect() {
        format!("connecting to {to} failed")
    } else {
        format!("request to {to} failed")
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    untrusted(&detail)
}

/// `scheme://host:port` of a URL: what a connection goes to, without anything that could
/// carry a credential (user info, path, query).
pub fn origin(u: &reqwest::Url) -> Option<String> {
    let host = u.host_str()?;
    let port = u.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", u.scheme()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn origins_keep_scheme_host_and_port_only() {
        let origin_of = |url: &str| origin(&reqwest::Url::parse(url).unwrap());
        assert_eq!(
            origin_of("https://user:pw@uswe.datahub.connect.aveva.com/api/v1?token=t").as_deref(),
            Some("https://uswe.datahub.connect.aveva.com:443")
        );
        assert_eq!(
            origin_of("http://[::1]:8080/x").as_deref(),
            Some("http://[::1]:8080")
        );
    }

    #[test]
    fn backoff_stays_within_half_of_its_step_and_the_cap() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(10));
        assert!(backoff(base, max, 1) <= base && backoff(base, max, 1) >= base / 2);
        for attempt in 1..40 {
            assert!(backoff(base, max, attempt) <= max);
        }
        assert!(backoff(base, max, 20) >= max / 2);
    }
}

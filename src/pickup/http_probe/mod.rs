//! `type: http_probe`: GET each URL (one per replica); each must answer 2xx with the
//! current fingerprint, as the whole body (trimmed) or at a JSON pointer. An unreachable
//! replica, another status, a bad or oversized body are "not yet", never confirmed.

pub mod spec;

use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::Duration;

use self::spec::HttpProbeSpec;
use super::{Pickup, PickupCheck, Preflight, confirms, mismatch};
use crate::domain::StoreRecord;
use crate::http::{Overflow, ReadError};
use crate::text::untrusted;

/// The most of an answer that is read.
pub const BODY_CAP: usize = 16 * 1024;

/// How long one request may take.
pub const REQUEST_TIMEOUT: StdDuration = HttpProbeSpec::REQUEST_TIMEOUT;

/// Probes every replica's URL.
pub struct HttpProbe {
    spec: HttpProbeSpec,
    http: Option<reqwest::Client>,
}

impl HttpProbe {
    /// A probe of `spec.urls`.
    pub fn new(spec: HttpProbeSpec) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            // An answer from elsewhere is not the replica's answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok();
        HttpProbe { spec, http }
    }

    /// Offline its URLs are only counted: the app may not run yet.
    pub fn preflight_of(spec: &HttpProbeSpec) -> Preflight {
        Preflight::Ok(format!(
            "probes {} URL(s) every {}",
            spec.urls.len(),
            crate::schema::duration::format(spec.interval)
        ))
    }

    /// One replica: `Ok` when it confirms, else why not.
    async fn probe(&self, url: &str, current: &StoreRecord) -> Result<(), String> {
        let shown = shown_url(url);
        let Some(http) = &self.http else {
            return Err(format!("{shown}: no HTTP client could be built"));
        };
        let mut resp = http
            .get(url)
            .header("Accept", "application/json, text/plain")
            .send()
            .await
            .map_err(|e| format!("{shown}: unreachable ({})", cause(e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{shown}: answered HTTP {}", status.as_u16()));
        }
        let mut body = Vec::new();
        match crate::http::read_capped(&mut resp, &mut body, BODY_CAP, Overflow::Refuse).await {
            Ok(()) => {}
            Err(ReadError::TooLarge) => {
                return Err(format!("{shown}: answer larger than {BODY_CAP} bytes"));
            }
            Err(ReadError::Transport(e)) => {
                return Err(format!("{shown}: answer cut short ({})", cause(e)));
            }
        }
        let text = String::from_utf8_lossy(&body);
        let reported = match &self.spec.json_pointer {
            None => text.into_owned(),
            Some(pointer) => {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|_| format!("{shown}: the answer is not JSON"))?;
                match json.pointer(pointer) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(_) => return Err(format!("{shown}: {pointer} is not a string")),
                    None => return Err(format!("{shown}: the answer has no {pointer}")),
                }
            }
        };
        if confirms(&reported, current) {
            Ok(())
        } else {
            Err(mismatch(&shown, &reported, current))
        }
    }
}

#[async_trait]
impl PickupCheck for HttpProbe {
    fn preflight(&self) -> Option<Preflight> {
        Some(HttpProbe::preflight_of(&self.spec))
    }

    async fn check(&self, current: &StoreRecord) -> Pickup {
        let results =
            futures::future::join_all(self.spec.urls.iter().map(|u| self.probe(u, current))).await;
        let waiting: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if waiting.is_empty() {
            Pickup::Confirmed
        } else {
            Pickup::Pending(format!(
                "http probe: {} of {} not confirmed: {}",
                waiting.len(),
                self.spec.urls.len(),
                waiting.join("; ")
            ))
        }
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.spec.timeout)
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.spec.interval)
    }
}

/// A request error with its causes, without the URL (its query may carry a token).
fn cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    untrusted(&text)
}

/// A URL as messages show it: without its query (it may carry a token), escaped.
fn shown_url(url: &str) -> String {
    let bare = match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    };
    untrusted(&bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_replica_is_not_yet_and_its_query_is_never_shown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let probe = HttpProbe::new(HttpProbeSpec {
            urls: vec![format!("http://127.0.0.1:{port}/fp?token=hunter2")],
            json_pointer: None,
            interval: Duration::seconds(1),
            timeout: Duration::hours(1),
        });
        let record = StoreRecord {
            client_id: "c".into(),
            tenant_id: "t".into(),
            secret_id: 1,
            expiration: chrono::Utc::now(),
            published_at: chrono::Utc::now(),
            fingerprint: crate::domain::Fingerprint::of_bytes(b"v"),
        };
        match probe.check(&record).await {
            Pickup::Pending(why) => {
                assert!(why.contains("unreachable"), "{why}");
                assert!(!why.contains("hunter2"), "{why}");
            }
            Pickup::Confirmed => panic!("an unreachable replica confirmed"),
        }
    }

    #[test]
    fn a_url_is_shown_without_its_query() {
        assert_eq!(
            shown_url("http://app:8080/fp?token=abc#x"),
            "http://app:8080/fp"
        );
    }
}

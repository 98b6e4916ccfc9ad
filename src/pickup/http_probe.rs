//! `type: http_probe`: GET each URL (one per replica); each must answer 2xx with the
//! current fingerprint, as the whole body (trimmed) or at a JSON pointer. An unreachable
//! replica, another status, a bad or oversized body are "not yet", never confirmed.

use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::Duration;

use super::{Pickup, PickupCheck, confirms, mismatch};
use crate::policy::HttpProbeSpec;
use crate::store::StoreRecord;
use crate::text::untrusted;

/// The most of an answer that is read.
pub const BODY_CAP: usize = 16 * 1024;

/// How long one request may take.
const REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(10);

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
            .map_err(|e| format!("{shown}: unreachable ({})", untrusted(&e.to_string())))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{shown}: answered HTTP {}", status.as_u16()));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > BODY_CAP {
                        return Err(format!("{shown}: answer larger than {BODY_CAP} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(format!(
                        "{shown}: answer cut short ({})",
                        untrusted(&e.to_string())
                    ));
                }
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

    #[test]
    fn a_url_is_shown_without_its_query() {
        assert_eq!(
            shown_url("http://app:8080/fp?token=abc#x"),
            "http://app:8080/fp"
        );
    }
}

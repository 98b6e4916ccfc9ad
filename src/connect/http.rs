//! [`HttpConnect`]: the CDS identity API over HTTPS (reqwest + rustls).
//!
//! It gets and caches the rotator's own token (client-credentials grant), renews it once
//! on a 401, pages through lists, and retries single idempotent requests: 429/503 after
//! `Retry-After`, 408/500/502/504 and transport failures with exponential backoff and
//! full jitter, all bounded. A create (POST) whose outcome is unknown is never re-posted
//! here: it is reported as [`ConnectError::OutcomeUnknown`] for the reconciler to resolve.
//! Secrets and tokens are [`SecretString`]s, exposed only into the request being sent.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::stop::Stop;

use super::{
    ClientRef, ClientSecret, ConnectApi, ConnectError, CreatedSecret, ErrorBody, NewSecret,
    SecretId,
};

/// Page size for lists (the API's default and our request).
const PAGE: usize = 100;

/// Where the rotator's own client secret comes from.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A file holding the value alone; re-read for every new token.
    File(PathBuf),
    /// An environment variable; re-read for every new token.
    Env(String),
    /// A value in memory (tests, the demo).
    Value(SecretString),
}

impl CredentialSource {
    fn read(&self) -> Result<SecretString, ConnectError> {
        let raw = match self {
            CredentialSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| ConnectError::Credential(format!("{}: {e}", path.display())))?,
            CredentialSource::Env(name) => std::env::var(name).map_err(|_| {
                ConnectError::Credential(format!("environment variable {name} is not set"))
            })?,
            CredentialSource::Value(v) => v.expose_secret().to_owned(),
        };
        let raw = zeroize::Zeroizing::new(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ConnectError::Credential(format!(
                "{} is empty",
                self.describe()
            )));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    fn describe(&self) -> String {
        match self {
            CredentialSource::File(path) => path.display().to_string(),
            CredentialSource::Env(name) => format!("environment variable {name}"),
            CredentialSource::Value(_) => "the configured value".to_owned(),
        }
    }
}

/// How single requests are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for; the error is returned.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// What [`HttpConnect`] needs.
#[derive(Clone, Debug)]
pub struct HttpConnectConfig {
    /// Base URL, e.g. `https://uswe.datahub.connect.aveva.com`.
    pub base_url: String,
    /// The rotator's own client id.
    pub client_id: String,
    /// The rotator's own client secret.
    pub credential: CredentialSource,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Retries of single requests.
    pub retry: RetryPolicy,
    /// Ends retry waits early when the process is stopping.
    pub stop: Stop,
}

struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

/// The CDS identity API over HTTP.
pub struct HttpConnect {
    http: reqwest::Client,
    base: String,
    client_id: String,
    credential: CredentialSource,
    retry: RetryPolicy,
    token: Mutex<Option<CachedToken>>,
    /// Set by `reload_credential`; checked before using the cached token.
    reload: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for HttpConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnect")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct CreatedAnswer {
    #[serde(flatten)]
    secret: ClientSecret,
    #[serde(rename = "Secret", alias = "secret")]
    value: Option<SecretString>,
}

/// The outcome of one attempt, before deciding whether to retry.
enum Attempt {
    Answer(Response),
    Failed(reqwest::Error),
}

/// Is the request safe to repeat when its outcome is unknown?
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotence {
    /// GET, DELETE, the token grant.
    Repeatable,
    /// POST create: only repeat what was certainly not carried out.
    Once,
}

impl HttpConnect {
    /// A client for `config`; builds the HTTP client but sends nothing.
    pub fn new(config: HttpConnectConfig) -> Result<Self, ConnectError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .https_only(!is_loopback_http(&config.base_url))
            .build()
            .map_err(|e| ConnectError::Transport {
                operation: "set up the HTTP client".to_owned(),
                detail: e.to_string(),
            })?;
        Ok(HttpConnect {
            http,
            base: config.base_url.trim_end_matches('/').to_owned(),
            client_id: config.client_id,
            credential: config.credential,
            retry: config.retry,
            token: Mutex::new(None),
            reload: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn secrets_url(&self, client: &ClientRef) -> String {
        format!(
            "{}/api/v1/Tenants/{}/{}/{}/Secrets",
            self.base,
            client.tenant_id,
            client.kind.path_segment(),
            client.client_id
        )
    }

    /// The rotator's token, fetched when missing or about to end.
    async fn token(&self, force_new: bool) -> Result<SecretString, ConnectError> {
        let mut cached = self.token.lock().await;
        let reload = self.reload.swap(false, std::sync::atomic::Ordering::SeqCst);
        if !force_new
            && !reload
            && let Some(t) = cached.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.token.clone());
        }
        let secret = self.credential.read()?;
        let (token, lifetime) = self.grant(&self.client_id, &secret).await?;
        // Renew a minute before the end, or halfway for short lifetimes.
        let margin = if lifetime < Duration::from_secs(120) {
            lifetime / 2
        } else {
            Duration::from_secs(60)
        };
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// The client-credentials grant; returns the token and its lifetime.
    async fn grant(
        &self,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<(SecretString, Duration), ConnectError> {
        let operation = format!("get a token for client {client_id}");
        let url = format!("{}/identity/connect/token", self.base);
        let resp = self
            .send(&operation, Idempotence::Repeatable, || {
                let form = zeroize::Zeroizing::new(
                    serde_urlencoded::to_string([
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", secret.expose_secret()),
                    ])
                    .unwrap_or_default(),
                );
                self.http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(ACCEPT, "application/json")
                    .header(USER_AGENT, user_agent())
                    .body(form.as_bytes().to_vec())
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
            // Only the OAuth error code is kept: nothing else of the body.
            let detail = resp
                .json::<OAuthError>()
                .await
                .ok()
                .and_then(|e| e.error)
                .filter(|e| e.len() <= 64 && e.chars().all(|c| c.is_ascii_graphic()))
                .unwrap_or_else(|| "no OAuth error code".to_owned());
            return Err(ConnectError::Unauthenticated {
                client_id: client_id.to_owned(),
                status: status.as_u16(),
                detail,
            });
        }
        if !status.is_success() {
            return Err(ConnectError::Api {
                operation,
                status: status.as_u16(),
                body: Box::default(),
            });
        }
        let answer: TokenAnswer = resp.json().await.map_err(|e| ConnectError::BadResponse {
            operation: operation.clone(),
            detail: format!(
                "the token answer is not the expected JSON ({})",
                e.without_url()
            ),
        })?;
        if answer.access_token.expose_secret().is_empty() {
            return Err(ConnectError::BadResponse {
                operation,
                detail: "the token answer has an empty access_token".to_owned(),
            });
        }
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600).clamp(1, 86_400));
        Ok((answer.access_token, lifetime))
    }

    /// Sends an authenticated API request, renewing the token once on a 401.
    async fn api(
        &self,
        operation: &str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ConnectError> {
        let idempotence = if method == Method::POST {
            Idempotence::Once
        } else {
            Idempotence::Repeatable
        };
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            let resp = self
                .send(operation, idempotence, || {
                    let mut req = self
                        .http
                        .request(method.clone(), url)
                        .header(AUTHORIZATION, bearer(&token))
                        .header(ACCEPT, "application/json")
                        .header(USER_AGENT, user_agent());
                    if let Some(body) = body {
                        req = req.json(body);
                    }
                    req
                })
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                debug!(%operation, "401: renewing the token once");
                renewed = true;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let body = Box::new(error_body(resp).await);
            if status == StatusCode::METHOD_NOT_ALLOWED && method != Method::GET {
                return Err(ConnectError::RegionalWrite {
                    operation: operation.to_owned(),
                    body,
                });
            }
            if idempotence == Idempotence::Once
                && (status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT)
            {
                return Err(ConnectError::OutcomeUnknown {
                    operation: operation.to_owned(),
                    detail: format!("CDS answered HTTP {}{}", status.as_u16(), fmt_op(&body)),
                });
            }
            return Err(ConnectError::Api {
                operation: operation.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
    }

    /// Sends one request with the retry policy; returns the last answer (any status)
    /// or a transport error.
    async fn send(
        &self,
        operation: &str,
        idempotence: Idempotence,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, ConnectError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match build().send().await {
                Ok(resp) => Attempt::Answer(resp),
                Err(e) => Attempt::Failed(e),
            };
            let last = attempt >= self.retry.max_attempts;
            let wait = match &outcome {
                Attempt::Answer(resp) => {
                    let status = resp.status();
                    debug!(%operation, status = status.as_u16(), attempt, "answer");
                    let retry_after = retry_after(resp.headers());
                    match status.as_u16() {
                        // Throttled: not carried out, safe to send again, even a create.
                        429 => Some(retry_after.unwrap_or_else(|| self.backoff(attempt))),
                        503 if idempotence == Idempotence::Repeatable => {
                            Some(retry_after.unwrap_or_else(|| self.backoff(attempt)))
                        }
                        408 | 500 | 502 | 504 if idempotence == Idempotence::Repeatable => {
                            Some(self.backoff(attempt))
                        }
                        // A create answered 5xx may have been carried out: it goes back
                        // to the caller as an unknown outcome, after the wait CDS asked for.
                        500..=599 if idempotence == Idempotence::Once => {
                            if let Some(wait) =
                                retry_after.filter(|w| *w <= self.retry.max_retry_after)
                            {
                                tokio::time::sleep(wait).await;
                            }
                            None
                        }
                        _ => None,
                    }
                }
                Attempt::Failed(e) => {
                    let certainly_not_sent = e.is_connect();
                    if idempotence == Idempotence::Repeatable || certainly_not_sent {
                        Some(self.backoff(attempt))
                    } else {
                        return Err(ConnectError::OutcomeUnknown {
                            operation: operation.to_owned(),
                            detail: transport_detail(e),
                        });
                    }
                }
            };
            match (wait, outcome) {
                (Some(wait), outcome) if !last && wait <= self.retry.max_retry_after => {
                    let why = match &outcome {
                        Attempt::Answer(r) => format!("HTTP {}", r.status().as_u16()),
                        Attempt::Failed(e) => transport_detail(e),
                    };
                    warn!(%operation, attempt, wait_ms = wait.as_millis() as u64, %why, "retrying");
                    tokio::time::sleep(wait).await;
                }
                (_, Attempt::Answer(resp)) => return Ok(resp),
                (_, Attempt::Failed(e)) => {
                    return Err(ConnectError::Transport {
                        operation: operation.to_owned(),
                        detail: format!("{} after {attempt} attempts", transport_detail(&e)),
                    });
                }
            }
        }
    }

    /// Exponential backoff with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.retry.max_delay);
        let millis = exp.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

#[async_trait]
impl ConnectApi for HttpConnect {
    async fn list_secrets(&self, client: &ClientRef) -> Result<Vec<ClientSecret>, ConnectError> {
        let operation = format!("list secrets of client {}", client.client_id);
        let url = self.secrets_url(client);
        let mut all: Vec<ClientSecret> = Vec::new();
        loop {
            let page_url = format!("{url}?skip={}&count={PAGE}", all.len());
            let resp = self.api(&operation, Method::GET, &page_url, None).await?;
            let total = resp
                .headers()
                .get("Total-Count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let page: Vec<ClientSecret> =
                resp.json().await.map_err(|e| ConnectError::BadResponse {
                    operation: operation.clone(),
                    detail: format!(
                        "the list is not a JSON array of secrets ({})",
                        e.without_url()
                    ),
                })?;
            let n = page.len();
            all.extend(page);
            let more = match total {
                Some(total) => all.len() < total && n > 0,
                None => n >= PAGE,
            };
            if !more {
                break;
            }
            if all.len() > 10_000 {
                return Err(ConnectError::BadResponse {
                    operation,
                    detail: "more than 10000 secrets listed; refusing to page further".to_owned(),
                });
            }
        }
        // A secret listed twice (the list moved between pages) counts once.
        all.sort_by_key(|s| s.id);
        all.dedup_by_key(|s| s.id);
        Ok(all)
    }

    async fn create_secret(
        &self,
        client: &ClientRef,
        new: &NewSecret,
    ) -> Result<CreatedSecret, ConnectError> {
        let operation = format!("create a secret for client {}", client.client_id);
        let body = serde_json::json!({
            "Expiration": new.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
            "Expires": true,
            "Description": new.description,
        });
        let resp = self
            .api(
                &operation,
                Method::POST,
                &self.secrets_url(client),
                Some(&body),
            )
            .await?;
        let status = resp.status();
        let answer: CreatedAnswer = match resp.json().await {
            Ok(a) => a,
            Err(e) => {
                // The secret exists but we cannot read its value: treat as lost.
                return Err(ConnectError::OutcomeUnknown {
                    operation,
                    detail: format!(
                        "HTTP {} with an unreadable body ({})",
                        status.as_u16(),
                        e.without_url()
                    ),
                });
            }
        };
        let Some(value) = answer.value.filter(|v| !v.expose_secret().is_empty()) else {
            return Err(ConnectError::OutcomeUnknown {
                operation,
                detail: format!("HTTP {} without the secret's value", status.as_u16()),
            });
        };
        let mut secret = answer.secret;
        // CDS echoes what it stored; fill gaps from what we asked for.
        if secret.expiration.is_none() {
            secret.expiration = Some(new.expiration);
        }
        Ok(CreatedSecret { secret, value })
    }

    async fn delete_secret(&self, client: &ClientRef, id: SecretId) -> Result<(), ConnectError> {
        let operation = format!("delete secret {id} of client {}", client.client_id);
        let url = format!("{}/{id}", self.secrets_url(client));
        match self.api(&operation, Method::DELETE, &url, None).await {
            Ok(_) => Ok(()),
            Err(ConnectError::Api { status: 404, .. }) => {
                debug!(%operation, "already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn verify_secret(
        &self,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<(), ConnectError> {
        self.grant(client_id, secret).await.map(|_| ())
    }

    fn reload_credential(&self) {
        self.reload.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The `Authorization` header, marked sensitive so that no HTTP layer prints it.
fn bearer(token: &SecretString) -> reqwest::header::HeaderValue {
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer invalid-token"));
    value.set_sensitive(true);
    value
}

fn user_agent() -> String {
    format!("cds-rotator/{}", env!("CARGO_PKG_VERSION"))
}

fn is_loopback_http(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default();
        u.scheme() == "http"
            && (host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()))
    })
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.to_utc();
    Some((at - Utc::now()).to_std().unwrap_or_default())
}

/// The CDS `ErrorResponse` of a failed answer, or an empty one.
async fn error_body(resp: Response) -> ErrorBody {
    let bytes = resp.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

fn fmt_op(body: &ErrorBody) -> String {
    body.operation_id
        .as_ref()
        .map(|id| format!(", OperationId {id}"))
        .unwrap_or_default()
}

/// A transport error without the URL's query.
fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
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
    fn backoff_grows_and_is_capped() {
        let c = HttpConnect::new(HttpConnectConfig {
            base_url: "http://127.0.0.1:1".into(),
            client_id: "c".into(),
            credential: CredentialSource::Value(SecretString::from("x")),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            stop: Stop::new(),
        })
        .unwrap();
        assert!(c.backoff(1) <= Duration::from_millis(200));
        assert!(c.backoff(20) <= Duration::from_secs(10));
        assert!(c.backoff(20) >= Duration::from_secs(5));
    }

    #[test]
    fn credentials_are_trimmed_and_empty_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "value\n").unwrap();
        let s = CredentialSource::File(path.clone()).read().unwrap();
        assert_eq!(s.expose_secret(), "value");
        std::fs::write(&path, "\n").unwrap();
        let err = CredentialSource::File(path).read().unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}

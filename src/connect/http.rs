//! [`HttpConnect`]: the CDS identity API over HTTPS (reqwest + rustls).
//!
//! It gets and caches the rotator's own token (client-credentials grant), renews it once
//! on a 401, pages through lists, and retries single idempotent requests: 429/503 after
//! `Retry-After`, 408/500/502/504 and transport failures with exponential backoff and
//! full jitter, all bounded. A create (POST) whose outcome is unknown is never re-posted
//! here: it is reported as [`ConnectError::OutcomeUnknown`] for the reconciler to resolve.
//! At most `connect.max_concurrency` requests are in flight at once: each attempt holds
//! a permit from sending until its answer's body is read, and none across a wait.
//! Secrets and tokens are [`SecretString`]s, exposed only into the request being sent.
//!
//! Hostile or broken answers are bounded: every wait ends when the process is stopping
//! (a request in flight then gets [`STOP_GRACE`]), bodies are read up to a cap, and text
//! from answers is escaped before it reaches an error message.
//!
//! Errors say what to look at: a failed connection names `scheme://host:port`, a token
//! endpoint that answers 404 names `connect.url`, a refused own secret names where it was
//! read, and a client CDS calls disabled or unknown is [`ConnectError::ClientUnusable`],
//! which no retry can cure.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::domain::service_url::ServiceUrl;
use crate::domain::source::{self, SourceError};
use crate::http::{Overflow, ReadError};
use crate::stop::Stop;
use crate::text::untrusted;
use crate::writes::Writes;

use super::{
    ClientSecret, ConnectApi, ConnectError, CreatedSecret, ErrorBody, NewSecret, Unusable,
};
use crate::domain::{ClientRef, SecretId};

/// Page size for lists (the API's default and our request).
const PAGE: usize = 100;

/// Once the process is stopping, how long a request in flight (or sent after the stop,
/// such as the verify and the undo of a new secret) may still take before it is
/// abandoned. Together with the reconciler's own steps this keeps a stop under 10 s.
pub const STOP_GRACE: Duration = Duration::from_secs(4);

/// The largest page of a secret list read (100 secrets take about 20 KB).
pub const LIST_PAGE_CAP: usize = 4 * 1024 * 1024;

/// The largest other answer read: token, create, error bodies.
pub const ANSWER_CAP: usize = 64 * 1024;

/// What an abandoned request reports.
const ABANDONED: &str = "abandoned: cds-rotator is stopping";

/// Where the rotator's own client secret comes from.
#[derive(Clone)]
pub enum CredentialSource {
    /// A file holding the value alone; re-read for every new token.
    File(PathBuf),
    /// An environment variable; re-read for every new token.
    Env(String),
    /// A value in memory (tests, the demo).
    Value(SecretString),
    /// A secret in a store (`connect.credentials.client_secret_store`): the value its
    /// readers get, re-read for every new token.
    Store(std::sync::Arc<dyn crate::store::SecretStore>, String),
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::File(path) => f.debug_tuple("File").field(path).finish(),
            CredentialSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            CredentialSource::Value(_) => f.write_str("Value(..)"),
            CredentialSource::Store(store, key) => {
                f.debug_tuple("Store").field(&store.location(key)).finish()
            }
        }
    }
}

impl CredentialSource {
    /// The current value, trimmed; a store is read asynchronously.
    async fn fetch(&self) -> Result<SecretString, ConnectError> {
        let CredentialSource::Store(store, key) = self else {
            return self.read();
        };
        let value = store.read_value(key).await.map_err(|e| {
            ConnectError::Credential(format!(
                "{e}; check connect.credentials.client_secret_store"
            ))
        })?;
        let Some(value) = value else {
            return Err(self.source_error(SourceError::Empty));
        };
        source::trimmed(value.expose_secret()).map_err(|e| self.source_error(e))
    }

    fn read(&self) -> Result<SecretString, ConnectError> {
        let value = match self {
            CredentialSource::File(path) => source::read_file(path),
            CredentialSource::Env(name) => source::read_env(name),
            CredentialSource::Value(v) => {
                return source::trimmed(v.expose_secret()).map_err(|e| self.source_error(e));
            }
            CredentialSource::Store(..) => {
                return Err(ConnectError::Credential(format!(
                    "{} is read asynchronously",
                    self.describe()
                )));
            }
        };
        value
            .and_then(|raw| source::trimmed(&raw))
            .map_err(|e| self.source_error(e))
    }

    /// The error of reading this source, in the words of `connect.credentials`.
    fn source_error(&self, e: SourceError) -> ConnectError {
        match e {
            SourceError::NotSet(name) => {
                ConnectError::Credential(format!("{} is not set", env_name(&name)))
            }
            SourceError::Unreadable { path, error } => file_error(&path, &error),
            SourceError::Empty => ConnectError::Credential(format!("{} is empty", self.describe())),
        }
    }

    /// How errors name the source: never by something that may be a pasted secret
    /// (see [`env_name`] and [`file_error`]).
    fn describe(&self) -> String {
        match self {
            CredentialSource::File(path) if in_real_dir(path) => path.display().to_string(),
            CredentialSource::File(_) => {
                "the file named by connect.credentials.client_secret_file".to_owned()
            }
            CredentialSource::Env(name) => env_name(name),
            CredentialSource::Value(_) => "the configured value".to_owned(),
            CredentialSource::Store(store, key) => store.location(key),
        }
    }
}

/// Whether `path` is in a directory that exists: only then is it surely a path.
fn in_real_dir(path: &std::path::Path) -> bool {
    path.parent()
        .is_some_and(|dir| !dir.as_os_str().is_empty() && dir.is_dir())
}

/// How errors name the credential's variable: by name when it looks like one by
/// convention (upper case, digits, `_`), else by the policy key, since a mixed-case
/// "name" may be the secret itself, pasted in the wrong place.
fn env_name(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        format!("environment variable {name}")
    } else {
        "the environment variable named by connect.credentials.client_secret_env".to_owned()
    }
}

/// The error of reading the credential file. The path is named only when its directory
/// exists: otherwise the "path" may well be the secret itself, pasted in the wrong place.
fn file_error(path: &std::path::Path, e: &std::io::Error) -> ConnectError {
    if in_real_dir(path) {
        ConnectError::Credential(format!(
            "{}: {e}; check connect.credentials.client_secret_file",
            path.display()
        ))
    } else {
        ConnectError::Credential(
            "connect.credentials.client_secret_file: the file does not exist (its directory does not exist either); set it to the path of a file that holds the secret"
                .to_owned(),
        )
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
    pub base_url: ServiceUrl,
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
    /// The most requests in flight at once (`connect.max_concurrency`; 0 counts as 1).
    pub max_in_flight: usize,
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
    stop: Stop,
    /// When this client first saw the stop; the grace of requests counts from then.
    stopped_at: std::sync::OnceLock<Instant>,
    token: Mutex<Option<CachedToken>>,
    /// Set by `reload_credential`; checked before using the cached token.
    reload: std::sync::atomic::AtomicBool,
    /// One permit per request in flight (see [`HttpConnect::send`]).
    in_flight: std::sync::Arc<Semaphore>,
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
    #[serde(default)]
    error_description: Option<String>,
}

impl OAuthError {
    /// Whether CDS says no secret can help: the client is disabled or unknown.
    fn unusable(&self) -> Option<Unusable> {
        if !self
            .error
            .as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("invalid_client"))
        {
            return None;
        }
        let text = self.error_description.as_deref()?.to_ascii_lowercase();
        if text.contains("disabled") || text.contains("not enabled") {
            Some(Unusable::Disabled)
        } else if text.contains("not found") || text.contains("unknown client") {
            Some(Unusable::NotFound)
        } else {
            None
        }
    }
}

/// Whether text from a token answer repeats the secret sent: a server that echoes what
/// it was sent must not put it in a log.
fn repeats_secret(text: &str, secret: &SecretString) -> bool {
    let sent = secret.expose_secret();
    !sent.is_empty() && text.contains(sent)
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

/// An answer, and when its request was sent: reading its body shares the request's
/// [`STOP_GRACE`]. It holds its request's place among those in flight until it is
/// dropped, i.e. once its body is read (or given up).
struct Reply {
    resp: Response,
    sent_at: Instant,
    permit: Option<OwnedSemaphorePermit>,
}

/// Why a body could not be read whole.
enum BodyError {
    /// Longer than the cap.
    TooLarge { cap: usize },
    /// The connection failed while reading.
    Transport(reqwest::Error),
    /// The process is stopping and the grace ran out.
    Abandoned,
}

impl BodyError {
    /// The error of a read answer (list, token) that could not be read.
    fn into_connect(self, operation: &str) -> ConnectError {
        let operation = operation.to_owned();
        match self {
            BodyError::TooLarge { cap } => ConnectError::BadResponse {
                operation,
                detail: format!(
                    "the answer is larger than {cap} bytes; check that connect.url points at CDS"
                ),
            },
            BodyError::Transport(e) => ConnectError::Transport {
                operation,
                detail: format!("reading the answer: {}", transport_detail(&e)),
            },
            BodyError::Abandoned => ConnectError::Transport {
                operation,
                detail: ABANDONED.to_owned(),
            },
        }
    }

    /// What happened, for an [`ConnectError::OutcomeUnknown`].
    fn detail(&self) -> String {
        match self {
            BodyError::TooLarge { cap } => format!("the answer is larger than {cap} bytes"),
            BodyError::Transport(e) => format!("reading the answer: {}", transport_detail(e)),
            BodyError::Abandoned => ABANDONED.to_owned(),
        }
    }
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
        let loopback_http = config.base_url.is_loopback_http();
        let http = crate::http::client_builder(config.request_timeout)
            .https_only(!loopback_http)
            // Plain HTTP to the emulator on loopback never needs the system's roots:
            // reading them costs more than the rest of start-up.
            .tls_built_in_root_certs(!loopback_http)
            .build()
            .map_err(|e| ConnectError::Transport {
                operation: "set up the HTTP client".to_owned(),
                detail: e.to_string(),
            })?;
        Ok(HttpConnect {
            http,
            base: config.base_url.as_str().trim_end_matches('/').to_owned(),
            client_id: config.client_id,
            credential: config.credential,
            retry: config.retry,
            stop: config.stop,
            stopped_at: std::sync::OnceLock::new(),
            token: Mutex::new(None),
            reload: std::sync::atomic::AtomicBool::new(false),
            in_flight: std::sync::Arc::new(Semaphore::new(config.max_in_flight.max(1))),
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

    /// The rotator's token, fetched when missing or about to end. A token fetched for a
    /// write asks `writes` before each attempt, as the write does.
    async fn token(
        &self,
        force_new: bool,
        writes: Option<&Writes>,
    ) -> Result<SecretString, ConnectError> {
        let mut cached = self.token.lock().await;
        let reload = self.reload.swap(false, std::sync::atomic::Ordering::SeqCst);
        if !force_new
            && !reload
            && let Some(t) = cached.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.token.clone());
        }
        let secret = self.credential.fetch().await?;
        // No program's output may show the rotator's own credential in our log.
        crate::command::hold("connect credential", &secret);
        let (token, lifetime) =
            self.grant(&self.client_id, &secret, writes)
                .await
                .map_err(|e| match e {
                    ConnectError::Unauthenticated {
                        client_id,
                        status,
                        detail,
                    } => ConnectError::OwnCredentialRefused {
                        client_id,
                        credential: self.credential.describe(),
                        status,
                        detail,
                    },
                    e => e,
                })?;
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
        writes: Option<&Writes>,
    ) -> Result<(SecretString, Duration), ConnectError> {
        let operation = format!("get a token for client {client_id}");
        let url = format!("{}/identity/connect/token", self.base);
        let reply = self
            .send(&operation, "POST", Idempotence::Repeatable, writes, || {
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
        let status = reply.resp.status();
        if status == StatusCode::NOT_FOUND {
            // Not a client that is missing (that is a 400 invalid_client): the endpoint.
            return Err(ConnectError::TokenEndpointNotFound {
                operation,
                url: untrusted(&format!(
                    "{}/identity/connect/token",
                    without_query(&self.base).trim_end_matches('/')
                )),
            });
        }
        if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
            // Only the OAuth error code and description are kept: nothing else of the body.
            let body = zeroize::Zeroizing::new(
                self.read_body(reply, ANSWER_CAP, Overflow::Cut)
                    .await
                    .unwrap_or_default(),
            );
            let oauth = serde_json::from_slice::<OAuthError>(&body).ok();
            // Disabled or unknown: no secret will do, so verify must not wait it out.
            if let Some(oauth) = &oauth
                && let Some(why) = oauth.unusable()
                && let Some(description) = &oauth.error_description
                && !repeats_secret(description, secret)
            {
                return Err(ConnectError::ClientUnusable {
                    client_id: client_id.to_owned(),
                    why,
                    reason: untrusted(description),
                });
            }
            let detail = oauth
                .and_then(|e| e.error)
                .filter(|e| !e.trim().is_empty())
                .map(|e| {
                    if repeats_secret(&e, secret) {
                        "an OAuth error code that repeats the secret sent; not shown".to_owned()
                    } else {
                        untrusted(&e)
                    }
                })
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
        let body = zeroize::Zeroizing::new(
            self.read_body(reply, ANSWER_CAP, Overflow::Refuse)
                .await
                .map_err(|e| e.into_connect(&operation))?,
        );
        // Only where it broke: serde's message could quote the token.
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| ConnectError::BadResponse {
                operation: operation.clone(),
                detail: format!(
                    "the token answer is not the expected JSON ({})",
                    json_error_place(&e)
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

    /// Sends an authenticated API request, renewing the token once on a 401. A write
    /// passes its `writes`, which every attempt (and every token renewal) asks first.
    async fn api(
        &self,
        operation: &str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        writes: Option<&Writes>,
    ) -> Result<Reply, ConnectError> {
        let idempotence = if method == Method::POST {
            Idempotence::Once
        } else {
            Idempotence::Repeatable
        };
        let mut renewed = false;
        loop {
            let token = self.token(renewed, writes).await?;
            let reply = self
                .send(operation, method.as_str(), idempotence, writes, || {
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
            let status = reply.resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                debug!(%operation, "401: renewing the token once");
                // Its permit goes before the renewal takes one.
                drop(reply);
                renewed = true;
                continue;
            }
            if status.is_success() {
                return Ok(reply);
            }
            let body = Box::new(self.error_body(reply).await);
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
    /// or a transport error. Every wait ends when the process is stopping; a request
    /// in flight then gets [`STOP_GRACE`] before it is abandoned. With `writes` (a
    /// write, or the token renewal before one), each attempt is sent only while the
    /// coordination lease surely outlasts it, asked right before it goes out, after any
    /// wait: a process paused or throttled past its lease sends nothing more.
    ///
    /// Each attempt waits for a permit (at most `max_in_flight` requests at once) and
    /// keeps it in the [`Reply`]; a retry wait holds none. A request holds one permit at
    /// a time, never while it waits for another: the token renewal a request needs is
    /// sent before the request takes its own.
    async fn send(
        &self,
        operation: &str,
        method: &str,
        idempotence: Idempotence,
        writes: Option<&Writes>,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, ConnectError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Every attempt before this one was certainly not carried out (throttled, or
            // never connected), so an attempt not sent leaves nothing in doubt.
            let mut permit = self.permit().await;
            if let Some(w) = writes
                && w.may_send(Duration::ZERO).is_err()
            {
                warn!(%operation, attempt, "not sent: this process no longer surely holds the coordination lease for a whole request");
                return Err(ConnectError::LeaseLost {
                    operation: operation.to_owned(),
                });
            }
            let sent_at = Instant::now();
            let outcome = tokio::select! {
                sent = build().send() => match sent {
                    Ok(resp) => Attempt::Answer(resp),
                    Err(e) => Attempt::Failed(e),
                },
                () = self.stop_grace(sent_at) => {
                    warn!(%operation, "{ABANDONED}");
                    return Err(match idempotence {
                        // The create may have been carried out.
                        Idempotence::Once => ConnectError::OutcomeUnknown {
                            operation: operation.to_owned(),
                            detail: ABANDONED.to_owned(),
                        },
                        Idempotence::Repeatable => ConnectError::Transport {
                            operation: operation.to_owned(),
                            detail: ABANDONED.to_owned(),
                        },
                    });
                }
            };
            crate::metrics::get().count_cds_request(
                method,
                match &outcome {
                    Attempt::Answer(resp) => Some(resp.status().as_u16()),
                    Attempt::Failed(_) => None,
                },
            );
            let last = attempt >= self.retry.max_attempts;
            let wait = self
                .retry_wait(operation, idempotence, attempt, &outcome, &mut permit)
                .await?;
            match (wait, outcome) {
                (Some(wait), outcome) if !last && wait <= self.retry.max_retry_after => {
                    let why = match &outcome {
                        Attempt::Answer(r) => format!("HTTP {}", r.status().as_u16()),
                        Attempt::Failed(e) => transport_detail(e),
                    };
                    // What is retried was not carried out (throttled, or certainly not
                    // sent, or repeatable): giving up on it when stopping leaves nothing.
                    drop(outcome);
                    drop(permit);
                    if self.stop.is_set() {
                        return Err(ConnectError::Stopped {
                            operation: operation.to_owned(),
                        });
                    }
                    // No wait for an attempt the lease could not cover even now.
                    if let Some(w) = writes
                        && w.may_send(Duration::ZERO).is_err()
                    {
                        warn!(%operation, attempt, %why, "not retried: this process no longer surely holds the coordination lease");
                        return Err(ConnectError::LeaseLost {
                            operation: operation.to_owned(),
                        });
                    }
                    warn!(%operation, attempt, wait_ms = wait.as_millis() as u64, %why, "retrying");
                    if !self.stop.sleep(wait).await {
                        debug!(%operation, "stopping: retry wait cut short");
                        return Err(ConnectError::Stopped {
                            operation: operation.to_owned(),
                        });
                    }
                }
                (_, Attempt::Answer(resp)) => {
                    return Ok(Reply {
                        resp,
                        sent_at,
                        permit,
                    });
                }
                (_, Attempt::Failed(e)) => {
                    return Err(ConnectError::Transport {
                        operation: operation.to_owned(),
                        detail: format!("{} after {attempt} attempts", transport_detail(&e)),
                    });
                }
            }
        }
    }

    /// A place among the requests in flight. Once the process is stopping, the requests
    /// in flight end within [`STOP_GRACE`], and an attempt still waiting then (a verify,
    /// an undo sent after the stop) goes without a place rather than not at all.
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        let grace_over = async {
            self.stop.wait().await;
            let stopped_at = *self.stopped_at.get_or_init(Instant::now);
            tokio::time::sleep_until(stopped_at + STOP_GRACE).await;
        };
        tokio::select! {
            permit = std::sync::Arc::clone(&self.in_flight).acquire_owned() => permit.ok(),
            () = grace_over => None,
        }
    }

    /// How long to wait before sending again after this attempt, `None` when its
    /// outcome goes back to the caller as it is; an error when it is final already (a
    /// create whose request may have been carried out). A wait here gives `permit` up.
    async fn retry_wait(
        &self,
        operation: &str,
        idempotence: Idempotence,
        attempt: u32,
        outcome: &Attempt,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Option<Duration>, ConnectError> {
        Ok(match outcome {
            Attempt::Answer(resp) => {
                let status = resp.status();
                debug!(%operation, status = status.as_u16(), attempt, "answer");
                let retry_after = crate::http::retry_after(resp.headers());
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
                    // to the caller as an unknown outcome, after the wait CDS asked
                    // for, or at once when stopping (the next pass resolves it).
                    500..=599 if idempotence == Idempotence::Once => {
                        if let Some(wait) = retry_after.filter(|w| *w <= self.retry.max_retry_after)
                        {
                            permit.take();
                            if !self.stop.sleep(wait).await {
                                debug!(%operation, "stopping: not waiting out Retry-After");
                            }
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
        })
    }

    /// Resolves [`STOP_GRACE`] after the stop, or after `sent_at` for a request sent
    /// after the stop.
    async fn stop_grace(&self, sent_at: Instant) {
        self.stop.wait().await;
        let stopped_at = *self.stopped_at.get_or_init(Instant::now);
        tokio::time::sleep_until(stopped_at.max(sent_at) + STOP_GRACE).await;
    }

    /// Reads a body chunk by chunk up to `cap` bytes (a `Content-Length` over the cap is
    /// refused before reading); ends when the request's [`STOP_GRACE`] does.
    async fn read_body(
        &self,
        reply: Reply,
        cap: usize,
        overflow: Overflow,
    ) -> Result<Vec<u8>, BodyError> {
        // The permit goes when the body is read.
        let Reply {
            mut resp,
            sent_at,
            permit: _permit,
        } = reply;
        let announced = resp.content_length();
        if overflow == Overflow::Refuse && announced.is_some_and(|n| n > cap as u64) {
            return Err(BodyError::TooLarge { cap });
        }
        let read = async {
            // Small answers (tokens, new secrets) get their room at once, so that no
            // copy of them is left behind by a reallocation.
            let room = match announced {
                Some(n) => usize::try_from(n).unwrap_or(cap),
                None if cap <= ANSWER_CAP => cap,
                None => 0,
            };
            let mut body = Vec::with_capacity(room.min(cap));
            match crate::http::read_capped(&mut resp, &mut body, cap, overflow).await {
                Ok(()) => Ok(body),
                Err(ReadError::TooLarge) => Err(BodyError::TooLarge { cap }),
                Err(ReadError::Transport(e)) => Err(BodyError::Transport(e)),
            }
        };
        tokio::select! {
            read = read => read,
            () = self.stop_grace(sent_at) => Err(BodyError::Abandoned),
        }
    }

    /// The CDS `ErrorResponse` of a failed answer (its first [`ANSWER_CAP`] bytes), or
    /// an empty one.
    async fn error_body(&self, reply: Reply) -> ErrorBody {
        let bytes = self
            .read_body(reply, ANSWER_CAP, Overflow::Cut)
            .await
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    /// Exponential backoff with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        crate::http::backoff(self.retry.base_delay, self.retry.max_delay, attempt)
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
            let reply = self
                .api(&operation, Method::GET, &page_url, None, None)
                .await?;
            let total = reply
                .resp
                .headers()
                .get("Total-Count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let body = self
                .read_body(reply, LIST_PAGE_CAP, Overflow::Refuse)
                .await
                .map_err(|e| e.into_connect(&operation))?;
            let page: Vec<ClientSecret> =
                serde_json::from_slice(&body).map_err(|e| ConnectError::BadResponse {
                    operation: operation.clone(),
                    detail: format!(
                        "the list is not a JSON array of secrets ({})",
                        untrusted(&e.to_string())
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
        writes: &Writes,
        client: &ClientRef,
        new: &NewSecret,
    ) -> Result<CreatedSecret, ConnectError> {
        let operation = format!("create a secret for client {}", client.client_id);
        let body = serde_json::json!({
            "Expiration": new.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
            "Expires": true,
            "Description": new.description,
        });
        let reply = self
            .api(
                &operation,
                Method::POST,
                &self.secrets_url(client),
                Some(&body),
                Some(writes),
            )
            .await?;
        let status = reply.resp.status();
        // From here on the secret exists; an answer we cannot read loses its value.
        let body = match self.read_body(reply, ANSWER_CAP, Overflow::Refuse).await {
            Ok(body) => zeroize::Zeroizing::new(body),
            Err(e) => {
                return Err(ConnectError::OutcomeUnknown {
                    operation,
                    detail: format!("HTTP {}: {}", status.as_u16(), e.detail()),
                });
            }
        };
        let answer: CreatedAnswer = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => {
                // Only where it broke: serde's message could quote the value.
                return Err(ConnectError::OutcomeUnknown {
                    operation,
                    detail: format!(
                        "HTTP {} with an unreadable body ({})",
                        status.as_u16(),
                        json_error_place(&e)
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

    async fn delete_secret(
        &self,
        writes: &Writes,
        client: &ClientRef,
        id: SecretId,
    ) -> Result<(), ConnectError> {
        let operation = format!("delete secret {id} of client {}", client.client_id);
        let url = format!("{}/{id}", self.secrets_url(client));
        match self
            .api(&operation, Method::DELETE, &url, None, Some(writes))
            .await
        {
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
        self.grant(client_id, secret, None).await.map(|_| ())
    }

    fn reload_credential(&self) {
        self.reload.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn check_credential(&self) -> Result<(), ConnectError> {
        self.token(true, None).await.map(|_| ())
    }

    async fn token_ready(&self) -> Result<(), ConnectError> {
        self.token(false, None).await.map(|_| ())
    }

    async fn client_exists(&self, client: &ClientRef) -> Result<bool, ConnectError> {
        let operation = format!("get {} client {}", client.kind, client.client_id);
        let url = format!(
            "{}/api/v1/Tenants/{}/{}/{}",
            self.base,
            client.tenant_id,
            client.kind.path_segment(),
            client.client_id
        );
        match self.api(&operation, Method::GET, &url, None, None).await {
            Ok(_) => Ok(true),
            Err(ConnectError::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
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

/// Where a JSON answer broke, without quoting any of it.
fn json_error_place(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the expected fields",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

fn fmt_op(body: &ErrorBody) -> String {
    body.operation_id
        .as_ref()
        .map(|id| format!(", OperationId {id}"))
        .unwrap_or_default()
}

/// A transport error naming where it went (`scheme://host:port`: no path, query or user
/// info), escaped (parts of it come from outside).
fn transport_detail(e: &reqwest::Error) -> String {
    crate::http::describe_transport_error(e, "CDS")
}

/// A URL without user info, query or fragment.
fn without_query(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(connect.url is not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = HttpConnect::new(HttpConnectConfig {
            base_url: ServiceUrl::parse("http://127.0.0.1:1").unwrap(),
            client_id: "c".into(),
            credential: CredentialSource::Value(SecretString::from("x")),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            stop: Stop::new(),
            max_in_flight: 4,
        })
        .unwrap();
        assert!(c.backoff(1) <= Duration::from_millis(200));
        assert!(c.backoff(20) <= Duration::from_secs(10));
        assert!(c.backoff(20) >= Duration::from_secs(5));
    }

    #[test]
    fn a_credential_file_whose_directory_is_missing_is_not_named() {
        let pasted = "s3cr3t-pasted-where-the-path-belongs";
        for path in [pasted.to_owned(), format!("/nonexistent-dir/{pasted}")] {
            let err = CredentialSource::File(PathBuf::from(&path))
                .read()
                .unwrap_err()
                .to_string();
            assert!(!err.contains(pasted), "{err}");
            assert!(
                err.contains("connect.credentials.client_secret_file: the file does not exist (its directory does not exist either)"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_missing_credential_file_in_a_real_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-secret");
        let err = CredentialSource::File(path.clone())
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn a_missing_variable_is_named_without_any_value() {
        let err = CredentialSource::Env("CDS_ROTATOR_TEST_SURELY_UNSET".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable CDS_ROTATOR_TEST_SURELY_UNSET is not set"),
            "{err}"
        );
        // A mixed-case "name" may be a pasted secret: the key is named instead.
        let pasted = "q8Ws7xZpR2mLk4Vn9TbY3cHj6FdG1sAe";
        let err = CredentialSource::Env(pasted.into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(!err.contains(pasted), "{err}");
        assert!(err.contains("client_secret_env"), "{err}");
    }

    #[test]
    fn a_credential_source_is_named_without_anything_that_may_be_a_pasted_secret() {
        let pasted = "q8Ws7xZpR2mLk4Vn9TbY3cHj6FdG1sAe";
        for source in [
            CredentialSource::Env(pasted.into()),
            CredentialSource::File(PathBuf::from(pasted)),
            CredentialSource::File(PathBuf::from(format!("/nonexistent-dir/{pasted}"))),
        ] {
            let name = source.describe();
            assert!(!name.contains(pasted), "{name}");
            assert!(
                name.contains("connect.credentials.client_secret_"),
                "{name}"
            );
        }
        assert_eq!(
            CredentialSource::Env("CDS_ADMIN_SECRET".into()).describe(),
            "environment variable CDS_ADMIN_SECRET"
        );
        assert_eq!(
            CredentialSource::File(PathBuf::from("/tmp/admin-secret")).describe(),
            "/tmp/admin-secret"
        );
    }

    #[test]
    fn shown_urls_keep_no_user_info_query_or_fragment() {
        assert_eq!(
            without_query("https://u:p@host/base?token=t#f"),
            "https://host/base"
        );
    }

    #[tokio::test]
    async fn a_connection_failure_names_the_scheme_host_and_port_tried() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = HttpConnect::new(HttpConnectConfig {
            base_url: ServiceUrl::parse(&format!("http://{dead}")).unwrap(),
            client_id: "c".into(),
            credential: CredentialSource::Value(SecretString::from("Not-Shown-0123456789")),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            stop: Stop::new(),
            max_in_flight: 4,
        })
        .unwrap();
        let err = c
            .verify_secret("c", &SecretString::from("Not-Shown-0123456789"))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Transport { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "no answer from CDS (connecting to http://{dead} failed"
            )),
            "{text}"
        );
        assert!(
            !text.contains("Not-Shown") && !text.contains("/identity"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_credential_in_a_store_is_read_trimmed_and_an_empty_one_is_refused() {
        use crate::store::file::FileStore;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("s");
        let store: std::sync::Arc<dyn crate::store::SecretStore> =
            std::sync::Arc::new(FileStore::new("local".to_owned(), secrets.clone()));
        let source = CredentialSource::Store(store, "admin".to_owned());
        let err = source.fetch().await.unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert!(err.contains("admin"), "{err}");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::set_permissions(
            &secrets,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(secrets.join("admin"), "Store-Held-Value-0123\n").unwrap();
        let s = source.fetch().await.unwrap();
        assert_eq!(s.expose_secret(), "Store-Held-Value-0123");
        assert!(!format!("{source:?}").contains("Store-Held-Value"));
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

    /// Against the emulator: the rotator's own client and an app client.
    mod against_the_emulator {
        use std::sync::Arc;

        use super::*;
        use crate::domain::ClientKind;
        use crate::emulator::{Emulator, Fault, FaultBody, Seed};

        const TENANT: &str = "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f";
        const ADMIN: &str = "2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d";
        const APP: &str = "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
        const DISABLED: &str = "5b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
        /// Far more than any test waits: a test that waits for it fails.
        const GUARD: Duration = Duration::from_secs(10);

        async fn emulator() -> Emulator {
            let seed = Seed::from_yaml(&format!(
                r#"tenant_id: {TENANT}
clients:
  - {{ id: {ADMIN}, name: admin, kind: client_credentials, roles: [tenant_administrator],
      secrets: [{{ value: admin-secret, expiration: 2099-01-01T00:00:00Z }}] }}
  - {{ id: {APP}, name: app, kind: client_credentials,
      secrets: [{{ value: app-secret, expiration: 2099-01-01T00:00:00Z }}] }}
  - {{ id: {DISABLED}, name: off, kind: client_credentials, enabled: false,
      secrets: [{{ value: off-secret, expiration: 2099-01-01T00:00:00Z }}] }}
"#
            ))
            .unwrap();
            Emulator::start(([127, 0, 0, 1], 0).into(), seed)
                .await
                .unwrap()
        }

        fn connect(emu: &Emulator, stop: &Stop) -> Arc<HttpConnect> {
            connect_with(
                emu.url(),
                CredentialSource::Value(SecretString::from("admin-secret")),
                stop,
            )
        }

        fn connect_with(
            base_url: String,
            credential: CredentialSource,
            stop: &Stop,
        ) -> Arc<HttpConnect> {
            Arc::new(
                HttpConnect::new(HttpConnectConfig {
                    base_url: ServiceUrl::parse(&base_url).unwrap(),
                    client_id: ADMIN.into(),
                    credential,
                    request_timeout: Duration::from_secs(60),
                    retry: RetryPolicy::default(),
                    stop: stop.clone(),
                    max_in_flight: 4,
                })
                .unwrap(),
            )
        }

        #[tokio::test]
        async fn a_token_endpoint_answering_404_points_at_connect_url() {
            let emu = emulator().await;
            let base = format!("{}/api/v1?token=Query-Value", emu.url());
            let c = connect_with(
                base,
                CredentialSource::Value(SecretString::from("admin-secret")),
                &Stop::new(),
            );
            let err = c.list_secrets(&app()).await.unwrap_err();
            assert!(
                matches!(err, ConnectError::TokenEndpointNotFound { .. }),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "the token endpoint {}/api/v1/identity/connect/token was not found (HTTP 404): connect.url must be the base URL, like https://uswe.datahub.connect.aveva.com",
                    emu.url()
                )),
                "{text}"
            );
            assert!(!text.contains("Query-Value"), "{text}");
            assert!(!text.contains("check tenant_id"), "{text}");
        }

        #[tokio::test]
        async fn a_refused_own_secret_names_its_file_and_says_to_put_a_working_one_there() {
            let emu = emulator().await;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("admin-secret");
            std::fs::write(&path, "Deleted-In-The-Portal-0123456789").unwrap();
            let c = connect_with(
                emu.url(),
                CredentialSource::File(path.clone()),
                &Stop::new(),
            );
            let err = c.list_secrets(&app()).await.unwrap_err();
            assert!(
                matches!(err, ConnectError::OwnCredentialRefused { status: 400, ref detail, .. } if detail == "invalid_client"),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "getting a token for the rotator's own client {ADMIN}: CDS refused the secret in {} (HTTP 400: invalid_client)",
                    path.display()
                )),
                "{text}"
            );
            assert!(
                text.contains(
                    "may have expired or been deleted in the CDS portal: put a working secret"
                ),
                "{text}"
            );
            assert!(!text.contains("Deleted-In-The-Portal"), "{text}");
        }

        #[tokio::test]
        async fn a_new_secrets_invalid_client_stays_unauthenticated() {
            let emu = emulator().await;
            let err = connect(&emu, &Stop::new())
                .verify_secret(APP, &SecretString::from("not-yet-accepted"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConnectError::Unauthenticated { ref detail, .. } if detail == "invalid_client"),
                "{err:?}"
            );
        }

        #[tokio::test]
        async fn a_disabled_or_unknown_client_is_unusable_whatever_the_secret() {
            let emu = emulator().await;
            let c = connect(&emu, &Stop::new());
            let err = c
                .verify_secret(DISABLED, &SecretString::from("off-secret"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConnectError::ClientUnusable { why: Unusable::Disabled, ref reason, .. } if reason == "client is disabled"),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&format!(
                    "getting a token for client {DISABLED}: the client is disabled in CDS (CDS said: client is disabled); enable the client in the CDS portal"
                )),
                "{err}"
            );
            let unknown = "7b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
            let err = c
                .verify_secret(unknown, &SecretString::from("x"))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConnectError::ClientUnusable {
                        why: Unusable::NotFound,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains("check the client_id in the policy"),
                "{err}"
            );
        }

        #[tokio::test]
        async fn an_oauth_description_is_escaped_and_never_shows_the_secret() {
            let emu = emulator().await;
            emu.inject_with_body(
                Fault {
                    times: 1,
                    ..fault("POST", "/identity/connect/token", 400)
                },
                FaultBody::Raw(
                    r#"{"error":"invalid_client","error_description":"client is disabled\n\u001b[2Jforged"}"#
                        .into(),
                ),
            );
            let c = connect(&emu, &Stop::new());
            let err = c
                .verify_secret(APP, &SecretString::from("app-secret"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConnectError::ClientUnusable { ref reason, .. } if reason == r"client is disabled\n\u{1b}[2Jforged"),
                "{err:?}"
            );
            // A description that repeats the secret says nothing about the client.
            emu.inject_with_body(
                Fault {
                    times: 1,
                    ..fault("POST", "/identity/connect/token", 400)
                },
                FaultBody::Raw(
                    r#"{"error":"invalid_client","error_description":"client not found: Pasted-Value-0123456789"}"#
                        .into(),
                ),
            );
            let err = c
                .verify_secret(APP, &SecretString::from("Pasted-Value-0123456789"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConnectError::Unauthenticated { .. }),
                "{err:?}"
            );
            assert!(!err.to_string().contains("Pasted-Value"), "{err}");
        }

        fn app() -> ClientRef {
            ClientRef {
                tenant_id: TENANT.into(),
                client_id: APP.into(),
                kind: ClientKind::ClientCredentials,
            }
        }

        fn new_secret() -> NewSecret {
            NewSecret {
                expiration: chrono::Utc::now() + chrono::Duration::days(30),
                description: "test".into(),
            }
        }

        fn fault(method: &str, path: &str, status: u16) -> Fault {
            Fault {
                method: Some(method.into()),
                path_contains: Some(path.into()),
                status,
                ..Fault::default()
            }
        }

        /// Waits until the emulator has answered `method` on a path with `path` in it.
        async fn seen(emu: &Emulator, method: &str, path: &str) {
            while !emu
                .requests()
                .iter()
                .any(|r| r.method == method && r.path.contains(path))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// A lease that holds for the first `n` checks, then is gone; counts the checks.
        struct LeaseFor(std::sync::atomic::AtomicUsize);

        impl crate::coordination::Fence for LeaseFor {
            fn can_write(&self, _longest_request: Duration) -> bool {
                use std::sync::atomic::Ordering::SeqCst;
                self.0
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            }
        }

        fn lease_for(n: usize) -> Writes {
            Writes::new(
                Some(Arc::new(LeaseFor(n.into()))),
                None,
                Duration::from_secs(1),
            )
        }

        #[tokio::test]
        async fn a_throttled_write_is_not_sent_again_once_the_lease_is_gone() {
            let emu = emulator().await;
            let c = connect(&emu, &Stop::new());
            let created = c
                .create_secret(&Writes::unfenced(), &app(), &new_secret())
                .await
                .unwrap();
            let id = created.secret.id;
            emu.inject(Fault {
                retry_after: Some(0),
                times: 1,
                ..fault("DELETE", "/Secrets/", 429)
            });
            // The lease holds for the first attempt only (the token is cached).
            let err = tokio::time::timeout(GUARD, c.delete_secret(&lease_for(1), &app(), id))
                .await
                .unwrap()
                .unwrap_err();
            assert!(matches!(err, ConnectError::LeaseLost { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("not sent: lost the coordination lease"),
                "{err}"
            );
            let deletes = emu
                .requests()
                .iter()
                .filter(|r| r.method == "DELETE")
                .count();
            assert_eq!(deletes, 1, "the retry was sent without the lease");
            assert!(emu.secrets(TENANT, APP).iter().any(|s| s.id == id));
        }

        #[tokio::test]
        async fn the_token_renewal_before_a_write_asks_the_lease_too() {
            let emu = emulator().await;
            let c = connect(&emu, &Stop::new());
            // No token yet: the create's first request is the token's, and it needs the
            // lease as the create does.
            let err = c
                .create_secret(&lease_for(0), &app(), &new_secret())
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::LeaseLost { .. }), "{err:?}");
            assert!(emu.requests().is_empty(), "sent: {:?}", emu.requests());
            // Reads need no lease.
            c.list_secrets(&app()).await.unwrap();
        }

        #[tokio::test]
        async fn a_retry_after_wait_ends_with_stopped_when_the_stop_is_set() {
            let emu = emulator().await;
            emu.inject(Fault {
                retry_after: Some(100),
                ..fault("GET", "/Secrets", 429)
            });
            let stop = Stop::new();
            let c = connect(&emu, &stop);
            let client = app();
            let list = c.list_secrets(&client);
            let trigger = async {
                seen(&emu, "GET", "/Secrets").await;
                stop.trigger();
            };
            let (result, ()) = tokio::time::timeout(GUARD, async { tokio::join!(list, trigger) })
                .await
                .expect("the Retry-After wait was cut short");
            assert!(
                matches!(result, Err(ConnectError::Stopped { ref operation }) if operation.starts_with("list secrets of client")),
                "{result:?}"
            );
        }

        #[tokio::test]
        async fn a_create_answered_503_is_an_unknown_outcome_at_once_when_stopping() {
            let emu = emulator().await;
            emu.inject(Fault {
                retry_after: Some(100),
                ..fault("POST", "/Secrets", 503)
            });
            let stop = Stop::new();
            let c = connect(&emu, &stop);
            let new = new_secret();
            let client = app();
            let writes = crate::writes::Writes::unfenced();
            let create = c.create_secret(&writes, &client, &new);
            let trigger = async {
                seen(&emu, "POST", "/Secrets").await;
                stop.trigger();
            };
            let (result, ()) = tokio::time::timeout(GUARD, async { tokio::join!(create, trigger) })
                .await
                .expect("the Retry-After wait was cut short");
            let err = result.unwrap_err();
            assert!(
                matches!(err, ConnectError::OutcomeUnknown { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("HTTP 503"), "{err}");
        }

        #[tokio::test]
        async fn a_read_without_an_answer_is_abandoned_once_stopping() {
            let emu = emulator().await;
            emu.inject(Fault {
                delay_ms: 60_000,
                ..fault("GET", "/Secrets", 0)
            });
            let stop = Stop::new();
            stop.trigger();
            let c = connect(&emu, &stop);
            let err = tokio::time::timeout(GUARD, c.list_secrets(&app()))
                .await
                .expect("abandoned within the grace")
                .unwrap_err();
            assert!(matches!(err, ConnectError::Transport { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("no answer from CDS (abandoned: cds-rotator is stopping)"),
                "{err}"
            );
        }

        #[tokio::test]
        async fn a_create_without_an_answer_is_an_unknown_outcome_once_stopping() {
            let emu = emulator().await;
            emu.inject(Fault {
                delay_ms: 60_000,
                after_commit: true,
                ..fault("POST", "/Secrets", 0)
            });
            let stop = Stop::new();
            stop.trigger();
            let c = connect(&emu, &stop);
            let err = tokio::time::timeout(
                GUARD,
                c.create_secret(&crate::writes::Writes::unfenced(), &app(), &new_secret()),
            )
            .await
            .expect("abandoned within the grace")
            .unwrap_err();
            assert!(
                matches!(err, ConnectError::OutcomeUnknown { ref detail, .. } if detail == ABANDONED),
                "{err:?}"
            );
        }

        #[tokio::test]
        async fn an_oversized_list_page_is_refused_naming_the_operation_and_the_cap() {
            let emu = emulator().await;
            emu.inject_with_body(
                fault("GET", "/Secrets", 0),
                FaultBody::Padding(LIST_PAGE_CAP + 1),
            );
            let err = connect(&emu, &Stop::new())
                .list_secrets(&app())
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::BadResponse { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("list secrets of client {APP}:")),
                "{text}"
            );
            assert!(
                text.contains("the answer is larger than 4194304 bytes"),
                "{text}"
            );
        }

        #[tokio::test]
        async fn a_list_page_announced_larger_than_the_cap_is_refused() {
            let emu = emulator().await;
            let mut big = " ".repeat(LIST_PAGE_CAP + 1);
            big.replace_range(0..1, "[");
            big.push(']');
            emu.inject_with_body(fault("GET", "/Secrets", 0), FaultBody::Raw(big));
            let err = connect(&emu, &Stop::new())
                .list_secrets(&app())
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("the answer is larger than 4194304 bytes"),
                "{err}"
            );
        }

        #[tokio::test]
        async fn a_list_page_under_the_cap_is_read_whole() {
            let emu = emulator().await;
            emu.inject_with_body(
                fault("GET", "/Secrets", 0),
                FaultBody::Padding(LIST_PAGE_CAP),
            );
            let listed = connect(&emu, &Stop::new())
                .list_secrets(&app())
                .await
                .unwrap();
            assert!(listed.is_empty());
        }

        #[tokio::test]
        async fn an_oversized_create_answer_is_an_unknown_outcome() {
            let emu = emulator().await;
            emu.inject_with_body(
                Fault {
                    after_commit: true,
                    ..fault("POST", "/Secrets", 0)
                },
                FaultBody::Padding(ANSWER_CAP + 1),
            );
            let err = connect(&emu, &Stop::new())
                .create_secret(&crate::writes::Writes::unfenced(), &app(), &new_secret())
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConnectError::OutcomeUnknown { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains("HTTP 201: the answer is larger than 65536 bytes"),
                "{err}"
            );
            assert_eq!(emu.secrets(TENANT, APP).len(), 2, "the secret was created");
        }

        #[tokio::test]
        async fn an_oversized_token_answer_is_refused() {
            let emu = emulator().await;
            emu.inject_with_body(
                fault("POST", "/identity/connect/token", 0),
                FaultBody::Padding(ANSWER_CAP + 1),
            );
            let err = connect(&emu, &Stop::new())
                .verify_secret(APP, &SecretString::from("app-secret"))
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::BadResponse { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("the answer is larger than 65536 bytes"),
                "{err}"
            );
        }

        #[tokio::test]
        async fn an_oversized_error_body_is_cut_and_shows_nothing_of_it() {
            let emu = emulator().await;
            let body = format!(r#"{{"Error":"{}"}}"#, "x".repeat(ANSWER_CAP));
            emu.inject_with_body(fault("GET", "/Secrets", 400), FaultBody::Raw(body));
            let err = connect(&emu, &Stop::new())
                .list_secrets(&app())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ConnectError::Api { status: 400, body, .. } if **body == ErrorBody::default()),
                "{err}"
            );
        }

        #[tokio::test]
        async fn text_of_a_cds_error_body_reaches_the_error_escaped_and_clipped() {
            let emu = emulator().await;
            let body = serde_json::json!({
                "OperationId": "op-1",
                "Error": "boom\n\u{1b}[2Jclient other: rotated: FORGED",
                "Reason": format!("\u{202e}{}", "r".repeat(1000)),
                "Resolution": "x",
            });
            emu.inject_with_body(
                fault("GET", "/Secrets", 400),
                FaultBody::Raw(body.to_string()),
            );
            let err = connect(&emu, &Stop::new())
                .list_secrets(&app())
                .await
                .unwrap_err()
                .to_string();
            assert!(
                !err.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{err:?}"
            );
            assert!(
                err.contains(r"Error: boom\n\u{1b}[2Jclient other: rotated: FORGED;"),
                "{err}"
            );
            assert!(err.contains(r"Reason: \u{202e}rrr"), "{err}");
            assert!(err.contains("OperationId: op-1"), "{err}");
            assert!(err.len() < 600, "{}", err.len());
        }

        #[tokio::test]
        async fn an_oauth_error_code_is_shown_escaped() {
            let emu = emulator().await;
            emu.inject_with_body(
                fault("POST", "/identity/connect/token", 400),
                FaultBody::Raw(r#"{"error":"invalid_client\n\u001b[2Jforged"}"#.into()),
            );
            let err = connect(&emu, &Stop::new())
                .verify_secret(APP, &SecretString::from("app-secret"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConnectError::Unauthenticated { ref detail, .. } if detail == r"invalid_client\n\u{1b}[2Jforged"),
                "{err:?}"
            );
        }

        #[tokio::test]
        async fn an_oauth_error_code_that_repeats_the_secret_is_not_shown() {
            let emu = emulator().await;
            emu.inject_with_body(
                fault("POST", "/identity/connect/token", 400),
                FaultBody::Raw(r#"{"error":"bad_secret:Pasted-Value-0123456789"}"#.into()),
            );
            let err = connect(&emu, &Stop::new())
                .verify_secret(APP, &SecretString::from("Pasted-Value-0123456789"))
                .await
                .unwrap_err()
                .to_string();
            assert!(!err.contains("Pasted-Value-0123456789"), "{err}");
            assert!(err.contains("repeats the secret sent"), "{err}");
        }
    }
}

/// The bound on requests in flight, against a bare HTTP server that counts the
/// connections it is answering.
#[cfg(test)]
mod in_flight_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Far more than any test waits: a test that waits for it fails.
    const GUARD: Duration = Duration::from_secs(30);

    /// How the server answers the request it reads.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Hold every request until `limit` are open at once, then answer each 200.
        HoldUntil(usize),
        /// Answer the first request 429 with a long `Retry-After`, and the rest 200 at once.
        ThrottleFirst,
    }

    struct Server {
        url: String,
        open: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
        throttled: Arc<tokio::sync::Notify>,
    }

    async fn serve(answer: Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let throttled = Arc::new(tokio::sync::Notify::new());
        let (all_open, _) = tokio::sync::watch::channel(0usize);
        let all_open = Arc::new(all_open);
        let seen = Arc::new(AtomicUsize::new(0));
        let server = Server {
            url,
            open: Arc::clone(&open),
            peak: Arc::clone(&peak),
            throttled: Arc::clone(&throttled),
        };
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let (open, peak, throttled, all_open, seen) = (
                    Arc::clone(&open),
                    Arc::clone(&peak),
                    Arc::clone(&throttled),
                    Arc::clone(&all_open),
                    Arc::clone(&seen),
                );
                tokio::spawn(async move {
                    read_request(&mut conn).await;
                    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now_open, Ordering::SeqCst);
                    all_open.send_replace(now_open);
                    let head = match answer {
                        Answer::HoldUntil(limit) => {
                            let mut rx = all_open.subscribe();
                            let _ = rx.wait_for(|n| *n >= limit).await;
                            // Room for a request over the limit to arrive, if one were
                            // sent: a slow machine can only hide one, never invent one.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            "HTTP/1.1 200 OK\r\n"
                        }
                        Answer::ThrottleFirst if seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                            throttled.notify_one();
                            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 100\r\n"
                        }
                        Answer::ThrottleFirst => "HTTP/1.1 200 OK\r\n",
                    };
                    let body = r#"{"access_token":"t","expires_in":3600}"#;
                    let reply = format!(
                        "{head}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    open.fetch_sub(1, Ordering::SeqCst);
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        server
    }

    /// Reads the head and the `Content-Length` bytes of the body.
    async fn read_request(conn: &mut tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = conn.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }

    fn connect(url: &str, max_in_flight: usize, stop: &Stop) -> Arc<HttpConnect> {
        Arc::new(
            HttpConnect::new(HttpConnectConfig {
                base_url: ServiceUrl::parse(url).unwrap(),
                client_id: "c".into(),
                credential: CredentialSource::Value(SecretString::from("x")),
                request_timeout: Duration::from_secs(60),
                retry: RetryPolicy::default(),
                stop: stop.clone(),
                max_in_flight,
            })
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn no_more_requests_than_max_concurrency_are_in_flight_at_once() {
        let server = serve(Answer::HoldUntil(2)).await;
        let c = connect(&server.url, 2, &Stop::new());
        let calls = (0..6).map(|_| {
            let c = Arc::clone(&c);
            async move { c.verify_secret("c", &SecretString::from("s")).await }
        });
        let results = tokio::time::timeout(GUARD, futures::future::join_all(calls))
            .await
            .expect("every request answered");
        for r in results {
            r.unwrap();
        }
        assert_eq!(server.peak.load(Ordering::SeqCst), 2);
        assert_eq!(server.open.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_request_waiting_out_retry_after_lets_another_request_go() {
        let server = serve(Answer::ThrottleFirst).await;
        let stop = Stop::new();
        let c = connect(&server.url, 1, &stop);
        let throttled = server.throttled.notified();
        let waiting = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.verify_secret("c", &SecretString::from("s")).await }
        });
        throttled.await;
        // The one place is free while the first request waits 100 s to be sent again.
        tokio::time::timeout(GUARD, c.verify_secret("c", &SecretString::from("s")))
            .await
            .expect("not held up by the waiting request")
            .unwrap();
        assert!(!waiting.is_finished());
        stop.trigger();
        let cut = tokio::time::timeout(GUARD, waiting).await.unwrap().unwrap();
        assert!(matches!(cut, Err(ConnectError::Stopped { .. })), "{cut:?}");
    }
}

//! The election on etcd, through its v3 JSON gateway (`/v3/...`) over the HTTP client the
//! rotator already has: a lease with keep-alives, and a transaction that puts
//! `<key_prefix>/leader` on the lease only while the key does not exist.
//!
//! Not here: what holding the lease allows (that is the [`super::Fence`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::spec::CoordinationSpec;
use super::{CoordinationError, LeaseState};
use crate::domain::ValueSource;
use crate::domain::source::SourceError;

/// Campaigns for and renews the leader key of one policy.
pub struct Elector {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    key: String,
    identity: String,
    ttl: Duration,
    /// User name and password, when etcd has authentication on.
    credentials: Option<(String, secrecy::SecretString)>,
    /// The auth token of the credentials.
    token: Mutex<Option<secrecy::SecretString>>,
    /// The lease this process holds, granted or not yet.
    lease: Mutex<Option<i64>>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// The etcd user name or password: a variable as it is, a file trimmed (an empty value
/// is passed on: etcd answers for it).
fn read_source(source: &ValueSource, what: &str) -> Result<String, CoordinationError> {
    let raw = source.read_raw().map_err(|e| match e {
        SourceError::NotSet(name) => CoordinationError::Setup(format!(
            "the environment variable {name} (the etcd {what}) is not set"
        )),
        SourceError::Unreadable { path, error } => CoordinationError::Setup(format!(
            "cannot read the etcd {what} from {}: {error}",
            path.display()
        )),
        SourceError::Empty => CoordinationError::Setup(format!("the etcd {what} is empty")),
    })?;
    Ok(match source {
        ValueSource::Env(_) => raw.as_str().to_owned(),
        ValueSource::File(_) => raw.trim().to_owned(),
    })
}

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, CoordinationError> {
    std::fs::read(path).map_err(|e| {
        CoordinationError::Setup(format!(
            "cannot read the etcd {what} {}: {e}",
            path.display()
        ))
    })
}

impl Elector {
    /// An elector for `spec`, as `identity`.
    pub fn new(spec: &CoordinationSpec, identity: String) -> Result<Elector, CoordinationError> {
        // A request must end well inside a renew interval, so that a dead endpoint does
        // not use up the lease.
        let mut http = reqwest::Client::builder()
            .timeout(spec.lease_ttl / 4)
            .connect_timeout(spec.lease_ttl / 4);
        if let Some(ca) = &spec.ca_file {
            let pem = read_file(ca, "CA file")?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                CoordinationError::Setup(format!("{} is not a PEM certificate: {e}", ca.display()))
            })?;
            http = http.add_root_certificate(cert);
        }
        if let Some((cert, key)) = &spec.client_cert {
            let mut pem = read_file(cert, "client certificate")?;
            pem.extend_from_slice(b"\n");
            pem.extend(read_file(key, "client key")?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                CoordinationError::Setup(format!(
                    "{} and {} are not a PEM certificate and key: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            http = http.identity(id);
        }
        let http = http
            .build()
            .map_err(|e| CoordinationError::Setup(format!("cannot build the HTTP client: {e}")))?;
        let credentials = match (&spec.username, &spec.password) {
            (Some(u), Some(p)) => Some((
                read_source(u, "user name")?,
                secrecy::SecretString::from(read_source(p, "password")?),
            )),
            _ => None,
        };
        if let Some((_, password)) = &credentials {
            // No program's output may show it in our log.
            crate::command::hold("etcd password", password);
        }
        Ok(Elector {
            http,
            endpoints: spec
                .endpoints
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            current: AtomicUsize::new(0),
            key: format!("{}/leader", spec.key_prefix),
            identity,
            ttl: spec.lease_ttl,
            credentials,
            token: Mutex::new(None),
            lease: Mutex::new(None),
        })
    }

    fn lease_id(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_lease(&self, id: Option<i64>) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = id;
    }

    /// Campaigns and renews every third of the TTL until aborted.
    pub(crate) async fn run(self: Arc<Self>, state: Arc<LeaseState>) {
        let renew = self.ttl / 3;
        loop {
            let started = Instant::now();
            self.round(&state).await;
            // An answer that came after the lease's end renews nothing.
            state.check_deadline();
            tokio::time::sleep_until(started + renew).await;
        }
    }

    /// One renewal (or grant) of the lease and one look at the leader key.
    async fn round(&self, state: &LeaseState) {
        let sent = Instant::now();
        let renewed = match self.lease_id() {
            None => self.grant().await.map(|id| {
                self.set_lease(Some(id));
                true
            }),
            Some(id) => self.keepalive(id).await,
        };
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                // The lease ran out at etcd (this process was paused or cut off): the
                // key went with it.
                self.set_lease(None);
                state.lose("the lease ran out at etcd");
                return;
            }
            Err(e) => {
                warn!(identity = %self.identity, error = %e, "cannot renew the coordination lease");
                state.check_deadline();
                return;
            }
        }
        state.renewed(sent);
        let Some(id) = self.lease_id() else {
            return;
        };
        match self.campaign(id).await {
            Ok(None) => state.hold(sent),
            Ok(Some(holder)) => {
                debug!(identity = %self.identity, holder = %holder, "another process leads");
                state.lose("another process holds the lease");
            }
            Err(e) => {
                warn!(identity = %self.identity, error = %e, "cannot read the coordination key");
                state.check_deadline();
            }
        }
    }

    /// A new lease of `ttl`.
    async fn grant(&self) -> Result<i64, CoordinationError> {
        let answer = self
            .call("lease/grant", json!({ "TTL": self.ttl.as_secs() }))
            .await?;
        int(&answer["ID"]).ok_or_else(|| CoordinationError::Refused {
            operation: "lease/grant",
            detail: "the answer has no lease ID".to_owned(),
        })
    }

    /// Renews lease `id`; `false` when etcd no longer has it.
    async fn keepalive(&self, id: i64) -> Result<bool, CoordinationError> {
        let answer = self
            .call("lease/keepalive", json!({ "ID": id.to_string() }))
            .await?;
        Ok(int(&answer["result"]["TTL"]).unwrap_or(0) > 0)
    }

    /// Puts the leader key on lease `id` unless it exists. `None`: the key is ours;
    /// else who holds it.
    async fn campaign(&self, id: i64) -> Result<Option<String>, CoordinationError> {
        let key = B64.encode(&self.key);
        let body = json!({
            "compare": [{ "target": "CREATE", "key": key, "createRevision": "0" }],
            "success": [{ "requestPut": {
                "key": key,
                "value": B64.encode(&self.identity),
                "lease": id.to_string(),
            }}],
            "failure": [{ "requestRange": { "key": key } }],
        });
        let answer = self.call("kv/txn", body).await?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(None);
        }
        let kv = &answer["responses"][0]["response_range"]["kvs"][0];
        if int(&kv["lease"]) == Some(id) {
            return Ok(None);
        }
        let holder = kv["value"]
            .as_str()
            .and_then(|v| B64.decode(v).ok())
            .map(|v| crate::text::untrusted(&String::from_utf8_lossy(&v)))
            .unwrap_or_else(|| "nobody (the key went away)".to_owned());
        Ok(Some(holder))
    }

    /// Gives the lease back (the leader key goes with it); errors are only logged: the
    /// lease runs out by itself anyway.
    pub(crate) async fn revoke(&self) {
        let Some(id) = self.lease_id() else {
            return;
        };
        self.set_lease(None);
        if let Err(e) = self
            .call("lease/revoke", json!({ "ID": id.to_string() }))
            .await
        {
            warn!(identity = %self.identity, error = %e, "cannot give the coordination lease back; it runs out by itself");
        }
    }

    /// The auth token, asked for when etcd wants credentials and none is held.
    async fn token(&self) -> Result<Option<secrecy::SecretString>, CoordinationError> {
        use secrecy::ExposeSecret;
        let Some((user, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(t) = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(Some(t));
        }
        let answer = self
            .post(
                "auth/authenticate",
                json!({ "name": user, "password": password.expose_secret() }),
                None,
            )
            .await?;
        let token = answer["token"]
            .as_str()
            .map(|t| secrecy::SecretString::from(t.to_owned()))
            .ok_or_else(|| CoordinationError::Refused {
                operation: "auth/authenticate",
                detail: "the answer has no token".to_owned(),
            })?;
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        Ok(Some(token))
    }

    /// A call with the auth token, if any; a refused token is dropped for the next call.
    async fn call(&self, operation: &'static str, body: Value) -> Result<Value, CoordinationError> {
        let token = self.token().await?;
        let result = self.post(operation, body, token.as_ref()).await;
        if let Err(CoordinationError::Refused { detail, .. }) = &result
            && detail.contains("token")
        {
            *self.token.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        result
    }

    /// POSTs `body` to `/v3/<operation>` on the endpoints in turn, starting with the one
    /// that answered last.
    async fn post(
        &self,
        operation: &'static str,
        body: Value,
        token: Option<&secrecy::SecretString>,
    ) -> Result<Value, CoordinationError> {
        use secrecy::ExposeSecret;
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.endpoints.len() {
            let at = (first + i) % self.endpoints.len();
            let mut request = self
                .http
                .post(format!("{}/v3/{operation}", self.endpoints[at]))
                .json(&body);
            if let Some(t) = token {
                request = request.header("Authorization", t.expose_secret());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{}: {}", self.endpoints[at], chain(&e));
                    continue;
                }
            };
            let status = response.status();
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("{}: {}", self.endpoints[at], chain(&e));
                    continue;
                }
            };
            self.current.store(at, Ordering::Relaxed);
            // The keep-alive stream answers one JSON object per line.
            let answer: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
                .unwrap_or(Value::Null);
            if !status.is_success() || answer.get("error").is_some() || answer.is_null() {
                let said = answer["message"]
                    .as_str()
                    .or(answer["error"].as_str())
                    .map(crate::text::untrusted)
                    .unwrap_or_else(|| format!("HTTP {status}"));
                return Err(CoordinationError::Refused {
                    operation,
                    detail: said,
                });
            }
            return Ok(answer);
        }
        Err(CoordinationError::Unreachable {
            operation,
            detail: last,
        })
    }
}

/// An int64 as the gateway writes it (a JSON string) or a number.
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

/// An error and its sources, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

//! The `vault` store: HashiCorp Vault or OpenBao KV v2 over its HTTP API.
//!
//! Each publish writes one KV v2 version of `{mount}/data/{key}` whose data holds the
//! value (`client_secret`) and the [`StoreRecord`] fields side by side, so a reader sees
//! the old version or the new one, never a mix. Writes use check-and-set on the version
//! read just before, so two writers cannot interleave. The record's non-secret fields are
//! also copied to the secret's `custom_metadata` for people browsing Vault; that copy is
//! secondary (the record is always read from the current version's data).
//!
//! A write whose answer is lost is resolved by reading back: the version after the one
//! the write was based on is ours (landed), someone else's (not landed: check-and-set
//! keeps ours out for good), or absent (the same write is sent once more; check-and-set
//! makes at most one of them land). Not here: deciding when to publish (`rotation`).

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

pub mod spec;

pub use spec::{KUBERNETES_JWT, RoleId, VaultAuth, VaultSpec, is_secret_path};

use super::{SecretStore, StoreError};
use crate::domain::SecretSource;
use crate::domain::source::{self, SourceError};
use crate::domain::{Current, Fingerprint, StoreRecord};
use crate::http::{Overflow, ReadError};
use crate::text::untrusted;

/// Answers larger than this are refused.
const MAX_ANSWER: usize = 64 * 1024;
/// Attempts for a request that failed on 429, 5xx or before it was sent.
const ATTEMPTS: u32 = 3;
/// The record fields of a version's data, besides `client_secret`.
const RECORD_FIELDS: [&str; 6] = [
    "client_id",
    "tenant_id",
    "secret_id",
    "expiration",
    "published_at",
    "fingerprint",
];

/// A Vault / OpenBao KV v2 store.
pub struct VaultStore {
    name: String,
    spec: VaultSpec,
    http: reqwest::Client,
    /// The token of the last login (or the token read last), and when to log in again.
    token: Mutex<Option<(SecretString, Option<Instant>)>>,
    /// The secret names the clients of this store use, for `probe`'s capability check.
    probe_keys: Vec<String>,
}

impl std::fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStore")
            .field("name", &self.name)
            .field("address", &self.spec.address.as_str())
            .field("mount", &self.spec.mount)
            .finish_non_exhaustive()
    }
}

/// An answer from Vault: status and (capped) body.
struct Answer {
    status: StatusCode,
    body: Zeroizing<Vec<u8>>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Vault's `errors` list, escaped, or a note that there was none.
    fn errors(&self) -> String {
        let text = self
            .json()
            .and_then(|v| {
                let list = v.get("errors")?.as_array()?.clone();
                Some(
                    list.iter()
                        // Vault's multi-error texts are indented lists: one line here.
                        .filter_map(|e| {
                            e.as_str()
                                .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "no error text".to_owned());
        untrusted(&text)
    }
}

/// Why a request got no answer.
enum NoAnswer {
    /// Certainly not carried out (the connection was never made).
    NotSent(String),
    /// Sent, answer lost (timeout, reset, a cut body): it may have been carried out.
    Lost(String),
}

impl NoAnswer {
    fn detail(&self) -> &str {
        match self {
            NoAnswer::NotSent(d) | NoAnswer::Lost(d) => d,
        }
    }
}

/// The data version under a key as last read: its number and its fingerprint.
struct Version {
    number: u64,
    fingerprint: Option<Fingerprint>,
}

impl VaultStore {
    /// A store named `name` (as in the policy) for `spec`; each request may take up to
    /// `request_timeout`. Builds the HTTP client; sends nothing.
    pub fn new(
        name: impl Into<String>,
        spec: VaultSpec,
        request_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let name = name.into();
        let http = crate::http::client_builder(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StoreError::Io {
                store: name.clone(),
                operation: "set up the HTTP client for",
                location: format!("vault {}", spec.address.as_str()),
                detail: untrusted(&e.to_string()),
            })?;
        Ok(VaultStore {
            name,
            spec,
            http,
            token: Mutex::new(None),
            probe_keys: Vec::new(),
        })
    }

    /// The same store, checking at `probe` that the rotator may write these secrets.
    pub fn with_probe_keys(mut self, keys: Vec<String>) -> Self {
        self.probe_keys = keys;
        self
    }

    fn data_path(&self, key: &str) -> String {
        format!("{}/data/{key}", self.spec.mount)
    }

    fn metadata_path(&self, key: &str) -> String {
        format!("{}/metadata/{key}", self.spec.mount)
    }

    fn error(&self, operation: &'static str, key: &str, detail: impl Into<String>) -> StoreError {
        StoreError::Io {
            store: self.name.clone(),
            operation,
            location: self.location(key),
            detail: detail.into(),
        }
    }

    /// What to do about a refused request.
    fn hint(&self, key: &str, status: StatusCode) -> String {
        let (data, meta) = (self.data_path(key), self.metadata_path(key));
        match status {
            StatusCode::FORBIDDEN => format!(
                "; the rotator's Vault token lacks permission: its Vault policy needs capabilities [\"create\", \"update\", \"read\"] on {data} and {meta} (see README, The vault store)"
            ),
            StatusCode::SERVICE_UNAVAILABLE => {
                "; Vault is sealed or in standby: unseal it or point address at the active node"
                    .to_owned()
            }
            StatusCode::NOT_FOUND => format!(
                "; check that a KV v2 engine is mounted at `{}` (bao secrets enable -path={} kv-v2)",
                self.spec.mount, self.spec.mount
            ),
            _ => String::new(),
        }
    }

    fn refused(
        &self,
        operation: &'static str,
        key: &str,
        path: &str,
        answer: &Answer,
    ) -> StoreError {
        self.error(
            operation,
            key,
            format!(
                "Vault answered HTTP {} for {path}: {}{}",
                answer.status,
                answer.errors(),
                self.hint(key, answer.status)
            ),
        )
    }

    fn read_credential(&self, what: &str, path: &Path) -> Result<SecretString, String> {
        source::read_file(path)
            .and_then(|raw| source::trimmed(&raw))
            .map_err(|e| match e {
                SourceError::Empty => format!(
                    "the {what} file {} is empty; write the {what} into it",
                    path.display()
                ),
                SourceError::Unreadable { error, .. } => format!(
                    "cannot read the {what} file {}: {error}; check the path in the policy and that cds-rotator may read it",
                    path.display()
                ),
                SourceError::NotSet(_) => e.to_string(),
            })
    }

    /// A token: the cached one, or a fresh one (read, or from a login).
    async fn token(&self, fresh: bool) -> Result<SecretString, String> {
        let mut cached = self.token.lock().await;
        // A token from the environment or a file is read at each use (it may be replaced
        // while the daemon runs); a login's token is kept until it is due for renewal.
        let is_login = !matches!(self.spec.auth, VaultAuth::Token(_));
        if !fresh
            && is_login
            && let Some((token, until)) = cached.as_ref()
            && until.is_none_or(|u| Instant::now() < u)
        {
            return Ok(token.clone());
        }
        let (token, until) = match &self.spec.auth {
            VaultAuth::Token(SecretSource::Env(name)) => {
                let value = source::read_env(name)
                    .and_then(|raw| source::trimmed(&raw))
                    .map_err(|e| match e {
                        SourceError::Empty => format!(
                            "environment variable {name} (auth.token_env) is empty; set it to the rotator's Vault token"
                        ),
                        _ => format!(
                            "environment variable {name} (auth.token_env) is not set or not text; set it to the rotator's Vault token"
                        ),
                    })?;
                (value, None)
            }
            VaultAuth::Token(SecretSource::File(path)) => {
                (self.read_credential("Vault token", path)?, None)
            }
            VaultAuth::Token(SecretSource::Store { .. }) => {
                return Err(
                    "auth: a Vault token cannot be read from a store; set auth.token_file or auth.token_env".to_owned(),
                );
            }
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                let role_id = match role_id {
                    RoleId::Value(v) => SecretString::from(v.clone()),
                    RoleId::File(path) => self.read_credential("AppRole role id", path)?,
                };
                let secret_id = self.read_credential("AppRole secret id", secret_id_file)?;
                let body = Zeroizing::new(
                    json!({
                        "role_id": role_id.expose_secret(),
                        "secret_id": secret_id.expose_secret(),
                    })
                    .to_string(),
                );
                self.login(mount, body).await?
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = self.read_credential("Kubernetes service-account token", jwt_file)?;
                let body =
                    Zeroizing::new(json!({ "role": role, "jwt": jwt.expose_secret() }).to_string());
                self.login(mount, body).await?
            }
        };
        // No program's output may show it in our log.
        crate::command::hold(&format!("store {} token", self.name), &token);
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    /// Logs in at `auth/{mount}/login`; the token and when to log in again.
    async fn login(
        &self,
        mount: &str,
        body: Zeroizing<String>,
    ) -> Result<(SecretString, Option<Instant>), String> {
        let path = format!("auth/{mount}/login");
        let answer = self
            .send(Method::POST, &path, None, Some(body.as_bytes().to_vec()))
            .await
            .map_err(|e| format!("login at {path} failed: {}", e.detail()))?;
        if !answer.status.is_success() {
            return Err(format!(
                "login at {path} was refused: HTTP {}: {}; check the role and its credentials in Vault",
                answer.status,
                answer.errors()
            ));
        }
        let v = answer.json().unwrap_or(Value::Null);
        let auth = &v["auth"];
        let Some(token) = auth["client_token"].as_str() else {
            return Err(format!(
                "login at {path} answered without auth.client_token"
            ));
        };
        // Log in again after two thirds of the lease, before the token runs out.
        let until = auth["lease_duration"]
            .as_u64()
            .filter(|s| *s > 0)
            .map(|s| Instant::now() + Duration::from_secs(s.min(86_400 * 365) * 2 / 3));
        Ok((SecretString::from(token.to_owned()), until))
    }

    /// One request, retried on 429/5xx (`retry`) and when it was certainly not sent.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, NoAnswer> {
        let url = format!("{}/v1/{path}", self.spec.address.as_str());
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                NoAnswer::NotSent(
                    "the Vault token is not valid header text; check the token's source".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert("X-Vault-Token", value);
        }
        if let Some(ns) = &self.spec.namespace
            && let Ok(value) = HeaderValue::from_str(ns)
        {
            headers.insert("X-Vault-Namespace", value);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Inside a publish every write attempt (and a login before one) asks the
            // write handle first; what was retried before was certainly not carried out.
            if method != Method::GET && crate::writes::may_send_now().is_err() {
                return Err(NoAnswer::NotSent(
                    "not sent: lost the coordination lease".to_owned(),
                ));
            }
            let mut req = self
                .http
                .request(method.clone(), &url)
                .headers(headers.clone());
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            let result = match req.send().await {
                Ok(resp) => read_capped(resp).await,
                Err(e) if e.is_connect() => Err(NoAnswer::NotSent(transport_detail(&e))),
                Err(e) => Err(NoAnswer::Lost(transport_detail(&e))),
            };
            let retry = match &result {
                Ok(a) => a.status == StatusCode::TOO_MANY_REQUESTS || a.status.is_server_error(),
                Err(NoAnswer::NotSent(_)) => true,
                // A lost answer is resolved by the caller (a write may have landed).
                Err(NoAnswer::Lost(_)) => false,
            };
            // A write is repeated only when it was certainly not carried out: a 5xx may
            // come after the write was committed.
            let is_write = method != Method::GET;
            let retry = retry
                && (!is_write
                    || matches!(&result, Err(NoAnswer::NotSent(_)))
                    || matches!(&result, Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS));
            if !retry || attempt >= ATTEMPTS {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }

    /// A request with the rotator's token; on 403 the token is fetched again (re-read or
    /// logged in again) and the request repeated once.
    async fn call(
        &self,
        operation: &'static str,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Result<Answer, NoAnswer>, StoreError> {
        let token = self
            .token(false)
            .await
            .map_err(|d| self.error(operation, key, d))?;
        let first = self
            .send(method.clone(), path, Some(&token), body.clone())
            .await;
        match &first {
            Ok(a) if a.status == StatusCode::FORBIDDEN => {}
            _ => return Ok(first),
        }
        let fresh = self
            .token(true)
            .await
            .map_err(|d| self.error(operation, key, d))?;
        if fresh.expose_secret() == token.expose_secret() {
            return Ok(first);
        }
        Ok(self.send(method, path, Some(&fresh), body).await)
    }

    /// Reads the current data version of `key`: `None` when there is none (never
    /// written, or its current version deleted or destroyed), with the version number
    /// check-and-set must name.
    async fn read_data(
        &self,
        operation: &'static str,
        key: &str,
        version: Option<u64>,
    ) -> Result<(Option<Map<String, Value>>, u64), StoreError> {
        let path = match version {
            Some(v) => format!("{}?version={v}", self.data_path(key)),
            None => self.data_path(key),
        };
        let answer = self
            .call(operation, key, Method::GET, &path, None)
            .await?
            .map_err(|e| {
                self.error(
                    operation,
                    key,
                    format!(
                        "no answer from Vault: {}; check that Vault runs at {} and is reachable",
                        e.detail(),
                        self.spec.address.as_str()
                    ),
                )
            })?;
        let v = answer.json().unwrap_or(Value::Null);
        let number = v["data"]["metadata"]["version"].as_u64().unwrap_or(0);
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                // Never written (no body data), or the version was deleted or destroyed
                // (its metadata is still there, with the version number).
                if answer.json().is_some_and(|v| {
                    v.get("errors")
                        .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()))
                }) {
                    return Err(self.refused(operation, key, &self.data_path(key), &answer));
                }
                return Ok((None, number));
            }
            _ => return Err(self.refused(operation, key, &self.data_path(key), &answer)),
        }
        match v["data"]["data"].as_object() {
            Some(data) => Ok((Some(data.clone()), number)),
            // A deleted or destroyed current version reads as data: null.
            None => Ok((None, number)),
        }
    }

    /// The current version's number and the fingerprint of its value.
    async fn current_version(
        &self,
        key: &str,
        version: Option<u64>,
    ) -> Result<Version, StoreError> {
        let (data, number) = self.read_data("read back", key, version).await?;
        let fingerprint = data.as_ref().and_then(|d| {
            d.get("client_secret")
                .and_then(Value::as_str)
                .map(|s| Fingerprint::of_bytes(s.as_bytes()))
        });
        Ok(Version {
            number,
            fingerprint,
        })
    }

    /// The record's fields as `custom_metadata` (strings only).
    fn metadata_of(record: &StoreRecord) -> Value {
        json!({
            "custom_metadata": {
                "client_id": record.client_id,
                "tenant_id": record.tenant_id,
                "secret_id": record.secret_id.to_string(),
                "expiration": record.expiration.to_rfc3339(),
                "published_at": record.published_at.to_rfc3339(),
                "fingerprint": record.fingerprint.as_str(),
                "written_by": "cds-rotator",
            }
        })
    }

    /// Sends the check-and-set write once: `Ok(true)` landed, `Ok(false)` refused by
    /// check-and-set, `Err(NoAnswer)` unknown.
    async fn write(
        &self,
        key: &str,
        body: &Zeroizing<Vec<u8>>,
    ) -> Result<Result<bool, NoAnswer>, StoreError> {
        let path = self.data_path(key);
        let answer = match self
            .call("publish", key, Method::POST, &path, Some(body.to_vec()))
            .await?
        {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        if answer.status.is_success() {
            return Ok(Ok(true));
        }
        if answer.status == StatusCode::BAD_REQUEST && answer.errors().contains("check-and-set") {
            return Ok(Ok(false));
        }
        if answer.status.is_server_error() {
            // A 5xx may come after the write was committed.
            return Ok(Err(NoAnswer::Lost(format!(
                "HTTP {}: {}",
                answer.status,
                answer.errors()
            ))));
        }
        Err(self.refused("publish", key, &path, &answer))
    }

    /// Finds out whether the write based on version `base` landed, after its answer was
    /// lost; sends it once more when nothing was written since.
    async fn resolve(
        &self,
        key: &str,
        base: u64,
        ours: &Fingerprint,
        body: &Zeroizing<Vec<u8>>,
        lost: NoAnswer,
    ) -> Result<(), StoreError> {
        let unknown = |detail: String| StoreError::OutcomeUnknown {
            store: self.name.clone(),
            location: self.location(key),
            detail,
        };
        let why = lost.detail().to_owned();
        let Ok(current) = self.current_version(key, None).await else {
            return Err(unknown(format!(
                "the answer to the write was lost ({why}) and reading it back failed"
            )));
        };
        if current.fingerprint.as_ref() == Some(ours) {
            return Ok(());
        }
        if current.number > base {
            // Exactly one write can be version base+1: ours, or another writer's.
            let Ok(next) = self.current_version(key, Some(base + 1)).await else {
                return Err(unknown(format!(
                    "the answer to the write was lost ({why}) and version {} could not be read back",
                    base + 1
                )));
            };
            if next.fingerprint.as_ref() == Some(ours) {
                return Err(unknown(format!(
                    "the write landed (version {}) but another writer has replaced it since; the next pass sorts it out",
                    base + 1
                )));
            }
            if next.number == base + 1 && next.fingerprint.is_some() {
                return Err(self.error(
                    "publish",
                    key,
                    format!("the answer to the write was lost ({why}) and another writer changed the secret meanwhile (version {} is not ours): the new value did not land; run again", base + 1),
                ));
            }
            return Err(unknown(format!(
                "the answer to the write was lost ({why}) and version {} cannot be read back",
                base + 1
            )));
        }
        // Nothing was written since `base`: send the same write again; check-and-set
        // lets at most one of the two land.
        match self.write(key, body).await? {
            Ok(true) => Ok(()),
            Ok(false) => match self.current_version(key, None).await {
                Ok(v) if v.fingerprint.as_ref() == Some(ours) => Ok(()),
                Ok(_) => Err(self.error(
                    "publish",
                    key,
                    "another writer changed the secret while the rotator was writing it: the new value did not land; run again",
                )),
                Err(_) => Err(unknown(format!(
                    "the answer to the write was lost ({why}) and reading it back failed"
                ))),
            },
            Err(again) => Err(unknown(format!(
                "the answer to the write was lost ({why}), and again ({})",
                again.detail()
            ))),
        }
    }
}

#[async_trait]
impl SecretStore for VaultStore {
    fn location(&self, key: &str) -> String {
        format!(
            "vault {}/v1/{}",
            self.spec.address.as_str(),
            self.data_path(key)
        )
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let (data, _) = self.read_data("read", key, None).await?;
        let Some(mut data) = data else {
            return Ok(None);
        };
        let value = data
            .remove("client_secret")
            .and_then(|v| match v {
                Value::String(s) => Some(Zeroizing::new(s)),
                _ => None,
            })
            .filter(|s| !s.is_empty());
        Ok(value.map(|s| SecretString::from(s.as_str())))
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        let (data, _) = self.read_data("read", key, None).await?;
        let Some(mut data) = data else {
            return Ok(Current::Empty);
        };
        let value = data
            .remove("client_secret")
            .and_then(|v| v.as_str().map(|s| Zeroizing::new(s.to_owned())));
        let present = RECORD_FIELDS
            .iter()
            .filter(|f| data.contains_key(**f))
            .count();
        let Some(value) = value else {
            if present == 0 && data.is_empty() {
                return Ok(Current::Empty);
            }
            if present == 0 {
                return Ok(Current::Unrecorded);
            }
            return Err(StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: "the current version has record fields but no client_secret; write the secret's value as client_secret, or delete the version".to_owned(),
            });
        };
        if present == 0 {
            return Ok(Current::Unrecorded);
        }
        let fields: Map<String, Value> = RECORD_FIELDS
            .iter()
            .filter_map(|f| data.get(*f).map(|v| ((*f).to_owned(), v.clone())))
            .collect();
        let record: StoreRecord =
            serde_json::from_value(Value::Object(fields)).map_err(|e| StoreError::Corrupt {
                store: self.name.clone(),
                location: self.location(key),
                detail: untrusted(&format!(
                    "{e}; the record fields of the current version were changed by hand: restore them or write a new version"
                )),
            })?;
        if record.fingerprint != Fingerprint::of_bytes(value.as_bytes()) {
            // The value was replaced by hand: the record no longer says which secret it is.
            return Ok(Current::Unrecorded);
        }
        Ok(Current::Published(record))
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let answer = self
            .call("probe", "", Method::GET, "auth/token/lookup-self", None)
            .await?
            .map_err(|e| {
                self.error(
                    "probe",
                    "",
                    format!(
                        "no answer from Vault: {}; check that Vault runs at {} and is reachable",
                        e.detail(),
                        self.spec.address.as_str()
                    ),
                )
            })?;
        if !answer.status.is_success() {
            return Err(self.error(
                "probe",
                "",
                format!(
                    "token lookup-self answered HTTP {}: {}; check the rotator's Vault token or login",
                    answer.status,
                    answer.errors()
                ),
            ));
        }
        // The mount must be KV version 2: on version 1 the data/ paths would be plain
        // secrets of their own. Only a definite answer counts (the endpoint may be closed).
        let path = format!("sys/internal/ui/mounts/{}", self.spec.mount);
        if let Ok(Ok(answer)) = self.call("probe", "", Method::GET, &path, None).await
            && answer.status.is_success()
            && let Some(v) = answer.json()
        {
            let data = &v["data"];
            let kind = data["type"].as_str().unwrap_or_default();
            let version = data["options"]["version"].as_str().unwrap_or_default();
            if kind != "kv" || version != "2" {
                return Err(self.error(
                    "probe",
                    "",
                    format!(
                        "mount `{}` is not a KV version 2 engine (type `{}`, version `{}`); point mount at a KV v2 engine, or upgrade it (bao kv enable-versioning {})",
                        self.spec.mount,
                        untrusted(kind),
                        untrusted(version),
                        self.spec.mount
                    ),
                ));
            }
        }
        if self.probe_keys.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = self
            .probe_keys
            .iter()
            .flat_map(|k| [self.data_path(k), self.metadata_path(k)])
            .collect();
        let body = json!({ "paths": paths }).to_string().into_bytes();
        let answer = self
            .call(
                "probe",
                "",
                Method::POST,
                "sys/capabilities-self",
                Some(body),
            )
            .await?
            .map_err(|e| {
                self.error("probe", "", format!("no answer from Vault: {}", e.detail()))
            })?;
        if !answer.status.is_success() {
            return Err(self.refused("probe", "", "sys/capabilities-self", &answer));
        }
        let v = answer.json().unwrap_or(Value::Null);
        let caps_of = |path: &str| -> Vec<String> {
            let list = v
                .get(path)
                .or_else(|| v["data"].get(path))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            list.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        };
        for key in &self.probe_keys {
            for path in [self.data_path(key), self.metadata_path(key)] {
                let caps = caps_of(&path);
                let ok = caps.iter().any(|c| c == "root")
                    || ["create", "update", "read"]
                        .iter()
                        .all(|need| caps.iter().any(|c| c == need));
                if !ok {
                    return Err(self.error(
                        "probe",
                        key,
                        format!(
                            "the rotator's Vault token has capabilities [{}] on {path}{}",
                            untrusted(&caps.join(", ")),
                            self.hint(key, StatusCode::FORBIDDEN)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        let ours = Fingerprint::of(value);
        if ours != record.fingerprint {
            return Err(self.error(
                "publish",
                key,
                "the record's fingerprint is not the value's (a bug in the rotator); nothing was written",
            ));
        }
        let (_, base) = self.read_data("publish", key, None).await?;
        let mut data = match serde_json::to_value(record) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(self.error("publish", key, "the record cannot be written as JSON"));
            }
        };
        data.insert(
            "client_secret".to_owned(),
            Value::String(value.expose_secret().to_owned()),
        );
        let body = Zeroizing::new(
            json!({ "options": { "cas": base }, "data": Value::Object(data) })
                .to_string()
                .into_bytes(),
        );
        match self.write(key, &body).await? {
            Ok(true) => {}
            Ok(false) => {
                return Err(self.error(
                    "publish",
                    key,
                    format!("another writer changed the secret since the rotator read it (check-and-set on version {base} failed): the new value did not land; run again, and make sure only the rotator writes this secret"),
                ));
            }
            Err(NoAnswer::NotSent(_)) if crate::writes::may_send_now().is_err() => {
                return Err(StoreError::LeaseLost {
                    location: self.location(key),
                });
            }
            Err(NoAnswer::NotSent(detail)) => {
                return Err(self.error(
                    "publish",
                    key,
                    format!("no answer from Vault: {detail}; the new value did not land; check that Vault runs at {} and is reachable", self.spec.address.as_str()),
                ));
            }
            Err(lost) => self.resolve(key, base, &ours, &body, lost).await?,
        }
        // The record lives in the data; the metadata copy is for people browsing Vault.
        let meta = Self::metadata_of(record).to_string().into_bytes();
        let path = self.metadata_path(key);
        match self
            .call("publish", key, Method::POST, &path, Some(meta))
            .await
        {
            Ok(Ok(a)) if a.status.is_success() => {}
            Ok(Ok(a)) => tracing::warn!(
                store = %self.name,
                location = %self.location(key),
                status = %a.status,
                errors = %a.errors(),
                "published; writing custom_metadata failed (the record is in the data)"
            ),
            Ok(Err(e)) => tracing::warn!(
                store = %self.name,
                location = %self.location(key),
                detail = %e.detail(),
                "published; writing custom_metadata got no answer (the record is in the data)"
            ),
            Err(e) => tracing::warn!(
                store = %self.name,
                error = %e,
                "published; writing custom_metadata failed (the record is in the data)"
            ),
        }
        Ok(())
    }
}

/// Reads a body up to [`MAX_ANSWER`] bytes; a cut body counts as a lost answer.
async fn read_capped(mut resp: reqwest::Response) -> Result<Answer, NoAnswer> {
    let status = resp.status();
    let mut body = Zeroizing::new(Vec::new());
    match crate::http::read_capped(&mut resp, &mut body, MAX_ANSWER, Overflow::Refuse).await {
        Ok(()) => Ok(Answer { status, body }),
        Err(ReadError::TooLarge) => Err(NoAnswer::Lost(format!(
            "Vault's answer (HTTP {status}) is larger than {} KiB",
            MAX_ANSWER / 1024
        ))),
        Err(ReadError::Transport(e)) => Err(NoAnswer::Lost(transport_detail(&e))),
    }
}

/// A transport error naming where it went (`scheme://host:port`), escaped.
fn transport_detail(e: &reqwest::Error) -> String {
    crate::http::describe_transport_error(e, "Vault")
}

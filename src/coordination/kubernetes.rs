//! The election on a Kubernetes `coordination.k8s.io/v1` Lease, the way client-go's
//! leader election does it: the holder renews `renewTime`; another process takes the
//! Lease only when it has seen the same `resourceVersion` for `leaseDurationSeconds` on
//! its own clock, or when nobody holds it. Every update carries the `resourceVersion`
//! it read, so the API server refuses (409) all but one of two racing writers.
//!
//! The Lease is this process's only while it holds the very version this process last
//! wrote: a `holderIdentity` equal to ours written by someone else (another process
//! given the same identity) is another holder's, waited out like any other.
//!
//! Not here: what holding the lease allows (that is the [`super::Fence`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::spec::{CoordinationKind, CoordinationSpec};
use super::{CoordinationError, LeaseState};

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Campaigns for and renews one Lease.
#[derive(Debug)]
pub struct Elector {
    http: reqwest::Client,
    /// The Lease's URL.
    url: String,
    /// The namespace's Lease collection (for the create).
    collection: String,
    name: String,
    namespace: String,
    token_file: Option<PathBuf>,
    identity: String,
    ttl: Duration,
    /// The `resourceVersion` last seen of another holder, and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
    /// The `resourceVersion` of the Lease as this process last wrote it (created, renewed
    /// or taken over): the Lease is ours only while it is still that version.
    written: Mutex<Option<String>>,
}

/// What an update of the Lease came to.
enum Update {
    /// Written; the API server gave it this `resourceVersion`.
    Done(Option<String>),
    /// Another writer was first (409).
    Conflict,
}

impl Elector {
    /// An elector for `spec`, as `identity`.
    pub fn new(spec: &CoordinationSpec, identity: String) -> Result<Elector, CoordinationError> {
        let CoordinationKind::KubernetesLease {
            namespace,
            name,
            api_url,
            token_file,
        } = &spec.kind
        else {
            return Err(CoordinationError::Setup(
                "not a kubernetes_lease section".to_owned(),
            ));
        };
        let namespace = match namespace {
            Some(n) => n.clone(),
            None => std::fs::read_to_string(format!("{SERVICE_ACCOUNT}/namespace"))
                .map(|n| n.trim().to_owned())
                .map_err(|e| {
                    CoordinationError::Setup(format!(
                        "coordination.namespace is not set and the pod's namespace cannot be read from {SERVICE_ACCOUNT}/namespace ({e}); set it"
                    ))
                })?,
        };
        let api = match api_url {
            Some(u) => u.as_str().to_owned(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    CoordinationError::Setup(
                        "not in a cluster (KUBERNETES_SERVICE_HOST is not set): set coordination.api_url".to_owned(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        let mut http = reqwest::Client::builder()
            .timeout(spec.lease_ttl / 4)
            .connect_timeout(spec.lease_ttl / 4);
        let ca = spec.ca_file.clone().or_else(|| {
            let f = PathBuf::from(format!("{SERVICE_ACCOUNT}/ca.crt"));
            (api_url.is_none() && f.is_file()).then_some(f)
        });
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).map_err(|e| {
                CoordinationError::Setup(format!("cannot read {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                CoordinationError::Setup(format!("{} is not a PEM certificate: {e}", ca.display()))
            })?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| CoordinationError::Setup(format!("cannot build the HTTP client: {e}")))?;
        let token_file = token_file.clone().or_else(|| {
            let f = PathBuf::from(format!("{SERVICE_ACCOUNT}/token"));
            (api_url.is_none() && f.is_file()).then_some(f)
        });
        let collection = format!("{api}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        Ok(Elector {
            http,
            url: format!("{collection}/{name}"),
            collection,
            name: name.clone(),
            namespace,
            token_file,
            identity,
            ttl: spec.lease_ttl,
            observed: Mutex::new(None),
            written: Mutex::new(None),
        })
    }

    /// Notes the version this process wrote, or that it holds none.
    fn wrote(&self, version: Option<String>) {
        *self.written.lock().unwrap_or_else(PoisonError::into_inner) = version;
    }

    /// Whether the Lease at `version`, naming `holder`, is the one this process wrote.
    fn is_ours(&self, holder: &str, version: &str) -> bool {
        holder == self.identity
            && self
                .written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_deref()
                == Some(version)
    }

    /// Campaigns and renews every third of the lease duration until aborted.
    pub(crate) async fn run(self: Arc<Self>, state: Arc<LeaseState>) {
        let renew = self.ttl / 3;
        loop {
            let started = Instant::now();
            if let Err(e) = self.round(&state).await {
                warn!(identity = %self.identity, error = %e, "cannot renew the coordination lease");
            }
            // An answer that came after the lease's end renews nothing.
            state.check_deadline();
            tokio::time::sleep_until(started + renew).await;
        }
    }

    async fn round(&self, state: &LeaseState) -> Result<(), CoordinationError> {
        let sent = Instant::now();
        let Some(lease) = self.get().await? else {
            return match self.create().await? {
                Update::Done(version) => {
                    self.wrote(version);
                    state.hold(sent);
                    Ok(())
                }
                Update::Conflict => {
                    self.wrote(None);
                    state.lose("another process created the lease first");
                    Ok(())
                }
            };
        };
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
        let version = lease["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Not by the holder's name alone: a name equal to ours on a version this process
        // did not write is someone else's.
        let mine = self.is_ours(holder, &version);
        if !mine && !holder.is_empty() {
            let duration = lease["spec"]["leaseDurationSeconds"]
                .as_u64()
                .map_or(self.ttl, Duration::from_secs);
            let mut observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
            let since = match &*observed {
                Some((v, at)) if *v == version => *at,
                _ => {
                    *observed = Some((version.clone(), Instant::now()));
                    Instant::now()
                }
            };
            drop(observed);
            if since.elapsed() < duration {
                debug!(identity = %self.identity, holder = %crate::text::untrusted(holder), "another process leads");
                self.wrote(None);
                state.lose("another process holds the lease");
                return Ok(());
            }
        }
        match self.update(lease, mine).await? {
            Update::Done(version) => {
                self.wrote(version);
                state.hold(sent);
            }
            Update::Conflict => {
                self.wrote(None);
                state.lose("another process updated the lease first");
            }
        }
        Ok(())
    }

    fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url);
        if let Some(f) = &self.token_file
            && let Ok(token) = crate::domain::source::read_file(f)
        {
            // Read each time: the kubelet replaces projected tokens before they expire.
            r = r.bearer_auth(token.trim());
        }
        r
    }

    async fn send(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Value), CoordinationError> {
        let response = request
            .send()
            .await
            .map_err(|e| CoordinationError::Unreachable {
                operation,
                detail: e.without_url().to_string(),
            })?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    fn refused(
        operation: &'static str,
        status: reqwest::StatusCode,
        body: &Value,
    ) -> CoordinationError {
        CoordinationError::Refused {
            operation,
            detail: body["message"]
                .as_str()
                .map(crate::text::untrusted)
                .unwrap_or_else(|| format!("HTTP {status}")),
        }
    }

    async fn get(&self) -> Result<Option<Value>, CoordinationError> {
        let (status, body) = self
            .send("get lease", self.request(reqwest::Method::GET, &self.url))
            .await?;
        match status.as_u16() {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => Err(Self::refused("get lease", status, &body)),
        }
    }

    async fn create(&self) -> Result<Update, CoordinationError> {
        let now = Self::now();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.ttl.as_secs(),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        });
        let (status, body) = self
            .send(
                "create lease",
                self.request(reqwest::Method::POST, &self.collection)
                    .json(&lease),
            )
            .await?;
        match status.as_u16() {
            200 | 201 => Ok(Update::Done(Self::version(&body))),
            409 => Ok(Update::Conflict),
            _ => Err(Self::refused("create lease", status, &body)),
        }
    }

    /// Renews the Lease (`mine`) or takes it over, guarded by its `resourceVersion`.
    async fn update(&self, mut lease: Value, mine: bool) -> Result<Update, CoordinationError> {
        let now = Self::now();
        let spec = &mut lease["spec"];
        if !mine {
            let transitions = spec["leaseTransitions"].as_u64().unwrap_or(0);
            spec["leaseTransitions"] = json!(transitions + 1);
            spec["acquireTime"] = json!(now);
            spec["holderIdentity"] = json!(self.identity);
        }
        spec["leaseDurationSeconds"] = json!(self.ttl.as_secs());
        spec["renewTime"] = json!(now);
        self.put("update lease", &lease).await
    }

    async fn put(
        &self,
        operation: &'static str,
        lease: &Value,
    ) -> Result<Update, CoordinationError> {
        let (status, body) = self
            .send(
                operation,
                self.request(reqwest::Method::PUT, &self.url).json(lease),
            )
            .await?;
        match status.as_u16() {
            200 => Ok(Update::Done(Self::version(&body))),
            409 => Ok(Update::Conflict),
            _ => Err(Self::refused(operation, status, &body)),
        }
    }

    /// The `resourceVersion` of a Lease the API server answered with.
    fn version(lease: &Value) -> Option<String> {
        lease["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Gives the Lease up (no holder), so that a standby takes it at its next try.
    pub(crate) async fn revoke(&self) {
        let result = async {
            let Some(mut lease) = self.get().await? else {
                return Ok(());
            };
            let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
            let version = Self::version(&lease).unwrap_or_default();
            if !self.is_ours(holder, &version) {
                return Ok(());
            }
            self.wrote(None);
            lease["spec"]["holderIdentity"] = Value::Null;
            self.put("release lease", &lease).await.map(|_| ())
        }
        .await;
        if let Err(e) = result {
            warn!(identity = %self.identity, error = %e, "cannot give the Lease back; it runs out by itself");
        }
    }
}

//! A fake of the Azure Key Vault secrets REST API on loopback HTTPS, for driving the
//! official Azure crates in tests (there is no runnable Key Vault emulator).
//!
//! It follows the service's contract where the store depends on it: the bearer
//! challenge (an unauthenticated request gets 401 with `WWW-Authenticate: Bearer
//! authorization=…, resource="https://vault.azure.net"`), `api-version` required,
//! `PUT /secrets/{name}` (a new version), `GET /secrets/{name}[/{version}]`,
//! `GET /secrets/{name}/versions`, `GET /secrets`, `PATCH /secrets/{name}/{version}`,
//! and Key Vault's error shape (`{"error":{"code","message"}}`). Its certificate is
//! signed by a CA made at start, which only the test's HTTPS client trusts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The token the test credential hands out; anything else is refused.
pub const TOKEN: &str = "test-token-for-the-fake-vault";
/// The tenant in the bearer challenge.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// One version of a secret.
#[derive(Clone, Debug)]
pub struct Version {
    pub id: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub attributes: Value,
}

/// What the fake holds, and how it misbehaves.
#[derive(Default)]
pub struct Vault {
    /// Versions per secret name (lowercase, as Key Vault names are case-insensitive),
    /// the last one current.
    pub secrets: HashMap<String, Vec<Version>>,
    /// Every authenticated request answers 403 (the caller lacks the RBAC role).
    pub forbidden: bool,
    /// This many PUTs are applied, then their answers cut off.
    pub lose_put_answers: usize,
    /// This many PUTs are answered 500 without being applied.
    pub fail_puts: usize,
    /// Every GET answer is cut off.
    pub cut_gets: bool,
    /// Requests seen, as `METHOD path`; those answered with the challenge end in ` 401`.
    pub requests: Vec<String>,
}

/// A running fake vault.
pub struct FakeVault {
    pub url: String,
    pub state: Arc<Mutex<Vault>>,
    ca: rustls::pki_types::CertificateDer<'static>,
    tls: Arc<rustls::ServerConfig>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVault {
    /// Starts a fake on a free loopback port.
    pub async fn start() -> FakeVault {
        let (ca, tls) = certificates();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("https://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(Vault::default()));
        let app = Router::new()
            .route("/secrets", get(list_secrets))
            .route("/secrets/{name}", get(get_current).put(set_secret))
            .route("/secrets/{name}/", get(get_current))
            .route("/secrets/{name}/versions", get(list_versions))
            .route(
                "/secrets/{name}/{version}",
                get(get_version).patch(update_version),
            )
            .with_state(Shared {
                state: state.clone(),
                url: url.clone(),
            });
        let tls = Arc::new(tls);
        let listener = TlsListener {
            tcp: listener,
            acceptor: TlsAcceptor::from(tls.clone()),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeVault {
            url,
            state,
            ca,
            tls,
            task,
        }
    }

    /// Stops accepting connections (the port is then closed).
    pub async fn stop(self) -> String {
        self.task.abort();
        let _ = self.task.await;
        self.url
    }

    /// A fault proxy (support/proxy.rs) in front of this fake: it serves TLS with
    /// the fake's own certificate, so [`FakeVault::http_client`] trusts it too.
    pub async fn fault_proxy(&self) -> crate::support::proxy::FaultProxy {
        crate::support::proxy::FaultProxy::start_tls(&self.url, self.tls.clone(), self.ca.clone())
            .await
    }

    /// An HTTPS client that trusts this fake's CA (and nothing else).
    pub fn http_client(&self) -> reqwest013::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        cds_rotator::store::azure_key_vault::http_client(roots).unwrap()
    }

    /// The current version of `name`, read from the fake's state.
    pub fn current(&self, name: &str) -> Option<Version> {
        let state = self.state.lock().unwrap();
        state
            .secrets
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.last().cloned())
    }

    /// The value readers get under `name` (a GET through the fake's state).
    pub async fn current_value(&self, name: &str) -> Option<String> {
        self.current(name).map(|v| v.value)
    }

    /// Stores a version by hand (as a person with the portal would).
    pub fn put_by_hand(&self, name: &str, value: &str, tags: Option<BTreeMap<String, String>>) {
        let mut state = self.state.lock().unwrap();
        let version = new_version(&self.url, name, value, None, tags, json!({}));
        state
            .secrets
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(version);
    }
}

/// A credential that always hands out [`TOKEN`] (the SDK's own bearer policy uses it).
#[derive(Debug)]
pub struct FixedToken;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        // The scope comes from the challenge's resource.
        assert_eq!(scopes, ["https://vault.azure.net/.default"]);
        Ok(azure_core::credentials::AccessToken::new(
            TOKEN.to_owned(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<Vault>>,
    url: String,
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn certificates() -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::ServerConfig,
) {
    let ca = crate::support::TestCa::new();
    let (server, server_key) = ca.issue(&["127.0.0.1", "localhost"]);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.der(), config)
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that does not trust the CA fails here; the next one is served.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The checks every request passes first: api-version, then the bearer token.
fn gate(
    shared: &Shared,
    line: String,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Box<Response>> {
    let mut state = shared.state.lock().unwrap();
    state.requests.push(line);
    let Some(version) = query.get("api-version") else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The api-version query parameter is required",
        )));
    };
    // 7.5 and later: 7.5, 7.6, or the dated versions (2025-07-01).
    let new_enough = version.starts_with("20")
        || version
            .split_once('.')
            .and_then(|(a, b)| {
                Some((
                    a.parse::<u32>().ok()?,
                    b.split('-').next()?.parse::<u32>().ok()?,
                ))
            })
            .is_some_and(|v| v >= (7, 5));
    if !new_enough {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The specified version is not supported",
        )));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        if let Some(last) = state.requests.last_mut() {
            last.push_str(" 401");
        }
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            format!(
                "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\""
            )
            .parse()
            .unwrap(),
        );
        return Err(Box::new(response));
    }
    if state.forbidden {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
        )));
    }
    Ok(())
}

/// An answer that breaks off after the status line.
fn cut() -> Response {
    let body = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection cut"))
    });
    (StatusCode::OK, Body::from_stream(body)).into_response()
}

fn new_version(
    url: &str,
    name: &str,
    value: &str,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Value,
) -> Version {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now().timestamp();
    let mut attrs = json!({
        "enabled": true,
        "created": now,
        "updated": now,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    });
    for key in ["enabled", "exp", "nbf"] {
        if let Some(v) = attributes.get(key) {
            attrs[key] = v.clone();
        }
    }
    Version {
        id: format!("{url}/secrets/{name}/{id}"),
        value: value.to_owned(),
        content_type,
        tags,
        attributes: attrs,
    }
}

fn bundle(v: &Version, with_value: bool) -> Value {
    let mut out = json!({"id": v.id, "attributes": v.attributes});
    if with_value {
        out["value"] = json!(v.value);
    }
    if let Some(ct) = &v.content_type {
        out["contentType"] = json!(ct);
    }
    if let Some(tags) = &v.tags {
        out["tags"] = json!(tags);
    }
    out
}

fn not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!("A secret with (name/id) {name} was not found in this key vault."),
    )
}

async fn set_secret(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&shared, format!("PUT /secrets/{name}"), &headers, &query) {
        return *r;
    }
    let valid = !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request URI contains an invalid name",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The body is not JSON",
        );
    };
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "Property value is required",
        );
    };
    let tags = body
        .get("tags")
        .and_then(|t| serde_json::from_value::<BTreeMap<String, String>>(t.clone()).ok());
    if tags.as_ref().is_some_and(|t| t.len() > 15) {
        return error(StatusCode::BAD_REQUEST, "BadParameter", "Too many tags");
    }
    let version = new_version(
        &shared.url,
        &name,
        value,
        body.get("contentType")
            .and_then(Value::as_str)
            .map(str::to_owned),
        tags,
        body.get("attributes").cloned().unwrap_or(json!({})),
    );
    let answer = bundle(&version, true);
    let mut state = shared.state.lock().unwrap();
    if state.fail_puts > 0 {
        state.fail_puts -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The service encountered an internal error",
        );
    }
    state
        .secrets
        .entry(name.to_ascii_lowercase())
        .or_default()
        .push(version);
    if state.lose_put_answers > 0 {
        state.lose_put_answers -= 1;
        return cut();
    }
    Json(answer).into_response()
}

async fn get_current(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&shared, format!("GET /secrets/{name}"), &headers, &query) {
        return *r;
    }
    let state = shared.state.lock().unwrap();
    if state.cut_gets {
        return cut();
    }
    match state
        .secrets
        .get(&name.to_ascii_lowercase())
        .and_then(|v| v.last())
    {
        Some(v) => Json(bundle(v, true)).into_response(),
        None => not_found(&name),
    }
}

async fn get_version(
    State(shared): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &shared,
        format!("GET /secrets/{name}/{version}"),
        &headers,
        &query,
    ) {
        return *r;
    }
    let state = shared.state.lock().unwrap();
    match find(&state, &name, &version) {
        Some(v) => Json(bundle(v, true)).into_response(),
        None => not_found(&name),
    }
}

fn find<'a>(state: &'a Vault, name: &str, version: &str) -> Option<&'a Version> {
    state
        .secrets
        .get(&name.to_ascii_lowercase())?
        .iter()
        .find(|v| v.id.ends_with(&format!("/{version}")))
}

async fn update_version(
    State(shared): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = gate(
        &shared,
        format!("PATCH /secrets/{name}/{version}"),
        &headers,
        &query,
    ) {
        return *r;
    }
    let mut state = shared.state.lock().unwrap();
    let Some(v) = state
        .secrets
        .get_mut(&name.to_ascii_lowercase())
        .and_then(|vs| {
            vs.iter_mut()
                .find(|v| v.id.ends_with(&format!("/{version}")))
        })
    else {
        return not_found(&name);
    };
    if let Some(attrs) = body.get("attributes").and_then(Value::as_object) {
        for (k, val) in attrs {
            v.attributes[k] = val.clone();
        }
    }
    if let Some(tags) = body.get("tags") {
        v.tags = serde_json::from_value(tags.clone()).ok();
    }
    if let Some(ct) = body.get("contentType").and_then(Value::as_str) {
        v.content_type = Some(ct.to_owned());
    }
    Json(bundle(v, false)).into_response()
}

async fn list_versions(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &shared,
        format!("GET /secrets/{name}/versions"),
        &headers,
        &query,
    ) {
        return *r;
    }
    let state = shared.state.lock().unwrap();
    let items: Vec<Value> = state
        .secrets
        .get(&name.to_ascii_lowercase())
        .map(|vs| vs.iter().map(|v| bundle(v, false)).collect())
        .unwrap_or_default();
    Json(json!({"value": items, "nextLink": null})).into_response()
}

async fn list_secrets(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&shared, "GET /secrets".to_owned(), &headers, &query) {
        return *r;
    }
    let max = query
        .get("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(25);
    let state = shared.state.lock().unwrap();
    let items: Vec<Value> = state
        .secrets
        .values()
        .filter_map(|vs| vs.last())
        .take(max)
        .map(|v| {
            let mut b = bundle(v, false);
            let id = b["id"]
                .as_str()
                .unwrap_or_default()
                .rsplit_once('/')
                .map(|(a, _)| a.to_owned());
            b["id"] = json!(id);
            b
        })
        .collect();
    Json(json!({"value": items, "nextLink": null})).into_response()
}

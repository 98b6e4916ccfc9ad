//! A small fake of the Kubernetes API's Lease endpoints (`coordination.k8s.io/v1`) for
//! the coordination tests: GET, POST (409 when it exists) and PUT (409 unless the body
//! carries the current `resourceVersion`), behind a bearer token, as the API server
//! answers them.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-service-account-token";

#[derive(Default)]
struct Store {
    lease: Option<Value>,
    version: u64,
    /// Successful updates that changed the holder.
    takeovers: u64,
}

/// A running fake API server.
pub struct FakeLeases {
    pub url: String,
    store: Arc<Mutex<Store>>,
    pub token_file: tempfile::NamedTempFile,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLeases {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeLeases {
    pub async fn start() -> FakeLeases {
        let store = Arc::new(Mutex::new(Store::default()));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&store));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), TOKEN).unwrap();
        FakeLeases {
            url,
            store,
            token_file,
            server,
        }
    }

    /// The Lease as stored.
    pub fn lease(&self) -> Option<Value> {
        self.store.lock().unwrap().lease.clone()
    }
}

fn status(code: StatusCode, message: &str) -> axum::response::Response {
    (
        code,
        axum::Json(json!({ "kind": "Status", "code": code.as_u16(), "message": message })),
    )
        .into_response()
}

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let path = uri.path();
    let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") else {
        return status(StatusCode::NOT_FOUND, "not found");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut store = store.lock().unwrap();
    match (method, parts.as_slice()) {
        (Method::GET, [_, "leases", _]) => match &store.lease {
            Some(l) => (StatusCode::OK, axum::Json(l.clone())).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "leases.coordination.k8s.io not found",
            ),
        },
        (Method::POST, [_, "leases"]) => {
            if store.lease.is_some() {
                return status(
                    StatusCode::CONFLICT,
                    "leases.coordination.k8s.io already exists",
                );
            }
            let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "not JSON");
            };
            store.version += 1;
            lease["metadata"]["resourceVersion"] = json!(store.version.to_string());
            store.lease = Some(lease.clone());
            (StatusCode::CREATED, axum::Json(lease)).into_response()
        }
        (Method::PUT, [_, "leases", _]) => {
            let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "not JSON");
            };
            let Some(current) = store.lease.clone() else {
                return status(
                    StatusCode::NOT_FOUND,
                    "leases.coordination.k8s.io not found",
                );
            };
            if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            if lease["spec"]["holderIdentity"] != current["spec"]["holderIdentity"] {
                store.takeovers += 1;
            }
            store.version += 1;
            lease["metadata"]["resourceVersion"] = json!(store.version.to_string());
            store.lease = Some(lease.clone());
            (StatusCode::OK, axum::Json(lease)).into_response()
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "not supported by the fake"),
    }
}

//! The emulator's HTTP side: one handler that routes by hand (paths are matched
//! case-insensitively, as CDS does), applies fault rules, and records every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::state::{Kind, Refusal, StoredClient, StoredSecret};
use super::{Fault, FaultBody, Inner, RequestRecord, Rule, SecretView};

type Shared = Arc<Mutex<Inner>>;

pub(super) fn router(shared: Shared) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

pub(super) fn view(s: &StoredSecret) -> SecretView {
    SecretView {
        id: s.id,
        description: s.description.clone(),
        expiration: s.expiration,
        expires: s.expires,
        value_sha256: s.value_sha256.clone(),
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path.starts_with("/_emulator") {
        return control(&shared, &method, &path, &body);
    }
    let rule = take_fault(&shared, &method, &path);
    let delay = rule
        .as_ref()
        .map_or(Duration::ZERO, |r| Duration::from_millis(r.fault.delay_ms));
    let response = match rule.as_ref().map(|r| &r.fault) {
        // The request is carried out; the answer comes late or wrong (a lost answer).
        Some(f) if f.after_commit => {
            let real = route(&shared, &method, &uri, &headers, &body);
            tokio::time::sleep(delay).await;
            if f.status != 0 {
                fault_response(f)
            } else {
                real
            }
        }
        Some(f) => {
            tokio::time::sleep(delay).await;
            if f.status != 0 {
                fault_response(f)
            } else {
                route(&shared, &method, &uri, &headers, &body)
            }
        }
        None => route(&shared, &method, &uri, &headers, &body),
    };
    let response = match rule.and_then(|r| r.body) {
        Some(replacement) => with_body(response, replacement),
        None => response,
    };
    lock(&shared).requests.push(RequestRecord {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
    });
    response
}

fn take_fault(shared: &Shared, method: &Method, path: &str) -> Option<Rule> {
    let mut inner = lock(shared);
    let i = inner.faults.iter().position(|r| {
        let f = &r.fault;
        f.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
    })?;
    let rule = inner.faults[i].clone();
    if rule.fault.times > 0 {
        if rule.fault.times == 1 {
            inner.faults.remove(i);
        } else {
            inner.faults[i].fault.times -= 1;
        }
    }
    Some(rule)
}

fn fault_response(f: &Fault) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(
        status,
        "Injected fault.",
        "The emulator was told to fail this request.",
        "Retry later.",
    );
    if let Some(secs) = f.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `resp` with its body replaced; status and other headers are kept.
fn with_body(resp: Response, replacement: FaultBody) -> Response {
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = match replacement {
        FaultBody::Raw(text) => Body::from(text),
        FaultBody::Padding(n) => {
            // Held once; streamed, so the answer has no Content-Length.
            let mut pad = vec![b' '; n];
            if n >= 2 {
                pad[0] = b'[';
                pad[n - 1] = b']';
            }
            Body::from_stream(Body::from(pad).into_data_stream())
        }
    };
    Response::from_parts(parts, body)
}

/// A fault rule as `POST /_emulator/faults` takes it: a [`Fault`], plus `body` (raw
/// text) or `pad_bytes` (streamed padding) to answer instead of the normal body.
fn parse_rule(body: &[u8]) -> Result<Rule, String> {
    let mut json: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let (raw, pad) = match json.as_object_mut() {
        Some(map) => (map.remove("body"), map.remove("pad_bytes")),
        None => (None, None),
    };
    let replacement = match (raw, pad) {
        (None | Some(serde_json::Value::Null), None) => None,
        (Some(serde_json::Value::String(text)), None) => Some(FaultBody::Raw(text)),
        (None, Some(n)) => Some(FaultBody::Padding(
            n.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n <= MAX_PAD_BYTES)
                .ok_or(format!(
                    "pad_bytes must be a whole number of bytes up to {MAX_PAD_BYTES}"
                ))?,
        )),
        (Some(_), None) => return Err("body must be a string".to_owned()),
        (Some(_), Some(_)) => return Err("give body or pad_bytes, not both".to_owned()),
    };
    let fault = serde_json::from_value::<Fault>(json).map_err(|e| e.to_string())?;
    Ok(Rule {
        fault,
        body: replacement,
    })
}

/// The largest padding the control endpoint accepts (it is held in memory once).
const MAX_PAD_BYTES: usize = 64 * 1024 * 1024;

fn control(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Response {
    match (method.as_str(), path) {
        ("POST", "/_emulator/faults") => match parse_rule(body) {
            Ok(rule) => {
                lock(shared).faults.push(rule);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        ("DELETE", "/_emulator/faults") => {
            lock(shared).faults.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", "/_emulator/propagation_delay_ms") => match serde_json::from_slice::<u64>(body) {
            Ok(ms) => {
                lock(shared).tenant.propagation = Duration::from_millis(ms);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        ("GET", "/_emulator/state") => {
            let inner = lock(shared);
            let clients: HashMap<&str, Vec<SecretView>> = inner
                .tenant
                .clients
                .values()
                .map(|c| (c.id.as_str(), c.secrets.values().map(view).collect()))
                .collect();
            axum::Json(json!({
                "tenants": { inner.tenant.id.as_str(): clients },
                "requests": inner.requests,
            }))
            .into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An `ErrorResponse` with a fresh OperationId.
fn error(status: StatusCode, error: &str, reason: &str, resolution: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "OperationId": uuid::Uuid::new_v4().to_string(),
            "Error": error,
            "Reason": reason,
            "Resolution": resolution,
            "DynamicProperties": {},
        })),
    )
        .into_response()
}

fn oauth_error(code: &str, description: Option<&str>) -> Response {
    let body = match description {
        Some(d) => json!({ "error": code, "error_description": d }),
        None => json!({ "error": code }),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let path = uri.path().trim_end_matches('/');
    let lower = path.to_ascii_lowercase();
    if lower == "/identity/.well-known/openid-configuration" && method == Method::GET {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        return axum::Json(json!({
            "issuer": format!("http://{host}/identity"),
            "token_endpoint": format!("http://{host}/identity/connect/token"),
        }))
        .into_response();
    }
    if lower == "/identity/connect/token" {
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        return token(shared, headers, body);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [api, v1, tenants, rest @ ..]
            if api.eq_ignore_ascii_case("api")
                && v1.eq_ignore_ascii_case("v1")
                && tenants.eq_ignore_ascii_case("tenants")
                && !rest.is_empty() =>
        {
            api_call(shared, method, uri, headers, body, rest)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "Not found.",
            "No such endpoint.",
            "Check the URL.",
        ),
    }
}

fn token(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", None);
    }
    let in_body = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        _ => None,
    };
    let (id, secret) = match (basic_credentials(headers), in_body) {
        // RFC 6749 §2.3: a client uses one authentication method per request.
        (Some(_), Some(_)) => return oauth_error("invalid_request", None),
        (Some(Ok(pair)), None) | (None, Some(pair)) => pair,
        (Some(Err(())), None) | (None, None) => return oauth_error("invalid_client", None),
    };
    match lock(shared).tenant.grant(&id, &secret) {
        Ok((token, lifetime)) => axum::Json(json!({
            "access_token": token,
            "expires_in": lifetime,
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(denial) => oauth_error("invalid_client", denial.description()),
    }
}

/// The client's credentials from `Authorization: Basic` (RFC 6749 §2.3.1): id and
/// secret are each form-urlencoded, joined by `:`, then base64'd. `None` without
/// such a header, `Err` when it cannot be read.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let read = || -> Option<(String, String)> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    };
    Some(read().ok_or(()))
}

/// Undoes `application/x-www-form-urlencoded` on one component (`+` is a space).
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[derive(Deserialize)]
struct SecretBody {
    #[serde(rename = "Expiration", default)]
    expiration: Option<DateTime<Utc>>,
    #[serde(rename = "Expires", default)]
    expires: Option<bool>,
    #[serde(rename = "Description", default)]
    description: Option<String>,
}

fn secret_json(s: &StoredSecret) -> serde_json::Value {
    json!({
        "Id": s.id,
        "Description": s.description,
        "Expiration": s.expiration.map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true)),
        "Expires": s.expires,
    })
}

fn client_json(c: &StoredClient) -> serde_json::Value {
    json!({
        "Id": c.id,
        "Name": c.name,
        "Enabled": c.enabled,
        "AccessTokenLifetime": c.token_lifetime,
        "Tags": [],
        "RoleIds": if c.admin { vec!["tenant-administrator"] } else { Vec::new() },
    })
}

fn query(uri: &Uri) -> (usize, usize) {
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let get = |k: &str, d: usize| {
        q.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(d)
    };
    (get("skip", 0), get("count", 100))
}

fn page<T: Clone>(items: &[T], uri: &Uri) -> Vec<T> {
    let (skip, count) = query(uri);
    items.iter().skip(skip).take(count).cloned().collect()
}

fn with_total(total: usize, body: Option<serde_json::Value>) -> Response {
    let mut resp = match body {
        Some(b) => axum::Json(b).into_response(),
        None => StatusCode::OK.into_response(),
    };
    resp.headers_mut()
        .insert("Total-Count", HeaderValue::from(total));
    resp
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("The {what} was not found."),
        &format!("No {what} with that id exists in this tenant."),
        "Check the id.",
    )
}

fn forbidden() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "Forbidden.",
        "The caller does not have a role that allows this operation.",
        "Use a client with the Tenant Administrator role.",
    )
}

fn api_call(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    rest: &[&str],
) -> Response {
    let mut inner = lock(shared);
    let tenant = &mut inner.tenant;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    let Some(caller) = tenant.caller(token).map(|c| (c.id.clone(), c.admin)) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized.",
            "The bearer token is missing, unknown or expired.",
            "Get a new token.",
        );
    };
    let (caller_id, admin) = caller;
    if !rest[0].eq_ignore_ascii_case(&tenant.id) {
        return not_found("tenant");
    }
    let kind = match rest.get(1).map(|s| s.to_ascii_lowercase()) {
        Some(s) if s == "clientcredentialclients" => Kind::ClientCredentials,
        Some(s) if s == "hybridclients" => Kind::Hybrid,
        _ => return not_found("resource"),
    };
    let is_write = *method != Method::GET && *method != Method::HEAD;
    if is_write && tenant.regional {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed.",
            "Identity and tenant management writes are only accepted in the primary region.",
            "Send writes to the primary-region URL.",
        );
    }
    match rest.len() {
        // The collection.
        2 if *method == Method::GET => {
            if !admin {
                return forbidden();
            }
            let all: Vec<serde_json::Value> = tenant
                .clients
                .values()
                .filter(|c| c.kind == kind)
                .map(client_json)
                .collect();
            with_total(all.len(), Some(serde_json::Value::Array(page(&all, uri))))
        }
        3 if *method == Method::GET => {
            if !admin {
                return forbidden();
            }
            match tenant.clients.get(&rest[2].to_ascii_lowercase()) {
                Some(c) if c.kind == kind => axum::Json(client_json(c)).into_response(),
                _ => not_found("client"),
            }
        }
        4 | 5 if rest[3].eq_ignore_ascii_case("secrets") => {
            let client_id = rest[2].to_ascii_lowercase();
            let self_call = client_id == caller_id && kind == Kind::ClientCredentials;
            let allowed = admin || (self_call && *method != Method::PUT);
            if !allowed {
                return forbidden();
            }
            let Some(client) = tenant
                .clients
                .get_mut(&client_id)
                .filter(|c| c.kind == kind)
            else {
                return not_found("client");
            };
            let id = match rest.get(4).map(|s| s.parse::<i32>()) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => return not_found("secret"),
            };
            secrets(client, method, uri, body, id)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "Not found.",
            "No such endpoint.",
            "Check the URL.",
        ),
    }
}

fn bad_request(reason: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "The request is not valid.",
        reason,
        "Correct the request and send it again.",
    )
}

fn secrets(
    client: &mut StoredClient,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    id: Option<i32>,
) -> Response {
    match (method.as_str(), id) {
        ("GET", None) => {
            let all: Vec<serde_json::Value> = client.secrets.values().map(secret_json).collect();
            with_total(all.len(), Some(serde_json::Value::Array(page(&all, uri))))
        }
        ("HEAD", None) => with_total(client.secrets.len(), None),
        ("POST", None) => {
            let Ok(req) = serde_json::from_slice::<SecretBody>(body) else {
                return bad_request("The body is not a valid secret.");
            };
            match client.create(req.description, req.expiration, req.expires) {
                Ok((s, value)) => {
                    let mut json = secret_json(&s);
                    json["Secret"] = serde_json::Value::String(value);
                    (StatusCode::CREATED, axum::Json(json)).into_response()
                }
                Err(Refusal::Invalid(reason)) => bad_request(&reason),
            }
        }
        ("GET", Some(id)) => match client.secrets.get(&id) {
            Some(s) => axum::Json(secret_json(s)).into_response(),
            None => not_found("secret"),
        },
        ("PUT", Some(id)) => {
            let Ok(req) = serde_json::from_slice::<SecretBody>(body) else {
                return bad_request("The body is not a valid secret.");
            };
            match client.update(id, req.description, req.expiration, req.expires) {
                None => not_found("secret"),
                Some(Ok(s)) => axum::Json(secret_json(&s)).into_response(),
                Some(Err(Refusal::Invalid(reason))) => bad_request(&reason),
            }
        }
        ("DELETE", Some(id)) => match client.secrets.remove(&id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => not_found("secret"),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed.",
            "This endpoint does not support this method.",
            "Check the API reference.",
        ),
    }
}

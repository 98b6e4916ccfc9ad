//! `/healthz`, `/readyz` and `/metrics` over HTTP (`daemon.listen`).
//!
//! `/healthz` is liveness: 200 while the scheduler loop is alive — it woke when it meant
//! to (within a minute), and a batch of passes in flight is within the time its bounded
//! waits allow — else 503. `/readyz` is
//! readiness: 200 once the first pass is done and the CDS token works (a standby under
//! `coordination:` at once: it serves by waiting), with a JSON body
//! that also says whether the last policy reload was refused. `/metrics` is the
//! process's [`crate::metrics`] registry. No handler reveals a secret value, a token or a
//! URL. The server asks no authentication, so nothing a client does may cost a pass its
//! file descriptors: a request head must arrive within a timeout (idle and slowloris
//! connections are closed), a connection has a lifetime, and connections past a cap are
//! closed as soon as they are accepted. The daemon also notes here where it listens, for
//! `cds-rotator health`. Not here: what the loop does (that is `daemon`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How late the loop may be to wake before it counts as stuck.
const WAKE_SLACK_MS: i64 = 60_000;

/// What the loop reports about itself, read by the handlers.
#[derive(Debug)]
pub struct Health {
    /// When the loop means to wake next (ms since the epoch; `i64::MAX`: not planned).
    next_wake_ms: AtomicI64,
    /// When the running batch started (ms since the epoch); 0 while idle.
    busy_since_ms: AtomicI64,
    /// How long the running batch may take (ms).
    busy_limit_ms: AtomicI64,
    first_pass_done: AtomicBool,
    /// 0 unknown, 1 works, 2 refused.
    token: AtomicU8,
    /// Why the last policy reload was refused, if it was.
    reload_refused: Mutex<Option<String>>,
    /// `leader` or `standby` (coordination), else `single`.
    role: Mutex<&'static str>,
}

impl Health {
    /// A loop that has not run yet.
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            next_wake_ms: AtomicI64::new(i64::MAX),
            busy_since_ms: AtomicI64::new(0),
            busy_limit_ms: AtomicI64::new(i64::MAX),
            first_pass_done: AtomicBool::new(false),
            token: AtomicU8::new(0),
            reload_refused: Mutex::new(None),
            role: Mutex::new("single"),
        })
    }

    /// The loop goes to sleep until `at` (`None`: nothing planned).
    pub fn sleeping_until(&self, at: Option<chrono::DateTime<Utc>>) {
        self.next_wake_ms.store(
            at.map_or(i64::MAX, |t| t.timestamp_millis()),
            Ordering::Relaxed,
        );
        self.busy_since_ms.store(0, Ordering::Relaxed);
    }

    /// A batch of passes started that may take up to `limit` (every wait of a pass is
    /// bounded, so a batch past its limit is stuck).
    pub fn busy(&self, limit: chrono::Duration) {
        self.busy_limit_ms
            .store(limit.num_milliseconds(), Ordering::Relaxed);
        self.busy_since_ms.store(now_ms(), Ordering::Relaxed);
        self.next_wake_ms.store(i64::MAX, Ordering::Relaxed);
    }

    /// The first pass over every client is done; `token_works` says whether CDS gave a
    /// token (`None`: nothing told).
    pub fn pass_done(&self, token_works: Option<bool>) {
        self.first_pass_done.store(true, Ordering::Relaxed);
        if let Some(ok) = token_works {
            self.token.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        }
    }

    /// The last policy reload was applied (`None`) or refused (why).
    pub fn reload(&self, refused: Option<String>) {
        *self
            .reload_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = refused;
    }

    /// This process's role under coordination.
    pub fn set_role(&self, role: &'static str) {
        *self
            .role
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = role;
    }

    /// Whether the loop is alive now.
    pub fn alive(&self) -> bool {
        let now = now_ms();
        let busy = self.busy_since_ms.load(Ordering::Relaxed);
        if busy != 0 {
            return now.saturating_sub(busy) <= self.busy_limit_ms.load(Ordering::Relaxed);
        }
        let wake = self.next_wake_ms.load(Ordering::Relaxed);
        wake == i64::MAX || now.saturating_sub(wake) <= WAKE_SLACK_MS
    }

    fn readiness(&self) -> Readiness {
        let token = match self.token.load(Ordering::Relaxed) {
            1 => "ok",
            2 => "refused",
            _ => "unknown",
        };
        let first_pass_done = self.first_pass_done.load(Ordering::Relaxed);
        let role = *self
            .role
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Readiness {
            // A standby serves by waiting to take over.
            ready: (first_pass_done && token == "ok") || role == "standby",
            first_pass_done,
            token,
            role,
            policy_reload_refused: self
                .reload_refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    first_pass_done: bool,
    token: &'static str,
    role: &'static str,
    policy_reload_refused: Option<String>,
}

async fn healthz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop is stuck\n",
        )
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let r = h.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(r))
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::get().encode(),
    )
}

/// The routes, on `health`.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// How long a client may take to send a request's head, and how long a kept-alive
/// connection may sit idle before its next request (hyper times both with one timer,
/// started when it waits for a head): a slowloris or an idle socket is closed after it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection is served (a client that sends its head but never reads the
/// answer): every answer here is small and quick.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The most connections served at once, whatever the file limit allows.
const MAX_CONNECTIONS: u64 = 256;

/// How many connections the server holds at once under a soft file limit of `nofile`:
/// at most [`MAX_CONNECTIONS`], and never more than a quarter of the limit, so the
/// descriptors a pass needs (locks, stores, HTTPS, the audit log) are always left over.
pub fn connection_cap(nofile: u64) -> usize {
    usize::try_from((nofile / 4).clamp(1, MAX_CONNECTIONS)).unwrap_or(1)
}

/// Binds `addr` now (so a taken port fails at start, before any pass) and serves in the
/// background until the process ends: each connection gets [`HEADER_READ_TIMEOUT`] per
/// request head and [`CONNECTION_LIFETIME`] in all, and a connection past
/// [`connection_cap`] is closed as soon as it is accepted.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let cap = connection_cap(crate::rlimit::nofile());
    tokio::spawn(accept_loop(listener, router(health), cap));
    Ok(bound)
}

async fn accept_loop(listener: tokio::net::TcpListener, routes: Router, cap: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before it was
                // taken: wait a little rather than spin, and keep serving.
                tracing::debug!(error = %e, "the health and metrics server could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Refused at once: holding it would hold a descriptor a pass may need.
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(routes.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // An error here is the client's (a reset, a timed-out head): nothing to report.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

/// The file in `lock_dir` where the daemon serving the policy at `policy` says where it
/// listens: named from the policy's absolute path (symlinks kept, so a ConfigMap's swap
/// of `..data` keeps the name), one per policy when several share a lock directory.
pub fn listen_file(lock_dir: &Path, policy: &Path) -> PathBuf {
    let policy = std::path::absolute(policy).unwrap_or_else(|_| policy.to_owned());
    let digest = Sha256::digest(policy.as_os_str().as_encoded_bytes());
    lock_dir.join(format!("daemon-{}.listen", &hex::encode(digest)[..16]))
}

/// Says, in [`listen_file`], the address the daemon serving `policy` took at start
/// (`health` asks it there, whatever the policy on disk says by then). The lock
/// directory is checked and made as for a lock.
pub fn publish_listen(lock_dir: &Path, policy: &Path, bound: SocketAddr) -> Result<(), String> {
    let path = listen_file(lock_dir, policy);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::lock::write_small_file(lock_dir, &name, format!("{bound}\n").as_bytes())
        .map_err(|e| e.to_string())
}

/// Forgets what [`publish_listen`] said (the daemon stopped); best effort.
pub fn unpublish_listen(lock_dir: &Path, policy: &Path) {
    let _ = std::fs::remove_file(listen_file(lock_dir, policy));
}

/// The address `health` asks for the daemon serving the policy at `policy`: what that
/// daemon published at start, else the policy's `daemon.listen`. Only `lock_dir` and
/// `daemon.listen` are read, leniently: the rest of the file may hold a mistake that the
/// running daemon refused to reload. `Ok(None)`: the policy sets no `daemon.listen`.
pub fn served_address(policy: &Path) -> Result<Option<SocketAddr>, String> {
    let text = std::fs::read_to_string(policy)
        .map_err(|e| format!("{}: cannot read the policy: {e}", policy.display()))?;
    let lenient = serde_saphyr::from_str::<LenientPolicy>(&text);
    let base = policy.parent().unwrap_or(Path::new("."));
    let lock_dir = match &lenient {
        Ok(p) => match &p.lock_dir {
            Some(serde_json::Value::String(dir)) => Some(dir.clone()),
            _ => None,
        },
        Err(_) => lock_dir_line(&text),
    }
    .map_or_else(crate::policy::default_lock_dir, |dir| base.join(dir));
    let published = std::fs::read_to_string(listen_file(&lock_dir, policy))
        .ok()
        .and_then(|t| t.trim().parse::<SocketAddr>().ok());
    if published.is_some() {
        return Ok(published);
    }
    let lenient = lenient.map_err(|e| format!("{}: {e}", policy.display()))?;
    let listen = lenient
        .daemon
        .as_ref()
        .and_then(|d| d.get("listen"))
        .and_then(serde_json::Value::as_str);
    match listen {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| {
            format!(
                "{}: daemon.listen `{}` is not an address and port",
                policy.display(),
                crate::text::untrusted(text)
            )
        }),
    }
}

/// The value of a top-level `lock_dir:` line, for a file that no longer parses as YAML
/// (an editor's half-done change): a plain or quoted scalar on the line itself.
fn lock_dir_line(text: &str) -> Option<String> {
    let line = text.lines().find_map(|l| l.strip_prefix("lock_dir:"))?;
    let value = match line.find(" #") {
        Some(at) => &line[..at],
        None => line,
    }
    .trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    (!value.is_empty()).then(|| value.to_owned())
}

/// The two keys `health` reads; everything else in the file is skipped unread.
#[derive(serde::Deserialize)]
struct LenientPolicy {
    #[serde(default)]
    lock_dir: Option<serde_json::Value>,
    #[serde(default)]
    daemon: Option<serde_json::Value>,
}

/// Asks the `/healthz` of a daemon listening on `listen` (an unspecified address such as
/// `0.0.0.0` is asked on loopback): `Ok` when it answers 200 within 5 s.
pub async fn probe(listen: SocketAddr) -> Result<(), String> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .tls_built_in_root_certs(false)
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .map_err(|e| format!("no answer from http://{addr}/healthz ({e})"))?;
    match answer.status().as_u16() {
        200 => Ok(()),
        s => Err(format!("http://{addr}/healthz answered HTTP {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Arc<Health> {
        Health::new()
    }

    #[test]
    fn a_loop_that_overslept_or_a_batch_that_stalled_is_not_alive() {
        let h = health();
        assert!(h.alive(), "starting");
        h.sleeping_until(Some(Utc::now() + chrono::Duration::hours(5)));
        assert!(h.alive(), "asleep until later");
        h.sleeping_until(Some(Utc::now() - chrono::Duration::minutes(2)));
        assert!(!h.alive(), "should have woken two minutes ago");
        h.busy(chrono::Duration::minutes(10));
        assert!(h.alive(), "busy, within its limit");
        h.busy_since_ms
            .store(now_ms() - 11 * 60 * 1000, Ordering::Relaxed);
        assert!(!h.alive(), "a batch past its limit");
    }

    #[test]
    fn the_connection_cap_leaves_three_quarters_of_the_file_limit() {
        assert_eq!(connection_cap(1024), 256);
        assert_eq!(connection_cap(400), 100);
        assert_eq!(connection_cap(1 << 20), 256);
        assert_eq!(connection_cap(0), 1);
    }

    #[test]
    fn a_policy_that_no_longer_parses_still_names_its_lock_dir() {
        assert_eq!(
            lock_dir_line("a: [\nlock_dir: /run/x # the locks\n").as_deref(),
            Some("/run/x")
        );
        assert_eq!(
            lock_dir_line("lock_dir: 'locks'\n").as_deref(),
            Some("locks")
        );
        assert_eq!(lock_dir_line("  lock_dir: /nested\n"), None);
        assert_eq!(lock_dir_line("lock_dir:\n"), None);
    }

    #[test]
    fn ready_after_the_first_pass_with_a_working_token() {
        let h = health();
        assert!(!h.readiness().ready);
        h.pass_done(None);
        assert!(!h.readiness().ready, "token unknown");
        h.pass_done(Some(true));
        assert!(h.readiness().ready);
        h.reload(Some("policy.yaml:3:5: bad".into()));
        let r = h.readiness();
        assert!(r.ready && r.policy_reload_refused.is_some());
    }
}

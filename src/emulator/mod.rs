//! A CDS emulator that follows docs/cds-api.md: the token endpoint, client and secret
//! endpoints of both client kinds, the 10-secret cap, the Expires/Expiration rules, the
//! "Self" role, 401/403/404/405/429 with `ErrorResponse` bodies, and `Total-Count`
//! pagination. Tests inject faults (a status, a delay, a lost answer after the write was
//! carried out, a hostile or oversized body) and a token-propagation delay, in process
//! or through `/_emulator/*`.
//!
//! It keeps only the SHA-256 of secret values; a value leaves it once, in the 201 of a
//! create. Not for production: plain HTTP, one tenant, state in memory.

mod server;
mod state;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use state::Tenant;
pub use state::{IdPolicy, Kind, Region, Seed, SeedClient, SeedSecret};

/// What can go wrong starting the emulator. No variant has a `source`: each message says
/// all there is once, as one line.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The seed is not valid.
    #[error("invalid seed: {0}")]
    Seed(String),
    /// The seed file is not valid.
    #[error("{path}: invalid seed: {detail}", path = path.display())]
    SeedFile {
        /// The file given with `--seed`.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The seed file could not be read.
    #[error("reading the seed {path}: {error}; check --seed", path = path.display())]
    ReadSeed {
        /// The file given with `--seed`.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `--listen` is not an address to listen on.
    #[error(
        "--listen {listen}: {detail}; give HOST:PORT, like 127.0.0.1:8080 or localhost:8080 (port 0 picks a free port)"
    )]
    Listen {
        /// What was given, escaped.
        listen: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {error}; choose another --listen address (port 0 picks a free port)"
    )]
    Bind {
        /// The address, as given and as resolved when they differ.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// `--admin-secret-file` cannot be honoured.
    #[error("--admin-secret-file {path}: {detail}", path = path.display())]
    AdminSecretFile {
        /// The file given.
        path: PathBuf,
        /// Why it was not written.
        detail: String,
    },
    /// Serving or waiting for signals failed.
    #[error("emulator: {0}")]
    Io(std::io::Error),
}

// By hand, not `#[from]`: that would make the error its own source, and a report that
// prints the chain would say the OS message twice.
impl From<std::io::Error> for EmulatorError {
    fn from(e: std::io::Error) -> Self {
        EmulatorError::Io(e)
    }
}

impl EmulatorError {
    /// Whether the command line or the seed is at fault (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EmulatorError::Seed(_)
                | EmulatorError::SeedFile { .. }
                | EmulatorError::Listen { .. }
                | EmulatorError::AdminSecretFile { .. }
        )
    }
}

/// A secret as tests see it: no value, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretView {
    /// The id.
    pub id: i32,
    /// The description.
    pub description: Option<String>,
    /// The expiration.
    pub expiration: Option<DateTime<Utc>>,
    /// Whether the expiration is enforced.
    pub expires: Option<bool>,
    /// SHA-256 of the value, hex.
    pub value_sha256: String,
}

/// A fault rule: matching requests get `status` (and/or a delay) instead of the real
/// answer. [`Emulator::inject_with_body`] also replaces the body (see [`FaultBody`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// HTTP method to match; any when `None`.
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the path to match; any when `None`.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Status to answer; 0 leaves the real answer (a delay only, or a replaced body). Required
    /// in JSON.
    pub status: u16,
    /// `Retry-After` seconds to send.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Wait this long before answering (after carrying the request out, with
    /// `after_commit`).
    #[serde(default)]
    pub delay_ms: u64,
    /// How many requests it hits; 0 = every one.
    #[serde(default)]
    pub times: u32,
    /// Carry the request out, then answer `status` (a lost answer).
    #[serde(default)]
    pub after_commit: bool,
}

/// A body a fault answers instead of the normal one, with
/// `Content-Type: application/json`; the status and other headers stay as the fault (or,
/// for a fault with status 0, the real answer) set them. Given with
/// [`Emulator::inject_with_body`], or as `body` / `pad_bytes` in the JSON of
/// `POST /_emulator/faults`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum FaultBody {
    /// This text, as it is (sent with a `Content-Length`).
    Raw(String),
    /// This many bytes of valid JSON (`[`, spaces, `]`: an empty array), streamed
    /// without a `Content-Length`, so that a reader has to count as it reads.
    Padding(usize),
}

/// A fault rule with the body it answers, if it replaces the body.
#[derive(Clone, Debug)]
struct Rule {
    fault: Fault,
    body: Option<FaultBody>,
}

/// One request the emulator answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug)]
struct Inner {
    tenant: Tenant,
    faults: Vec<Rule>,
    requests: Vec<RequestRecord>,
}

/// A running emulator. Clones share it.
#[derive(Clone, Debug)]
pub struct Emulator {
    shared: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
}

impl Emulator {
    /// Binds `addr` (port 0 picks a free one), starts serving, and returns at once. A
    /// bind error names the address.
    pub async fn start(addr: SocketAddr, seed: Seed) -> std::io::Result<Emulator> {
        let tenant = Tenant::from_seed(seed)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        Emulator::serve(listener, tenant)
    }

    /// Serves `tenant` on a bound listener.
    fn serve(listener: tokio::net::TcpListener, tenant: Tenant) -> std::io::Result<Emulator> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Inner {
            tenant,
            faults: Vec::new(),
            requests: Vec::new(),
        }));
        let (stop, mut stopped) = watch::channel(false);
        let router = server::router(Arc::clone(&shared));
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "emulator stopped");
            }
        });
        Ok(Emulator {
            shared,
            addr,
            stop: Arc::new(stop),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        // A wildcard bind is reached over loopback.
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client's secrets, by id (empty for an unknown tenant or client).
    pub fn secrets(&self, tenant_id: &str, client_id: &str) -> Vec<SecretView> {
        let inner = self.inner();
        if !inner.tenant.id.eq_ignore_ascii_case(tenant_id) {
            return Vec::new();
        }
        inner
            .tenant
            .clients
            .get(&client_id.to_ascii_lowercase())
            .map(|c| c.secrets.values().map(server::view).collect())
            .unwrap_or_default()
    }

    /// Adds a fault rule (checked in order, first match wins).
    pub fn inject(&self, fault: Fault) {
        self.inner().faults.push(Rule { fault, body: None });
    }

    /// Adds a fault rule whose answer carries `body` instead of the normal body.
    pub fn inject_with_body(&self, fault: Fault, body: FaultBody) {
        self.inner().faults.push(Rule {
            fault,
            body: Some(body),
        });
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.inner().faults.clear();
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner().requests.clone()
    }

    /// New secrets get tokens only this long after their creation (CDS propagation).
    pub fn set_token_propagation_delay(&self, delay: Duration) {
        self.inner().tenant.propagation = delay;
    }

    /// Seeds a secret directly (no rules checked); returns its id.
    pub fn add_secret(
        &self,
        tenant_id: &str,
        client_id: &str,
        value: &str,
        description: Option<&str>,
        expiration: Option<DateTime<Utc>>,
        expires: Option<bool>,
    ) -> i32 {
        let mut inner = self.inner();
        if !inner.tenant.id.eq_ignore_ascii_case(tenant_id) {
            return 0;
        }
        inner
            .tenant
            .clients
            .get_mut(&client_id.to_ascii_lowercase())
            .map(|c| c.add(value, description.map(str::to_owned), expiration, expires))
            .unwrap_or(0)
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// What `cds-rotator emulator` was asked for.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `IP:PORT` or `HOST:PORT`; a name is resolved, loopback preferred.
    pub listen: String,
    /// The seed file; the demo seed (with a fresh administrator secret) when `None`.
    pub seed: Option<PathBuf>,
    /// Where to write the administrator's secret (mode 0600).
    pub admin_secret_file: Option<PathBuf>,
}

/// Runs the emulator until SIGINT or SIGTERM (`cds-rotator emulator`). Prints to `out`
/// "cds-rotator emulator listening on http://ADDR" as its first line, then the tenant
/// id, the administrator's client id and where its secret can be read (never the
/// value), then serves.
pub async fn run(options: RunOptions, out: &mut dyn Write) -> Result<(), EmulatorError> {
    let seed = match &options.seed {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| EmulatorError::ReadSeed {
                path: path.clone(),
                error,
            })?;
            Seed::from_yaml(&text).map_err(|e| EmulatorError::SeedFile {
                path: path.clone(),
                detail: match e {
                    EmulatorError::Seed(detail) => detail,
                    e => e.to_string(),
                },
            })?
        }
        None => Seed::demo(),
    };
    let admin = seed.admin_credentials();
    let tenant_id = seed.tenant_id.clone();
    let addr = resolve(&options.listen).await?;
    // Handlers go in before the line is printed, so a signal sent as soon as the line
    // is read stops the emulator cleanly instead of killing it.
    #[cfg(unix)]
    let stopped = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            Ok::<(), std::io::Error>(())
        }
    };
    #[cfg(not(unix))]
    let stopped = tokio::signal::ctrl_c();

    // Where the administrator's secret can be read. A temporary directory lives as long
    // as the emulator: its secret is random and means nothing once it stops.
    let mut _temp = None;
    let admin_line = match (&admin, &options.admin_secret_file, &options.seed) {
        (None, Some(path), _) => {
            return Err(EmulatorError::AdminSecretFile {
                path: path.clone(),
                detail: "the seed has no client with roles: [tenant_administrator] and a secret"
                    .to_owned(),
            });
        }
        (None, None, _) => {
            "no administrator: no client in the seed has roles: [tenant_administrator] and a secret"
                .to_owned()
        }
        (Some((id, value)), Some(path), _) => {
            write_private(path, value.as_bytes()).map_err(|e| EmulatorError::AdminSecretFile {
                path: path.clone(),
                detail: format!("cannot write it: {e}"),
            })?;
            format!(
                "admin client_id: {id}\nadmin client secret: in {} (mode 0600)",
                path.display()
            )
        }
        (Some((id, _)), None, Some(seed_path)) => format!(
            "admin client_id: {id}\nadmin client secret: the value of that client's first secret in {} (or give --admin-secret-file PATH)",
            seed_path.display()
        ),
        (Some((id, value)), None, None) => {
            let dir = tempfile::Builder::new()
                .prefix("cds-rotator-emulator-")
                .tempdir()?;
            let path = dir.path().join("admin-secret");
            write_private(&path, value.as_bytes())?;
            _temp = Some(dir);
            format!(
                "admin client_id: {id}\nadmin client secret: in {} (mode 0600; removed when the emulator stops)",
                path.display()
            )
        }
    };
    drop(admin);

    let tenant = Tenant::from_seed(seed)?;
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| EmulatorError::Bind {
                addr: if addr.to_string() == options.listen {
                    addr.to_string()
                } else {
                    format!("{} ({addr})", crate::text::untrusted(&options.listen))
                },
                error,
            })?;
    let emulator = Emulator::serve(listener, tenant)?;
    // A reader that took the first line and closed the pipe must not stop the
    // emulator: output errors are ignored, serving goes on.
    let _ = writeln!(
        out,
        "cds-rotator emulator listening on {}\ntenant_id: {tenant_id}\n{admin_line}",
        emulator.url()
    )
    .and_then(|()| out.flush());
    let result = stopped.await;
    emulator.shutdown();
    result?;
    Ok(())
}

/// The address to listen on: `IP:PORT` as it is; `HOST:PORT` resolved, preferring
/// IPv4 loopback, then any loopback, then the first address.
async fn resolve(listen: &str) -> Result<SocketAddr, EmulatorError> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |detail: String| EmulatorError::Listen {
        listen: crate::text::untrusted(listen),
        detail,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| bad(crate::text::untrusted(&e.to_string())))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() && a.ip().is_loopback())
        .or_else(|| addrs.iter().find(|a| a.ip().is_loopback()))
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| bad("the name resolves to no address".to_owned()))
}

/// Writes `bytes` to `path`, readable by its owner only (0600, also when it existed).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests;

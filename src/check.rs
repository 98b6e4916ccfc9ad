//! `cds-rotator check`: a preflight of everything a pass needs, short of writing to CDS.
//!
//! It reads the rotator's own credential, gets a token with it, looks up every client
//! in CDS under its declared kind, writes and removes a probe in every store, and takes
//! and releases every client's lock. One line per finding. It changes nothing: a store
//! or lock directory that is missing is reported as "would be created", not made (as
//! root it would be made root's, unusable by the service's user).
//!
//! What gates a start (exit 1) is only what stops every client: the credential, the
//! token, the lock directory, the audit log. A problem of one client (deleted in the
//! portal, its store unwritable) fails that client's pass, not the service: it is listed
//! and `check` exits 0, unless `--strict` (CI) makes any failure exit 1. It is what an
//! operator runs before a first start, and a CI job. Not here: `plan` (offline-safe, read
//! only) and the passes themselves.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::connect::ConnectApi;
use crate::domain::{ClientKind, ClientRef};
use crate::lock::{ClientLock, DirProblem, LockError};
use crate::policy::{Policy, SecretSource};
use crate::rotation::ClientJob;
use crate::text::escape_control;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but worth fixing.
    Warn,
    /// A pass would fail.
    Fail,
}

/// One thing `check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was checked (`credential`, `token`, `client app`, `store local`, `lock app`).
    pub what: String,
    /// What was found, and what to do.
    pub detail: String,
    /// The client this is about, when it concerns one client alone; `None` for what
    /// every client needs (its failure gates a start).
    pub client: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let line = format!("{level} {}: {}", self.what, self.detail);
        f.write_str(&escape_control(&line))
    }
}

fn finding(level: Level, what: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding {
        level,
        what: what.into(),
        detail: detail.into(),
        client: None,
    }
}

impl Finding {
    fn of_client(mut self, name: &str) -> Finding {
        self.client = Some(name.to_owned());
        self
    }
}

/// Whether `check` exits 1: something every client needs failed, or, with `strict`,
/// anything failed.
pub fn fails(findings: &[Finding], strict: bool) -> bool {
    findings
        .iter()
        .any(|f| f.level == Level::Fail && (strict || f.client.is_none()))
}

/// The line that lists the clients whose pass would fail, if any.
pub fn failing_clients(findings: &[Finding], strict: bool) -> Option<Finding> {
    let names: BTreeSet<&str> = findings
        .iter()
        .filter(|f| f.level == Level::Fail)
        .filter_map(|f| f.client.as_deref())
        .collect();
    if names.is_empty() {
        return None;
    }
    let list = names.into_iter().collect::<Vec<_>>().join(", ");
    Some(if strict {
        finding(
            Level::Fail,
            "clients",
            format!("{list} would fail their pass (--strict: exit 1)"),
        )
    } else {
        finding(
            Level::Warn,
            "clients",
            format!(
                "{list} would fail their pass; the others rotate (exit 0: a problem of one client does not stop the service; --strict makes it exit 1)"
            ),
        )
    })
}

/// Runs every check, in the order a pass needs them.
pub async fn run(
    policy: &Policy,
    connect: &Arc<dyn ConnectApi>,
    jobs: &[Arc<ClientJob>],
) -> Vec<Finding> {
    let mut out = vec![credential(&policy.connect.secret)];
    let token_ok = match connect.check_credential().await {
        Ok(()) => {
            out.push(finding(
                Level::Ok,
                "token",
                format!(
                    "client {} gets a token at {}",
                    policy.connect.client_id,
                    policy.connect.url.as_str()
                ),
            ));
            true
        }
        Err(e) => {
            out.push(finding(Level::Fail, "token", e.to_string()));
            false
        }
    };
    if token_ok {
        for job in jobs {
            out.push(client(connect, job).await.of_client(&job.name));
        }
    }
    let mut probed = BTreeSet::new();
    for job in jobs {
        let location = job.store.location("");
        if !probed.insert(location.clone()) {
            continue;
        }
        if let Some((dir, unprobed)) = missing_store_dir(policy, &job.name) {
            // A store whose probe needs the directory says what waits until it is made.
            let (level, note) = match unprobed {
                Some(note) => (Level::Warn, format!("; {note}")),
                None => (Level::Ok, String::new()),
            };
            out.push(
                finding(
                    level,
                    format!("store of client {}", job.name),
                    format!(
                        "{} does not exist: it would be created (0700) by the first pass, as the user that runs it{note}",
                        dir.display()
                    ),
                )
                .of_client(&job.name),
            );
            continue;
        }
        let probed = job.store.probe().await;
        let failed = probed.is_err();
        out.push(match probed {
            Ok(()) => finding(
                Level::Ok,
                format!("store of client {}", job.name),
                format!("{} can be written", job.store.location(&job.store_key)),
            ),
            Err(e) => finding(
                Level::Fail,
                format!("store of client {}", job.name),
                e.to_string(),
            )
            .of_client(&job.name),
        });
        // Every client of that store fails its pass, not only the first one.
        let sharing = jobs
            .iter()
            .filter(|other| other.name != job.name && other.store.location("") == location);
        for other in sharing.filter(|_| failed) {
            out.push(
                finding(
                    Level::Fail,
                    format!("store of client {}", other.name),
                    format!(
                        "the same store as client {}, which cannot be written",
                        job.name
                    ),
                )
                .of_client(&other.name),
            );
        }
    }
    for job in jobs {
        out.push(lock(&policy.lock_dir, job).await);
    }
    if let Some(path) = &policy.daemon.audit_log {
        out.push(match crate::audit::inspect(path, true) {
            Ok(state) => finding(
                Level::Ok,
                "audit log",
                format!("{} {state}", path.display()),
            ),
            Err(e) => finding(Level::Fail, "audit log", e.to_string()),
        });
    }
    out.extend(
        policy
            .clients
            .iter()
            .filter_map(|c| pickup(c).map(|f| f.of_client(&c.name))),
    );
    out
}

/// The directory of a store on this host that is not there yet, with what its probe
/// leaves until it is (`Backend::unprobed_without_dir`).
fn missing_store_dir<'a>(
    policy: &'a Policy,
    client: &str,
) -> Option<(&'a Path, Option<&'static str>)> {
    let c = policy.client(client)?;
    let backend = policy.stores.get(&c.store)?.backend();
    let dir = backend.dir()?;
    matches!(std::fs::symlink_metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        .then_some((dir, backend.unprobed_without_dir()))
}

/// The client's lock: taken and released when its file is there; otherwise the lock
/// directory is only checked, since taking the lock would create the file (and, as root,
/// the directory) with this user as owner. The lock directory is every client's: its
/// failure gates a start.
async fn lock(dir: &Path, job: &ClientJob) -> Finding {
    let what = format!("lock of client {}", job.name);
    let file = dir.join(format!(
        "{}.{}.lock",
        job.client.tenant_id, job.client.client_id
    ));
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return finding(
                Level::Ok,
                what,
                format!(
                    "{} does not exist: it would be created (0700) by the first pass, as the user that runs it",
                    dir.display()
                ),
            );
        }
        Ok(meta) if DirProblem::of(&meta).is_none() && !file.exists() => {
            return finding(
                Level::Ok,
                what,
                format!(
                    "{} is usable; {} would be created by the first pass",
                    dir.display(),
                    file.display()
                ),
            );
        }
        _ => {}
    }
    match ClientLock::acquire(
        dir,
        &job.client.tenant_id,
        &job.client.client_id,
        Duration::ZERO,
    )
    .await
    {
        Ok(_) => finding(Level::Ok, what, format!("{} is usable", dir.display())),
        Err(e @ LockError::Busy { .. }) => finding(Level::Ok, what, e.to_string()),
        Err(e) => finding(Level::Fail, what, e.to_string()),
    }
}

/// The pickup check, offline ([`crate::pickup::PickupCheck::preflight`]): an ack file's
/// directory can be watched, a command's program can be run. Probe URLs are not fetched
/// (the app may not run yet).
fn pickup(c: &crate::policy::ClientPolicy) -> Option<Finding> {
    use crate::pickup::Preflight;
    let what = format!("pickup of client {}", c.name);
    Some(match crate::pickup::preflight(&c.pickup)? {
        Preflight::Ok(detail) => finding(Level::Ok, what, detail),
        Preflight::Warn(detail) => finding(Level::Warn, what, detail),
        Preflight::Fail(detail) => finding(Level::Fail, what, detail),
    })
}

/// The rotator's own credential: there, non-empty, not readable by others.
fn credential(source: &SecretSource) -> Finding {
    match source {
        SecretSource::File(path) => {
            let what = "credential";
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) => {
                    return finding(
                        Level::Fail,
                        what,
                        format!(
                            "connect.credentials.client_secret_file {}: {e}; put the rotator's client secret there",
                            path.display()
                        ),
                    );
                }
            };
            let empty = std::fs::read(path)
                .map(|bytes| {
                    let bytes = zeroize::Zeroizing::new(bytes);
                    bytes.iter().all(u8::is_ascii_whitespace)
                })
                .unwrap_or(true);
            if !meta.is_file() || empty {
                return finding(
                    Level::Fail,
                    what,
                    format!(
                        "{} is empty or not a readable file; put the rotator's client secret there",
                        path.display()
                    ),
                );
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return finding(
                    Level::Warn,
                    what,
                    format!(
                        "{} is readable by group or others (mode {mode:04o}); chmod 600 it",
                        path.display()
                    ),
                );
            }
            finding(
                Level::Ok,
                what,
                format!("{} (mode {mode:04o})", path.display()),
            )
        }
        SecretSource::Env(name) => match std::env::var_os(name) {
            Some(v) if !v.is_empty() => finding(
                Level::Warn,
                "credential",
                format!(
                    "from environment variable {name}: child processes inherit it; prefer client_secret_file (systemd LoadCredential, a Kubernetes secret volume)"
                ),
            ),
            _ => finding(
                Level::Fail,
                "credential",
                format!("environment variable {name} is not set or empty"),
            ),
        },
        // Read through the store for every token: the token request below proves it.
        SecretSource::Store { store, secret } => finding(
            Level::Ok,
            "credential",
            format!("from store {store}, secret {secret} (read for every new token)"),
        ),
    }
}

/// The client exists under its declared kind; if not, whether under the other.
async fn client(connect: &Arc<dyn ConnectApi>, job: &ClientJob) -> Finding {
    let what = format!("client {}", job.name);
    match connect.client_exists(&job.client).await {
        Ok(true) => finding(
            Level::Ok,
            what,
            format!(
                "{} exists as a {} client",
                job.client.client_id, job.client.kind
            ),
        ),
        Ok(false) => {
            let other = ClientRef {
                kind: match job.client.kind {
                    ClientKind::ClientCredentials => ClientKind::Hybrid,
                    ClientKind::Hybrid => ClientKind::ClientCredentials,
                },
                ..job.client.clone()
            };
            let detail = match connect.client_exists(&other).await {
                Ok(true) => format!(
                    "{} is not a {} client but a {} one: set kind: {} for client {}",
                    job.client.client_id, job.client.kind, other.kind, other.kind, job.name
                ),
                _ => format!(
                    "no {} client {} in tenant {}: check client_id and tenant_id",
                    job.client.kind, job.client.client_id, job.client.tenant_id
                ),
            };
            finding(Level::Fail, what, detail)
        }
        Err(e) => finding(Level::Fail, what, e.to_string()),
    }
}

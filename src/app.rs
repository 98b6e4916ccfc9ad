//! The composition root: [`wire`] builds everything a validated policy asks for — the
//! stores, the CDS client, the write handle with its fence and audit log, the notifiers,
//! the pickup checks, the reconciler and one job per client — for the binary, the demo
//! and the tests alike. [`Options`] holds what callers legitimately vary: the clients,
//! the clock, the stop, how writes are fenced, and a hook over the built stores (a test
//! puts a proxy in front of one). [`reloader`] builds it all again for the daemon.
//!
//! Not here: arguments and what a command prints (the binary's `cli/`), how a store,
//! notifier or pickup check works (their own modules), scheduling (`daemon`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::audit::{AuditError, AuditLog};
use crate::clock::{Clock, SystemClock};
use crate::connect::http::{CredentialSource, HttpConnect, HttpConnectConfig, RetryPolicy};
use crate::connect::{ConnectApi, ConnectError};
use crate::coordination::{CoordinationError, Fence, Leadership};
use crate::domain::ClientRef;
use crate::notify::{Notifier, OnlyKinds};
use crate::policy::{Policy, SecretSource};
use crate::rotation::{ClientJob, Reconciler};
use crate::stop::Stop;
use crate::store::SecretStore;
use crate::store::registry::Wiring;
use crate::writes::Writes;

/// The pieces a policy wires together.
pub struct Wired {
    /// Runs passes.
    pub reconciler: Arc<Reconciler>,
    /// One job per selected client, in policy order.
    pub jobs: Vec<Arc<ClientJob>>,
    /// `connect.max_concurrency`: the CDS requests in flight at once (the CDS client holds
    /// that bound); passes start at most twice as many clients at once.
    pub max_concurrency: usize,
    /// The CDS client the reconciler uses (`check` asks it for a token).
    pub connect: Arc<dyn ConnectApi>,
    /// The election among rotators of the policy's `coordination:`, set up and not yet
    /// campaigning: with [`Writing::Elect`] only, and then its fence guards every write.
    pub leadership: Option<Leadership>,
}

/// The policy's stores by name, built once and shared by the CDS client (a credential in
/// a store) and the jobs.
pub type Stores = BTreeMap<String, Arc<dyn SecretStore>>;

/// Runs over the built stores before anything uses them: wraps or replaces one (a test
/// puts a fault proxy or a fake's client in front of it).
pub type StoresHook = Box<dyn FnOnce(&mut Stores)>;

/// What guards the writes of the wired pieces.
pub enum Writing {
    /// Neither a fence nor the audit log: `plan`, `status` and `check`, which never
    /// write, the demo and tests.
    Unfenced,
    /// A process that writes (the daemon, `--run-now`): the election of the policy's
    /// `coordination:` is set up (in [`Wired::leadership`]) and its fence asked before
    /// every attempt; every write is recorded in the policy's audit log.
    Elect,
    /// Like [`Writing::Elect`] with a fence set up already: a reload keeps the lease of
    /// the start (and a test brings its own).
    Fenced(Option<Arc<dyn Fence>>),
}

/// What a caller of [`wire`] varies; the default is every client, on the system clock,
/// unfenced, with the stores as the policy declares them.
pub struct Options {
    /// The clients to wire, by name (all when empty).
    pub only: Vec<String>,
    /// Where the passes read the time (tests move a manual clock).
    pub clock: Arc<dyn Clock>,
    /// Passes and the CDS client's waits end at the next step boundary once triggered.
    pub stop: Stop,
    /// What guards the writes.
    pub writing: Writing,
    /// Runs over the built stores before the CDS client and the jobs take them.
    pub stores: Option<StoresHook>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            only: Vec::new(),
            clock: Arc::new(SystemClock),
            stop: Stop::new(),
            writing: Writing::Unfenced,
            stores: None,
        }
    }
}

/// Why a policy could not be wired: the binary shows it as a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A store could not be built.
    #[error("{0}")]
    Store(String),
    /// The CDS client could not be built (its credential source included).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The coordination election could not be set up.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// `--client` named a client the policy does not have.
    #[error("--client {name}: no such client in {} (clients: {})", path.display(), clients.join(", "))]
    UnknownClient {
        /// The name asked for.
        name: String,
        /// The policy file.
        path: PathBuf,
        /// The policy's clients, in order.
        clients: Vec<String>,
    },
    /// A notifier could not be built.
    #[error("{0}")]
    Notifier(String),
    /// A client names a store the policy does not declare.
    #[error("client {client}: store {store} is not declared")]
    UndeclaredStore {
        /// The client's name.
        client: String,
        /// The store it names.
        store: String,
    },
}

/// Builds everything `policy` asks for, as `options` say: the one way the binary, the
/// demo and the tests put the pieces together.
pub fn wire(policy: &Policy, options: Options) -> Result<Wired, WireError> {
    let Options {
        only,
        clock,
        stop,
        writing,
        stores: hook,
    } = options;
    // One instance of each store, shared by the jobs and a credential held in a store.
    let mut stores = build_stores(policy).map_err(WireError::Store)?;
    if let Some(hook) = hook {
        hook(&mut stores);
    }
    let connect = connect_with(policy, &stores, &stop)?;
    let (writes, leadership) = write_handle(policy, writing)?;
    for name in &only {
        if policy.client(name).is_none() {
            return Err(WireError::UnknownClient {
                name: name.clone(),
                path: policy.path.clone(),
                clients: policy.clients.iter().map(|c| c.name.clone()).collect(),
            });
        }
    }
    let jobs = jobs(policy, &stores, &only)?;
    let reconciler = Reconciler::new(
        Arc::clone(&connect),
        clock,
        policy.connect.client_id.clone(),
        policy.lock_dir.clone(),
        stop,
        writes,
    );
    Ok(Wired {
        reconciler: Arc::new(reconciler),
        jobs,
        max_concurrency: policy.connect.max_concurrency,
        connect,
        leadership,
    })
}

/// The write handle `writing` asks for, with the election it set up: the fence before
/// every attempt, the policy's audit log (opened here), and the policy's request timeout
/// as the longest single request.
fn write_handle(
    policy: &Policy,
    writing: Writing,
) -> Result<(Writes, Option<Leadership>), WireError> {
    let (fence, leadership) = match writing {
        Writing::Unfenced => return Ok((Writes::unfenced(), None)),
        Writing::Fenced(fence) => (fence, None),
        Writing::Elect => match &policy.coordination {
            Some(spec) => {
                let leadership = Leadership::new(spec, crate::coordination::identity())?;
                (Some(leadership.fence()), Some(leadership))
            }
            None => (None, None),
        },
    };
    let audit = match &policy.daemon.audit_log {
        Some(path) => Some(Arc::new(AuditLog::open(path, &policy.connect.client_id)?)),
        None => None,
    };
    let writes = Writes::new(fence, audit, policy.connect.request_timeout);
    Ok((writes, leadership))
}

/// One job per client named in `only` (all when empty), in policy order, each with its
/// store, its notifiers and its pickup check.
fn jobs(
    policy: &Policy,
    stores: &Stores,
    only: &[String],
) -> Result<Vec<Arc<ClientJob>>, WireError> {
    let sender = crate::notify::http::HttpSender::new();
    let mut notifiers: BTreeMap<&str, Arc<dyn Notifier>> = BTreeMap::new();
    for (name, spec) in &policy.notifiers {
        let notifier =
            crate::notify::from_spec(name, spec, &sender).map_err(WireError::Notifier)?;
        notifiers.insert(name, notifier);
    }
    let mut jobs = Vec::new();
    for c in &policy.clients {
        if !only.is_empty() && !only.contains(&c.name) {
            continue;
        }
        let store =
            stores
                .get(c.store.as_str())
                .cloned()
                .ok_or_else(|| WireError::UndeclaredStore {
                    client: c.name.clone(),
                    store: c.store.clone(),
                })?;
        let pickup = crate::pickup::from_spec(
            &c.pickup,
            crate::pickup::ClientInfo {
                name: c.name.clone(),
                store_location: store.location(&c.secret),
                store: store.clone(),
                store_key: c.secret.clone(),
            },
        );
        jobs.push(Arc::new(ClientJob {
            name: c.name.clone(),
            client: ClientRef {
                tenant_id: policy.connect.tenant_id.clone(),
                client_id: c.client_id.clone(),
                kind: c.kind,
            },
            store,
            store_key: c.secret.clone(),
            notifiers: c
                .notify
                .iter()
                .filter_map(|n| notifiers.get(n.as_str()).cloned())
                .map(|n| match &c.notify_on {
                    Some(kinds) => Arc::new(OnlyKinds::new(n, kinds.clone())) as Arc<dyn Notifier>,
                    None => n,
                })
                .collect(),
            pickup,
            timing: c.timing.clone(),
            retire_unmanaged: c.retire_unmanaged,
        }));
    }
    Ok(jobs)
}

/// Builds the CDS client from the policy's `connect:` section, reading a credential held
/// in a store through `stores`; its waits end on `stop`.
fn connect_with(
    policy: &Policy,
    stores: &Stores,
    stop: &Stop,
) -> Result<Arc<dyn ConnectApi>, ConnectError> {
    let c = &policy.connect;
    let credential = match &c.secret {
        SecretSource::File(path) => CredentialSource::File(path.clone()),
        SecretSource::Env(name) => CredentialSource::Env(name.clone()),
        SecretSource::Store { store, secret } => {
            let Some(s) = stores.get(store) else {
                return Err(ConnectError::Credential(format!(
                    "connect.credentials.client_secret_store: store {store} is not declared"
                )));
            };
            CredentialSource::Store(s.clone(), secret.clone())
        }
    };
    let http = HttpConnect::new(HttpConnectConfig {
        base_url: c.url.clone(),
        client_id: c.client_id.clone(),
        credential,
        request_timeout: c.request_timeout,
        retry: RetryPolicy::default(),
        stop: stop.clone(),
        max_in_flight: c.max_concurrency,
    })?;
    Ok(Arc::new(http))
}

/// Builds every store the policy declares.
fn build_stores(policy: &Policy) -> Result<Stores, String> {
    let mut stores = Stores::new();
    for (name, spec) in &policy.stores {
        let wiring = Wiring {
            request_timeout: policy.connect.request_timeout,
            tenant_id: &policy.connect.tenant_id,
            publishers: policy
                .clients
                .iter()
                .filter(|c| &c.store == name)
                .map(|c| (c.secret.as_str(), c.client_id.as_str()))
                .collect(),
        };
        stores.insert(name.clone(), spec.build(name, &wiring)?);
    }
    Ok(stores)
}

/// The longest one pass over a client of `policy` can take, the hooks it may wait for
/// included (see [`crate::daemon::pass_limit`]): a batch running longer than this per
/// round is stuck. It only feeds `/healthz`.
pub fn pass_limit(policy: &Policy) -> chrono::Duration {
    let pickup = policy
        .clients
        .iter()
        .map(|c| c.pickup.check_wait())
        .max()
        .unwrap_or_default();
    let notifier = policy
        .notifiers
        .values()
        .map(crate::policy::NotifierSpec::timeout)
        .max()
        .unwrap_or_default();
    crate::daemon::pass_limit(policy.pass_budget(), pickup, notifier)
}

/// What the daemon runs for `policy`, from its wired pieces.
/// The CDS client and a leadership in `wired` are left behind: the daemon takes the
/// leadership out first.
pub fn loaded(policy: &Policy, wired: Wired) -> crate::daemon::Loaded {
    crate::daemon::Loaded {
        reconciler: wired.reconciler,
        jobs: wired.jobs,
        max_concurrency: wired.max_concurrency,
        pass_limit: pass_limit(policy),
    }
}

/// Loads the policy at `path` again for the daemon (SIGHUP, an edit): validated, every
/// store, notifier and credential source built, the audit log opened — or an error, and
/// the daemon keeps the policy it has. `started` is the policy the daemon started with:
/// a new `daemon.listen` takes effect at the next start; a policy that changes the
/// coordination section (its lease and fence are set up once), `lock_dir` or
/// `daemon.audit_log` is refused until a restart. A pass may be running with the locks
/// of the old directory while an operator's `--run-now` reads the new one, so on such a
/// refusal the daemon also takes, and holds until a reload moves it back or the
/// process ends, every client's lock in the new directory: whoever follows the file on
/// disk waits for this daemon, as with one directory.
/// `fence` is the lease's (set up once, at start), for every reloaded write handle.
pub fn reloader(
    path: std::path::PathBuf,
    stop: Stop,
    started: &Policy,
    fence: Option<Arc<dyn crate::coordination::Fence>>,
) -> crate::daemon::Reloader {
    let listen = started.daemon.listen;
    let coordination = started.coordination.clone();
    let lock_dir = started.lock_dir.clone();
    let audit_log = started.daemon.audit_log.clone();
    let tenant_id = started.connect.tenant_id.clone();
    let mut clients: Vec<String> = started
        .clients
        .iter()
        .map(|c| c.client_id.clone())
        .collect();
    // The locks held in the directory a refused policy moved lock_dir to.
    let mut held: Vec<crate::lock::ClientLock> = Vec::new();
    let mut held_in: Option<std::path::PathBuf> = None;
    Box::new(move || {
        let policy = Policy::load(&path).map_err(|e| e.to_string())?;
        if policy.coordination != coordination {
            return Err(format!(
                "{}: the coordination section changed; it applies only at a start: restart cds-rotator (the running policy stays)",
                path.display()
            ));
        }
        if policy.lock_dir != lock_dir && held_in.as_ref() != Some(&policy.lock_dir) {
            held.clear();
            held_in = Some(policy.lock_dir.clone());
            let mut busy = Vec::new();
            for client_id in &clients {
                match crate::lock::ClientLock::try_acquire_now(
                    &policy.lock_dir,
                    &tenant_id,
                    client_id,
                ) {
                    Ok(lock) => held.push(lock),
                    Err(e) => busy.push(e.to_string()),
                }
            }
            for e in &busy {
                tracing::error!(lock_dir = %policy.lock_dir.display(), error = %e, "cannot hold a client's lock in the new lock_dir");
            }
        }
        if policy.lock_dir != lock_dir {
            return Err(format!(
                "{}: lock_dir changed from {} to {}; it takes effect at the next start: restart cds-rotator when no pass runs (the running policy stays; until then this daemon holds {} of {} client locks in {} too, so a --run-now that reads the new policy waits for it)",
                path.display(),
                lock_dir.display(),
                policy.lock_dir.display(),
                held.len(),
                clients.len(),
                policy.lock_dir.display()
            ));
        }
        held.clear();
        held_in = None;
        if policy.daemon.audit_log != audit_log {
            let shown = |p: &Option<std::path::PathBuf>| {
                p.as_ref()
                    .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
            };
            return Err(format!(
                "{}: daemon.audit_log changed from {} to {}; it takes effect at the next start: restart cds-rotator (the running policy stays)",
                path.display(),
                shown(&audit_log),
                shown(&policy.daemon.audit_log)
            ));
        }
        if policy.daemon.listen != listen {
            tracing::warn!(
                "daemon.listen changed: the health and metrics server keeps its address until cds-rotator restarts"
            );
        }
        let wired = wire(
            &policy,
            Options {
                stop: stop.clone(),
                writing: Writing::Fenced(fence.clone()),
                ..Options::default()
            },
        )
        .map_err(|e| e.to_string())?;
        clients = policy.clients.iter().map(|c| c.client_id.clone()).collect();
        Ok(loaded(&policy, wired))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"connect:
  url: https://uswe.datahub.connect.aveva.com
  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
  credentials:
    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
    client_secret_file: /etc/cds-rotator/secret
stores:
  local: { type: file, dir: /var/lib/cds-rotator/secrets }
clients:
  - name: app
    client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: { name: local }
  - name: web
    client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: { name: local }
"#;

    fn policy() -> Policy {
        Policy::parse(std::path::Path::new("/etc/cds-rotator/policy.yaml"), POLICY).unwrap()
    }

    #[test]
    fn every_client_is_wired_by_default_and_only_those_asked_for_otherwise() {
        let wired = wire(&policy(), Options::default()).unwrap();
        let names: Vec<&str> = wired.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["app", "web"]);
        assert!(wired.leadership.is_none());
        let only = Options {
            only: vec!["web".to_owned()],
            ..Options::default()
        };
        let wired = wire(&policy(), only).unwrap();
        assert_eq!(wired.jobs.len(), 1);
        assert_eq!(wired.jobs[0].name, "web");
    }

    #[test]
    fn an_unknown_client_is_refused_with_the_policy_and_its_clients() {
        let only = Options {
            only: vec!["nosuch".to_owned()],
            ..Options::default()
        };
        let Err(err) = wire(&policy(), only) else {
            panic!("wired an unknown client");
        };
        assert_eq!(
            err.to_string(),
            "--client nosuch: no such client in /etc/cds-rotator/policy.yaml (clients: app, web)"
        );
    }

    #[test]
    fn the_stores_hook_sees_the_built_stores_before_the_jobs_take_them() {
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = std::rc::Rc::clone(&seen);
        let options = Options {
            stores: Some(Box::new(move |stores: &mut Stores| {
                counted.set(stores.len());
                stores.clear();
            })),
            ..Options::default()
        };
        let Err(err) = wire(&policy(), options) else {
            panic!("wired without a store");
        };
        assert_eq!(seen.get(), 1);
        assert_eq!(err.to_string(), "client app: store local is not declared");
    }
}

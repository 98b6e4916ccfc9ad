//! The YAML policy: what to rotate, where to publish it, whom to tell, and when.
//!
//! [`Policy::load`] parses and validates in one go and returns either a [`Policy`] that
//! is safe to act on or a [`PolicyError`] listing every problem as `file:line:column:
//! message` with what to do. Unknown keys are errors: a typo must never silently turn a
//! safety setting off. Not here: building stores or clients from the policy (`main.rs`).

pub mod notifiers;
mod pickup;
mod shape;
mod trust;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::Duration;
use serde_saphyr::{Location, Spanned};

pub use crate::coordination::spec::{CoordinationKind, CoordinationSpec};
pub use crate::domain::service_url::ServiceUrl;
use crate::domain::service_url::UrlProblem;
use crate::domain::{ClientKind, Schedule};
pub use crate::domain::{SecretSource, ValueSource};
use crate::schema::tree::{Keys, Map};
pub use crate::schema::{Diagnostic, duration};
use crate::schema::{
    Entry as TypedEntry, is_env_name, is_file_path, is_safe_name, normalize, placeholder, resolve,
};
pub use crate::store::StoreSpec;
use crate::store::registry::{Claim, OwnCredential, Slot};
/// The vault store's spec at its former path (tests name it so).
pub use crate::store::vault::spec as vault;
pub use pickup::PickupSpec;

/// The primary-region URL, the only one that takes identity writes.
pub const PRIMARY_URL: &str = "https://uswe.datahub.connect.aveva.com";

/// The `connect:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Base URL, without a trailing slash.
    pub url: ServiceUrl,
    /// The tenant (GUID).
    pub tenant_id: String,
    /// The rotator's own client id.
    pub client_id: String,
    /// Where the rotator's own client secret is.
    pub secret: SecretSource,
    /// How many requests to CDS are in flight at once (passes start as earlier ones end,
    /// at most twice this many at a time).
    pub max_concurrency: usize,
    /// How long one request to CDS may take.
    pub request_timeout: std::time::Duration,
}

pub use notifiers::NotifierSpec;

/// The timing of one client's rotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// When the rotation window opens: a cron expression with seconds, parsed once.
    pub schedule: Schedule,
    /// Lifetime of a new secret (its expiration = creation + lifetime).
    pub lifetime: Duration,
    /// Rotate when the current secret expires within this.
    pub rotate_before: Duration,
    /// Keep old secrets this long after the new one is published.
    pub grace: Duration,
    /// An unpublished managed secret older than this is an orphan.
    pub orphan_grace: Duration,
    /// Rotate when the current secret was published longer ago than this.
    pub max_age: Option<Duration>,
    /// How long to keep trying to get a token with a new secret.
    pub verify_timeout: Duration,
    /// When a pass fails, the daemon tries again after this.
    pub retry_interval: Duration,
}

impl Default for Timing {
    /// The built-in defaults, as documented in README.md.
    fn default() -> Self {
        Timing {
            schedule: Schedule::default(),
            lifetime: Duration::days(90),
            rotate_before: Duration::days(30),
            grace: Duration::hours(24),
            orphan_grace: Duration::minutes(10),
            max_age: None,
            verify_timeout: Duration::minutes(2),
            retry_interval: Duration::minutes(15),
        }
    }
}

/// One client to rotate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// The client's name in the policy (used in logs, the store, the CLI).
    pub name: String,
    /// The CDS client id (GUID, lowercase).
    pub client_id: String,
    /// Client-credentials or hybrid.
    pub kind: ClientKind,
    /// The store's name.
    pub store: String,
    /// The secret's name inside the store.
    pub secret: String,
    /// Notifier names.
    pub notify: Vec<String>,
    /// The event kinds its notifiers get (all when `None`).
    pub notify_on: Option<Vec<crate::domain::EventKind>>,
    /// When and how long.
    pub timing: Timing,
    /// Whether secrets the rotator did not create may be retired.
    pub retire_unmanaged: bool,
    /// How the rotator learns that consumers switched (the client's, else `defaults:`').
    pub pickup: PickupSpec,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The file it came from.
    pub path: PathBuf,
    /// The `connect:` section.
    pub connect: ConnectSettings,
    /// Where per-client lock files live (absolute when set in the policy; relative paths
    /// resolve against the policy file's directory).
    pub lock_dir: PathBuf,
    /// The `daemon:` section.
    pub daemon: DaemonSettings,
    /// The `coordination:` section: leader election across hosts; host locks only when
    /// `None`.
    pub coordination: Option<CoordinationSpec>,
    /// Stores by name.
    pub stores: BTreeMap<String, StoreSpec>,
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, NotifierSpec>,
    /// Clients in policy order.
    pub clients: Vec<ClientPolicy>,
    /// What an offline load ([`Policy::load_offline`]) left to run time, said by
    /// `validate`: a systemd credential without `$CREDENTIALS_DIRECTORY`.
    pub resolved_at_run_time: Vec<String>,
}

/// The `daemon:` section: how the service is watched and audited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Where `/healthz`, `/readyz` and `/metrics` are served; off when `None`.
    pub listen: Option<std::net::SocketAddr>,
    /// The audit log (one JSON line per write to CDS or a store), for every process
    /// that writes (the daemon and `--run-now`); off when `None`.
    pub audit_log: Option<PathBuf>,
}

/// Why a policy was refused. Displays as one `file:line:column: message` line per problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found.
    pub problems: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "{}: {}", self.path.display(), p.message)?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.path.display(),
                    p.line,
                    p.column,
                    p.message
                )?;
            }
        }
        Ok(())
    }
}

/// [`Policy::pass_budget`] of these settings and clients.
fn pass_budget(connect: &ConnectSettings, clients: &[ClientPolicy]) -> Duration {
    let verify = clients
        .iter()
        .map(|c| c.timing.verify_timeout)
        .max()
        .unwrap_or_default();
    let request =
        chrono::Duration::from_std(connect.request_timeout).unwrap_or(chrono::Duration::MAX);
    // The lock wait, about forty requests with their retries, verify, and slack.
    request
        .checked_mul(40)
        .and_then(|r| r.checked_add(&verify))
        .and_then(|r| r.checked_add(&chrono::Duration::minutes(10)))
        .unwrap_or(chrono::Duration::MAX)
}

/// The default location of the policy.
pub const DEFAULT_PATH: &str = "/etc/cds-rotator/policy.yaml";

/// What to do when the policy file cannot be read: the path is wrong, or (a process out
/// of file descriptors) the limit is.
fn read_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            "the process is out of file descriptors: raise LimitNOFILE= (systemd) or ulimit -n"
        }
        _ => "pass --config PATH or set CDS_ROTATOR_CONFIG",
    }
}

/// The default directory for lock files: one place for every process on the host,
/// whatever its environment, so that the daemon under systemd and an operator's
/// `--run-now` in a shell take the same locks (a per-process `$RUNTIME_DIRECTORY` would
/// let both rotate one client at once).
pub fn default_lock_dir() -> PathBuf {
    PathBuf::from("/run/lock/cds-rotator")
}

impl Policy {
    /// The health budget of one pass over a client of this policy before the hooks it
    /// may wait for: every wait in a pass is bounded (the lock, requests and their
    /// retries, verify), so a batch running longer than its budget per round is stuck.
    /// Generous on purpose: it only feeds `/healthz` (the daemon adds the hooks to it).
    /// No notifier timeout may be longer.
    pub fn pass_budget(&self) -> chrono::Duration {
        pass_budget(&self.connect, &self.clients)
    }

    /// Reads and validates the policy at `path`. The policy, the credential files it
    /// names and the directories they sit in must be ones only this user or root can
    /// change (the rule of store and lock directories), and so must every file store's
    /// directory that exists: whoever can write the policy can send the admin secret
    /// anywhere.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Policy::load_with(path, credentials.as_deref(), false)
    }

    /// Like [`Policy::load`], for `validate` and `health`, which never read a credential:
    /// `client_secret_credential` does not need `$CREDENTIALS_DIRECTORY` (it is resolved
    /// at run time, listed in [`Policy::resolved_at_run_time`]).
    pub fn load_offline(path: &Path) -> Result<Policy, PolicyError> {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Policy::load_with(path, credentials.as_deref(), true)
    }

    fn load_with(
        path: &Path,
        credentials: Option<&Path>,
        offline: bool,
    ) -> Result<Policy, PolicyError> {
        let fail = |message: String| PolicyError {
            path: path.to_owned(),
            problems: vec![Diagnostic {
                line: 0,
                column: 0,
                message,
            }],
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the policy: {e}; {}", read_hint(&e))))?;
        if let Some(problem) = trust::problem(path) {
            return Err(fail(format!(
                "the policy {problem}; whoever can change it can add a command or send the admin secret to their own server (nothing was loaded)"
            )));
        }
        let policy = Policy::parse_checked(path, &text, credentials, offline)?;
        let problems: Vec<Diagnostic> = trust::policy_files(&policy)
            .into_iter()
            .map(|message| Diagnostic {
                line: 0,
                column: 0,
                message,
            })
            .collect();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Validates policy text as if read from `path`. Every relative path in it resolves
    /// against `path`'s directory, made absolute against the current directory (so
    /// `policy.yaml` means `./policy.yaml`). Reads the file system only to compare paths
    /// (symlinks resolved); never writes.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Policy::parse_with_credentials(path, text, credentials.as_deref())
    }

    /// Like [`Policy::parse`], with `credentials_directory` standing for
    /// `$CREDENTIALS_DIRECTORY` (where systemd puts a unit's `LoadCredential=` files).
    pub fn parse_with_credentials(
        path: &Path,
        text: &str,
        credentials_directory: Option<&Path>,
    ) -> Result<Policy, PolicyError> {
        Policy::parse_checked(path, text, credentials_directory, false)
    }

    fn parse_checked(
        path: &Path,
        text: &str,
        credentials_directory: Option<&Path>,
        offline: bool,
    ) -> Result<Policy, PolicyError> {
        let tree = shape::parse(text).map_err(|problems| PolicyError {
            path: path.to_owned(),
            problems,
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            credential_store_at: None,
            credentials_directory: credentials_directory.map(Path::to_owned),
            physical_dirs: Default::default(),
            credential_variables: BTreeMap::new(),
            offline,
            resolved_at_run_time: Vec::new(),
            schedules: std::collections::HashMap::new(),
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = match std::path::absolute(parent) {
            Ok(base) => normalize(&base),
            Err(e) => {
                v.problems.push(Diagnostic {
                    line: 0,
                    column: 0,
                    message: format!(
                        "cannot tell which directory relative paths in the policy are relative to: {e}; pass --config with an absolute path"
                    ),
                });
                parent.to_owned()
            }
        };
        let policy =
            Map::of(&tree, Keys::One(shape::TOP)).and_then(|doc| v.policy(path, &base, doc));
        match policy {
            Some(policy) if v.problems.is_empty() => Ok(policy),
            _ => Err(PolicyError {
                path: path.to_owned(),
                problems: v.problems,
            }),
        }
    }

    /// The client named `name`.
    pub fn client(&self, name: &str) -> Option<&ClientPolicy> {
        self.clients.iter().find(|c| c.name == name)
    }
}

/// Collects problems while turning the raw document into a [`Policy`].
struct Validator {
    problems: Vec<Diagnostic>,
    /// Where `connect.credentials.client_secret_store` is, checked once the stores are
    /// known.
    credential_store_at: Option<Location>,
    /// `$CREDENTIALS_DIRECTORY`, for `client_secret_credential`.
    credentials_directory: Option<PathBuf>,
    /// Directories resolved on disk during this load, for [`Validator::physical`].
    physical_dirs: std::collections::HashMap<PathBuf, PathBuf>,
    /// The variables the policy reads a credential from, with what each holds (set with
    /// the notifiers, before any `pickup:` is checked): no program may get one.
    credential_variables: BTreeMap<String, String>,
    /// `validate`/`health`: what needs the run-time environment is not resolved.
    offline: bool,
    /// What was left to run time (said by `validate`).
    resolved_at_run_time: Vec<String>,
    /// The schedules parsed during this load, by trimmed expression: every client with
    /// one expression shares one parsed copy (about 5 KB each).
    schedules: std::collections::HashMap<String, Schedule>,
}

impl Validator {
    /// [`physical`], resolving each directory once per load: a policy with 1,000 clients
    /// in one store asked for 7,000 resolutions of the same directory (69,000 readlink
    /// calls, about 10 of the 75 ms before a pass's first request). The file itself is
    /// then only looked at: missing or not a symlink, it adds its name as written to its
    /// directory's resolution, exactly as `physical` does; a symlink is resolved in full.
    fn physical(&mut self, p: &Path) -> PathBuf {
        let p = normalize(p);
        if let (Some(dir), Some(name)) = (p.parent(), p.file_name())
            && !dir.as_os_str().is_empty()
        {
            let dir = self
                .physical_dirs
                .entry(dir.to_owned())
                .or_insert_with(|| physical(dir))
                .join(name);
            match std::fs::symlink_metadata(&dir) {
                Ok(meta) if !meta.file_type().is_symlink() => return dir,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return dir,
                _ => {}
            }
        }
        physical(&p)
    }

    fn problem(&mut self, at: Location, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            line: at.line(),
            column: at.column(),
            message: message.into(),
        });
    }

    fn policy(&mut self, path: &Path, base: &Path, doc: Map<'_>) -> Option<Policy> {
        let connect = self.connect(doc.map("connect")?, base);
        let lock_dir = match doc.path("lock_dir") {
            Some(d) => {
                self.placeholder(
                    d.referenced,
                    &d.value.to_string_lossy(),
                    "lock_dir",
                    "a directory for lock files, like /run/cds-rotator",
                );
                resolve(base, &d.value)
            }
            None => default_lock_dir(),
        };
        let daemon = doc
            .map("daemon")
            .map(|d| self.daemon(d, base))
            .unwrap_or_default();
        let coordination = doc.map("coordination").and_then(|c| {
            let timeout = connect.as_ref().map(|conn| conn.request_timeout);
            crate::coordination::check::check(c, base, timeout, &mut self.problems)
        });

        let mut stores = BTreeMap::new();
        let credential_store = self.credential_store_at.take();
        for spec in doc.named("stores") {
            self.name(spec.fields.at, "store", spec.name);
            let mut entry = TypedEntry::new(spec.fields, spec.name, base, &mut self.problems);
            if let Some(store) = StoreSpec::parse(spec.type_name, &mut entry) {
                stores.insert(spec.name.to_owned(), store);
            }
        }
        let mut notifiers = BTreeMap::new();
        let mut notifier_at = BTreeMap::new();
        for spec in doc.named("notifiers") {
            self.name(spec.fields.at, "notifier", spec.name);
            let mut entry = TypedEntry::new(spec.fields, spec.name, base, &mut self.problems);
            if let Some(notifier) = NotifierSpec::parse(spec.type_name, &mut entry) {
                notifier_at.insert(spec.name.to_owned(), spec.fields.at);
                notifiers.insert(spec.name.to_owned(), notifier);
            }
        }
        self.command_env(
            &mut notifiers,
            &notifier_at,
            (connect.as_ref(), coordination.as_ref()),
            &stores,
        );

        if let (
            Some(at),
            Some(ConnectSettings {
                secret: SecretSource::Store { store, secret },
                ..
            }),
        ) = (credential_store, &connect)
        {
            self.credential_store(at, store, secret, &stores);
        }
        let clients = self.clients(
            doc.map("defaults"),
            doc.maps("clients"),
            base,
            (&stores, &notifiers),
            connect.as_ref(),
        );
        if let Some(conn) = &connect {
            self.notifier_timeouts(&notifiers, &notifier_at, pass_budget(conn, &clients));
        }
        Some(Policy {
            path: path.to_owned(),
            connect: connect?,
            lock_dir,
            daemon,
            coordination,
            stores,
            notifiers,
            clients,
            resolved_at_run_time: std::mem::take(&mut self.resolved_at_run_time),
        })
    }

    /// The `clients:` entries over `defaults:`: each checked, its pickup check set, and
    /// the rules between clients (unique names and ids, the store slots, the ack files).
    fn clients(
        &mut self,
        defaults_raw: Option<Map<'_>>,
        raw: Vec<Map<'_>>,
        base: &Path,
        (stores, notifiers): (
            &BTreeMap<String, StoreSpec>,
            &BTreeMap<String, NotifierSpec>,
        ),
        connect: Option<&ConnectSettings>,
    ) -> Vec<ClientPolicy> {
        let default_notify_on = defaults_raw.and_then(|d| self.notify_on("defaults", d));
        let defaults = self.timing(defaults_raw, None);
        let mut clients = Vec::new();
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut written = BTreeMap::new();
        let default_pickup = defaults_raw
            .and_then(|d| self.pickup(d, "defaults", base))
            .unwrap_or_default();
        let mut acks = Vec::new();
        for client in raw {
            let at = client.at;
            let Some(mut c) = self.client(client, &defaults, stores, notifiers) else {
                continue;
            };
            if c.notify_on.is_none() {
                c.notify_on.clone_from(&default_notify_on);
            }
            c.pickup = if client.has("pickup") {
                self.pickup(client, &format!("client `{}`", c.name), base)
                    .unwrap_or_default()
            } else {
                default_pickup.clone()
            };
            if let Some(path) = c.pickup.backend().app_file() {
                acks.push((at, c.name.clone(), path.to_owned()));
            }
            if !names.insert(c.name.clone()) {
                self.problem(
                    at,
                    format!(
                        "client name `{}` is used twice; names must be unique",
                        c.name
                    ),
                );
            }
            if !ids.insert(c.client_id.clone()) {
                self.problem(
                    at,
                    format!(
                        "client id {} is listed twice; one policy entry per CDS client, or two entries would fight over its secrets",
                        c.client_id
                    ),
                );
            }
            if let Some(spec) = stores.get(&c.store) {
                self.store_rules(at, &c, spec, connect, &mut written);
            }
            clients.push(c);
        }
        self.ack_files(&acks, &written, connect);
        clients
    }

    /// The rules every store shares, over the client's [`Slot`]: two clients never
    /// write one slot, and the rotator's own credential is published only by its own
    /// client, which it reads from where it is published (see [`OwnCredential`]).
    fn store_rules(
        &mut self,
        at: Location,
        c: &ClientPolicy,
        spec: &StoreSpec,
        connect: Option<&ConnectSettings>,
        written: &mut BTreeMap<PathBuf, FileSlot>,
    ) {
        let backend = spec.backend();
        let is_self = connect.is_some_and(|conn| conn.client_id == c.client_id);
        let reads_own = connect.is_some_and(|conn| reads_own_credential(conn, c));
        let own = backend.own_credential();
        match backend.slot(&c.secret) {
            Slot::Files { dir } => {
                let slot = FileSlot::new(c, &dir);
                self.shared_files(at, &slot, written);
                // A file slot says it with the path (`credential_file`).
                if let Some(conn) = connect
                    && (!is_self || own == OwnCredential::File)
                {
                    self.credential_file(at, conn, c, &slot);
                }
            }
            Slot::Service { key } => {
                if reads_own && !is_self {
                    let (store, secret) = (&c.store, &c.secret);
                    self.problem(
                        at,
                        format!(
                            "client `{}` would publish its secrets to store `{store}` secret `{secret}`, which is the rotator's own credential (connect.credentials.client_secret_store): the rotator's secret would be lost, and CDS never shows it again; give the client another secret name or store",
                            c.name
                        ),
                    );
                }
                let place = PathBuf::from(key);
                if let Some(other) = written.get(&place) {
                    let message = backend.shared(&claim(c), &other.claim());
                    self.problem(at, message);
                } else {
                    written.insert(place, FileSlot::new(c, Path::new("")));
                }
            }
        }
        if let OwnCredential::Store { from } = own
            && is_self
            && !reads_own
        {
            let from =
                from.map_or_else(|| format!("its {} store", spec.type_name()), str::to_owned);
            self.problem(
                at,
                format!(
                    "client `{}` is the rotator's own client, but the rotator does not read its credential from {from}: retiring the old secret would lock it out; set connect.credentials.client_secret_store to {{ name: {}, secret: {} }}",
                    c.name, c.store, c.secret
                ),
            );
        }
    }

    /// Two clients must never write the same file: the second publish would destroy the
    /// first client's secret (or its record) while the first client's consumers use it.
    /// Compared on disk (symlinks resolved), so `dir: x`, `dir: x/./` and a link to `x`
    /// are one directory.
    fn shared_files(
        &mut self,
        at: Location,
        slot: &FileSlot,
        written: &mut BTreeMap<PathBuf, FileSlot>,
    ) {
        for file in slot.files() {
            match written.entry(self.physical(&file)) {
                Entry::Vacant(e) => {
                    e.insert(slot.clone());
                }
                Entry::Occupied(e) => {
                    let other = e.get();
                    let message = if other.store == slot.store && other.secret == slot.secret {
                        format!(
                            "store `{}` secret `{}` is used by clients `{}` and `{}`; give each client its own secret name",
                            slot.store, slot.secret, other.client, slot.client
                        )
                    } else if other.secret == slot.secret
                        && physical(&other.dir) == physical(&slot.dir)
                    {
                        format!(
                            "store `{}` and store `{}` are the same directory ({}); clients `{}` and `{}` would overwrite each other's secret `{}`: give one of them another secret name",
                            other.store,
                            slot.store,
                            physical(&slot.dir).display(),
                            other.client,
                            slot.client,
                            slot.secret
                        )
                    } else {
                        format!(
                            "client `{}` would write {}, which client `{}` writes too (store `{}` secret `{}`); they would overwrite each other's secret: give one of them another secret name or store",
                            slot.client,
                            physical(&file).display(),
                            other.client,
                            other.store,
                            other.secret
                        )
                    };
                    self.problem(at, message);
                    return;
                }
            }
        }
    }

    /// A store file may be the rotator's own credential file only for the rotator's own
    /// client (self-rotation): any other publish would overwrite the rotator's secret,
    /// which CDS never shows again. And the rotator's own client may be rotated only if
    /// the rotator reads its credential from where the new secret is published;
    /// otherwise retiring the old secret would lock the rotator out.
    fn credential_file(
        &mut self,
        at: Location,
        conn: &ConnectSettings,
        c: &ClientPolicy,
        slot: &FileSlot,
    ) {
        let is_self = conn.client_id == c.client_id;
        let credential = match &conn.secret {
            SecretSource::File(path) => Some(self.physical(path)),
            SecretSource::Store { store, secret } if store == &slot.store => {
                // The same as client_secret_file: <dir>/<secret> of that file store.
                Some(self.physical(&slot.dir.join(secret)))
            }
            SecretSource::Env(_) | SecretSource::Store { .. } => None,
        };
        let value = slot.value();
        let is_credential = credential.as_ref() == Some(&self.physical(&value));
        if is_credential && !is_self {
            self.problem(
                at,
                format!(
                    "client `{}` would publish its secrets to {}, which is the rotator's own credential (connect.credentials.client_secret_file): the rotator's secret would be lost, and CDS never shows it again; give the client another secret name or store",
                    c.name,
                    value.display()
                ),
            );
        } else if is_self && !is_credential {
            self.problem(
                at,
                format!(
                    "client `{}` is the rotator's own client: set connect.credentials.client_secret_file to {} (or client_secret_store to {{ name: {}, secret: {} }}) so the rotator switches to each new secret before the old one is retired",
                    c.name,
                    value.display(),
                    slot.store,
                    slot.secret
                ),
            );
        }
        if let Some(credential) = &credential
            && let Some(record) = slot.records().find(|f| self.physical(f) == *credential)
        {
            self.problem(
                at,
                format!(
                    "client `{}` would write its store record to {}, which is the rotator's own credential (connect.credentials.client_secret_file): the rotator's secret would be lost; give the client another secret name or store",
                    c.name,
                    record.display()
                ),
            );
        }
    }

    /// `connect.credentials.client_secret_store`: a declared store, and a secret name by
    /// that store's rule.
    fn credential_store(
        &mut self,
        at: Location,
        store: &str,
        secret: &str,
        stores: &BTreeMap<String, StoreSpec>,
    ) {
        let Some(spec) = stores.get(store) else {
            self.problem(
                at,
                format!(
                    "connect.credentials.client_secret_store: store `{store}` is not declared under `stores:` (declared: {})",
                    list(stores.keys())
                ),
            );
            return;
        };
        let rule = spec.backend().secret_name_rule(secret);
        if let Some(rule) = rule {
            self.problem(
                at,
                format!(
                    "connect.credentials.client_secret_store: store `{store}` secret name {rule}; the name given is not shown, in case it is the secret itself"
                ),
            );
        }
    }

    fn name(&mut self, at: Location, what: &str, name: &str) {
        if !is_safe_name(name) {
            self.problem(
                at,
                format!(
                    "{what} name `{name}` must be 1-64 characters of letters, digits, `-`, `_`, `.`, not starting with `.`"
                ),
            );
        }
    }

    /// A GUID, lowercase. `what` names the key, `expect` says whose GUID it is. A value
    /// that is not a GUID is not shown: it may be the client's secret, pasted into the
    /// wrong field.
    fn guid(&mut self, s: &Spanned<String>, what: &str, expect: &str) -> Option<String> {
        if self.placeholder(s.referenced, &s.value, what, expect) {
            return None;
        }
        match uuid::Uuid::parse_str(s.value.trim()) {
            Ok(id) if s.value.trim().len() == 36 => Some(id.hyphenated().to_string()),
            _ => {
                self.problem(
                    s.referenced,
                    format!(
                        "{what} is not a GUID; set it to {expect} (like 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0); the value given is not shown, in case it is a secret"
                    ),
                );
                None
            }
        }
    }

    /// Reports a template placeholder (`<your-tenant-id>`) left in `value`; true when
    /// there was one.
    fn placeholder(&mut self, at: Location, value: &str, what: &str, expect: &str) -> bool {
        let Some(shown) = placeholder(value) else {
            return false;
        };
        self.problem(
            at,
            format!("{what}: replace the placeholder `{shown}` with {expect}"),
        );
        true
    }

    fn daemon(&mut self, raw: Map<'_>, base: &Path) -> DaemonSettings {
        let listen = raw.text("listen").and_then(|l| {
            let text = l.value.trim();
            if self.placeholder(
                l.referenced,
                text,
                "daemon.listen",
                "an address and port like 127.0.0.1:9464",
            ) {
                return None;
            }
            match text.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.problem(
                        l.referenced,
                        format!(
                            "daemon.listen: `{}` is not an address and port; write an IP address and a port like 127.0.0.1:9464 or [::1]:9464 (0.0.0.0:9464 for every interface, e.g. in a pod)",
                            crate::text::untrusted(text)
                        ),
                    );
                    None
                }
            }
        });
        let audit_log = raw.path("audit_log").and_then(|p| {
            let shown = p.value.to_string_lossy();
            if self.placeholder(
                p.referenced,
                &shown,
                "daemon.audit_log",
                "a file path like /var/lib/cds-rotator/audit.jsonl",
            ) {
                return None;
            }
            if p.value.as_os_str().is_empty() || p.value.file_name().is_none() {
                self.problem(
                    p.referenced,
                    "daemon.audit_log: give the path of a file, like /var/lib/cds-rotator/audit.jsonl",
                );
                return None;
            }
            let path = resolve(base, &p.value);
            // Only what is there now, whoever runs: a FIFO would hang every writer.
            if let Err(e) = crate::audit::inspect(&path, false) {
                self.problem(
                    p.referenced,
                    format!(
                        "daemon.audit_log {} {}, or give another path (a FIFO or device there would hang every write)",
                        path.display(),
                        e.detail
                    ),
                );
                return None;
            }
            Some(path)
        });
        DaemonSettings { listen, audit_log }
    }

    fn connect(&mut self, c: Map<'_>, base: &Path) -> Option<ConnectSettings> {
        let url = self.url(&c.text("url")?);
        let tenant_id = self.guid(
            &c.text("tenant_id")?,
            "connect.tenant_id",
            "the GUID of your tenant",
        );
        let credentials = c.map("credentials")?;
        let client_id = self.guid(
            &credentials.text("client_id")?,
            "connect.credentials.client_id",
            "the GUID of the rotator's own client",
        );
        let secret = self.client_secret(credentials, base);
        let max_concurrency = self.max_concurrency(c.count("max_concurrency"));
        let request_timeout = self.request_timeout(&c.text("request_timeout"))?;
        Some(ConnectSettings {
            request_timeout: request_timeout.to_std().unwrap_or_default(),
            url: url?,
            tenant_id: tenant_id?,
            client_id: client_id?,
            secret: secret?,
            max_concurrency,
        })
    }

    /// Where the rotator's own secret comes from: exactly one of a systemd credential, a
    /// file, a variable and a store; a plaintext secret is refused.
    fn client_secret(&mut self, creds: Map<'_>, base: &Path) -> Option<SecretSource> {
        let at = creds.at;
        let plaintext = creds.get("client_secret");
        if let Some(plain) = plaintext {
            self.problem(
                plain.referenced,
                "a plaintext client_secret in the policy is refused: put the secret in a file readable only by cds-rotator and set client_secret_file (or client_secret_credential under systemd), or set client_secret_env",
            );
        }
        let keys = [
            "client_secret_file",
            "client_secret_env",
            "client_secret_store",
            "client_secret_credential",
        ];
        let given = keys.map(|k| creds.get(k).map(|v| v.referenced));
        match (
            creds.path("client_secret_file"),
            creds.text("client_secret_env"),
            creds.map("client_secret_store"),
            creds.text("client_secret_credential"),
        ) {
            (Some(file), None, None, None) => self.secret_file(&file, base).map(SecretSource::File),
            (None, Some(env), None, None) => self.secret_env(&env).map(SecretSource::Env),
            (None, None, None, Some(name)) => self.secret_credential(&name).map(SecretSource::File),
            (None, None, Some(store), None) => {
                let at = store.at;
                match (store.text("name"), store.text("secret")) {
                    (Some(name), Some(secret)) => {
                        self.credential_store_at = Some(at);
                        Some(SecretSource::Store {
                            store: name.value,
                            secret: secret.value,
                        })
                    }
                    _ => {
                        self.problem(
                            at,
                            "connect.credentials.client_secret_store needs secret: the name of the rotator's secret in that store",
                        );
                        None
                    }
                }
            }
            (None, None, None, None) => {
                if plaintext.is_none() {
                    self.problem(
                        at,
                        "connect.credentials needs client_secret_credential (a systemd credential's name), client_secret_file (a path), client_secret_env (a variable name) or client_secret_store ({ name: <store>, secret: <secret name> })",
                    );
                }
                None
            }
            _ => {
                let second = given.iter().flatten().nth(1).copied();
                self.problem(
                    second.unwrap_or(at),
                    "set exactly one of client_secret_credential, client_secret_file, client_secret_env and client_secret_store",
                );
                None
            }
        }
    }

    /// `connect.max_concurrency`: 1 to 64, 8 when not set (or refused).
    fn max_concurrency(&mut self, raw: Option<Spanned<u64>>) -> usize {
        match raw {
            None => 8,
            Some(n) if (1..=64).contains(&n.value) => n.value as usize,
            Some(n) => {
                self.problem(
                    n.referenced,
                    format!(
                        "connect.max_concurrency ({}) must be between 1 and 64",
                        n.value
                    ),
                );
                8
            }
        }
    }

    /// `connect.request_timeout`: 1s to 5m, 30s when not set (or refused); `None` when it
    /// is not a duration.
    fn request_timeout(&mut self, raw: &Option<Spanned<String>>) -> Option<Duration> {
        let timeout = match self.duration(raw, "connect.request_timeout")? {
            None => Duration::seconds(30),
            Some(d) if d >= Duration::seconds(1) && d <= Duration::minutes(5) => d,
            Some(d) => {
                let at = raw.as_ref().map(|t| t.referenced);
                self.problem(
                    at.unwrap_or(Location::UNKNOWN),
                    format!(
                        "connect.request_timeout ({}) must be between 1s and 5m; use e.g. 30s",
                        duration::format(d)
                    ),
                );
                Duration::seconds(30)
            }
        };
        Some(timeout)
    }

    /// The credential file, resolved against the policy's directory. A pasted secret is
    /// refused by its shape (not a path) and never echoed.
    fn secret_file(&mut self, raw: &Spanned<PathBuf>, base: &Path) -> Option<PathBuf> {
        if self.placeholder(
            raw.referenced,
            &raw.value.to_string_lossy(),
            "connect.credentials.client_secret_file",
            "the path of the file holding the rotator's secret, like /run/credentials/cds-rotator.service/admin",
        ) {
            None
        } else if is_file_path(&raw.value) {
            Some(resolve(base, &raw.value))
        } else {
            self.problem(
                raw.referenced,
                "connect.credentials.client_secret_file must be the PATH of a file: absolute (/run/credentials/…), or relative to the policy's directory and starting with ./ or ../; the value given is not shown, in case it is the secret itself",
            );
            None
        }
    }

    /// `$CREDENTIALS_DIRECTORY/NAME`: the file systemd made from the unit's
    /// `LoadCredential=NAME:…`. The name is never echoed (it might be a pasted secret).
    fn secret_credential(&mut self, raw: &Spanned<String>) -> Option<PathBuf> {
        const WHAT: &str = "connect.credentials.client_secret_credential";
        let name = raw.value.as_str();
        if self.placeholder(
            raw.referenced,
            name,
            WHAT,
            "the name of the unit's credential, like admin (from LoadCredential=admin:/etc/cds-rotator/admin.secret)",
        ) {
            return None;
        }
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.len() > 255
            || name.contains(['/', '\0'])
        {
            self.problem(
                raw.referenced,
                format!(
                    "{WHAT} must be the NAME of a systemd credential (a file name: no `/`, not `.` or `..`, at most 255 bytes), as in LoadCredential=NAME:/etc/cds-rotator/admin.secret; the value given is not shown, in case it is the secret itself"
                ),
            );
            return None;
        }
        match &self.credentials_directory {
            Some(dir) if dir.is_absolute() => Some(normalize(&dir.join(name))),
            Some(_) => {
                self.problem(
                    raw.referenced,
                    format!(
                        "{WHAT} needs $CREDENTIALS_DIRECTORY to be an absolute path, as systemd sets it; it is not"
                    ),
                );
                None
            }
            None if self.offline => {
                self.resolved_at_run_time.push(format!(
                    "{WHAT} {}: resolved at run time, from $CREDENTIALS_DIRECTORY (not read here)",
                    shown_credential_name(name)
                ));
                // Never opened: validate and health read no credential.
                Some(Path::new("/run/credentials/cds-rotator.service").join(name))
            }
            None => {
                let shown = shown_credential_name(name);
                self.problem(
                    raw.referenced,
                    format!(
                        "{WHAT} names a systemd credential, but $CREDENTIALS_DIRECTORY is not set: systemd sets it only inside a unit with LoadCredential=. To run by hand with the unit's credential: systemd-run --pipe --wait -p LoadCredential={shown}:/etc/cds-rotator/admin.secret -p User=cds-rotator cds-rotator --config /etc/cds-rotator/policy.yaml plan"
                    ),
                );
                None
            }
        }
    }

    /// The credential's environment variable. A pasted secret is refused by its shape (not
    /// a variable name) and never echoed.
    fn secret_env(&mut self, raw: &Spanned<String>) -> Option<String> {
        if self.placeholder(
            raw.referenced,
            &raw.value,
            "connect.credentials.client_secret_env",
            "the name of the environment variable holding the rotator's secret",
        ) {
            None
        } else if is_env_name(&raw.value) {
            Some(raw.value.clone())
        } else {
            self.problem(
                raw.referenced,
                "connect.credentials.client_secret_env must be the NAME of an environment variable (letters, digits, `_`, not starting with a digit, at most 128 characters); the value given is not shown, in case it is the secret itself",
            );
            None
        }
    }

    fn url(&mut self, raw: &Spanned<String>) -> Option<ServiceUrl> {
        let at = raw.referenced;
        if self.placeholder(at, &raw.value, "connect.url", PRIMARY_URL) {
            return None;
        }
        let text = raw.value.trim().trim_end_matches('/');
        let url = match ServiceUrl::parse(text) {
            Ok(url) => url,
            Err(UrlProblem::NotAUrl | UrlProblem::NoHost) => {
                self.problem(
                    at,
                    format!("connect.url `{text}` is not a URL; use {PRIMARY_URL}"),
                );
                return None;
            }
            Err(UrlProblem::PlainHttp { .. }) => {
                self.problem(
                    at,
                    format!("connect.url `{text}` uses plain http to a non-loopback host; the secrets would travel unencrypted: use https"),
                );
                return None;
            }
            Err(UrlProblem::Scheme(other)) => {
                self.problem(
                    at,
                    format!("connect.url scheme `{other}` is not supported; use https"),
                );
                return None;
            }
        };
        let host = url.host();
        if let Some(region) = ["euno.", "auea.", "jpea."]
            .iter()
            .find(|r| host.starts_with(*r) && host.ends_with(".connect.aveva.com"))
        {
            self.problem(
                at,
                format!(
                    "connect.url points at a regional host ({}…): CDS only accepts identity writes on the primary region; use {PRIMARY_URL}",
                    region.trim_end_matches('.')
                ),
            );
            return None;
        }
        if url.url().query().is_some() || url.url().fragment().is_some() {
            self.problem(at, "connect.url must not have a query or fragment");
            return None;
        }
        Some(url)
    }

    fn duration(&mut self, raw: &Option<Spanned<String>>, key: &str) -> Option<Option<Duration>> {
        match raw {
            None => Some(None),
            Some(s) => match duration::parse(&s.value) {
                Ok(d) => Some(Some(d)),
                Err(e) => {
                    self.problem(s.referenced, format!("{key}: {e}"));
                    None
                }
            },
        }
    }

    /// Merges a timing section over what it inherits (the checked `defaults:`; `None` for
    /// the defaults section itself, which inherits the built-in values) and checks it.
    ///
    /// A broken rule is reported once, where it is broken: at the first of its keys this
    /// section sets. A client does not repeat a rule that `defaults:` already breaks, and
    /// no rule is judged on a value that was refused (its problem is already reported).
    /// `expr` parsed, or the copy already parsed during this load.
    fn schedule(&mut self, expr: &str) -> Result<Schedule, crate::domain::InvalidSchedule> {
        if let Some(known) = self.schedules.get(expr.trim()) {
            return Ok(known.clone());
        }
        let parsed = Schedule::parse(expr)?;
        self.schedules
            .insert(parsed.as_str().to_owned(), parsed.clone());
        Ok(parsed)
    }

    fn timing(&mut self, raw: Option<Map<'_>>, inherited: Option<&CheckedTiming>) -> CheckedTiming {
        let here = raw.map_or(Location::UNKNOWN, |m| m.at);
        let text = |key: &str| raw.and_then(|m| m.text(key));
        let builtin = Timing::default();
        let base = inherited.map_or(&builtin, |i| &i.timing);
        let mut refused: BTreeSet<&'static str> = BTreeSet::new();
        let mut pick = |v: &mut Self, raw: &Option<Spanned<String>>, key: &'static str| {
            if raw.is_none() && inherited.is_some_and(|i| i.refused.contains(key)) {
                refused.insert(key);
            }
            let parsed = v.duration(raw, key);
            if parsed.is_none() {
                refused.insert(key);
            }
            parsed.flatten()
        };
        let lifetime = pick(self, &text("lifetime"), "lifetime");
        let rotate_before = pick(self, &text("rotate_before"), "rotate_before");
        let grace = pick(self, &text("grace"), "grace");
        let orphan_grace = pick(self, &text("orphan_grace"), "orphan_grace");
        let max_age = pick(self, &text("max_age"), "max_age");
        let verify_timeout = pick(self, &text("verify_timeout"), "verify_timeout");
        let retry_interval = pick(self, &text("retry_interval"), "retry_interval");
        let schedule = match &text("schedule") {
            None => {
                if inherited.is_some_and(|i| i.refused.contains("schedule")) {
                    refused.insert("schedule");
                }
                base.schedule.clone()
            }
            Some(s) => match self.schedule(&s.value) {
                Ok(schedule) => schedule,
                Err(e) => {
                    self.problem(s.referenced, format!("schedule: {e}"));
                    refused.insert("schedule");
                    base.schedule.clone()
                }
            },
        };
        let t = Timing {
            schedule,
            lifetime: lifetime.unwrap_or(base.lifetime),
            rotate_before: rotate_before.unwrap_or(base.rotate_before),
            grace: grace.unwrap_or(base.grace),
            orphan_grace: orphan_grace.unwrap_or(base.orphan_grace),
            max_age: max_age.or(base.max_age),
            verify_timeout: verify_timeout.unwrap_or(base.verify_timeout),
            retry_interval: retry_interval.unwrap_or(base.retry_interval),
        };
        let mut broken = BTreeSet::new();
        for (rule, message) in broken_rules(&t) {
            let keys = rule.keys();
            if keys.iter().any(|k| refused.contains(k)) {
                continue;
            }
            broken.insert(rule);
            let set_here = keys
                .iter()
                .find_map(|k| raw.and_then(|m| m.get(k)).map(|s| s.referenced));
            let at = match inherited {
                None => set_here.or(Some(here)),
                Some(i) if i.broken.contains(&rule) => None,
                Some(_) => set_here,
            };
            if let Some(at) = at {
                self.problem(at, message);
            }
        }
        CheckedTiming {
            timing: t,
            refused,
            broken,
        }
    }

    fn client(
        &mut self,
        raw: Map<'_>,
        defaults: &CheckedTiming,
        stores: &BTreeMap<String, StoreSpec>,
        notifiers: &BTreeMap<String, NotifierSpec>,
    ) -> Option<ClientPolicy> {
        let location = raw.at;
        let name_raw = raw.text("name")?;
        let name = name_raw.value.clone();
        self.name(name_raw.referenced, "client", &name);
        let client_id = self.guid(
            &raw.text("client_id")?,
            &format!("client `{name}`: client_id"),
            "the GUID of the CDS client to rotate",
        );
        let kind_raw = raw.text("kind");
        let kind = match kind_raw.as_ref().map(|k| k.value.as_str()) {
            None | Some("client_credentials") => Some(ClientKind::ClientCredentials),
            Some("hybrid") => Some(ClientKind::Hybrid),
            Some(other) => {
                let at = kind_raw.as_ref().map_or(location, |k| k.referenced);
                if other
                    .replace(['-', ' '], "_")
                    .eq_ignore_ascii_case("authorization_code")
                {
                    self.problem(
                        at,
                        format!("client `{name}`: authorization-code clients have no secret (they use PKCE): nothing to rotate; remove the entry"),
                    );
                } else {
                    self.problem(
                        at,
                        format!("client `{name}`: kind `{other}` is unknown; use client_credentials or hybrid"),
                    );
                }
                None
            }
        };
        let store = raw.map("store")?;
        let store_name = store.text("name")?;
        if !stores.contains_key(&store_name.value) {
            self.problem(
                store_name.referenced,
                format!(
                    "client `{name}`: store `{}` is not declared under `stores:` (declared: {})",
                    store_name.value,
                    list(stores.keys())
                ),
            );
        }
        let secret = store.text("secret").unwrap_or_else(|| {
            let at = raw.get("store").map_or(location, |s| s.referenced);
            Spanned::new(name.clone(), at, at)
        });
        let problem = match stores.get(&store_name.value) {
            Some(spec) => {
                spec.backend()
                    .client_secret_problem(&name, &store_name.value, &secret.value)
            }
            None => crate::store::registry::undeclared_secret_problem(&name, &secret.value),
        };
        if let Some(problem) = problem {
            self.problem(secret.referenced, problem);
        }
        let notify = raw.texts("notify");
        for n in &notify {
            if !notifiers.contains_key(&n.value) {
                self.problem(
                    n.referenced,
                    format!(
                        "client `{name}`: notifier `{}` is not declared under `notifiers:` (declared: {})",
                        n.value,
                        list(notifiers.keys())
                    ),
                );
            }
        }
        let notify_on = self.notify_on(&format!("client `{name}`"), raw);
        let timing = self.timing(Some(raw), Some(defaults));
        Some(ClientPolicy {
            name,
            client_id: client_id?,
            kind: kind?,
            store: store_name.value,
            secret: secret.value,
            notify: notify.into_iter().map(|n| n.value).collect(),
            notify_on,
            // A refused timing value is already a problem; the client is still built so
            // that the checks across clients (names, ids, files) run too.
            timing: timing.timing,
            retire_unmanaged: raw.flag("retire_unmanaged").is_some_and(|f| f.value),
            pickup: PickupSpec::default(),
        })
    }
}

/// A timing section after checking: the merged values, the keys whose value was refused
/// (unparsable, already reported) and the rules the values break.
struct CheckedTiming {
    timing: Timing,
    refused: BTreeSet<&'static str>,
    broken: BTreeSet<Rule>,
}

/// The rules between timing values (README.md, "The policy").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    LifetimeRange,
    RotateBeforePositive,
    RotateBeforeUnderLifetime,
    GraceFits,
    OrphanGraceUnderLifetime,
    MaxAgeOverGrace,
    MaxAgeCap,
    VerifyTimeoutCap,
    RetryIntervalRange,
}

impl Rule {
    /// The keys the rule compares, the one most likely to be wrong first (a broken rule
    /// is reported at the first of them a section sets).
    fn keys(self) -> &'static [&'static str] {
        match self {
            Rule::LifetimeRange => &["lifetime"],
            Rule::RotateBeforePositive => &["rotate_before"],
            Rule::RotateBeforeUnderLifetime => &["rotate_before", "lifetime"],
            Rule::GraceFits => &["grace", "verify_timeout", "rotate_before"],
            Rule::OrphanGraceUnderLifetime => &["orphan_grace", "lifetime"],
            Rule::MaxAgeOverGrace => &["max_age", "grace"],
            Rule::MaxAgeCap => &["max_age"],
            Rule::VerifyTimeoutCap => &["verify_timeout"],
            Rule::RetryIntervalRange => &["retry_interval"],
        }
    }
}

/// The rules `t` breaks, each with its message (values included, and what to do).
fn broken_rules(t: &Timing) -> Vec<(Rule, String)> {
    let f = duration::format;
    let mut out = Vec::new();
    if t.lifetime <= Duration::zero() || t.lifetime > Duration::days(730) {
        out.push((
            Rule::LifetimeRange,
            format!(
                "lifetime ({}) must be more than 0s and at most 730d (CDS secrets should always expire); use e.g. 90d",
                f(t.lifetime)
            ),
        ));
    }
    if t.rotate_before <= Duration::zero() {
        out.push((
            Rule::RotateBeforePositive,
            format!(
                "rotate_before ({}) must be more than 0s: with 0s a secret is rotated only after it has expired, when its consumers are already locked out; use e.g. 30d",
                f(t.rotate_before)
            ),
        ));
    } else {
        if t.rotate_before >= t.lifetime {
            out.push((
                Rule::RotateBeforeUnderLifetime,
                format!(
                    "rotate_before ({}) must be shorter than lifetime ({}), or every new secret would be due at once; lower rotate_before or raise lifetime",
                    f(t.rotate_before),
                    f(t.lifetime)
                ),
            ));
        }
        let needed = t.grace.checked_add(&t.verify_timeout);
        if t.grace >= t.rotate_before || needed.is_none_or(|n| n > t.rotate_before) {
            out.push((
                Rule::GraceFits,
                format!(
                    "grace ({}) must be shorter than rotate_before ({}), with room for verify_timeout ({}) too (grace + verify_timeout <= rotate_before): the old secret must stay valid while the new one is verified and through the whole grace period after it is published; lower grace or raise rotate_before",
                    f(t.grace),
                    f(t.rotate_before),
                    f(t.verify_timeout)
                ),
            ));
        }
    }
    if t.orphan_grace >= t.lifetime {
        out.push((
            Rule::OrphanGraceUnderLifetime,
            format!(
                "orphan_grace ({}) must be shorter than lifetime ({}), or an orphan would expire before it is cleaned up; use e.g. 10m",
                f(t.orphan_grace),
                f(t.lifetime)
            ),
        ));
    }
    if let Some(max_age) = t.max_age {
        if max_age <= t.grace {
            out.push((
                Rule::MaxAgeOverGrace,
                format!(
                    "max_age ({}) must be longer than grace ({}), or a secret would be due again before the one it replaced is retired; raise max_age or lower grace",
                    f(max_age),
                    f(t.grace)
                ),
            ));
        }
        if max_age > Duration::days(730) {
            out.push((
                Rule::MaxAgeCap,
                format!("max_age ({}) must be at most 730d", f(max_age)),
            ));
        }
    }
    if t.verify_timeout > Duration::hours(1) {
        out.push((
            Rule::VerifyTimeoutCap,
            format!(
                "verify_timeout ({}) must be at most 1h; use e.g. 2m",
                f(t.verify_timeout)
            ),
        ));
    }
    if t.retry_interval < Duration::seconds(1) || t.retry_interval > Duration::days(7) {
        out.push((
            Rule::RetryIntervalRange,
            format!(
                "retry_interval ({}) must be between 1s and 7d; use e.g. 15m",
                f(t.retry_interval)
            ),
        ));
    }
    out
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// A client's slot as written: the files a [`Slot::Files`] writes (its `dir`), or a
/// [`Slot::Service`] secret (`dir` empty), for collision checks.
#[derive(Clone)]
struct FileSlot {
    client: String,
    store: String,
    secret: String,
    dir: PathBuf,
}

impl FileSlot {
    fn new(c: &ClientPolicy, dir: &Path) -> Self {
        FileSlot {
            client: c.name.clone(),
            store: c.store.clone(),
            secret: c.secret.clone(),
            dir: dir.to_owned(),
        }
    }

    /// `<dir>/<secret>`: the value consumers read.
    fn value(&self) -> PathBuf {
        self.dir.join(&self.secret)
    }

    /// The record beside the value and the pending record a publish writes first.
    fn records(&self) -> impl Iterator<Item = PathBuf> + use<'_> {
        [
            format!("{}.json", self.secret),
            format!(".{}.pending.json", self.secret),
        ]
        .into_iter()
        .map(|name| self.dir.join(name))
    }

    fn files(&self) -> impl Iterator<Item = PathBuf> + use<'_> {
        std::iter::once(self.value()).chain(self.records())
    }

    fn claim(&self) -> Claim {
        Claim {
            client: self.client.clone(),
            store: self.store.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// `c` as a slot's user.
fn claim(c: &ClientPolicy) -> Claim {
    Claim {
        client: c.name.clone(),
        store: c.store.clone(),
        secret: c.secret.clone(),
    }
}

/// Where an absolute path leads on disk, for comparing paths: the deepest ancestor that
/// exists with its symlinks resolved, then the rest as written (normalized).
fn physical(p: &Path) -> PathBuf {
    let p = normalize(p);
    let mut rest = Vec::new();
    let mut here = p.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(here) {
            return rest.iter().rev().fold(real, |path, name| path.join(name));
        }
        match (here.parent(), here.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                here = parent;
            }
            _ => return p.clone(),
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters.
/// A credential's name as a hint may show it: as written when it reads like a name
/// (`admin`, `cds-rotator.secret`), else `NAME`, since a long mixed-case string may be the
/// secret itself pasted where the name goes.
fn shown_credential_name(name: &str) -> &str {
    let tidy = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    let secret_shaped = name.len() >= 16
        && name.chars().any(|c| c.is_ascii_uppercase())
        && name.chars().any(|c| c.is_ascii_lowercase())
        && name.chars().any(|c| c.is_ascii_digit());
    if tidy && name.len() <= 64 && !secret_shaped {
        name
    } else {
        "NAME"
    }
}

/// Whether the rotator reads its own credential from `c`'s store slot
/// (`client_secret_store` naming exactly that store and secret).
pub(super) fn reads_own_credential(conn: &ConnectSettings, c: &ClientPolicy) -> bool {
    matches!(&conn.secret, SecretSource::Store { store, secret } if *store == c.store && *secret == c.secret)
}

#[cfg(test)]
mod tests;

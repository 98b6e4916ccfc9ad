//! The YAML policy: what to rotate, where to publish it, whom to tell, and when.
//!
//! [`Policy::load`] parses and validates in one go and returns either a [`Policy`] that
//! is safe to act on or a [`PolicyError`] listing every problem as `file:line:column:
//! message` with what to do. Unknown keys are errors: a typo must never silently turn a
//! safety setting off. Not here: building stores or clients from the policy (`main.rs`).

pub mod duration;
mod raw;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::Duration;
use serde_saphyr::{Location, Spanned};

use crate::connect::ClientKind;
use raw::{RawClient, RawNotifier, RawPolicy, RawStore, RawTiming};

/// The primary-region URL, the only one that takes identity writes.
pub const PRIMARY_URL: &str = "https://uswe.datahub.connect.aveva.com";

/// Where the rotator reads its own client secret from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the value alone (systemd credentials, a Kubernetes secret volume).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// The `connect:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// The tenant (GUID).
    pub tenant_id: String,
    /// The rotator's own client id.
    pub client_id: String,
    /// Where the rotator's own client secret is.
    pub secret: SecretSource,
    /// How many clients are rotated at once.
    pub max_concurrency: usize,
    /// How long one request to CDS may take.
    pub request_timeout: std::time::Duration,
}

/// A store as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// Files in a directory.
    File {
        /// The directory (made absolute against the policy file's directory).
        dir: PathBuf,
    },
}

/// A notifier as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifierSpec {
    /// Events go to the rotator's own log.
    Log,
}

/// The timing of one client's rotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Cron expression with seconds.
    pub schedule: String,
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
            schedule: "0 0 3 * * *".to_owned(),
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
    /// When and how long.
    pub timing: Timing,
    /// Whether secrets the rotator did not create may be retired.
    pub retire_unmanaged: bool,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The file it came from.
    pub path: PathBuf,
    /// The `connect:` section.
    pub connect: ConnectSettings,
    /// Where per-client lock files live.
    pub lock_dir: PathBuf,
    /// Stores by name.
    pub stores: BTreeMap<String, StoreSpec>,
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, NotifierSpec>,
    /// Clients in policy order.
    pub clients: Vec<ClientPolicy>,
}

/// One problem in a policy, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong and what to do.
    pub message: String,
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

/// The default location of the policy.
pub const DEFAULT_PATH: &str = "/etc/cds-rotator/policy.yaml";

/// The default directory for lock files: one place for every process on the host,
/// whatever its environment, so that the daemon under systemd and an operator's
/// `--run-now` in a shell take the same locks (a per-process `$RUNTIME_DIRECTORY` would
/// let both rotate one client at once).
fn default_lock_dir() -> PathBuf {
    PathBuf::from("/run/lock/cds-rotator")
}

impl Policy {
    /// Reads and validates the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            path: path.to_owned(),
            problems: vec![Diagnostic {
                line: 0,
                column: 0,
                message: format!(
                    "cannot read the policy: {e}; pass --config PATH or set CDS_ROTATOR_CONFIG"
                ),
            }],
        })?;
        Policy::parse(path, &text)
    }

    /// Validates policy text as if read from `path` (relative store paths resolve
    /// against `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let raw = raw::parse(text).map_err(|d| PolicyError {
            path: path.to_owned(),
            problems: vec![d],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut v = Validator {
            problems: Vec::new(),
        };
        let policy = v.policy(path, base, raw);
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
}

impl Validator {
    fn problem(&mut self, at: Location, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            line: at.line(),
            column: at.column(),
            message: message.into(),
        });
    }

    fn policy(&mut self, path: &Path, base: &Path, raw: RawPolicy) -> Option<Policy> {
        let connect = self.connect(raw.connect);
        let lock_dir = raw
            .lock_dir
            .map(|d| absolute(base, &d.value))
            .unwrap_or_else(default_lock_dir);

        let mut stores = BTreeMap::new();
        for (name, spec) in raw.stores {
            self.name(spec.referenced, "store", &name);
            let store = match spec.value {
                RawStore::File { dir } => StoreSpec::File {
                    dir: absolute(base, &dir),
                },
            };
            stores.insert(name, store);
        }
        let mut notifiers = BTreeMap::new();
        for (name, spec) in raw.notifiers {
            self.name(spec.referenced, "notifier", &name);
            let notifier = match spec.value {
                RawNotifier::Log {} => NotifierSpec::Log,
            };
            notifiers.insert(name, notifier);
        }

        let defaults = match &raw.defaults {
            Some(d) => self.timing(&d.value, d.referenced, None),
            None => self.timing(&RawTiming::default(), Location::UNKNOWN, None),
        };
        let mut clients = Vec::new();
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut places = BTreeSet::new();
        for client in raw.clients {
            let at = client.referenced;
            let Some(c) = self.client(client.value, at, defaults.as_ref(), &stores, &notifiers)
            else {
                continue;
            };
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
            if !places.insert((c.store.clone(), c.secret.clone())) {
                self.problem(
                    at,
                    format!(
                        "store `{}` secret `{}` is used by two clients; give each client its own secret name",
                        c.store, c.secret
                    ),
                );
            }
            if let Some(conn) = &connect
                && conn.client_id == c.client_id
            {
                self.self_rotation(at, conn, &c, &stores);
            }
            clients.push(c);
        }
        Some(Policy {
            path: path.to_owned(),
            connect: connect?,
            lock_dir,
            stores,
            notifiers,
            clients,
        })
    }

    /// The rotator's own client may be rotated only if the rotator reads its credential
    /// from where the new secret is published; otherwise retiring the old secret would
    /// lock the rotator out.
    fn self_rotation(
        &mut self,
        at: Location,
        conn: &ConnectSettings,
        c: &ClientPolicy,
        stores: &BTreeMap<String, StoreSpec>,
    ) {
        let Some(StoreSpec::File { dir }) = stores.get(&c.store) else {
            return;
        };
        let published = dir.join(&c.secret);
        if conn.secret != SecretSource::File(published.clone()) {
            self.problem(
                at,
                format!(
                    "client `{}` is the rotator's own client: set connect.credentials.client_secret_file to {} so the rotator switches to each new secret before the old one is retired",
                    c.name,
                    published.display()
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

    fn guid(&mut self, s: &Spanned<String>, what: &str) -> Option<String> {
        match uuid::Uuid::parse_str(s.value.trim()) {
            Ok(id) if s.value.trim().len() == 36 => Some(id.hyphenated().to_string()),
            _ => {
                self.problem(
                    s.referenced,
                    format!(
                        "{what} `{}` is not a GUID (like 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0)",
                        s.value
                    ),
                );
                None
            }
        }
    }

    fn connect(&mut self, raw: Spanned<raw::RawConnect>) -> Option<ConnectSettings> {
        let c = raw.value;
        let url = self.url(&c.url);
        let tenant_id = self.guid(&c.tenant_id, "connect.tenant_id");
        let creds = c.credentials.value;
        let client_id = self.guid(&creds.client_id, "connect.credentials.client_id");
        if let Some(plain) = &creds.client_secret {
            self.problem(
                plain.referenced,
                "a plaintext client_secret in the policy is refused: put the secret in a file readable only by cds-rotator and set client_secret_file, or set client_secret_env",
            );
        }
        let secret = match (creds.client_secret_file, creds.client_secret_env) {
            (Some(file), None) => Some(SecretSource::File(file.value)),
            (None, Some(env)) => Some(SecretSource::Env(env.value)),
            (Some(file), Some(_)) => {
                self.problem(
                    file.referenced,
                    "set either client_secret_file or client_secret_env, not both",
                );
                None
            }
            (None, None) => {
                if creds.client_secret.is_none() {
                    self.problem(
                        c.credentials.referenced,
                        "connect.credentials needs client_secret_file (a path) or client_secret_env (a variable name)",
                    );
                }
                None
            }
        };
        let max_concurrency = match c.max_concurrency {
            None => 8,
            Some(n) if (1..=64).contains(&n.value) => n.value,
            Some(n) => {
                self.problem(n.referenced, "max_concurrency must be between 1 and 64");
                8
            }
        };
        let request_timeout = match self.duration(&c.request_timeout, "connect.request_timeout")? {
            None => Duration::seconds(30),
            Some(d) if d >= Duration::seconds(1) && d <= Duration::minutes(5) => d,
            Some(_) => {
                let at = c.request_timeout.as_ref().map(|t| t.referenced);
                self.problem(
                    at.unwrap_or(Location::UNKNOWN),
                    "connect.request_timeout must be between 1s and 5m",
                );
                Duration::seconds(30)
            }
        };
        Some(ConnectSettings {
            request_timeout: request_timeout.to_std().unwrap_or_default(),
            url: url?,
            tenant_id: tenant_id?,
            client_id: client_id?,
            secret: secret?,
            max_concurrency,
        })
    }

    fn url(&mut self, raw: &Spanned<String>) -> Option<String> {
        let at = raw.referenced;
        let text = raw.value.trim().trim_end_matches('/');
        let Ok(url) = reqwest::Url::parse(text) else {
            self.problem(
                at,
                format!("connect.url `{text}` is not a URL; use {PRIMARY_URL}"),
            );
            return None;
        };
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => {
                self.problem(
                    at,
                    format!("connect.url `{text}` uses plain http to a non-loopback host; the secrets would travel unencrypted: use https"),
                );
                return None;
            }
            other => {
                self.problem(
                    at,
                    format!("connect.url scheme `{other}` is not supported; use https"),
                );
                return None;
            }
        }
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
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(at, "connect.url must not have a query or fragment");
            return None;
        }
        Some(text.to_owned())
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

    /// Merges a timing section over `base` (the defaults) and checks it.
    fn timing(&mut self, raw: &RawTiming, here: Location, base: Option<&Timing>) -> Option<Timing> {
        let builtin = Timing::default();
        let base = base.unwrap_or(&builtin);
        let lifetime = self.duration(&raw.lifetime, "lifetime");
        let rotate_before = self.duration(&raw.rotate_before, "rotate_before");
        let grace = self.duration(&raw.grace, "grace");
        let orphan_grace = self.duration(&raw.orphan_grace, "orphan_grace");
        let max_age = self.duration(&raw.max_age, "max_age");
        let verify_timeout = self.duration(&raw.verify_timeout, "verify_timeout");
        let retry_interval = self.duration(&raw.retry_interval, "retry_interval");
        let schedule = match &raw.schedule {
            None => Some(base.schedule.clone()),
            Some(s) => match crate::daemon::parse_schedule(&s.value) {
                Ok(_) => Some(s.value.trim().to_owned()),
                Err(e) => {
                    self.problem(s.referenced, format!("schedule: {e}"));
                    None
                }
            },
        };
        let t = Timing {
            schedule: schedule?,
            lifetime: lifetime?.unwrap_or(base.lifetime),
            rotate_before: rotate_before?.unwrap_or(base.rotate_before),
            grace: grace?.unwrap_or(base.grace),
            orphan_grace: orphan_grace?.unwrap_or(base.orphan_grace),
            max_age: max_age?.or(base.max_age),
            verify_timeout: verify_timeout?.unwrap_or(base.verify_timeout),
            retry_interval: retry_interval?.unwrap_or(base.retry_interval),
        };
        let at = |f: &Option<Spanned<String>>| f.as_ref().map(|s| s.referenced);
        if t.lifetime <= Duration::zero() || t.lifetime > Duration::days(730) {
            self.problem(
                at(&raw.lifetime).unwrap_or(here),
                "lifetime must be more than 0s and at most 730d (CDS secrets should always expire)",
            );
        }
        if t.rotate_before >= t.lifetime {
            self.problem(
                at(&raw.rotate_before).unwrap_or(here),
                format!(
                    "rotate_before ({}) must be shorter than lifetime ({}), or every new secret would be due at once",
                    duration::format(t.rotate_before),
                    duration::format(t.lifetime)
                ),
            );
        }
        if t.grace >= t.rotate_before && t.rotate_before > Duration::zero() {
            self.problem(
                at(&raw.grace).unwrap_or(here),
                format!(
                    "grace ({}) must be shorter than rotate_before ({}), or the old secret expires before consumers had the grace period to switch",
                    duration::format(t.grace),
                    duration::format(t.rotate_before)
                ),
            );
        }
        if let Some(max_age) = t.max_age
            && max_age <= t.grace
        {
            self.problem(
                at(&raw.max_age).unwrap_or(here),
                "max_age must be longer than grace",
            );
        }
        if t.verify_timeout > Duration::hours(1) || t.retry_interval < Duration::seconds(1) {
            self.problem(
                at(&raw.verify_timeout)
                    .or(at(&raw.retry_interval))
                    .unwrap_or(here),
                "verify_timeout must be at most 1h and retry_interval at least 1s",
            );
        }
        Some(t)
    }

    fn client(
        &mut self,
        raw: RawClient,
        location: Location,
        defaults: Option<&Timing>,
        stores: &BTreeMap<String, StoreSpec>,
        notifiers: &BTreeMap<String, NotifierSpec>,
    ) -> Option<ClientPolicy> {
        let name = raw.name.value.clone();
        self.name(raw.name.referenced, "client", &name);
        let client_id = self.guid(&raw.client_id, &format!("client `{name}`: client_id"));
        let kind = match raw.kind.as_ref().map(|k| k.value.as_str()) {
            None | Some("client_credentials") => Some(ClientKind::ClientCredentials),
            Some("hybrid") => Some(ClientKind::Hybrid),
            Some(other) => {
                let at = raw.kind.as_ref().map(|k| k.referenced).unwrap_or(location);
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
        let store_name = raw.store.value.name.clone();
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
        let secret =
            raw.store.value.secret.clone().unwrap_or_else(|| {
                Spanned::new(name.clone(), raw.store.referenced, raw.store.defined)
            });
        if !is_safe_name(&secret.value) || secret.value.ends_with(".json") {
            self.problem(
                secret.referenced,
                format!(
                    "client `{name}`: store secret name `{}` must be 1-64 letters, digits, `-`, `_`, `.`, not start with `.` nor end with `.json`",
                    secret.value
                ),
            );
        }
        for n in &raw.notify {
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
        let timing = self.timing(&raw.timing(), location, defaults);
        Some(ClientPolicy {
            name,
            client_id: client_id?,
            kind: kind?,
            store: store_name.value,
            secret: secret.value,
            notify: raw.notify.into_iter().map(|n| n.value).collect(),
            timing: timing?,
            retire_unmanaged: raw.retire_unmanaged.unwrap_or(false),
        })
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests;

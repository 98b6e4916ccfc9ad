//! Shared set-up for the integration tests: an emulator seeded with an administrator and
//! a few clients, a temporary directory with the rotator's credential, and a policy
//! ([`Env`]) written with the one policy builder (`policy`); the real servers and the
//! fakes the tests start (`bao`, `moto`, `etcd`, `azure`, `kube`), the fault proxy
//! (`proxy`) and the store conformance suite (`conformance`).
//! Not here: a test's own fixtures (they stay in its module).

pub mod azure;
pub mod bao;
pub mod conformance;
pub mod etcd;
pub mod kube;
pub mod moto;
pub mod policy;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use cds_rotator::clock::ManualClock;

use tokio::process::Command;

use cds_rotator::app::{self, Wired};
use cds_rotator::emulator::{Emulator, IdPolicy, Seed};
use cds_rotator::policy::Policy;
use cds_rotator::rotation::{PassOptions, PassReport};

pub use policy::PolicyText;

/// A loopback port that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The program `name` of the servers the tests run against (moto, OpenBao), in
/// `$CDS_ROTATOR_TEST_BIN`; fails (never skips) with what to do when it is not there.
pub fn test_bin(name: &str) -> PathBuf {
    let Some(dir) = std::env::var_os("CDS_ROTATOR_TEST_BIN") else {
        panic!(
            "CDS_ROTATOR_TEST_BIN is not set: run `bash scripts/test-deps.sh` and export CDS_ROTATOR_TEST_BIN=<the directory it prints> (scripts/test.sh does both)"
        );
    };
    let exe = PathBuf::from(dir).join(name);
    assert!(
        exe.is_file(),
        "{} is missing: run `bash scripts/test-deps.sh` (it installs moto and OpenBao) and export CDS_ROTATOR_TEST_BIN=<the directory it prints>",
        exe.display()
    );
    exe
}

/// Sends `signal` ("TERM", "HUP", "STOP", …) to `pid`; the test fails if `kill` does.
pub fn send_signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// GETs `path` from a daemon's listener on loopback `port`: the status and the body,
/// or `(0, "")` when nothing answers.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Polls `check` until it holds, for up to `limit`; fails the test naming `what` otherwise.
pub async fn eventually(
    what: &str,
    limit: std::time::Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "no {what} seen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits up to 30 s for `ready`; fails the test naming `what` otherwise.
pub async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "no {what} seen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One pass of `wired`'s clients, its events delivered (as `--run-now` does).
pub async fn pass_of(wired: &Wired, force: bool) -> Vec<PassReport> {
    let reports = wired
        .reconciler
        .run_all(
            &wired.jobs,
            wired.max_concurrency,
            PassOptions {
                force,
                ..PassOptions::default()
            },
        )
        .await;
    cds_rotator::notify::outbox().flush().await;
    reports
}
use cds_rotator::domain::StoreRecord;

pub const TENANT: &str = "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f";
pub const ADMIN: &str = "2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d";
pub const ADMIN_SECRET: &str = "admin-Seed-Secret-Value-0123456789abcdef";
pub const APP: &str = "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
pub const APP_SEEDED_SECRET: &str = "app-Seed-Secret-Value-0123456789abcdef";
pub const HYBRID: &str = "1b0c1d2e-3f40-4152-6374-8596a7b8c9d0";

/// The emulator's seed: an administrator, a client-credentials app with one hand-made
/// secret, and a hybrid client with none.
pub fn seed_yaml() -> String {
    seed_yaml_with(IdPolicy::Increasing)
}

/// [`seed_yaml`] with the given way of numbering new secrets.
pub fn seed_yaml_with(ids: IdPolicy) -> String {
    let ids = match ids {
        IdPolicy::Increasing => "increasing",
        IdPolicy::LowestFree => "lowest_free",
    };
    format!(
        r#"tenant_id: {TENANT}
region: primary
id_policy: {ids}
clients:
  - id: {ADMIN}
    name: admin
    kind: client_credentials
    roles: [tenant_administrator]
    secrets:
      - value: "{ADMIN_SECRET}"
        description: "admin, made by hand"
        expiration: 2099-01-01T00:00:00Z
        expires: true
  - id: {APP}
    name: app
    kind: client_credentials
    secrets:
      - value: "{APP_SEEDED_SECRET}"
        description: "made by hand"
        expiration: 2099-01-01T00:00:00Z
        expires: true
  - id: {HYBRID}
    name: web
    kind: hybrid
"#
    )
}

/// A running emulator plus a directory holding the policy, credential, store and locks.
pub struct Env {
    pub emulator: Emulator,
    pub dir: tempfile::TempDir,
}

/// Both ways CDS might number secrets: the rotation tests that matter run under each.
pub const ID_POLICIES: [IdPolicy; 2] = [IdPolicy::Increasing, IdPolicy::LowestFree];

impl Env {
    pub async fn start() -> Env {
        Env::start_with(IdPolicy::Increasing).await
    }

    /// An environment whose emulator numbers new secrets by `ids`.
    pub async fn start_with(ids: IdPolicy) -> Env {
        Env::start_seeded(&seed_yaml_with(ids)).await
    }

    /// An environment whose emulator starts from `seed` (the YAML of [`Seed`]: a
    /// changed [`seed_yaml`]).
    pub async fn start_seeded(seed: &str) -> Env {
        let seed = Seed::from_yaml(seed).expect("seed");
        let emulator = Emulator::start(([127, 0, 0, 1], 0).into(), seed)
            .await
            .expect("emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("admin-secret"), ADMIN_SECRET).unwrap();
        Env { emulator, dir }
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    /// Writes a policy for the app and hybrid clients; `extra` is appended to `defaults:`.
    pub fn write_policy(&self, defaults_extra: &str, client_extra: &str) -> PathBuf {
        self.write_policy_at(&self.emulator.url(), defaults_extra, client_extra)
    }

    /// The policy text of [`Env::write_policy`] with `daemon.listen` on `port`, and the
    /// `web` client only when `with_web` (written, and returned to edit further).
    pub fn daemon_policy(&self, port: u16, with_web: bool) -> String {
        self.write_policy("", "");
        let mut text = std::fs::read_to_string(self.policy_path()).unwrap();
        if !with_web {
            let at = text.find("  - name: web").unwrap();
            text.truncate(at);
        }
        text.push_str(&format!("daemon:\n  listen: 127.0.0.1:{port}\n"));
        text
    }

    /// Replaces the policy the way an editor does: a new file renamed over the old one.
    pub fn replace_policy(&self, text: &str) {
        let tmp = self.dir.path().join(".policy.yaml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.policy_path()).unwrap();
    }

    /// Writes the policy of [`Env::write_policy`] with `notifiers` added and the app
    /// client notifying `notify`, with `client_extra` (its pickup).
    pub fn write_notifier_policy(&self, notifiers: &str, notify: &str, client_extra: &str) {
        let path = self.write_policy("", client_extra);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "  ops: { type: log }\n",
                &format!("  ops: {{ type: log }}\n{notifiers}\n"),
            )
            .replacen(
                "    notify: [ops]\n",
                &format!("    notify: [{notify}]\n"),
                1,
            );
        std::fs::write(path, text).unwrap();
    }

    /// Writes the policy of [`Env::write_policy`] with one more store, `declared` (its
    /// line under `stores:`, like `kv: { type: azure_key_vault, … }`), and the app client
    /// publishing to `app_store` (like `{ name: kv, secret: cds-app }`).
    pub fn write_policy_on_store(&self, declared: &str, app_store: &str) -> PathBuf {
        let path = self.write_policy("", "");
        let text = read(&path)
            .replace("notifiers:", &format!("  {declared}\nnotifiers:"))
            .replace(
                "store: { name: local, secret: app }",
                &format!("store: {app_store}"),
            );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Like [`Env::write_policy`], against another CDS URL.
    pub fn write_policy_at(&self, url: &str, defaults_extra: &str, client_extra: &str) -> PathBuf {
        let policy = self
            .policy_at(url)
            .connect("max_concurrency: 2")
            .connect("request_timeout: 2s")
            .store(&format!(
                "local: {{ type: file, dir: {} }}",
                self.secrets_dir().display()
            ))
            .notifier("ops: { type: log }")
            .default("lifetime: 90d")
            .default("rotate_before: 30d")
            .default("grace: 0s")
            .default("orphan_grace: 10m")
            .default("verify_timeout: 5s")
            .defaults_text(defaults_extra)
            .client(&format!(
                "  - name: app\n    client_id: {APP}\n    kind: client_credentials\n    store: {{ name: local, secret: app }}\n    notify: [ops]\n{client_extra}"
            ))
            .client(&format!(
                "  - name: web\n    client_id: {HYBRID}\n    kind: hybrid\n    store: {{ name: local, secret: web }}\n    notify: [ops]"
            ));
        self.write(&policy)
    }

    /// A policy for this environment against the CDS at `url`: the emulator's tenant,
    /// the administrator's credential file and the lock directory in [`Env::dir`].
    pub fn policy_at(&self, url: &str) -> PolicyText {
        PolicyText::new(url, TENANT)
            .credential(&format!("client_id: {ADMIN}"))
            .credential(&format!(
                "client_secret_file: {}",
                self.dir.path().join("admin-secret").display()
            ))
            .lock_dir(&self.dir.path().join("locks").display().to_string())
    }

    /// [`Env::policy_at`] the emulator, with the credential file and the lock directory
    /// named relative to the policy (`./admin-secret`, `./locks`), as an operator writes them.
    pub fn relative_policy(&self) -> PolicyText {
        PolicyText::new(&self.emulator.url(), TENANT)
            .credential(&format!("client_id: {ADMIN}"))
            .credential("client_secret_file: ./admin-secret")
            .lock_dir("./locks")
    }

    /// Writes `policy` as this environment's policy file; returns its path.
    pub fn write(&self, policy: &PolicyText) -> PathBuf {
        let path = self.policy_path();
        std::fs::write(&path, policy.text()).unwrap();
        path
    }

    pub fn wired(&self, only: &[&str]) -> Wired {
        let policy = Policy::load(&self.policy_path()).expect("policy");
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        let options = app::Options {
            only,
            ..app::Options::default()
        };
        app::wire(&policy, options).expect("wire")
    }

    /// The pieces wired on a clock the test moves by hand.
    pub fn wired_at(&self, only: &[&str], clock: &ManualClock) -> Wired {
        let policy = Policy::load(&self.policy_path()).expect("policy");
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        let options = app::Options {
            only,
            clock: Arc::new(clock.clone()),
            ..app::Options::default()
        };
        app::wire(&policy, options).expect("wire")
    }

    /// Adds `n` hand-made (unmanaged) secrets to `client`, expiring in 400 days.
    pub fn add_hand_made(&self, client: &str, n: usize) {
        for i in 0..n {
            self.emulator.add_secret(
                TENANT,
                client,
                &format!("hand-made-{i}-value-0123456789"),
                Some("hand-made"),
                Some(chrono::Utc::now() + chrono::Duration::days(400)),
                Some(true),
            );
        }
    }

    /// Whether `value` gets a token for `client_id` right now.
    pub async fn gets_token(&self, client_id: &str, value: &str) -> bool {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", value),
        ];
        reqwest::Client::new()
            .post(format!("{}/identity/connect/token", self.emulator.url()))
            .form(&form)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    /// One pass in this process.
    pub async fn pass(&self, only: &[&str], force: bool) -> Vec<PassReport> {
        pass_of(&self.wired(only), force).await
    }

    pub fn record(&self, secret: &str) -> Option<StoreRecord> {
        let text =
            std::fs::read_to_string(self.secrets_dir().join(format!("{secret}.json"))).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    pub fn value(&self, secret: &str) -> Option<String> {
        std::fs::read_to_string(self.secrets_dir().join(secret)).ok()
    }

    /// Ids of the app client's secrets in the emulator.
    pub fn ids(&self, client: &str) -> Vec<i32> {
        self.emulator
            .secrets(TENANT, client)
            .iter()
            .map(|s| s.id)
            .collect()
    }

    /// The number of requests with this method whose path contains `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.emulator
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path))
            .count()
    }

    /// The binary with this policy, ready to run.
    pub fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cds-rotator"));
        cmd.arg("--config").arg(self.policy_path()).args(args);
        cmd.env_remove("CDS_ROTATOR_CONFIG").env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs the binary with this policy to the end.
    pub async fn cli(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.command(args, envs)
            .output()
            .await
            .expect("run cds-rotator")
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that none of `values` appears in `haystack`.
pub fn assert_no_secret(haystack: &str, values: &[String]) {
    for v in values {
        assert!(!v.is_empty());
        assert!(
            !haystack.contains(v.as_str()),
            "a secret value leaked into the output"
        );
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A certificate authority made at test time, for TLS servers and clients on loopback.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA's certificate, DER.
    pub fn der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (host names or IP addresses) signed by this CA, and its
    /// key pair. It names no key usage, so it serves a server and a client alike.
    pub fn issue(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert, key)
    }
}

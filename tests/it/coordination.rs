//! One actor per client across hosts: rotators sharing a `coordination:` section elect a
//! leader on a real etcd, and only the leader writes to CDS or the store — also when the
//! leader is killed, paused past its lease, or cut off from etcd.
//!
//! Each daemon has its own lock directory, as on separate hosts: only the lease keeps
//! them apart. What was written is read from the emulator's request log.

use crate::support;
use crate::support::azure;
use crate::support::bao;
use crate::support::etcd::Etcd;
use crate::support::kube;
use crate::support::moto;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::{Env, eventually, free_port, send_signal, text};
use tokio::process::{Child, Command};

const TTL_SECS: u64 = 3;

/// A service the daemons elect their leader on.
trait Coordinator {
    /// The body of the policy's `coordination:` section, indented.
    fn section(&self) -> String;
}

/// The `coordination:` section for an etcd at `url`, with the `tls:` value `tls`.
fn etcd_section(url: &str, tls: Option<String>) -> String {
    let mut section = format!(
        "  type: etcd\n  endpoints: [{url}]\n  key_prefix: /cds-rotator/test\n  lease_ttl: {TTL_SECS}s\n"
    );
    if let Some(tls) = tls {
        section += &format!("  tls: {tls}\n");
    }
    section
}

impl Coordinator for Etcd {
    fn section(&self) -> String {
        let tls = self.tls.as_ref().map(|tls| {
            format!(
                "{{ ca_file: {}, cert_file: {}, key_file: {} }}",
                tls.ca.display(),
                tls.client_cert.display(),
                tls.client_key.display()
            )
        });
        etcd_section(&self.url(), tls)
    }
}

/// An etcd over TLS, named without the client certificate it asks for.
struct WithoutClientCertificate<'a>(&'a Etcd);

impl Coordinator for WithoutClientCertificate<'_> {
    fn section(&self) -> String {
        let ca = &self.0.tls.as_ref().unwrap().ca;
        etcd_section(
            &self.0.url(),
            Some(format!("{{ ca_file: {} }}", ca.display())),
        )
    }
}

impl Coordinator for kube::FakeLeases {
    fn section(&self) -> String {
        format!(
            "  type: kubernetes_lease\n  namespace: cds-rotator\n  name: cds-rotator\n  api_url: {}\n  token_file: {}\n  lease_duration: {TTL_SECS}s\n",
            self.url,
            self.token_file.path().display()
        )
    }
}

/// A daemon of its own "host": a policy with its own lock directory and listen port,
/// sharing the emulator, the store and etcd.
struct Daemon {
    child: Child,
    pid: u32,
}

/// Writes policy `name` for `env` with coordination on `etcd`; `verify_timeout` for the
/// new secret's verify step, `grace` for superseded secrets.
fn write_policy(
    env: &Env,
    coordinator: &dyn Coordinator,
    name: &str,
    verify_timeout: &str,
    grace: &str,
) -> (PathBuf, u16) {
    env.write_policy("", "");
    let port = free_port();
    let mut policy = std::fs::read_to_string(env.policy_path()).unwrap();
    policy = policy
        .replace("request_timeout: 2s", "request_timeout: 1s")
        .replace("grace: 0s", &format!("grace: {grace}"))
        .replace(
            "verify_timeout: 5s",
            &format!("verify_timeout: {verify_timeout}"),
        )
        .replace(
            &format!("lock_dir: {}", env.dir.path().join("locks").display()),
            &format!(
                "lock_dir: {}",
                env.dir.path().join(format!("locks-{name}")).display()
            ),
        );
    policy.push_str(&format!(
        "daemon:\n  listen: 127.0.0.1:{port}\ncoordination:\n{}",
        coordinator.section()
    ));
    let path = env.dir.path().join(format!("policy-{name}.yaml"));
    std::fs::write(&path, policy).unwrap();
    (path, port)
}

fn start(policy: &PathBuf) -> Daemon {
    let log = std::fs::File::create(policy.with_extension("log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .arg("--config")
        .arg(policy)
        .env_remove("CDS_ROTATOR_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    Daemon { child, pid }
}

/// Starts a daemon on `policy` as PID 1 of a PID namespace of its own (`unshare`, as
/// root): two of them share the host name and the process id, as two containers whose
/// rotator is PID 1 do. It dies with its `unshare`, which is killed when dropped.
fn start_as_pid_1(policy: &PathBuf) -> Daemon {
    let log = std::fs::File::create(policy.with_extension("log")).unwrap();
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_cds-rotator"))
        .arg("--config")
        .arg(policy)
        .env_remove("CDS_ROTATOR_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("run unshare (util-linux; the test runs as root)");
    let pid = child.id().unwrap();
    Daemon { child, pid }
}

/// `/readyz` of the daemon on `port`, or `None` when it does not answer.
async fn readyz(port: u16) -> Option<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}

async fn role(port: u16) -> Option<String> {
    Some(readyz(port).await?["role"].as_str()?.to_owned())
}

/// Whether the daemon on `port` leads and has finished a pass.
async fn leads_after_a_pass(port: u16) -> bool {
    readyz(port)
        .await
        .is_some_and(|r| r["role"] == "leader" && r["first_pass_done"] == true)
}

/// The CDS writes in the emulator's log from index `from` on: (method, path).
fn writes_since(env: &Env, from: usize) -> Vec<(String, String)> {
    env.emulator.requests()[from..]
        .iter()
        .filter(|r| {
            let path = r.path.to_ascii_lowercase();
            (r.method == "POST" && path.ends_with("/secrets"))
                || (r.method == "DELETE" && path.contains("/secrets/"))
        })
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

fn creates_for(writes: &[(String, String)], client_id: &str) -> usize {
    writes
        .iter()
        .filter(|(m, p)| m == "POST" && p.to_ascii_lowercase().contains(client_id))
        .count()
}

async fn metric(port: u16, name: &str) -> String {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_one_acts_and_the_standby_takes_over_when_the_leader_is_killed() {
    one_acts_and_the_standby_takes_over(&Etcd::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_kubernetes_lease_one_acts_and_the_standby_takes_over_when_the_leader_is_killed() {
    one_acts_and_the_standby_takes_over(&kube::FakeLeases::start().await).await;
}

async fn one_acts_and_the_standby_takes_over(etcd: &dyn Coordinator) {
    let env = Env::start().await;
    let (policy_a, port_a) = write_policy(&env, etcd, "a", "5s", "0s");
    let (policy_b, port_b) = write_policy(&env, etcd, "b", "5s", "0s");
    let mut a = start(&policy_a);
    let mut b = start(&policy_b);
    let limit = Duration::from_secs(30);
    eventually("a leader with a finished pass", limit, async || {
        leads_after_a_pass(port_a).await || leads_after_a_pass(port_b).await
    })
    .await;
    // Give the standby a few renew intervals to try (and fail) to take over.
    tokio::time::sleep(Duration::from_secs(2 * TTL_SECS)).await;
    let (leader, standby, standby_port) = if leads_after_a_pass(port_a).await {
        (&mut a, &mut b, port_b)
    } else {
        (&mut b, &mut a, port_a)
    };
    let body = readyz(standby_port).await.expect("the standby answers");
    assert_eq!(body["role"], "standby", "{body}");
    assert_eq!(body["ready"], true, "a standby is ready: {body}");
    let writes = writes_since(&env, 0);
    assert_eq!(creates_for(&writes, support::APP), 1, "{writes:?}");
    assert_eq!(creates_for(&writes, support::HYBRID), 1, "{writes:?}");
    assert!(
        metric(standby_port, "cds_rotator_leader{")
            .await
            .ends_with(" 0"),
        "the standby's leader gauge is 0"
    );
    let published = env.record("app").expect("the leader published app");

    // The leader dies without giving the lease back: the standby takes over once the
    // lease runs out, finds every client done, and rotates none again.
    let killed = leader.pid;
    leader.child.start_kill().unwrap();
    let _ = leader.child.wait().await;
    eventually(
        "the standby taking over",
        Duration::from_secs(TTL_SECS * 2 + 30),
        async || leads_after_a_pass(standby_port).await,
    )
    .await;
    assert!(
        metric(standby_port, "cds_rotator_leader{")
            .await
            .ends_with(" 1"),
        "the new leader's gauge is 1"
    );
    let writes = writes_since(&env, 0);
    assert_eq!(
        creates_for(&writes, support::APP),
        1,
        "rotated twice: {writes:?}"
    );
    assert_eq!(
        creates_for(&writes, support::HYBRID),
        1,
        "rotated twice: {writes:?}"
    );
    assert_eq!(env.record("app").unwrap().secret_id, published.secret_id);
    assert_ne!(standby.pid, killed);
    send_signal(standby.pid, "TERM");
    let _ = standby.child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_resumes() {
    a_paused_leader_writes_nothing(&Etcd::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_kubernetes_lease_writes_nothing_when_it_resumes() {
    a_paused_leader_writes_nothing(&kube::FakeLeases::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_host_name_and_one_pid_never_both_lead_a_kubernetes_lease() {
    let leases = kube::FakeLeases::start().await;
    let env = Env::start().await;
    let (policy_a, port_a) = write_policy(&env, &leases, "a", "5s", "0s");
    let (policy_b, port_b) = write_policy(&env, &leases, "b", "5s", "0s");
    let _a = start_as_pid_1(&policy_a);
    let _b = start_as_pid_1(&policy_b);
    eventually(
        "a leader with a finished pass",
        Duration::from_secs(30),
        async || leads_after_a_pass(port_a).await || leads_after_a_pass(port_b).await,
    )
    .await;
    // Both campaign (the second may start later than the first led, on a loaded machine).
    let logged_identity = |what: &str| {
        std::fs::read_to_string(env.dir.path().join(format!("policy-{what}.log")))
            .unwrap_or_default()
            .contains("identity=")
    };
    eventually(
        "both processes named their identity",
        Duration::from_secs(30),
        async || logged_identity("a") && logged_identity("b"),
    )
    .await;
    // Over several renew intervals, exactly one of them leads at every look.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * TTL_SECS);
    while tokio::time::Instant::now() < deadline {
        let roles = (role(port_a).await, role(port_b).await);
        let leaders = [&roles.0, &roles.1]
            .iter()
            .filter(|r| r.as_deref() == Some("leader"))
            .count();
        assert_eq!(leaders, 1, "roles: {roles:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let holder = leases.lease().unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!holder.ends_with("-1"), "not host-pid: {holder}");
    let writes = writes_since(&env, 0);
    assert_eq!(
        creates_for(&writes, support::APP),
        1,
        "both rotated: {writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_lease_naming_our_identity_but_not_written_by_us_is_someone_elses() {
    let leases = kube::FakeLeases::start().await;
    let env = Env::start().await;
    let (policy, _) = write_policy(&env, &leases, "a", "5s", "0s");
    let spec = cds_rotator::policy::Policy::load(&policy)
        .unwrap()
        .coordination
        .unwrap();
    // One identity given to two electors (as `host-pid` was to two PID-1 containers).
    let start =
        || cds_rotator::coordination::Leadership::start(&spec, "node-1-1".to_owned()).unwrap();
    let (a, b) = (start(), start());
    eventually("a leader", Duration::from_secs(30), async || {
        a.is_leader() || b.is_leader()
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * TTL_SECS);
    while tokio::time::Instant::now() < deadline {
        assert!(!(a.is_leader() && b.is_leader()), "both lead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.release().await;
    b.release().await;
}

async fn a_paused_leader_writes_nothing(etcd: &dyn Coordinator) {
    let env = Env::start().await;
    // New secrets take 4s to get tokens: the leader's pass sits in verify. A grace of
    // an hour keeps the next leader from retiring the old leader's unpublished secrets.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(4));
    let (policy_a, port_a) = write_policy(&env, etcd, "a", "60s", "1h");
    let (policy_b, port_b) = write_policy(&env, etcd, "b", "60s", "1h");
    let mut a = start(&policy_a);
    let limit = Duration::from_secs(30);
    eventually("the leader creating both secrets", limit, async || {
        let w = writes_since(&env, 0);
        creates_for(&w, support::APP) == 1 && creates_for(&w, support::HYBRID) == 1
    })
    .await;
    // Paused between create and publish, with its lease running out.
    send_signal(a.pid, "STOP");
    let mut b = start(&policy_b);
    eventually(
        "the second daemon leading after a pass",
        Duration::from_secs(60),
        async || leads_after_a_pass(port_b).await,
    )
    .await;
    let published = env.record("app").expect("the new leader published app");
    let by_b = writes_since(&env, 0);
    assert_eq!(creates_for(&by_b, support::APP), 2, "{by_b:?}");
    let mark = env.emulator.requests().len();
    let a_secrets: Vec<i32> = {
        // The old leader's new secrets: the first created per client, before B's.
        let mut ids = Vec::new();
        for client in [support::APP, support::HYBRID] {
            let mut s = env.emulator.secrets(support::TENANT, client);
            s.retain(|s| {
                s.description
                    .as_deref()
                    .is_some_and(|d| d.contains("cds-rotator"))
            });
            s.sort_by_key(|s| s.id);
            ids.extend(s.first().map(|s| s.id));
        }
        ids
    };

    // Resumed: its pass finds the lease gone at the fence and writes nothing at all, not
    // even the delete of the unpublished secrets it created itself (the leader deletes
    // them as orphans).
    send_signal(a.pid, "CONT");
    eventually("the old leader standing by", limit, async || {
        role(port_a).await.as_deref() == Some("standby")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2 * TTL_SECS)).await;
    let after = writes_since(&env, mark);
    let log = std::fs::read_to_string(policy_a.with_extension("log")).unwrap();
    assert_eq!(
        after,
        Vec::<(String, String)>::new(),
        "the resumed daemon wrote (its own secrets: {a_secrets:?}): {log}"
    );
    assert!(
        log.contains("lost the coordination lease"),
        "the resumed daemon says why it stopped: {log}"
    );
    let record = env.record("app").unwrap();
    assert_eq!(
        record.secret_id, published.secret_id,
        "the store was written"
    );
    assert_eq!(record.fingerprint, published.fingerprint);
    assert_eq!(role(port_b).await.as_deref(), Some("leader"));
    for d in [&mut a, &mut b] {
        send_signal(d.pid, "TERM");
        let _ = d.child.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_the_leader_steps_down_and_writes_nothing_until_it_returns() {
    let mut etcd = Etcd::start().await;
    let env = Env::start().await;
    let (policy_a, port_a) = write_policy(&env, &etcd, "a", "5s", "0s");
    let a = start(&policy_a);
    let limit = Duration::from_secs(30);
    eventually("a leader with a finished pass", limit, async || {
        leads_after_a_pass(port_a).await
    })
    .await;
    etcd.stop().await;
    eventually("the leader stepping down", limit, async || {
        role(port_a).await.as_deref() == Some("standby")
    })
    .await;
    // Without its record the app client is due at once for a leader: nothing happens
    // while this process stands by.
    let mark = env.emulator.requests().len();
    std::fs::remove_file(env.secrets_dir().join("app.json")).unwrap();
    tokio::time::sleep(Duration::from_secs(2 * TTL_SECS)).await;
    assert_eq!(
        writes_since(&env, mark),
        vec![],
        "written without the lease"
    );
    assert_eq!(role(port_a).await.as_deref(), Some("standby"));

    etcd.run().await;
    eventually("the leader back with a pass", limit, async || {
        leads_after_a_pass(port_a).await && env.record("app").is_some()
    })
    .await;
    send_signal(a.pid, "TERM");
    let out = a.child.wait_with_output().await.unwrap();
    let _ = text(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_waits_for_the_lease_and_acts_once_the_daemon_gives_it_back() {
    let etcd = Etcd::start().await;
    let env = Env::start().await;
    let (policy_a, port_a) = write_policy(&env, &etcd, "a", "5s", "0s");
    let (policy_b, _) = write_policy(&env, &etcd, "b", "5s", "0s");
    let a = start(&policy_a);
    eventually(
        "a leader with a finished pass",
        Duration::from_secs(30),
        async || leads_after_a_pass(port_a).await,
    )
    .await;
    let mark = env.emulator.requests().len();
    let mut one_shot = run_now(&policy_b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the daemon leads, the one-shot waits and writes nothing.
    tokio::time::sleep(Duration::from_secs(2 * TTL_SECS)).await;
    assert!(
        one_shot.try_wait().unwrap().is_none(),
        "--run-now did not wait"
    );
    assert_eq!(
        writes_since(&env, mark),
        vec![],
        "--run-now raced the daemon"
    );

    // The daemon stops and gives the lease back: the one-shot takes it and rotates.
    send_signal(a.pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(60), one_shot.wait_with_output())
        .await
        .expect("--run-now ends")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let writes = writes_since(&env, mark);
    assert_eq!(creates_for(&writes, support::APP), 1, "{writes:?}");
    assert_eq!(creates_for(&writes, support::HYBRID), 1, "{writes:?}");
    let mut a = a;
    let _ = a.child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_throttled_past_the_lease_is_not_sent_after_the_new_leader_reused_the_id() {
    let etcd = Etcd::start().await;
    let env = Env::start_with(cds_rotator::emulator::IdPolicy::LowestFree).await;
    let (policy_a, _) = write_policy(&env, &etcd, "a", "5s", "0s");
    let (policy_b, _) = write_policy(&env, &etcd, "b", "5s", "0s");
    let one_shot = |policy: &PathBuf| {
        let mut c = run_now(policy);
        c.args(["--client", "app"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(policy.with_extension("log")).unwrap());
        c
    };
    // A first rotation: the hand-made secret is 1, A's secret 2 is current.
    let first = one_shot(&policy_a).status().await.unwrap();
    assert!(first.success());
    assert_eq!(env.record("app").unwrap().secret_id, 2);

    // A rotates again (3) and retires 2: CDS throttles that DELETE for 10 s.
    let delete_2 = format!("{}/Secrets/2", support::APP);
    env.emulator.inject(cds_rotator::emulator::Fault {
        method: Some("DELETE".into()),
        path_contains: Some(delete_2.clone()),
        status: 429,
        retry_after: Some(10),
        times: 1,
        ..Default::default()
    });
    let mut a = one_shot(&policy_a).spawn().unwrap();
    let throttled = |env: &Env| {
        env.emulator
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains(&delete_2) && r.status == 429)
    };
    support::wait_until("the throttled DELETE", || throttled(&env)).await;
    // Paused in its Retry-After wait, past its lease.
    send_signal(a.id().unwrap(), "STOP");
    assert_eq!(env.record("app").unwrap().secret_id, 3);

    // B takes the lease once A's runs out, retires 2 and creates its new secret, which
    // reuses id 2; its follow-up retires 3.
    let b = tokio::time::timeout(Duration::from_secs(60), one_shot(&policy_b).status())
        .await
        .expect("B ends")
        .unwrap();
    let log_b = std::fs::read_to_string(policy_b.with_extension("log")).unwrap();
    assert!(b.success(), "{log_b}");
    let current = env.record("app").unwrap();
    assert_eq!(
        current.secret_id, 2,
        "B's new secret reuses the id: {log_b}"
    );
    let mark = env.emulator.requests().len();

    // A resumes: its wait is over, but its lease is gone; the DELETE is not sent again.
    send_signal(a.id().unwrap(), "CONT");
    let out = tokio::time::timeout(Duration::from_secs(60), a.wait())
        .await
        .expect("A ends")
        .unwrap();
    let log_a = std::fs::read_to_string(policy_a.with_extension("log")).unwrap();
    assert_eq!(
        writes_since(&env, mark),
        Vec::<(String, String)>::new(),
        "the old leader wrote after its lease ended: {log_a}"
    );
    assert!(!out.success(), "{log_a}");
    assert!(log_a.contains("lost the coordination lease"), "{log_a}");
    assert_eq!(env.ids(support::APP), vec![1, 2]);
    let value = env.value("app").expect("the store holds a value");
    assert!(
        env.gets_token(support::APP, &value).await,
        "the value consumers hold no longer gets a token"
    );
}

/// A fence that allows the first `n` writes and refuses the rest.
struct AllowFirst(std::sync::atomic::AtomicUsize);

impl cds_rotator::coordination::Fence for AllowFirst {
    fn can_write(&self, _longest_request: Duration) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.0
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The app client wired with a write handle whose fence is [`AllowFirst`]`(allowed)`:
/// each check counts, the reconciler's before a step and the CDS client's before each
/// attempt.
fn fenced(env: &Env, allowed: usize) -> cds_rotator::app::Wired {
    env.write_policy("", "");
    let policy = cds_rotator::policy::Policy::load(&env.policy_path()).unwrap();
    let fence = std::sync::Arc::new(AllowFirst(allowed.into()));
    let options = cds_rotator::app::Options {
        only: vec!["app".to_owned()],
        writing: cds_rotator::app::Writing::Fenced(Some(fence)),
        ..cds_rotator::app::Options::default()
    };
    cds_rotator::app::wire(&policy, options).unwrap()
}

#[tokio::test]
async fn a_vault_write_whose_request_was_lost_is_not_sent_again_without_the_lease() {
    use cds_rotator::store::{SecretStore, StoreError};
    let bao = bao::Bao::start().await;
    // The proxy drops the first data write unforwarded: its fate is unknown, and the
    // store would send it again (check-and-set lets at most one land).
    let proxy = bao::Proxy::start(&bao, bao::Trick::LoseRequest).await;
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, &bao.root).unwrap();
    let spec = cds_rotator::policy::vault::VaultSpec {
        address: cds_rotator::policy::ServiceUrl::parse(&proxy.addr).unwrap(),
        mount: "secret".to_owned(),
        namespace: None,
        auth: cds_rotator::policy::vault::VaultAuth::Token(
            cds_rotator::policy::SecretSource::File(token),
        ),
    };
    let store =
        cds_rotator::store::vault::VaultStore::new("bao", spec, Duration::from_secs(5)).unwrap();
    let value = "Fenced-Vault-Value-0123456789";
    let record = cds_rotator::domain::StoreRecord {
        client_id: support::APP.to_owned(),
        tenant_id: support::TENANT.to_owned(),
        secret_id: 2,
        expiration: chrono::Utc::now() + chrono::Duration::days(30),
        published_at: chrono::Utc::now(),
        fingerprint: cds_rotator::domain::Fingerprint::of(&secrecy::SecretString::from(value)),
    };
    // The lease holds for the check before the publish and the first write; then it is
    // gone.
    let writes = cds_rotator::writes::Writes::new(
        Some(std::sync::Arc::new(AllowFirst(2.into()))),
        None,
        Duration::from_secs(1),
    );
    let err = store
        .publish_through(
            &writes,
            "cds/app",
            &secrecy::SecretString::from(value),
            &record,
        )
        .await
        .expect_err("not sent again");
    assert!(matches!(err, StoreError::OutcomeUnknown { .. }), "{err:?}");
    assert!(
        err.to_string().contains("lost the coordination lease"),
        "{err}"
    );
    assert_eq!(
        proxy.writes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the write was sent again without the lease"
    );
    assert_eq!(bao.value("cds/app").await, None);
    // Without any lease from the start, nothing at all is sent.
    let none = cds_rotator::writes::Writes::new(
        Some(std::sync::Arc::new(AllowFirst(0.into()))),
        None,
        Duration::from_secs(1),
    );
    let err = store
        .publish_through(
            &none,
            "cds/app",
            &secrecy::SecretString::from(value),
            &record,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(proxy.writes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_secrets_manager_publish_sends_no_attempt_the_lease_does_not_cover() {
    use cds_rotator::store::SecretStore;
    let moto = moto::Moto::start().await;
    let store = cds_rotator::store::aws_secrets_manager::SecretsManagerStore::with_sdk_config(
        "aws",
        moto.target(),
        None,
        moto.sdk_config(),
    );
    let value = "Fenced-Aws-Value-0123456789";
    let record = cds_rotator::domain::StoreRecord {
        client_id: support::APP.to_owned(),
        tenant_id: support::TENANT.to_owned(),
        secret_id: 2,
        expiration: chrono::Utc::now() + chrono::Duration::days(30),
        published_at: chrono::Utc::now(),
        fingerprint: cds_rotator::domain::Fingerprint::of(&secrecy::SecretString::from(value)),
    };
    // The lease covers the check before the publish, then no SDK attempt.
    let writes = cds_rotator::writes::Writes::new(
        Some(std::sync::Arc::new(AllowFirst(1.into()))),
        None,
        Duration::from_secs(1),
    );
    let err = store
        .publish_through(
            &writes,
            "cds/app",
            &secrecy::SecretString::from(value),
            &record,
        )
        .await
        .expect_err("no attempt may be sent");
    assert!(!err.to_string().contains(value), "{err}");
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSCURRENT").await,
        None
    );
    // With the lease, the same store publishes (its client asks each attempt too).
    let held = cds_rotator::writes::Writes::new(
        Some(std::sync::Arc::new(AllowFirst(100.into()))),
        None,
        Duration::from_secs(1),
    );
    store
        .publish_through(
            &held,
            "cds/app",
            &secrecy::SecretString::from(value),
            &record,
        )
        .await
        .unwrap();
    assert!(
        moto.secrets_manager_value("cds/app", "AWSCURRENT")
            .await
            .is_some_and(|v| v.contains(value))
    );
}

#[tokio::test]
async fn a_key_vault_publish_sends_no_try_the_lease_does_not_cover() {
    use cds_rotator::store::SecretStore;
    let fake = azure::FakeVault::start().await;
    let store = cds_rotator::store::azure_key_vault::AzureKeyVaultStore::with_credential(
        "kv",
        fake.url.clone(),
        std::sync::Arc::new(azure::FixedToken),
        fake.http_client(),
        false,
    );
    let value = "Fenced-Azure-Value-0123456789";
    let record = cds_rotator::domain::StoreRecord {
        client_id: support::APP.to_owned(),
        tenant_id: support::TENANT.to_owned(),
        secret_id: 2,
        expiration: chrono::Utc::now() + chrono::Duration::days(30),
        published_at: chrono::Utc::now(),
        fingerprint: cds_rotator::domain::Fingerprint::of(&secrecy::SecretString::from(value)),
    };
    // The lease covers the check before the publish, then no try of the pipeline.
    let writes = cds_rotator::writes::Writes::new(
        Some(std::sync::Arc::new(AllowFirst(1.into()))),
        None,
        Duration::from_secs(1),
    );
    let err = store
        .publish_through(
            &writes,
            "cds-app",
            &secrecy::SecretString::from(value),
            &record,
        )
        .await
        .expect_err("no try may be sent");
    assert!(!err.to_string().contains(value), "{err}");
    assert_eq!(fake.current_value("cds-app").await, None);
    let held = cds_rotator::writes::Writes::new(
        Some(std::sync::Arc::new(AllowFirst(100.into()))),
        None,
        Duration::from_secs(1),
    );
    store
        .publish_through(
            &held,
            "cds-app",
            &secrecy::SecretString::from(value),
            &record,
        )
        .await
        .unwrap();
    assert!(fake.current_value("cds-app").await.is_some());
}

#[tokio::test]
async fn a_pass_without_the_lease_writes_nothing() {
    let env = Env::start().await;
    let wired = fenced(&env, 0);
    let report = support::pass_of(&wired, false).await.remove(0);
    let error = report.error.expect("the pass fails").to_string();
    assert!(error.contains("lost the coordination lease"), "{error}");
    assert_eq!(writes_since(&env, 0), vec![]);
    assert!(env.record("app").is_none());
}

#[tokio::test]
async fn a_lease_lost_after_the_create_publishes_nothing_and_deletes_nothing() {
    let env = Env::start().await;
    // The create may go out (the step's check, then the request's); the publish after
    // it may not, nor may the new secret be deleted again: without the lease nothing is
    // sent, and the leader deletes it as an orphan.
    let wired = fenced(&env, 2);
    let report = support::pass_of(&wired, false).await.remove(0);
    let error = report.error.expect("the pass fails");
    assert_eq!(error.step.to_string(), "publish");
    assert!(
        error
            .source
            .to_string()
            .starts_with("lost the coordination lease before publishing: the new secret"),
        "{error}"
    );
    assert!(
        error.source.to_string().contains("left to the leader"),
        "{error}"
    );
    let writes = writes_since(&env, 0);
    assert_eq!(creates_for(&writes, support::APP), 1, "{writes:?}");
    assert_eq!(
        writes.iter().filter(|(m, _)| m == "DELETE").count(),
        0,
        "deleted without the lease: {writes:?}"
    );
    assert!(env.record("app").is_none(), "nothing was published");
    assert_eq!(
        env.ids(support::APP).len(),
        2,
        "the hand-made secret and the unpublished one are left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_coordination_section_is_refused() {
    let etcd = Etcd::start().await;
    let env = Env::start().await;
    let (policy_a, port_a) = write_policy(&env, &etcd, "a", "5s", "0s");
    let mut a = start(&policy_a);
    eventually(
        "a leader with a finished pass",
        Duration::from_secs(30),
        async || leads_after_a_pass(port_a).await,
    )
    .await;
    let changed = std::fs::read_to_string(&policy_a)
        .unwrap()
        .replace("/cds-rotator/test", "/cds-rotator/other");
    std::fs::write(&policy_a, changed).unwrap();
    send_signal(a.pid, "HUP");
    eventually("the reload refused", Duration::from_secs(30), async || {
        readyz(port_a).await.is_some_and(|r| {
            r["policy_reload_refused"]
                .as_str()
                .is_some_and(|e| e.contains("the coordination section changed"))
        })
    })
    .await;
    assert_eq!(role(port_a).await.as_deref(), Some("leader"));
    send_signal(a.pid, "TERM");
    let _ = a.child.wait().await;
}

/// `cds-rotator --config policy --run-now --force`, killed when dropped.
fn run_now(policy: &PathBuf) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cds-rotator"));
    command
        .arg("--config")
        .arg(policy)
        .args(["--run-now", "--force"])
        .env_remove("CDS_ROTATOR_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts a daemon on `policy`, waits until it leads with a finished pass, and stops it.
async fn lead_one_pass(policy: &PathBuf, port: u16) {
    let mut daemon = start(policy);
    eventually(
        "a leader with a finished pass",
        Duration::from_secs(30),
        async || leads_after_a_pass(port).await,
    )
    .await;
    send_signal(daemon.pid, "TERM");
    let _ = daemon.child.wait().await;
}

/// etcd with authentication on, the daemon logging in with a user and password.
struct WithLogin<'a> {
    etcd: &'a Etcd,
    user_file: PathBuf,
    password_file: PathBuf,
}

impl Coordinator for WithLogin<'_> {
    fn section(&self) -> String {
        format!(
            "{}  username_file: {}\n  password_file: {}\n",
            self.etcd.section(),
            self.user_file.display(),
            self.password_file.display()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_logs_in_to_etcd_with_a_user_and_password() {
    let etcd = Etcd::start().await;
    let http = reqwest::Client::new();
    for (call, body) in [
        (
            "auth/user/add",
            r#"{"name":"root","password":"etcd-Pass-0123"}"#,
        ),
        ("auth/role/add", r#"{"name":"root"}"#),
        ("auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("auth/enable", "{}"),
    ] {
        let r = http
            .post(format!("{}/v3/{call}", etcd.url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{call}: {}",
            r.text().await.unwrap()
        );
    }
    // Without a login etcd now refuses.
    let r = http
        .post(format!("{}/v3/kv/range", etcd.url()))
        .body(r#"{"key":"AA=="}"#)
        .send()
        .await
        .unwrap();
    assert!(
        !r.status().is_success() || r.text().await.unwrap().contains("error"),
        "auth is not on"
    );
    let env = Env::start().await;
    let user_file = env.dir.path().join("etcd-user");
    let password_file = env.dir.path().join("etcd-password");
    std::fs::write(&user_file, "root\n").unwrap();
    std::fs::write(&password_file, "etcd-Pass-0123\n").unwrap();
    let login = WithLogin {
        etcd: &etcd,
        user_file,
        password_file,
    };
    let (policy_a, port_a) = write_policy(&env, &login, "a", "5s", "0s");
    lead_one_pass(&policy_a, port_a).await;
    let log = std::fs::read_to_string(policy_a.with_extension("log")).unwrap();
    assert!(
        !log.contains("etcd-Pass-0123"),
        "the password is in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_the_daemon_leads_and_without_one_it_writes_nothing() {
    let etcd = Etcd::start_tls().await;
    let env = Env::start().await;
    // Without its certificate etcd refuses the daemon: it never leads, and nothing is
    // written while it tries.
    let (policy_b, port_b) = write_policy(&env, &WithoutClientCertificate(&etcd), "b", "5s", "0s");
    let before = env.emulator.requests().len();
    let mut b = start(&policy_b);
    tokio::time::sleep(Duration::from_secs(2 * TTL_SECS)).await;
    assert_ne!(role(port_b).await.as_deref(), Some("leader"));
    assert_eq!(writes_since(&env, before), Vec::new());
    send_signal(b.pid, "TERM");
    let _ = b.child.wait().await;

    let (policy_a, port_a) = write_policy(&env, &etcd, "a", "5s", "0s");
    lead_one_pass(&policy_a, port_a).await;
    // The refused daemon said why, naming etcd.
    let log = std::fs::read_to_string(policy_b.with_extension("log")).unwrap();
    assert!(log.contains("etcd"), "{log}");
}

/// An etcd endpoint where nothing listens.
struct Unreachable(u16);

impl Coordinator for Unreachable {
    fn section(&self) -> String {
        etcd_section(&format!("http://127.0.0.1:{}", self.0), None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_with_etcd_unreachable_gives_up_and_writes_nothing() {
    let env = Env::start().await;
    let (policy, _) = write_policy(&env, &Unreachable(free_port()), "a", "5s", "0s");
    let mark = env.emulator.requests().len();
    let out = tokio::time::timeout(Duration::from_secs(90), run_now(&policy).output())
        .await
        .expect("--run-now ends")
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("did not get the coordination lease"),
        "{said}"
    );
    assert!(said.contains("nothing was changed"), "{said}");
    assert_eq!(
        writes_since(&env, mark),
        Vec::new(),
        "written without the lease"
    );
    assert!(
        std::fs::read_dir(env.secrets_dir()).is_ok_and(|mut d| d.next().is_none())
            || !env.secrets_dir().exists(),
        "the store was written"
    );
}

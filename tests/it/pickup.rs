//! Pickup checks end to end: old secrets are retired only once grace has passed and the
//! check confirms the current fingerprint. A real HTTP probe server on loopback, an ack
//! file written by the test while the real daemon runs, a command whose environment,
//! arguments and input are captured, and `--run-now` (with and without `--wait`).

use crate::support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use cds_rotator::clock::{Clock, ManualClock};
use cds_rotator::domain::{Event, EventKind};
use cds_rotator::notify::{Notifier, NotifyError};
use cds_rotator::rotation::{ClientJob, DeleteReason, PassOptions, PassReport};
use support::{ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env, TENANT, assert_no_secret, text};

/// What each replica of the probed app answers: `None` is a 503.
type Replicas = Arc<Mutex<Vec<Option<String>>>>;

/// A probe server on 127.0.0.1:0 with `n` replicas at `/fp/{i}`; the test sets what each
/// reports.
async fn probe_server(n: usize) -> (String, Replicas) {
    let replicas: Replicas = Arc::new(Mutex::new(vec![None; n]));
    async fn answer(
        State(r): State<Replicas>,
        UrlPath(i): UrlPath<usize>,
    ) -> Result<axum::Json<serde_json::Value>, StatusCode> {
        match r.lock().unwrap().get(i).cloned().flatten() {
            Some(fp) => Ok(axum::Json(serde_json::json!({ "fingerprint": fp }))),
            None => Err(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
    let app = axum::Router::new()
        .route("/fp/{i}", get(answer))
        .with_state(Arc::clone(&replicas));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, replicas)
}

/// Counts the events it is sent.
#[derive(Default)]
struct Counting(Mutex<Vec<EventKind>>);

#[async_trait]
impl Notifier for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        self.0.lock().unwrap().push(event.kind);
        Ok(())
    }
}

impl Counting {
    fn count(&self, kind: EventKind) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == kind)
            .count()
    }
}

/// The wired job of `app` with `notifier` as its only notifier.
fn job_with(job: &ClientJob, notifier: Arc<Counting>) -> ClientJob {
    ClientJob {
        name: job.name.clone(),
        client: job.client.clone(),
        store: Arc::clone(&job.store),
        store_key: job.store_key.clone(),
        notifiers: vec![notifier],
        pickup: Arc::clone(&job.pickup),
        timing: job.timing.clone(),
        retire_unmanaged: job.retire_unmanaged,
    }
}

fn managed(env: &Env) -> Vec<i32> {
    env.emulator
        .secrets(TENANT, APP)
        .into_iter()
        .filter(|s| {
            s.description
                .as_deref()
                .is_some_and(|d| d.starts_with("cds-rotator managed"))
        })
        .map(|s| s.id)
        .collect()
}

fn fingerprint(env: &Env) -> String {
    env.record("app").unwrap().fingerprint.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_probe_keeps_the_old_secret_until_every_replica_reports_the_new_fingerprint() {
    let env = Env::start().await;
    let (url, replicas) = probe_server(2).await;
    env.write_policy(
        "",
        &format!(
            "    pickup: {{ type: http_probe, urls: [{url}/fp/0, {url}/fp/1], json_pointer: /fingerprint, interval: 30s, timeout: 1h }}"
        ),
    );
    let clock = ManualClock::new(chrono::Utc::now());
    let wired = env.wired_at(&["app"], &clock);
    let events = Arc::new(Counting::default());
    let job = job_with(&wired.jobs[0], Arc::clone(&events));
    let pass = |force| {
        let options = PassOptions {
            force,
            ..PassOptions::default()
        };
        wired.reconciler.pass(&job, options)
    };
    let first: PassReport = pass(false).await;
    assert!(first.rotated.is_some(), "{:?}", first.error);
    let old = env.record("app").unwrap();
    let old_value = env.value("app").unwrap();
    clock.advance(chrono::Duration::minutes(1));
    let second = pass(true).await;
    assert!(second.rotated.is_some(), "{:?}", second.error);
    let new_fp = fingerprint(&env);
    let new_value = env.value("app").unwrap();

    // Unreachable (503) replicas, then both on the old value: kept, asked again later.
    for reported in [None, Some(old.fingerprint.to_string())] {
        *replicas.lock().unwrap() = vec![reported.clone(), reported];
        let now = clock.now();
        let r = pass(false).await;
        assert!(r.deleted.is_empty() && r.error.is_none(), "{r:?}");
        let waiting = r.pickup.as_ref().expect("waiting for pickup");
        assert!(waiting.reason.contains("2 of 2 not confirmed"), "{waiting}");
        assert!(!waiting.overdue);
        assert_eq!(r.next_check, Some(now + chrono::Duration::seconds(30)));
        assert!(managed(&env).contains(&old.secret_id));
    }
    // One replica switched, the other not: still kept (every replica must confirm).
    *replicas.lock().unwrap() = vec![Some(new_fp.clone()), Some(old.fingerprint.to_string())];
    let r = pass(false).await;
    assert!(r.deleted.is_empty(), "{r:?}");
    let reason = &r.pickup.as_ref().unwrap().reason;
    assert!(
        reason.contains("1 of 2") && reason.contains("/fp/1"),
        "{reason}"
    );
    assert!(!reason.contains("/fp/0:"), "{reason}");

    // Past grace (0s) + timeout (1h) and still not confirmed: both kept, one event.
    clock.advance(chrono::Duration::hours(2));
    for _ in 0..2 {
        let r = pass(false).await;
        assert!(r.deleted.is_empty(), "{r:?}");
        assert!(r.pickup.as_ref().unwrap().overdue);
    }
    // Events are sent in the background: wait for them.
    cds_rotator::notify::outbox().flush().await;
    assert_eq!(events.count(EventKind::PickupTimeout), 1);
    assert!(managed(&env).contains(&old.secret_id));

    // Both report the new fingerprint: retired.
    *replicas.lock().unwrap() = vec![Some(new_fp.clone()), Some(format!("{new_fp}\n"))];
    let r = pass(false).await;
    assert_eq!(r.deleted, vec![(old.secret_id, DeleteReason::Superseded)]);
    assert!(r.pickup.is_none());
    // Events are sent in the background: wait for them.
    cds_rotator::notify::outbox().flush().await;
    assert_eq!(events.count(EventKind::Retired), 1);
    assert_eq!(managed(&env), vec![env.record("app").unwrap().secret_id]);
    let said = format!("{first:?}{second:?}{r:?}");
    assert_no_secret(&said, &[old_value, new_value]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_with_grace_0s_retires_in_the_same_run_and_leaves_one_managed_secret() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = env.record("app").unwrap();
    let first_value = env.value("app").unwrap();
    let out = env
        .cli(&["--run-now", "--client", "app", "--force"], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rotated: new secret"), "{stdout}");
    assert!(
        stdout.contains(&format!("deleted secret {} (superseded)", first.secret_id)),
        "{stdout}"
    );
    assert_eq!(managed(&env), vec![env.record("app").unwrap().secret_id]);
    assert_no_secret(
        &text(&out),
        &[
            first_value,
            env.value("app").unwrap(),
            ADMIN_SECRET.to_owned(),
            APP_SEEDED_SECRET.to_owned(),
        ],
    );
}

/// Writes `text` to `path` as an app would: a temporary file renamed over it.
fn write_ack(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_written_by_the_app_wakes_the_daemon_and_retires_the_old_secret() {
    let env = Env::start().await;
    let ack_dir = env.dir.path().join("ack");
    std::fs::create_dir(&ack_dir).unwrap();
    let ack = ack_dir.join("app.ack");
    // Relative: resolved against the policy's directory.
    env.write_policy(
        "",
        "    pickup: { type: ack_file, path: ack/app.ack, timeout: 1h }",
    );
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old = env.record("app").unwrap();
    let old_value = env.value("app").unwrap();

    // A rotation whose pickup is not confirmed: waiting is not a failure.
    let out = env
        .cli(&["--run-now", "--client", "app", "--force"], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("rotated: new secret"), "{stdout}");
    assert!(stdout.contains("waiting for pickup (ack file"), "{stdout}");
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    assert!(managed(&env).contains(&old.secret_id));
    let new_fp = fingerprint(&env);
    let new_value = env.value("app").unwrap();

    // The daemon: one pass finds the pickup pending, then sleeps (no polling).
    let log = env.dir.path().join("daemon.log");
    let mut daemon = env
        .command(&[], &[("RUST_LOG", "info")])
        .stdout(std::fs::File::create(env.dir.path().join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    support::wait_until("a pass waiting for pickup", || {
        support::read(&log).contains("pass done; waiting for pickup")
    })
    .await;

    // The app loaded the new secret and says so.
    write_ack(&ack, &format!("{new_fp}\n"));
    support::wait_until("the old secret retired", || {
        !managed(&env).contains(&old.secret_id)
    })
    .await;
    support::wait_until("the pass logged", || {
        support::read(&log).contains("reason=superseded")
    })
    .await;
    daemon.kill().await.unwrap();
    let log_text = support::read(&log);
    assert!(
        log_text.contains("the pickup check saw a change; checking now"),
        "{log_text}"
    );
    // The app pass found it pending exactly once: nothing polled in between.
    assert_eq!(
        log_text.matches("pickup not confirmed yet").count(),
        1,
        "{log_text}"
    );
    // The rotator never writes the ack file.
    assert_eq!(
        std::fs::read_to_string(&ack).unwrap(),
        format!("{new_fp}\n")
    );
    assert_eq!(managed(&env), vec![env.record("app").unwrap().secret_id]);
    assert_no_secret(
        &format!(
            "{log_text}{}{stdout}",
            support::read(&env.dir.path().join("daemon.out"))
        ),
        &[
            old_value,
            new_value,
            ADMIN_SECRET.to_owned(),
            APP_SEEDED_SECRET.to_owned(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_wait_retires_once_the_ack_is_written_and_gives_up_with_exit_3() {
    let env = Env::start().await;
    let ack_dir = env.dir.path().join("ack");
    std::fs::create_dir(&ack_dir).unwrap();
    let ack = ack_dir.join("app.ack");
    env.write_policy(
        "",
        "    pickup: { type: ack_file, path: ack/app.ack, timeout: 1h }",
    );
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old = env.record("app").unwrap();
    let old_value = env.value("app").unwrap();

    let run = env
        .command(
            &["--run-now", "--client", "app", "--force", "--wait", "30s"],
            &[],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_until("the new secret published", || {
        env.record("app")
            .is_some_and(|r| r.secret_id != old.secret_id)
    })
    .await;
    write_ack(&ack, &fingerprint(&env));
    let out = run.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("deleted secret {} (superseded)", old.secret_id)),
        "{}",
        text(&out)
    );
    assert_eq!(managed(&env), vec![env.record("app").unwrap().secret_id]);
    let mut values = vec![
        old_value,
        env.value("app").unwrap(),
        ADMIN_SECRET.to_owned(),
    ];
    assert_no_secret(&text(&out), &values);

    // Nobody acknowledges the next one: --wait gives up after its limit, exit 3.
    let out = env
        .cli(
            &["--run-now", "--client", "app", "--force", "--wait", "1s"],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gave up waiting: waiting for pickup"),
        "{}",
        text(&out)
    );
    values.push(env.value("app").unwrap());
    assert_no_secret(&text(&out), &values);

    // --wait belongs to --run-now; a bad duration is a usage error.
    let out = env.cli(&["--wait", "10m"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--wait needs --run-now"),
        "{}",
        text(&out)
    );
    let out = env.cli(&["--run-now", "--wait", "soon"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("expected a duration"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_wait_waits_for_the_pickup_of_what_this_run_published() {
    let env = Env::start().await;
    let ack_dir = env.dir.path().join("ack");
    std::fs::create_dir(&ack_dir).unwrap();
    let ack = ack_dir.join("app.ack");
    env.write_policy(
        "",
        "    grace: 1s\n    pickup: { type: ack_file, path: ack/app.ack, timeout: 1h }",
    );
    // The client holds only its portal secret, which is kept: nothing is superseded,
    // and still --wait is for the consumers to take the new secret.
    let out = env
        .cli(&["--run-now", "--client", "app", "--wait", "3s"], &[])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("app: gave up waiting: waiting for"),
        "{}",
        text(&out)
    );
    let first = env.record("app").unwrap();
    let first_value = env.value("app").unwrap();

    // The secret it replaces is the current one (superseded only by this rotation):
    // --wait retires it once the grace is over and the ack names the new one.
    let run = env
        .command(
            &["--run-now", "--client", "app", "--force", "--wait", "30s"],
            &[],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_until("the new secret published", || {
        env.record("app")
            .is_some_and(|r| r.secret_id != first.secret_id)
    })
    .await;
    let new = env.record("app").unwrap();
    write_ack(&ack, &new.fingerprint.to_string());
    let out = run.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("deleted secret {} (superseded)", first.secret_id)),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains(&format!(
            "app: pickup of secret {} (fingerprint {}) confirmed",
            new.secret_id, new.fingerprint
        )),
        "{}",
        text(&out)
    );
    assert_eq!(managed(&env), vec![new.secret_id]);
    assert_no_secret(
        &text(&out),
        &[
            first_value,
            env.value("app").unwrap(),
            ADMIN_SECRET.to_owned(),
            APP_SEEDED_SECRET.to_owned(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_pickup_sees_ids_and_the_fingerprint_but_never_a_secret_value() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start().await;
    let dir = env.dir.path().join("capture");
    std::fs::create_dir(&dir).unwrap();
    let script = env.dir.path().join("switched.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nd=\"$1\"\nenv > \"$d/env.txt\"\necho \"$@\" > \"$d/argv.txt\"\ncat > \"$d/stdin.txt\"\n[ \"$CDS_ROTATOR_FINGERPRINT\" = \"$(cat \"$d/confirmed\" 2>/dev/null)\" ]\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write_policy(
        "",
        &format!(
            "    pickup: {{ type: command, program: {}, args: [{}], interval: 1m }}",
            script.display(),
            dir.display()
        ),
    );
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old = env.record("app").unwrap();
    let old_value = env.value("app").unwrap();
    let out = env
        .cli(&["--run-now", "--client", "app", "--force"], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waiting for pickup (command"),
        "{}",
        text(&out)
    );
    let new = env.record("app").unwrap();
    let env_txt = support::read(&dir.join("env.txt"));
    for expected in [
        "CDS_ROTATOR_CLIENT=app".to_owned(),
        format!("CDS_ROTATOR_CLIENT_ID={APP}"),
        format!("CDS_ROTATOR_SECRET_ID={}", new.secret_id),
        format!("CDS_ROTATOR_FINGERPRINT={}", new.fingerprint),
        "CDS_ROTATOR_STORE=".to_owned(),
    ] {
        assert!(env_txt.contains(&expected), "{expected}: {env_txt}");
    }
    assert!(managed(&env).contains(&old.secret_id));
    // plan and status say so too.
    let out = env.cli(&["plan", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(&format!(
            "keep secret {} (superseded, grace over; waiting for pickup (command",
            old.secret_id
        )),
        "{plan}"
    );
    let out = env
        .cli(&["status", "--client", "app", "--output", "json"], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views[0]["state"], "waiting_for_pickup", "{views}");
    assert_eq!(views[0]["pickup"]["overdue"], false, "{views}");
    assert!(
        views[0]["pickup"]["reason"]
            .as_str()
            .unwrap()
            .contains("exit code 1"),
        "{views}"
    );

    // The program now says the consumers switched: the next run retires.
    std::fs::write(dir.join("confirmed"), new.fingerprint.to_string()).unwrap();
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("deleted secret {} (superseded)", old.secret_id)),
        "{}",
        text(&out)
    );
    let captured = ["env.txt", "argv.txt", "stdin.txt"]
        .iter()
        .map(|f| support::read(&dir.join(f)))
        .collect::<String>();
    assert!(!captured.is_empty());
    assert_no_secret(
        &format!("{captured}{}", text(&out)),
        &[
            old_value,
            env.value("app").unwrap(),
            ADMIN_SECRET.to_owned(),
            APP_SEEDED_SECRET.to_owned(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_an_unwatchable_ack_file_and_fails_a_missing_program() {
    let env = Env::start().await;
    env.write_policy(
        "  pickup: { type: ack_file, path: missing/app.ack }",
        "    pickup: { type: command, program: /nonexistent/switched }",
    );
    // One client's pickup fails that client alone: exit 1 only with --strict.
    let out = env.cli(&["check", "--strict"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL pickup of client app: /nonexistent/switched"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARN pickup of client web:") && stdout.contains("does not exist"),
        "{stdout}"
    );
}

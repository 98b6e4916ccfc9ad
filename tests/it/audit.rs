//! The audit log (`daemon.audit_log`): one JSON line per write to CDS or a store, with
//! the actor, client, secret, step, result and CDS OperationId; 0600; never a value;
//! `plan` and `status` never create it; `status --client` shows the last entries.

use crate::support;

use std::os::unix::fs::MetadataExt;

use cds_rotator::emulator::{Fault, FaultBody};
use support::{ADMIN, ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env, assert_no_secret, text};

fn with_audit_log(env: &Env) -> std::path::PathBuf {
    let policy = env.policy_path();
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str("daemon:\n  audit_log: audit.jsonl\n");
    std::fs::write(&policy, text).unwrap();
    env.dir.path().join("audit.jsonl")
}

fn entries(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_audited_with_actor_step_and_result_and_no_value() {
    let env = Env::start().await;
    env.write_policy("", "");
    let log = with_audit_log(&env);

    // Read-only commands do not create it.
    for args in [&["plan"][..], &["status"]] {
        let out = env.cli(args, &[]).await;
        assert!(out.status.code().is_some(), "{}", text(&out));
    }
    assert!(!log.exists(), "plan/status created the audit log");

    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut values = vec![ADMIN_SECRET.to_owned(), APP_SEEDED_SECRET.to_owned()];
    values.extend(env.value("app"));
    let first = env.record("app").unwrap().secret_id;
    // grace is 0s: the forced rotation retires the first secret in the next pass.
    let out = env
        .cli(&["--run-now", "--force", "--client", "app"], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    values.extend(env.value("app"));
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A refused create: audited with its status and OperationId.
    env.emulator.inject_with_body(
        Fault {
            method: Some("POST".into()),
            path_contains: Some("/Secrets".into()),
            status: 400,
            times: 1,
            ..Fault::default()
        },
        FaultBody::Raw(r#"{"OperationId":"op-audit-1","Error":"no","Reason":"test"}"#.into()),
    );
    let out = env
        .cli(&["--run-now", "--force", "--client", "app"], &[])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
    let all = entries(&log);
    let app: Vec<&serde_json::Value> = all.iter().filter(|e| e["client_id"] == APP).collect();
    let shape: Vec<(String, String, String)> = app
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["step"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = |a: &str, s: &str, r: &str| (a.to_owned(), s.to_owned(), r.to_owned());
    assert_eq!(
        shape,
        vec![
            want("create_secret", "create", "ok"),
            want("publish", "publish", "ok"),
            want("create_secret", "create", "ok"),
            want("publish", "publish", "ok"),
            want("delete_secret", "retire", "ok"),
            want("create_secret", "create", "failed"),
        ],
        "{all:#?}"
    );
    for e in &app {
        assert_eq!(e["actor"], ADMIN);
        assert_eq!(e["client"], "app");
        assert!(e["host"].as_str().is_some_and(|h| !h.is_empty()));
        assert!(e["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    assert_eq!(app[4]["secret_id"], first);
    assert_eq!(app[4]["reason"], "superseded");
    assert_eq!(
        app[1]["store"].as_str().map(|s| s.contains("app")),
        Some(true)
    );
    assert_eq!(app[5]["status"], 400);
    assert_eq!(app[5]["operation_id"], "op-audit-1");
    assert!(all.iter().any(|e| e["client"] == "web"));
    assert_no_secret(&std::fs::read_to_string(&log).unwrap(), &values);

    let out = env.cli(&["status", "--client", "app"], &[]).await;
    let shown = text(&out);
    assert!(
        shown.contains("recent writes of app (audit log):"),
        "{shown}"
    );
    assert!(shown.contains("create_secret"), "{shown}");
    assert!(shown.contains("OperationId op-audit-1"), "{shown}");
    let out = env
        .cli(&["status", "--client", "app", "--output", "json"], &[])
        .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["recent_writes"].as_array().map(Vec::len), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_audit_log_is_refused_before_anything_is_written() {
    let env = Env::start().await;
    env.write_policy("", "");
    let log = with_audit_log(&env);
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::write(&elsewhere, "").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &log).unwrap();
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("symlink"), "{}", text(&out));
    assert_eq!(env.count("POST", "/Secrets"), 0);
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_audit_log_is_refused_at_once_by_every_command() {
    let env = Env::start().await;
    env.write_policy("", "");
    let log = with_audit_log(&env);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &log,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for args in [&["--run-now"][..], &["status"], &["check"], &["validate"]] {
        // Before, --run-now and status blocked in open(2) for ever (and check said ok).
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), env.cli(args, &[]))
            .await
            .unwrap_or_else(|_| panic!("{args:?} hangs on a FIFO audit log"));
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(
            shown.contains(&format!("{} is a FIFO", log.display())),
            "{args:?}: {shown}"
        );
    }
    assert_eq!(env.count("POST", "/Secrets"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_in_a_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start().await;
    env.write_policy("", "");
    let policy = env.policy_path();
    let shared = env.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut text_ = std::fs::read_to_string(&policy).unwrap();
    text_.push_str("daemon:\n  audit_log: shared/audit.jsonl\n");
    std::fs::write(&policy, text_).unwrap();
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod go-w"), "{}", text(&out));
    assert_eq!(env.count("POST", "/Secrets"), 0);
    let out = env.cli(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL audit log:"),
        "{}",
        text(&out)
    );
}

/// A tmpfs of `size` mounted at `dir` (root only), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn audit_failures_metric() -> f64 {
    cds_rotator::metrics::get()
        .encode()
        .lines()
        .find(|l| l.starts_with("cds_rotator_audit_log_failures_total "))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_full_disk_never_leaves_a_torn_line_and_the_next_entry_is_recorded_once_space_frees() {
    use cds_rotator::audit::{Action, AuditLog};
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let _fs = Tmpfs::mount(&mnt, "64k");
    let path = mnt.join("audit.jsonl");
    let log = AuditLog::open(&path, ADMIN).unwrap();
    let entry = |i: i32| {
        let mut e = log.entry("run1", ("t", "app", APP), Action::DeleteSecret, "retire");
        e.secret_id = Some(i);
        // Long enough that the last one that fits is cut short.
        e.error = Some("x".repeat(700));
        e
    };
    // Most of the disk is taken; the log fills the rest, so an append lands half-written.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 48 * 1024]).unwrap();
    let before = audit_failures_metric();
    for i in 0..40 {
        log.record(&entry(i));
    }
    let failed = log.failures();
    assert!(failed >= 1, "the disk was full, yet no append failed");
    assert_eq!(audit_failures_metric() - before, failed as f64);
    // Every line that is there is whole.
    let text_now = std::fs::read_to_string(&path).unwrap();
    let tail: String = text_now.chars().rev().take(80).collect();
    assert!(
        text_now.is_empty() || text_now.ends_with('\n'),
        "a torn last line, ending (reversed) {tail:?}"
    );
    for line in text_now.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "a torn line of {} bytes",
            line.len()
        );
    }

    // Space frees up: the next entry is recorded, on its own line.
    std::fs::remove_file(&filler).unwrap();
    log.record(&entry(99));
    assert_eq!(log.failures(), failed);
    let all = entries(&path);
    assert_eq!(all.last().unwrap()["secret_id"], 99);
    drop(log);
}

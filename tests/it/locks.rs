//! Locks across processes (invariant I9): without `lock_dir` in the policy, every
//! cds-rotator on a host locks in one place, whatever its environment, so the daemon
//! under systemd and an operator's `--run-now` in a shell never rotate one client at once.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{APP, Env, HYBRID, TENANT, text};

/// The lock directory used when the policy names none.
const DEFAULT_LOCK_DIR: &str = "/run/lock/cds-rotator";

/// An [`Env`] whose emulator serves a tenant of its own, so that its lock files in the
/// host-wide default directory meet no other test's.
async fn env_with_own_tenant(tenant: &str) -> Env {
    Env::start_seeded(&support::seed_yaml().replace(TENANT, tenant)).await
}

/// Rewrites the policy for `tenant` and drops its `lock_dir:` line, so the default is used.
fn use_default_lock_dir(policy: &Path, tenant: &str) {
    let text = std::fs::read_to_string(policy).unwrap();
    let text: String = text
        .replace(TENANT, tenant)
        .lines()
        .filter(|line| !line.starts_with("lock_dir:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(policy, text).unwrap();
}

/// Removes this test's lock files from the host-wide directory, even when it fails.
struct RemoveLocks(Vec<PathBuf>);

impl Drop for RemoveLocks {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_run_nows_in_different_runtime_directories_share_the_default_lock() {
    let tenant = uuid::Uuid::new_v4().to_string();
    let env = env_with_own_tenant(&tenant).await;
    // /run/lock is world-writable and sticky; the rotator makes its own 0700 directory.
    std::fs::create_dir_all("/run/lock").unwrap();
    let _cleanup = RemoveLocks(
        [APP, HYBRID]
            .iter()
            .map(|client| Path::new(DEFAULT_LOCK_DIR).join(format!("{tenant}.{client}.lock")))
            .collect(),
    );
    env.write_policy("", "    verify_timeout: 1h");
    use_default_lock_dir(&env.policy_path(), &tenant);
    // Each rotation lasts a while, so the two processes overlap.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(2));
    let runtime_a = tempfile::tempdir().unwrap();
    let runtime_b = tempfile::tempdir().unwrap();
    let runtime = |dir: &tempfile::TempDir| dir.path().to_string_lossy().into_owned();
    let (runtime_a, runtime_b) = (runtime(&runtime_a), runtime(&runtime_b));

    let a = env
        .command(&["--run-now"], &[("RUNTIME_DIRECTORY", &runtime_a)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = env
        .command(&["--run-now"], &[("RUNTIME_DIRECTORY", &runtime_b)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (
        a.wait_with_output().await.unwrap(),
        b.wait_with_output().await.unwrap(),
    );

    // One create per client, not one per process.
    assert_eq!(
        env.count("POST", "/Secrets"),
        2,
        "a:\n{}\nb:\n{}",
        text(&a),
        text(&b)
    );
    // For each client one process rotated; the other waited for the lock and then
    // found nothing to do (or, had the wait run out, said the lock was busy).
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout)
    );
    let all = format!("{}{}", text(&a), text(&b));
    for client in ["app", "web"] {
        let rotated = stdout.matches(&format!("{client}: rotated")).count();
        let waited = stdout.matches(&format!("{client}: up to date")).count();
        assert_eq!(rotated, 1, "{all}");
        assert!(
            waited == 1 || all.contains("another cds-rotator is acting on this client"),
            "{all}"
        );
    }
    for out in [&a, &b] {
        assert!(
            out.status.code() == Some(0)
                || text(out).contains("another cds-rotator is acting on this client"),
            "{}",
            text(out)
        );
    }
    for client in [APP, HYBRID] {
        assert!(
            Path::new(DEFAULT_LOCK_DIR)
                .join(format!("{tenant}.{client}.lock"))
                .is_file()
        );
    }
}

//! What an operator reads when something is wrong, end to end: the host a failed
//! connection went to, a `connect.url` that is not a base URL, the rotator's own secret
//! refused, a disabled client, and what `emulator` and `demo --dir` print and leave
//! behind. No secret value appears in any of it.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use cds_rotator::emulator::Seed;
use support::{ADMIN, ADMIN_SECRET, APP, Env, TENANT, assert_no_secret, text};

/// Far more than any test here waits: a test that reaches it fails.
const GUARD: Duration = Duration::from_secs(20);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cds-rotator"));
    cmd.env_remove("CDS_ROTATOR_CONFIG")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    cmd
}

/// Reads lines from `out` until one starts with `prefix`; returns every line read.
async fn lines_until(out: &mut BufReader<ChildStdout>, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    tokio::time::timeout(GUARD, async {
        loop {
            let mut line = String::new();
            let n = out.read_line(&mut line).await.unwrap();
            assert!(n > 0, "output ended before `{prefix}`: {lines:?}");
            lines.push(line.trim_end().to_owned());
            if line.starts_with(prefix) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line starting with `{prefix}`: {lines:?}"));
    lines
}

/// Stops a child with SIGTERM and waits for it.
async fn terminate(mut child: Child) {
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(GUARD, child.wait())
        .await
        .expect("the emulator stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Whether `secret` gets a token for `client_id` at `url`.
async fn gets_token(url: &str, client_id: &str, secret: &str) -> bool {
    reqwest::Client::new()
        .post(format!("{url}/identity/connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn an_unreachable_cds_is_named_by_scheme_host_and_port() {
    let env = Env::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    env.write_policy_at(&format!("http://{dead}"), "", "");
    let reports = env.pass(&["app"], false).await;
    let err = reports[0].error.as_ref().expect("fails").to_string();
    assert!(
        err.contains(&format!(
            "no answer from CDS (connecting to http://{dead} failed"
        )),
        "{err}"
    );
    assert!(!err.contains("/identity") && !err.contains('?'), "{err}");
}

#[tokio::test]
async fn a_connect_url_with_a_path_is_named_as_the_problem() {
    let env = Env::start().await;
    let url = format!("{}/identity", env.emulator.url());
    env.write_policy_at(&url, "", "");
    let reports = env.pass(&["app"], false).await;
    let err = reports[0].error.as_ref().expect("fails").to_string();
    assert!(
        err.contains(&format!(
            "the token endpoint {url}/identity/connect/token was not found (HTTP 404): connect.url must be the base URL, like https://uswe.datahub.connect.aveva.com"
        )),
        "{err}"
    );
    assert!(!err.contains("check tenant_id"), "{err}");
}

#[tokio::test]
async fn a_refused_own_secret_file_is_named_with_what_to_do() {
    let env = Env::start().await;
    env.write_policy("", "");
    let credential = env.dir.path().join("admin-secret");
    std::fs::write(&credential, "Expired-Secret-Value-0123456789").unwrap();
    let reports = env.pass(&["app"], false).await;
    let err = reports[0].error.as_ref().expect("fails").to_string();
    assert!(
        err.contains(&format!(
            "CDS refused the secret in {} (HTTP 400: invalid_client); the secret may have expired or been deleted in the CDS portal: put a working secret of client {ADMIN} in {}",
            credential.display(),
            credential.display()
        )),
        "{err}"
    );
    assert!(!err.contains("Expired-Secret-Value"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_own_secret_is_one_error_and_one_event_for_the_whole_batch() {
    let env = Env::start().await;
    let policy = env.write_policy("", "");
    // A third client (never looked at: the batch stops before any client).
    let mut text_of = std::fs::read_to_string(&policy).unwrap();
    text_of.push_str(
        "  - name: gone\n    client_id: 5b0c1d2e-3f40-4152-6374-8596a7b8c9d0\n    kind: client_credentials\n    store: { name: local, secret: gone }\n    notify: [ops]\n",
    );
    std::fs::write(&policy, text_of).unwrap();
    let wrong = "Expired-Secret-Value-0123456789";
    std::fs::write(env.dir.path().join("admin-secret"), wrong).unwrap();
    let out = env.cli(&["--run-now", "--log-format", "json"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let events: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "notification")
        .collect();
    assert_eq!(events.len(), 1, "{stderr}");
    assert_eq!(events[0]["fields"]["event"], "rotation_failed", "{stderr}");
    assert_eq!(events[0]["fields"]["client"], "", "{stderr}");
    assert_eq!(
        events[0]["fields"]["reason"], "credential_refused",
        "{stderr}"
    );
    let errors = lines.iter().filter(|l| l["level"] == "ERROR").count();
    assert_eq!(errors, 1, "{stderr}");
    assert!(stderr.contains("CDS refused the secret in"), "{stderr}");
    // No client was looked at: one token request, nothing else.
    assert_eq!(env.count("POST", "/identity/connect/token"), 1);
    assert_eq!(env.count("GET", "/Secrets"), 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["app", "web", "gone"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name}: FAILED: "))
                    && l.contains("not passed over: getting a token for the rotator's own client")),
            "{stdout}"
        );
    }
    assert_no_secret(&text(&out), &[wrong.to_owned(), ADMIN_SECRET.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_secrets_are_told_what_to_do_whether_they_expire_soon_or_never() {
    let env = Env::start().await;
    env.write_policy("", "");
    let soon = env.emulator.add_secret(
        TENANT,
        APP,
        "hand-made-soon-value-0123456789",
        Some("made by hand, expires soon"),
        Some(chrono::Utc::now() + chrono::Duration::days(10)),
        Some(true),
    );
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "secret(s) the rotator did not create and does not retire expire within rotate_before (30d): {soon} (unmanaged, expires "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("whoever still uses them must switch to the store's secret before then; or hand the client over with retire_unmanaged: true"),
        "{stderr}"
    );
    // It does expire: telling to make it expire would be wrong.
    assert!(!stderr.contains("every secret should expire"), "{stderr}");

    let never = env.emulator.add_secret(
        TENANT,
        APP,
        "hand-made-never-value-0123456789",
        Some("made by hand, never expires"),
        None,
        Some(false),
    );
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "secret(s) the rotator did not create and does not retire never expire: {never} (unmanaged, never expires"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("every secret should expire: move their users to the store's secret and delete them in the portal"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_status_log_nothing_per_client_and_agree_when_the_store_secret_is_gone() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for args in [&["plan"][..], &["status"]] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("INFO"), "{args:?}: {stderr}");
    }

    // As after a restart of the emulator (or a CDS restore): the store's secret is gone
    // from CDS. Both commands see the same state and say so the same way: exit 1.
    let id = env.record("app").unwrap().secret_id;
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}/identity/connect/token", env.emulator.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", ADMIN),
            ("client_secret", ADMIN_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deleted = http
        .delete(format!(
            "{}/api/v1/Tenants/{TENANT}/ClientCredentialClients/{APP}/Secrets/{id}",
            env.emulator.url()
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    for args in [&["plan"][..], &["status"]] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("no longer exists in CDS")
                || String::from_utf8_lossy(&out.stdout).contains("current_invalid"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_for_max_age_names_max_age() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.write_policy("  max_age: 1s", "");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = env.cli(&["plan", "--client", "app"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(", more than max_age (1s) ago)"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_own_secret_variable_is_named_by_the_cli_without_its_value() {
    let env = Env::start().await;
    let policy = env.write_policy("", "");
    let text_of = std::fs::read_to_string(&policy).unwrap();
    let cred_line = format!(
        "client_secret_file: {}",
        env.dir.path().join("admin-secret").display()
    );
    assert!(text_of.contains(&cred_line));
    std::fs::write(
        &policy,
        text_of.replace(
            &cred_line,
            "client_secret_env: CDS_ROTATOR_TEST_ADMIN_SECRET",
        ),
    )
    .unwrap();
    let wrong = "Deleted-Secret-Value-0123456789";
    let out = env
        .cli(
            &["--run-now", "--client", "app"],
            &[("CDS_ROTATOR_TEST_ADMIN_SECRET", wrong)],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains(
            "CDS refused the secret in environment variable CDS_ROTATOR_TEST_ADMIN_SECRET"
        ),
        "{all}"
    );
    assert!(
        all.contains("may have expired or been deleted in the CDS portal"),
        "{all}"
    );
    assert_no_secret(&all, &[wrong.to_owned(), ADMIN_SECRET.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_client_fails_at_verify_at_once_and_its_new_secret_is_deleted() {
    let seed = support::seed_yaml().replace(
        "    name: app\n    kind: client_credentials\n",
        "    name: app\n    kind: client_credentials\n    enabled: false\n",
    );
    assert!(seed.contains("enabled: false"));
    let env = Env::start_seeded(&seed).await;
    env.write_policy("", "    verify_timeout: 1h");

    let reports = tokio::time::timeout(GUARD, env.pass(&["app"], false))
        .await
        .expect("verify did not wait out verify_timeout");
    let err = reports[0].error.as_ref().expect("fails").to_string();
    assert!(err.contains("step verify"), "{err}");
    assert!(
        err.contains(&format!(
            "getting a token for client {APP}: the client is disabled in CDS"
        )),
        "{err}"
    );
    // The new secret (2) was made, refused and deleted again; nothing was published.
    assert_eq!(env.count("POST", "/Secrets"), 1);
    assert_eq!(env.ids(APP), vec![1]);
    assert!(env.record("app").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_listens_on_a_host_name_and_writes_its_admin_secret_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, support::seed_yaml()).unwrap();
    let secret_file = dir.path().join("admin");
    let mut child = binary()
        .args(["emulator", "--listen", "localhost:0", "--seed"])
        .arg(&seed)
        .arg("--admin-secret-file")
        .arg(&secret_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = lines_until(&mut out, "admin client secret: ").await;
    let url = lines[0]
        .strip_prefix("cds-rotator emulator listening on ")
        .expect(&lines[0])
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(lines[1], format!("tenant_id: {TENANT}"));
    assert_eq!(lines[2], format!("admin client_id: {ADMIN}"));
    assert_eq!(
        lines[3],
        format!(
            "admin client secret: in {} (mode 0600)",
            secret_file.display()
        )
    );
    assert_eq!(mode(&secret_file), 0o600);
    assert_eq!(support::read(&secret_file), ADMIN_SECRET);
    assert!(gets_token(&url, ADMIN, ADMIN_SECRET).await);
    assert_no_secret(&lines.join("\n"), &[ADMIN_SECRET.to_owned()]);
    terminate(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_on_a_seed_file_says_the_admin_secret_is_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, support::seed_yaml()).unwrap();
    let mut child = binary()
        .args(["emulator", "--listen", "127.0.0.1:0", "--seed"])
        .arg(&seed)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = lines_until(&mut out, "admin client secret: ").await;
    assert!(
        lines[3].contains(&format!("first secret in {}", seed.display())),
        "{lines:?}"
    );
    assert_no_secret(&lines.join("\n"), &[ADMIN_SECRET.to_owned()]);
    terminate(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_on_its_demo_seed_puts_the_admin_secret_in_a_private_file() {
    let mut child = binary()
        .args(["emulator", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = lines_until(&mut out, "admin client secret: ").await;
    let url = lines[0]
        .strip_prefix("cds-rotator emulator listening on ")
        .expect(&lines[0])
        .to_owned();
    let admin = lines[2].strip_prefix("admin client_id: ").expect(&lines[2]);
    let path = lines[3]
        .strip_prefix("admin client secret: in ")
        .and_then(|rest| rest.split(" (mode 0600").next())
        .expect(&lines[3])
        .to_owned();
    let path = Path::new(&path);
    assert_eq!(mode(path), 0o600);
    let secret = support::read(path);
    assert!(secret.len() >= 40);
    assert!(gets_token(&url, admin, &secret).await);
    let printed = lines.join("\n");
    assert_no_secret(&printed, std::slice::from_ref(&secret));
    let stderr = child.stderr.take().unwrap();
    terminate(child).await;
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut out, &mut rest)
        .await
        .unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(stderr), &mut err)
        .await
        .unwrap();
    assert_no_secret(&format!("{rest}{err}"), &[secret]);
    assert!(!path.exists(), "removed when the emulator stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_listen_address_is_named_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tokio::time::timeout(
        GUARD,
        binary().args(["emulator", "--listen", &addr]).output(),
    )
    .await
    .expect("the emulator gives up at once")
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("cds-rotator: cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&addr).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_a_dir_leaves_what_is_needed_to_go_on_and_shows_no_secret() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let out = binary()
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();

    // Files: those holding secrets are the owner's alone.
    let seed_path = dir.join("seed.yaml");
    let policy_path = dir.join("policy.yaml");
    let credential = dir.join("admin-secret");
    assert!(policy_path.is_file());
    assert_eq!(mode(&seed_path), 0o600);
    assert_eq!(mode(&credential), 0o600);
    let seed = Seed::from_yaml(&support::read(&seed_path)).expect("the seed reads back");
    let (admin, admin_secret) = seed.admin_credentials().unwrap();
    assert_eq!(support::read(&credential), admin_secret);
    let mut values: Vec<String> = seed
        .clients
        .iter()
        .flat_map(|c| c.secrets.iter().map(|s| s.value.clone()))
        .collect();
    for name in ["historian-uploader", "dashboard-backend", "edge-gateway"] {
        let stored = dir.join("secrets").join(name);
        assert_eq!(mode(&stored), 0o600);
        values.push(support::read(&stored));
    }
    assert_eq!(values.len(), 7);
    assert_no_secret(&text(&out), &values);
    // The old secrets are the portal's: nothing retires them after the grace period.
    assert!(!stdout.contains("the daemon retires them then"), "{stdout}");
    assert!(
        stdout.contains(
            "The old secrets were made in the portal (unmanaged): the rotator never retires them"
        ),
        "{stdout}"
    );

    // The printed commands go on from those files.
    let emulator_line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cds-rotator emulator --listen 127.0.0.1:"))
        .expect(&stdout)
        .to_owned();
    assert!(
        emulator_line.ends_with(&format!("--seed {}", seed_path.display())),
        "{emulator_line}"
    );
    assert!(
        stdout.contains(&format!(
            "cds-rotator --config {} --run-now",
            policy_path.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("A restarted emulator starts from the seed"),
        "{stdout}"
    );

    // Restarted on the seed, the emulator takes the same admin credential, and a pass
    // with the policy rotates every client again (the store's secrets are unknown to it).
    let args: Vec<&str> = emulator_line.split_whitespace().skip(1).collect();
    let mut child = binary().args(&args).stdout(Stdio::piped()).spawn().unwrap();
    let mut emu_out = BufReader::new(child.stdout.take().unwrap());
    let lines = lines_until(&mut emu_out, "admin client secret: ").await;
    assert_eq!(lines[2], format!("admin client_id: {admin}"));
    let pass = tokio::time::timeout(
        GUARD,
        binary()
            .arg("--config")
            .arg(&policy_path)
            .arg("--run-now")
            .output(),
    )
    .await
    .expect("the pass ends")
    .unwrap();
    assert_eq!(pass.status.code(), Some(0), "{}", text(&pass));
    let pass_out = String::from_utf8_lossy(&pass.stdout);
    for name in ["historian-uploader", "dashboard-backend", "edge-gateway"] {
        assert!(pass_out.contains(&format!("{name}: rotated")), "{pass_out}");
    }
    assert_no_secret(&text(&pass), &values[..4]);
    terminate(child).await;
}

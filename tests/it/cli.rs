//! The binary end to end: exit codes, `--run-now`, `plan`, `status`, `validate`, bad
//! policies, a process killed mid-rotation, two processes at once, and no secret value
//! anywhere in the output even at `RUST_LOG=trace`.

use crate::support;

use std::time::Duration;

use support::{ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env, assert_no_secret, send_signal, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_rotates_then_a_second_run_now_writes_nothing() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app: rotated: new secret 2"), "{stdout}");
    assert!(stdout.contains("web: rotated: new secret 1"), "{stdout}");

    let writes = env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets");
    let before = (env.value("app"), env.record("app"));
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app: up to date (current secret 2)"));
    assert_eq!(
        writes,
        env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets")
    );
    assert_eq!(before, (env.value("app"), env.record("app")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_appears_in_any_output_even_at_trace_level() {
    let env = Env::start().await;
    env.write_policy("", "");
    let trace = [("RUST_LOG", "trace")];
    let mut output = String::new();
    for args in [
        &["--run-now"][..],
        &["--run-now", "--force"],
        &["plan"],
        &["status"],
        &["--run-now", "--force", "--log-format", "json"],
    ] {
        let out = env.cli(args, &trace).await;
        assert!(out.status.success(), "{}", text(&out));
        output.push_str(&text(&out));
    }
    // A failing pass too: its error paths must not leak either.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3600));
    let out = env.cli(&["--run-now", "--force"], &trace).await;
    assert_eq!(out.status.code(), Some(1));
    output.push_str(&text(&out));

    assert!(output.contains("TRACE") || output.contains("\"level\":\"TRACE\""));
    let mut values = vec![ADMIN_SECRET.to_owned(), APP_SEEDED_SECRET.to_owned()];
    values.extend(env.value("app"));
    values.extend(env.value("web"));
    assert_eq!(values.len(), 4);
    assert_no_secret(&output, &values);
    assert!(!output.contains("Bearer "), "an access token was logged");
    // The store's metadata holds no value either.
    assert_no_secret(&support::read(&env.secrets_dir().join("app.json")), &values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_status_change_nothing() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["plan"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("app: rotate (the store has no secret yet)"),
        "{stdout}"
    );
    let out = env.cli(&["status"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("CLIENT"), "{stdout}");
    assert!(stdout.contains("due now"), "{stdout}");
    assert_eq!(env.count("POST", "/Secrets"), 0);
    assert_eq!(env.count("DELETE", "/Secrets"), 0);
    assert!(!env.secrets_dir().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_exits_2_with_its_location_and_touches_nothing() {
    let env = Env::start().await;
    let path = env.write_policy("  rotate_befor: 10d", "");
    for args in [&["--run-now"][..], &["validate"], &["plan"]] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{}:20:3: unknown field `rotate_befor`",
                path.display()
            )),
            "{stderr}"
        );
    }
    assert!(env.emulator.requests().is_empty());

    env.write_policy("", "");
    let policy = support::read(&path).replace("kind: hybrid", "kind: authorization_code");
    std::fs::write(&path, policy).unwrap();
    let out = env.cli(&["validate"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("authorization-code clients have no secret"));

    env.write_policy("", "");
    let out = env.cli(&["--run-now", "--client", "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--client nope: no such client"));

    let missing = env
        .command(&["validate"], &[])
        .arg("--config")
        .arg("/nonexistent/policy.yaml")
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_client_exits_1_and_does_not_stop_the_others() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.inject(cds_rotator::emulator::Fault {
        method: Some("GET".into()),
        path_contains: Some(format!("{APP}/Secrets")),
        status: 403,
        retry_after: None,
        delay_ms: 0,
        times: 0,
        after_commit: false,
    });
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app: FAILED: client app"), "{stdout}");
    assert!(stdout.contains("HTTP 403"), "{stdout}");
    assert!(stdout.contains("OperationId"), "{stdout}");
    assert!(stdout.contains("web: rotated"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_between_create_and_publish_is_cleaned_up_by_the_next_run() {
    let env = Env::start().await;
    env.write_policy("", "    orphan_grace: 0s\n    verify_timeout: 1h");
    // The new secret cannot get a token for a long time: the pass sits in verify.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3600));
    let mut child = env
        .command(&["--run-now", "--client", "app"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::wait_until("create", || env.ids(APP).len() >= 2).await;
    child.kill().await.unwrap();
    let orphan = *env.ids(APP).last().unwrap();
    assert!(env.record("app").is_none(), "nothing was published");

    // The store has no record, so nothing proves that nobody holds the secret the dead
    // pass made: the next run keeps it, publishes a new one and says so; with grace 0s
    // (and the grace-only pickup) the same run then retires it as superseded.
    env.emulator.set_token_propagation_delay(Duration::ZERO);
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("has no record"), "{}", text(&out));
    let record = env.record("app").unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("deleted secret {orphan} (superseded)")),
        "{}",
        text(&out)
    );
    assert_eq!(env.ids(APP), vec![1, record.secret_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotators_never_act_on_the_same_client_at_once() {
    let env = Env::start().await;
    env.write_policy("", "    verify_timeout: 1h");
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3));
    let first = env
        .command(&["--run-now", "--client", "app"], &[])
        .spawn()
        .unwrap();
    support::wait_until("create", || env.ids(APP).len() >= 2).await;
    // The second one waits for the lock, then finds the rotation done.
    let second = env.cli(&["--run-now", "--client", "app"], &[]).await;
    let first = first.wait_with_output().await.unwrap();
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(String::from_utf8_lossy(&second.stdout).contains("app: up to date"));
    assert_eq!(env.count("POST", "/Secrets"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rotates_at_start_and_exits_0_on_sigterm() {
    let env = Env::start().await;
    env.write_policy("", "");
    let child = env.command(&[], &[]).spawn().unwrap();
    let pid = child.id().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.record("app").is_none() || env.record("web").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon did not rotate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("daemon stops")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_whole_rotation_and_prints_no_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("rotated: new secret"), "{all}");
    assert!(all.contains("up to date"), "{all}");
    let mut values = vec![support::read(&dir.path().join("admin-secret"))];
    for entry in std::fs::read_dir(dir.path().join("secrets")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none() {
            values.push(support::read(&path));
        }
    }
    assert!(values.len() >= 4, "{}", values.len());
    assert_no_secret(&all, &values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_a_dir_that_holds_files_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "# a running daemon's policy\n").unwrap();
    let demo = |force: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cds-rotator"));
        cmd.arg("demo").arg("--dir").arg(dir.path());
        if force {
            cmd.arg("--force");
        }
        cmd.output()
    };
    let out = demo(false).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(support::read(&policy), "# a running daemon's policy\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let out = demo(true).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(support::read(&policy).starts_with("# Written by `cds-rotator demo`."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_retires_the_old_secret_when_the_grace_period_ends() {
    let env = Env::start().await;
    env.write_policy("", "    grace: 2s\n    retire_unmanaged: true");
    let child = env.command(&[], &[]).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The start pass publishes secret 2; the follow-up pass after 2s retires secret 1.
    while env.ids(APP) != vec![2] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not retired: {:?}",
            env.ids(APP)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.record("app").unwrap().secret_id, 2);
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_subcommand_serves_a_seed_file() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, support::seed_yaml()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--seed"])
        .arg(&seed)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("cds-rotator emulator listening on ")
        .expect(&line)
        .to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{url}/identity/connect/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={}&client_secret={ADMIN_SECRET}",
            support::ADMIN
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    std::fs::write(&seed, "tenant_id: x\nclients: [{ id: 1, nme: typo }]\n").unwrap();
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--seed"])
        .arg(&seed)
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_policy_says_where_it_looked_and_how_to_point_elsewhere() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .args(["--run-now"])
        .env("CDS_ROTATOR_CONFIG", "/nonexistent/policy.yaml")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/policy.yaml: cannot read the policy"),
        "{stderr}"
    );
    assert!(stderr.contains("--config"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_verify_undoes_the_new_secret_and_exits_0() {
    let env = Env::start().await;
    env.write_policy("", "    verify_timeout: 1h");
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3600));
    let child = piped(env.command(&[], &[])).spawn().unwrap();
    let pid = child.id().unwrap();
    support::wait_until("create", || env.ids(APP).len() >= 2).await;
    // Let the verify loop reach its longer waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops without waiting out verify_timeout")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.ids(APP), vec![1], "the unpublished secret was deleted");
    assert!(env.record("app").is_none());
    // Reported as a stop, not as a failure that would page someone on every restart.
    let all = text(&out);
    assert!(!all.contains("rotation_failed"), "{all}");
    assert!(!all.contains("could not get a token"), "{all}");
    assert!(all.contains("stopping"), "{all}");
}

/// Captures the command's stdout and stderr for `wait_with_output`.
fn piped(mut cmd: tokio::process::Command) -> tokio::process::Command {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_stopped_during_verify_deletes_its_secret_and_exits_0() {
    for signal in ["TERM", "INT", "HUP"] {
        let env = Env::start().await;
        env.write_policy("", "    verify_timeout: 1h");
        env.emulator
            .set_token_propagation_delay(Duration::from_secs(3600));
        let child = piped(env.command(&["--run-now", "--client", "app"], &[]))
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        support::wait_until("create", || env.ids(APP).len() >= 2).await;
        send_signal(pid, signal);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("stops without waiting out verify_timeout")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{signal}: {}", text(&out));
        assert!(stdout.contains("app: stopped:"), "{signal}: {stdout}");
        assert_eq!(env.ids(APP), vec![1], "{signal}: no orphan is left");
        assert!(env.record("app").is_none());
        assert!(!text(&out).contains("rotation_failed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_end_the_daemon() {
    let env = Env::start().await;
    env.write_policy("", "");
    let child = piped(env.command(&[], &[])).spawn().unwrap();
    let pid = child.id().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.record("app").is_none() || env.record("web").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_signal(pid, "HUP");
    send_signal(pid, "HUP");
    // Were SIGHUP fatal, the process would already be gone and report no exit code.
    send_signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("SIGHUP"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policy_values_exit_2_without_echo_or_abort_and_touch_nothing() {
    let env = Env::start().await;
    let path = env.write_policy("", "");
    let good = support::read(&path);
    let pasted = "Zq8Ws7xZpR2mLk4Vn9TbY3cHj6FdG1sAe+/=";
    let cred = format!(
        "client_secret_file: {}",
        env.dir.path().join("admin-secret").display()
    );
    let cases = [
        // A duration whose parts each pass but whose sum would overflow a date.
        good.replace(
            "  verify_timeout: 5s",
            &format!(
                "  verify_timeout: 5s\n  max_age: \"{}\"",
                "36500d".repeat(40)
            ),
        ),
        good.replace("rotate_before: 30d", "rotate_before: 0s"),
        good.replace(&cred, &format!("client_secret_env: \"{pasted}\"")),
        good.replace(&cred, &format!("client_secret_file: \"{pasted}\"")),
    ];
    for policy in cases {
        std::fs::write(&path, &policy).unwrap();
        for args in [&["validate"][..], &["--run-now"], &["plan"]] {
            let out = env.cli(args, &[]).await;
            let all = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
            assert!(all.contains(&format!("{}:", path.display())), "{all}");
            assert!(!all.contains(pasted), "the pasted value was echoed: {all}");
        }
    }
    assert!(env.emulator.requests().is_empty());
    assert!(!env.secrets_dir().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_names_every_field_and_exits_1_when_a_client_needs_attention() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.cli(&["status", "--output", "json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = &views[0];
    assert_eq!(app["client"], "app");
    assert_eq!(app["client_id"], APP);
    assert_eq!(app["state"], "ok");
    let record = env.record("app").unwrap();
    assert_eq!(app["current"]["secret_id"], record.secret_id);
    assert_eq!(
        app["current"]["fingerprint"],
        record.fingerprint.to_string()
    );
    for key in ["expiration", "published_at", "location"] {
        assert!(app["current"][key].is_string(), "{key}: {app}");
    }
    assert_eq!(app["secrets"]["unmanaged"][0]["id"], 1);
    assert_eq!(app["secrets"]["managed"][0]["id"], record.secret_id);
    assert!(app["next_window"].is_string());
    assert_eq!(app["rotation"]["due"], false);
    assert_eq!(app["last_result"]["outcome"], "ok");
    assert_eq!(app["last_result"]["rotated"], record.secret_id);
    for key in [
        "pending_retire",
        "orphans",
        "possibly_in_use",
        "planned",
        "attention",
    ] {
        assert!(app[key].is_array(), "{key}: {app}");
    }
    assert!(app["pickup"].is_null(), "{app}");

    // The record removed by hand: attention, exit 1, in text and JSON.
    std::fs::remove_file(env.secrets_dir().join("app.json")).unwrap();
    let out = env.cli(&["status"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("record_missing"), "{}", text(&out));
    let out = env.cli(&["status", "--output", "json"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views[0]["state"], "attention");
    assert_eq!(views[0]["attention"][0], "record_missing");
    assert_eq!(views[1]["state"], "ok");

    // A failed pass is remembered for status.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3600));
    let out = env
        .cli(&["--run-now", "--client", "web", "--force"], &[])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let out = env.cli(&["status", "--output", "json"], &[]).await;
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views[1]["last_result"]["outcome"], "failed");
    assert_eq!(views[1]["last_result"]["step"], "verify");
    let out = env.cli(&["status"], &[]).await;
    assert!(text(&out).contains("failed"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_exits_1_when_a_rotation_is_blocked_at_ten_secrets() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.add_hand_made(APP, 9);
    let out = env.cli(&["plan", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("BLOCKED"), "{}", text(&out));
    let out = env
        .cli(&["plan", "--client", "app", "--output", "json"], &[])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views[0]["planned"][0]["action"], "rotate");
    assert_eq!(views[0]["planned"][0]["blocked"], true);
    let out = env.cli(&["status", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("full"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_proves_what_a_pass_needs_without_writing_to_cds() {
    use std::os::unix::fs::PermissionsExt;

    let env = Env::start().await;
    let path = env.write_policy("", "");
    let cred = env.dir.path().join("admin-secret");
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.cli(&["check"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for line in [
        "ok   credential:",
        "ok   token:",
        "ok   client app:",
        "ok   client web:",
        "ok   store of client app:",
        "ok   lock of client app:",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    // A wrong kind, a credential others can read, a store that cannot be written.
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o644)).unwrap();
    let policy = support::read(&path).replace("kind: hybrid", "kind: client_credentials");
    std::fs::write(&path, policy).unwrap();
    // check made no store directory (it says it would be created).
    assert!(!env.secrets_dir().exists());
    std::fs::write(env.secrets_dir(), "not a directory").unwrap();
    // Problems of clients alone: listed, and the service may start (exit 0); --strict
    // (CI) fails on them.
    let out = env.cli(&["check"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout.contains("WARN credential:"), "{stdout}");
    assert!(stdout.contains("chmod 600"), "{stdout}");
    assert!(
        stdout.contains("is not a client_credentials client but a hybrid one: set kind: hybrid"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL store of client app:"), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL store of client web: the same store as client app, which cannot be written"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARN clients: app, web would fail their pass; the others rotate"),
        "{stdout}"
    );
    let out = env.cli(&["check", "--strict"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout.contains("FAIL clients: app, web would fail their pass (--strict: exit 1)"),
        "{stdout}"
    );

    // A credential CDS refuses.
    std::fs::write(&cred, "not-the-secret").unwrap();
    let out = env.cli(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL token:"),
        "{}",
        text(&out)
    );
    assert_eq!(env.count("POST", "/Secrets"), 0);
    assert_eq!(env.count("DELETE", "/Secrets"), 0);
    assert_no_secret(&text(&out), &[ADMIN_SECRET.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_are_taken_only_where_they_mean_something() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("`cds-rotator --run-now`"),
        "{}",
        text(&out)
    );
    for args in [
        &["validate", "--force"][..],
        &["validate", "--client", "app"],
        &["status", "--force"],
        &["--force", "validate"],
        &["--client", "app"],
    ] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = env.cli(&["plan", "--force", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app: rotate (forced)"), "{stdout}");
    assert!(!stdout.contains("web"), "{stdout}");
    assert!(
        env.emulator
            .requests()
            .iter()
            .all(|r| r.method != "POST" || r.path.contains("token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_ids_as_arrays() {
    let env = Env::start().await;
    env.write_policy("", "");
    let out = env.cli(&["--run-now", "--log-format", "json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut notifications = 0;
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        if v["fields"]["message"] == "notification" {
            notifications += 1;
            assert!(v["fields"]["secret_ids"].is_array(), "{line}");
        }
    }
    assert!(notifications >= 2, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_mode_0640_and_a_group_lets_that_group_read() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let env = Env::start().await;
    let path = env.write_policy("", "");
    let secrets = env.secrets_dir();
    let policy = support::read(&path).replace(
        &format!("local: {{ type: file, dir: {} }}", secrets.display()),
        &format!(
            "local: {{ type: file, dir: {}, mode: \"0640\", group: 4242 }}",
            secrets.display()
        ),
    );
    std::fs::write(&path, policy).unwrap();
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let meta = |p: &std::path::Path| std::fs::metadata(p).unwrap();
    for file in ["app", "app.json", "web"] {
        let m = meta(&secrets.join(file));
        assert_eq!(m.permissions().mode() & 0o777, 0o640, "{file}");
        assert_eq!(m.gid(), 4242, "{file}");
    }
    assert_eq!(meta(&secrets).permissions().mode() & 0o777, 0o750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_changes_nothing_and_says_what_the_first_pass_would_create() {
    let env = Env::start().await;
    env.write_policy("", "");
    let locks = env.dir.path().join("locks");
    assert!(!locks.exists() && !env.secrets_dir().exists());
    let out = env.cli(&["check"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Before, check made both directories (root's, 0700, when run as root).
    assert!(!locks.exists(), "check created the lock directory");
    assert!(
        !env.secrets_dir().exists(),
        "check created the store directory"
    );
    assert!(
        stdout.contains(&format!(
            "ok   lock of client app: {} does not exist: it would be created",
            locks.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ok   store of client app: {} does not exist: it would be created",
            env.secrets_dir().display()
        )),
        "{stdout}"
    );
    // With the directories there, no lock file is made either.
    std::fs::create_dir(&locks).unwrap();
    let out = env.cli(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would be created by the first pass"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_0_when_one_client_is_gone_and_1_when_every_client_would_fail() {
    let env = Env::start().await;
    let path = env.write_policy("", "");
    // A client deleted in the portal: the others still rotate, so the start goes on.
    let policy = support::read(&path).replace(APP, "0b0c1d2e-3f40-4152-6374-000000000bad");
    std::fs::write(&path, policy).unwrap();
    let out = env.cli(&["check"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout.contains("FAIL client app: no client_credentials client"),
        "{stdout}"
    );
    assert!(stdout.contains("ok   client web:"), "{stdout}");
    assert!(
        stdout.contains("WARN clients: app would fail their pass"),
        "{stdout}"
    );
    let out = env.cli(&["check", "--strict"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // What stops every client gates the start: the token.
    std::fs::write(env.dir.path().join("admin-secret"), "not-the-secret").unwrap();
    let out = env.cli(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_or_credential_others_can_write_is_refused_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let env = Env::start().await;
    let path = env.write_policy("", "");
    let cred = env.dir.path().join("admin-secret");
    mode(&cred, 0o600);
    // 0666 in a 0777 directory: whoever can write it can send the admin secret anywhere.
    mode(&path, 0o666);
    mode(env.dir.path(), 0o777);
    for args in [&["validate"][..], &["--run-now"], &["check"]] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("chmod go-w"),
            "{args:?}: {}",
            text(&out)
        );
    }
    mode(env.dir.path(), 0o755);
    let out = env.cli(&["validate"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{} is writable by group or others (mode 0666): run chmod go-w",
            path.display()
        )),
        "{}",
        text(&out)
    );
    mode(&path, 0o644);
    mode(&cred, 0o622);
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "connect.credentials: the credential file {} is writable by group or others (mode 0622): run chmod go-w",
            cred.display()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(env.count("POST", "/Secrets"), 0);
    mode(&cred, 0o600);
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

async fn readyz(port: u16) -> Option<serde_json::Value> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_lock_dir_is_refused_and_keeps_a_run_now_out_until_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start().await;
    let port = support::free_port();
    let path = env.write_policy("", "    verify_timeout: 1h");
    let mut policy = support::read(&path);
    policy.push_str(&format!("daemon:\n  listen: 127.0.0.1:{port}\n"));
    std::fs::write(&path, &policy).unwrap();
    // A slow pass: the new secret's token takes a while to work.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(6));
    let daemon = env.command(&[], &[]).spawn().unwrap();
    support::wait_until("the daemon's create", || env.ids(APP).len() >= 2).await;

    // While that pass holds its lock in `locks`, the policy moves lock_dir.
    let moved = env.dir.path().join("locks2");
    let old = format!("lock_dir: {}", env.dir.path().join("locks").display());
    assert!(policy.contains(&old));
    let tmp = env.dir.path().join(".policy.new");
    std::fs::write(
        &tmp,
        policy.replace(&old, &format!("lock_dir: {}", moved.display())),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let held = moved.join(format!("{}.{APP}.lock", support::TENANT));
    support::wait_until("the daemon holding the lock in the new lock_dir", || {
        held.exists()
    })
    .await;

    // An operator's --run-now reads the new lock_dir: it waits, and gives up.
    let out = env
        .cli(&["--run-now", "--force", "--client", "app"], &[])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("another cds-rotator is acting on this client"),
        "{}",
        text(&out)
    );
    // One create per client: the daemon's (before, the --run-now created a second one).
    assert_eq!(env.count("POST", "/Secrets"), 2);
    support::eventually(
        "/readyz naming the refusal",
        Duration::from_secs(30),
        async || {
            readyz(port).await.is_some_and(|r| {
                r["policy_reload_refused"]
                    .as_str()
                    .is_some_and(|s| s.contains("lock_dir changed") && s.contains("restart"))
            })
        },
    )
    .await;

    // A reload re-checks store directories at once, not at the next pass.
    std::fs::write(&path, &policy).unwrap();
    support::wait_until("the lock released", || {
        std::fs::File::open(&held).is_ok_and(|f| f.try_lock().is_ok())
    })
    .await;
    std::fs::set_permissions(env.secrets_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&tmp, format!("{policy}\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    support::eventually(
        "/readyz naming the store directory",
        Duration::from_secs(30),
        async || {
            readyz(port).await.is_some_and(|r| {
                r["policy_reload_refused"]
                    .as_str()
                    .is_some_and(|s| s.contains("stores.local.dir") && s.contains("chmod go-w"))
            })
        },
    )
    .await;
    send_signal(daemon.id().unwrap(), "TERM");
    let out = tokio::time::timeout(Duration::from_secs(30), daemon.wait_with_output())
        .await
        .expect("the daemon stops")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

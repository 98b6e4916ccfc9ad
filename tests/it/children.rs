//! What the rotator's children give back, end to end: the binary's `--run-now` against the
//! CDS emulator with a file store, a command notifier and a pickup command that read the
//! store and the rotator's own credential and print them (`set -x`, stdout and stderr).
//! Their output reaches the log at debug only, scrubbed of every value the rotator holds;
//! a pickup program that exits 0 but leaves a background child on its stdout confirms.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{ADMIN_SECRET, Env, assert_no_secret, text};

/// An executable script at `path`.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_programs_print_is_logged_at_debug_only_and_without_a_held_value() {
    let env = Env::start().await;
    let store = env.secrets_dir().join("app");
    let admin = env.dir.path().join("admin-secret");
    // Prints the store's value and the rotator's own credential, traced by `set -x`.
    let leak = format!(
        "set -x\nv=$(cat {s})\necho \"store $v\"\necho \"store $v\" >&2\nc=$(cat {a})\necho \"own $c\"",
        s = store.display(),
        a = admin.display()
    );
    let hook = env.dir.path().join("hook.sh");
    script(&hook, &leak);
    let failing = env.dir.path().join("failing-hook.sh");
    script(&failing, &format!("{leak}\nexit 5"));
    let pickup = env.dir.path().join("pickup.sh");
    script(&pickup, &format!("{leak}\nexit 1"));
    env.write_notifier_policy(
        &format!(
            "  hook: {{ type: command, program: {} }}\n  failing: {{ type: command, program: {} }}",
            hook.display(),
            failing.display()
        ),
        "hook, failing, ops",
        &format!(
            "    pickup: {{ type: command, program: {}, interval: 1m }}",
            pickup.display()
        ),
    );

    let debug = [("RUST_LOG", "debug")];
    let first = env.cli(&["--run-now", "--client", "app"], &debug).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let first_value = env.value("app").expect("published");
    // The second run asks the pickup program about the first value (which this process
    // never held: it reads it from the store to scrub), then rotates and announces.
    let second = env
        .cli(&["--run-now", "--client", "app", "--force"], &debug)
        .await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let second_value = env.value("app").expect("published");
    assert_ne!(first_value, second_value);

    let output = format!("{}{}", text(&first), text(&second));
    assert_no_secret(
        &output,
        &[
            ADMIN_SECRET.to_owned(),
            first_value.clone(),
            second_value.clone(),
        ],
    );
    // The programs ran and what they said was logged, scrubbed, at debug.
    let shown: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("program output"))
        .collect();
    assert!(
        shown.len() >= 3
            && shown
                .iter()
                .all(|l| l.contains("DEBUG") && l.contains("store [redacted]")),
        "{output}"
    );
    assert!(
        shown.iter().any(|l| l.contains("own [redacted]")),
        "{output}"
    );
    // A failing notifier's error says what it printed on stderr, scrubbed.
    assert!(
        output.lines().any(|l| l.contains("notification failed")
            && l.contains("exit code 5; stderr: ")
            && l.contains("store [redacted]")),
        "{output}"
    );
    // The pickup's reason (info, plan, status) says how it ended, not what it printed.
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(
        second_out.contains(&format!(
            "waiting for pickup (command {}: exit code 1;",
            pickup.display()
        )),
        "{}",
        text(&second)
    );

    // At info, no program output but a failing notifier's stderr (scrubbed).
    let third = env
        .cli(
            &["--run-now", "--client", "app", "--force"],
            &[("RUST_LOG", "info")],
        )
        .await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert!(!text(&third).contains("program output"), "{}", text(&third));
    let third_value = env.value("app").expect("published");
    assert_no_secret(&text(&third), &[ADMIN_SECRET.to_owned(), third_value]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pickup_program_that_exits_0_leaving_a_background_child_on_its_stdout_confirms() {
    let env = Env::start().await;
    let pids = env.dir.path().join("left-behind");
    let pickup = env.dir.path().join("pickup.sh");
    // The background child keeps stdout and stderr open for 10 minutes.
    script(
        &pickup,
        &format!("sleep 600 &\necho $! >> {}\necho switched", pids.display()),
    );
    env.write_notifier_policy(
        "",
        "ops",
        &format!(
            "    pickup: {{ type: command, program: {}, run_timeout: 5m, interval: 1m }}",
            pickup.display()
        ),
    );
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old = env.record("app").expect("published");
    let run = env.cli(&["--run-now", "--client", "app", "--force"], &[]);
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run).await;
    for pid in std::fs::read_to_string(&pids).unwrap_or_default().lines() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status();
    }
    let out = out.expect("the run ends long before the background child (10 minutes)");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("waiting for pickup"), "{}", text(&out));
    // The pickup confirmed: the first secret is retired (by this run or the next).
    let out = env.cli(&["--run-now", "--client", "app"], &[]).await;
    for pid in std::fs::read_to_string(&pids).unwrap_or_default().lines() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status();
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !env.ids(support::APP).contains(&old.secret_id),
        "{:?} {}",
        env.ids(support::APP),
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_a_credential_in_a_pickup_programs_env_at_its_place() {
    let env = Env::start().await;
    let path = env.write_policy(
        "",
        "    pickup: { type: command, program: /bin/true, env: [HOME, CDS_ADMIN_SECRET, AWS_CONTAINER_AUTHORIZATION_TOKEN] }",
    );
    let admin = env.dir.path().join("admin-secret");
    let policy = std::fs::read_to_string(&path).unwrap().replace(
        &format!("client_secret_file: {}", admin.display()),
        "client_secret_env: CDS_ADMIN_SECRET",
    );
    std::fs::write(&path, policy).unwrap();
    let out = env
        .cli(&["validate"], &[("CDS_ADMIN_SECRET", ADMIN_SECRET)])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let output = text(&out);
    // Each at its own place in the list.
    let at = |column| {
        format!(
            "{}:27:{column}: client `app`: pickup.env lists",
            path.display()
        )
    };
    for line in [
        format!(
            "{} CDS_ADMIN_SECRET, which holds the rotator's own secret (connect.credentials.client_secret_env); a pickup program never gets a credential: remove it",
            at(62)
        ),
        format!(
            "{} AWS_CONTAINER_AUTHORIZATION_TOKEN, which holds a cloud credential; a pickup program never gets a credential: remove it",
            at(80)
        ),
    ] {
        assert!(output.contains(&line), "{line}\n{output}");
    }
    assert_no_secret(&output, &[ADMIN_SECRET.to_owned()]);
}

//! The binary as a service runs it: systemd's notifications (ready after the first pass,
//! status, watchdog only when asked for), core dumps off, and logs fit for journald and
//! Kubernetes (JSON on request, no terminal colours in a pipe).

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use support::{Env, send_signal, text};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixDatagram;

/// The next datagram on `socket` (the test fails if none comes within a minute).
async fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
        .await
        .expect("a notification")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Runs the daemon with `NOTIFY_SOCKET` (and `extra` variables) until READY=1 and
/// `until` has been seen, stops it, and returns every message it sent.
async fn notifications(extra: &[(&str, &str)], until: &str) -> Vec<String> {
    let env = Env::start().await;
    env.write_policy("", "");
    let path = env.dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut vars = vec![("NOTIFY_SOCKET", path.to_str().unwrap())];
    vars.extend_from_slice(extra);
    let mut cmd = env.command(&[], &vars);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let mut seen = Vec::new();
    loop {
        let message = next_message(&socket).await;
        if message.starts_with("READY=1") {
            // Ready means the first pass is over: both clients are in the store.
            assert!(env.record("app").is_some() && env.record("web").is_some());
        }
        seen.push(message);
        if seen.iter().any(|m| m.starts_with("READY=1"))
            && seen.iter().any(|m| m.starts_with(until))
        {
            break;
        }
    }
    send_signal(pid, "TERM");
    loop {
        let message = next_message(&socket).await;
        let done = message.starts_with("STOPPING=1");
        seen.push(message);
        if done {
            break;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("daemon stops")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_daemon_is_ready_after_its_first_pass_and_says_what_is_next() {
    let seen = notifications(&[], "READY=1").await;
    let ready = seen.iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert!(
        ready.starts_with("READY=1\nSTATUS=next: client "),
        "{seen:?}"
    );
    // Without WATCHDOG_USEC the daemon sends no watchdog pings (and so has no timer for
    // them).
    assert!(!seen.iter().any(|m| m.contains("WATCHDOG")), "{seen:?}");
    assert!(seen.last().unwrap().starts_with("STOPPING=1"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pings_the_watchdog_systemd_asks_for() {
    let seen = notifications(&[("WATCHDOG_USEC", "200000")], "WATCHDOG=1").await;
    assert!(seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
}

#[test]
fn the_running_binary_cannot_dump_core() {
    // A process that is not dumpable has its /proc/PID files owned by root and refuses
    // their reading (environ, mem) to its own user: what a core dump or a debugger
    // attached by the same user would need. `sleep` shows the contrast.
    let dir = tempfile::tempdir().unwrap();
    let root = rustix::process::geteuid().is_root();
    let bin = if root {
        // Run as nobody from a copy that nobody may execute.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("cds-rotator");
        std::fs::copy(env!("CARGO_BIN_EXE_cds-rotator"), &bin).unwrap();
        bin
    } else {
        env!("CARGO_BIN_EXE_cds-rotator").into()
    };
    let spawn = |program: &std::path::Path, args: &[&str]| {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        if root {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
        cmd.spawn().unwrap()
    };
    let mut rotator = spawn(&bin, &["emulator", "--listen", "127.0.0.1:0"]);
    let mut sleeper = spawn(std::path::Path::new("sleep"), &["600"]);
    // The emulator's first line: the process is past main's start.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(rotator.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("listening"), "{line}");
    let (rotator_proc, sleeper_proc) = (
        format!("/proc/{}", rotator.id()),
        format!("/proc/{}", sleeper.id()),
    );
    if root {
        let owner = |p: &str| std::fs::metadata(format!("{p}/status")).unwrap().uid();
        assert_eq!(owner(&sleeper_proc), 65534, "the contrast");
        assert_eq!(owner(&rotator_proc), 0, "cds-rotator is dumpable");
    } else {
        let environ = |p: &str| std::fs::read(format!("{p}/environ"));
        assert!(environ(&sleeper_proc).is_ok(), "the contrast");
        let refused = environ(&rotator_proc).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    }
    for child in [&mut rotator, &mut sleeper] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_logs_are_plain_text_in_a_pipe_and_all_json_when_asked() {
    for format in ["text", "json"] {
        let env = Env::start().await;
        env.write_policy("", "");
        let mut args = vec![];
        if format == "json" {
            args = vec!["--log-format", "json"];
        }
        let mut cmd = env.command(&args, &[]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        // Read until the first pass is logged, then stop the daemon and read the rest.
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut lines = Vec::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            let done = line.contains("pass rotated the secret");
            lines.push(line);
            if done {
                break;
            }
        }
        send_signal(pid, "TERM");
        while let Some(line) = stderr.next_line().await.unwrap() {
            lines.push(line);
        }
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(0), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
        for line in &lines {
            assert!(
                !line.contains('\u{1b}'),
                "a terminal escape in a pipe: {line:?}"
            );
            if format == "json" {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            } else {
                assert!(!line.starts_with('{'), "{line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemd_credential_is_read_from_credentials_directory_and_missing_by_hand_says_how() {
    let env = Env::start().await;
    let path = env.write_policy("", "");
    let cred = env.dir.path().join("admin-secret");
    let policy = support::read(&path).replace(
        &format!("client_secret_file: {}", cred.display()),
        "client_secret_credential: admin-secret",
    );
    assert!(policy.contains("client_secret_credential"));
    std::fs::write(&path, policy).unwrap();

    let by_hand = env
        .command(&["plan"], &[])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .await
        .unwrap();
    assert_eq!(by_hand.status.code(), Some(2), "{}", text(&by_hand));
    let said = text(&by_hand);
    assert!(
        said.contains("policy.yaml:6:31: connect.credentials.client_secret_credential"),
        "{said}"
    );
    assert!(
        said.contains("systemd-run --pipe --wait -p LoadCredential="),
        "{said}"
    );

    let dir = env.dir.path().to_str().unwrap();
    let in_unit = env
        .cli(&["--run-now"], &[("CREDENTIALS_DIRECTORY", dir)])
        .await;
    assert_eq!(in_unit.status.code(), Some(0), "{}", text(&in_unit));
    assert!(env.record("app").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_no_clients_is_ready_at_once() {
    let env = Env::start().await;
    let path = env.write_policy("", "");
    let policy = support::read(&path);
    let policy = format!(
        "{}clients: []\n",
        &policy[..policy.find("clients:").unwrap()]
    );
    std::fs::write(&path, policy).unwrap();
    let notify = env.dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let mut cmd = env.command(&[], &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let ready = next_message(&socket).await;
    assert_eq!(ready, "READY=1\nSTATUS=next: nothing scheduled");
    send_signal(child.id().unwrap(), "TERM");
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

//! A hostile or broken CDS: answers that ask for long waits, answers far too large, and
//! error text made to forge or wipe lines of the output. The rotator must stop on time,
//! read bounded answers, and print text from outside escaped.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use cds_rotator::emulator::{Fault, FaultBody};
use support::{APP, Env, HYBRID, send_signal, text};

/// A fault on every request with `method` whose path contains `path`.
fn fault(method: &str, path: &str, status: u16) -> Fault {
    Fault {
        method: Some(method.to_owned()),
        path_contains: Some(path.to_owned()),
        status,
        ..Fault::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stops_within_10_s_while_cds_asks_to_retry_after_100_s() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.inject(Fault {
        retry_after: Some(100),
        ..fault("GET", "/Secrets", 429)
    });
    let child = env
        .command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !env
        .emulator
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.contains("/Secrets") && r.status == 429)
    {
        assert!(tokio::time::Instant::now() < deadline, "no list seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the daemon stops within 10 s, without waiting out Retry-After")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.count("POST", "/Secrets"), 0, "nothing was created");
    assert_eq!(env.ids(APP), vec![1]);
    assert!(env.ids(HYBRID).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_list_answer_fails_that_client_only_and_names_the_cap() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.inject_with_body(
        fault("GET", &format!("{APP}/Secrets"), 0),
        FaultBody::Padding(20 * 1024 * 1024),
    );
    let reports = env.pass(&[], false).await;
    let app = reports.iter().find(|r| r.client == "app").unwrap();
    let error = app
        .error
        .as_ref()
        .expect("the app's pass fails")
        .to_string();
    assert!(
        error.contains(&format!("list secrets of client {APP}")),
        "{error}"
    );
    assert!(
        error.contains("the answer is larger than 4194304 bytes"),
        "{error}"
    );
    assert!(env.record("app").is_none());
    assert_eq!(env.count("POST", &format!("{APP}/Secrets")), 0);
    let web = reports.iter().find(|r| r.client == "web").unwrap();
    assert!(web.error.is_none(), "{:?}", web.error);
    assert!(web.rotated.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_text_from_cds_cannot_forge_or_wipe_summary_lines() {
    let env = Env::start().await;
    env.write_policy("", "");
    let body = r#"{"OperationId":"op-1","Error":"boom\n\u001b[2Jclient other: rotated: FORGED","Reason":"r","Resolution":"x"}"#;
    env.emulator.inject_with_body(
        fault("POST", &format!("{APP}/Secrets"), 400),
        FaultBody::Raw(body.to_owned()),
    );
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!out.stdout.contains(&0x1b), "{:?}", text(&out));
    assert!(!out.stderr.contains(&0x1b), "{:?}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per client: {stdout}");
    let app = lines
        .iter()
        .find(|l| l.starts_with("app: "))
        .expect("a line for app");
    assert!(app.starts_with("app: FAILED: "), "{app}");
    assert!(
        app.contains(r"Error: boom\n\u{1b}[2Jclient other: rotated: FORGED"),
        "{app}"
    );
    assert!(app.contains("OperationId: op-1"), "{app}");
    assert!(
        lines.iter().any(|l| l.starts_with("web: rotated")),
        "{stdout}"
    );
}

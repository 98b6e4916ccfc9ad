//! Notifiers end to end: the binary's `--run-now` against the CDS emulator, telling a
//! local webhook receiver (that checks signatures and refuses replays), Slack- and
//! Teams-shaped receivers and a command whose environment, arguments and input are
//! captured — and searched for every secret value. Failing and hanging notifiers do not
//! change a rotation's outcome; `notify_on` filters; notifier URLs are https except to
//! loopback.

use crate::support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use support::{ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env, assert_no_secret, read, text};

const HMAC_KEY: &str = "hmac-Key-For-Tests-0123456789abcdef";

/// What the receiver saw: one entry per request.
#[derive(Clone, Debug)]
struct Seen {
    route: String,
    signature: Option<String>,
    body: Bytes,
    /// The receiver's verdict on a `hook` request's signature.
    verdict: Result<(), &'static str>,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    signatures: Arc<Mutex<HashSet<String>>>,
}

impl Receiver {
    fn seen(&self, route: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.route == route)
            .cloned()
            .collect()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(key: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// What a receiver following the README does: a fresh `t`, the right MAC, never twice.
fn verify(
    header: Option<&str>,
    body: &[u8],
    seen: &mut HashSet<String>,
) -> Result<(), &'static str> {
    let header = header.ok_or("unsigned")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    if (now() - t).abs() > 300 {
        return Err("old timestamp");
    }
    if sign(HMAC_KEY, t, body) != v1 {
        return Err("bad signature");
    }
    if !seen.insert(v1) {
        return Err("replayed");
    }
    Ok(())
}

async fn receive(
    State(r): State<Receiver>,
    UrlPath((route, _rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = headers
        .get("x-cds-rotator-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = if route == "hook" {
        verify(
            signature.as_deref(),
            &body,
            &mut r.signatures.lock().unwrap(),
        )
    } else {
        Ok(())
    };
    let json = headers
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    r.seen.lock().unwrap().push(Seen {
        route: route.clone(),
        signature,
        body,
        verdict,
    });
    let count = r.seen(&route).len();
    match route.as_str() {
        _ if !json => StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
        // Busy once, then fine.
        "busy" if count == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        }
        "later" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3600")]).into_response(),
        "fail" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "bad" => StatusCode::BAD_REQUEST.into_response(),
        "hang" => std::future::pending().await,
        _ if verdict.is_err() => StatusCode::UNAUTHORIZED.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// A receiver on a free loopback port; every route is `/<route>/<anything>`.
async fn start_receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/{route}/{*rest}", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, base)
}

/// Every secret value the test knows of: the seeds and what the store now holds.
fn secret_values(env: &Env) -> Vec<String> {
    let mut values = vec![ADMIN_SECRET.to_owned(), APP_SEEDED_SECRET.to_owned()];
    values.extend(env.value("app"));
    values.extend(env.value("web"));
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notifier_gets_the_rotated_event_signed_and_without_a_secret() {
    let env = Env::start().await;
    let (receiver, base) = start_receiver().await;
    let out_dir = tempfile::tempdir().unwrap();
    let slack_url = format!("{base}/slack/T000/B000/slackPathToken");
    let teams_url_file = env.dir.path().join("teams-url");
    std::fs::write(
        &teams_url_file,
        format!("{base}/teams/webhookb2/teamsPathToken\n"),
    )
    .unwrap();
    env.write_notifier_policy(&format!(
            r#"  hook: {{ type: webhook, url: "{base}/hook/hookPathToken", hmac_secret_env: HOOK_KEY }}
  slack: {{ type: slack, webhook_url_env: SLACK_URL }}
  teams: {{ type: teams, webhook_url_file: {teams} }}
  script:
    type: command
    program: /bin/sh
    args:
      - "-c"
      - 'env >> "$OUT/env"; printf "%s\n" "$0" "$@" >> "$OUT/argv"; cat >> "$OUT/stdin"'
      - notify-script
      - --reload
    env: [OUT]"#,
            teams = teams_url_file.display()
        ),
        "ops, hook, slack, teams, script",
        "",
    );
    let out_path = out_dir.path().display().to_string();
    let envs = [
        ("HOOK_KEY", HMAC_KEY),
        ("SLACK_URL", slack_url.as_str()),
        ("OUT", out_path.as_str()),
        ("RUST_LOG", "trace"),
    ];
    let out = env.cli(&["--run-now"], &envs).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let record = env.record("app").expect("the app's secret is published");

    // The webhook: one signed `rotated` event that a receiver accepts.
    let hooks = receiver.seen("hook");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].verdict, Ok(()));
    let event: serde_json::Value = serde_json::from_slice(&hooks[0].body).unwrap();
    assert_eq!(event["event"], "rotated");
    assert_eq!(event["client"], "app");
    assert_eq!(event["client_id"], APP);
    assert_eq!(event["secret_ids"], serde_json::json!([record.secret_id]));
    assert_eq!(event["fingerprint"], record.fingerprint.as_str());
    let summary = event["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("app: rotated to secret {}", record.secret_id)),
        "{summary}"
    );

    // Replayed as captured: refused. Signed correctly but 10 minutes old: refused.
    let client = reqwest::Client::new();
    let replay = client
        .post(format!("{base}/hook/hookPathToken"))
        .header("content-type", "application/json")
        .header(
            "x-cds-rotator-signature",
            hooks[0].signature.clone().unwrap(),
        )
        .body(hooks[0].body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    let old = now() - 600;
    let stale = client
        .post(format!("{base}/hook/hookPathToken"))
        .header("content-type", "application/json")
        .header(
            "x-cds-rotator-signature",
            format!("t={old},v1={}", sign(HMAC_KEY, old, &hooks[0].body)),
        )
        .body(hooks[0].body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    let verdicts: Vec<_> = receiver.seen("hook").iter().map(|s| s.verdict).collect();
    assert_eq!(
        verdicts,
        [Ok(()), Err("replayed"), Err("old timestamp")],
        "{verdicts:?}"
    );

    // Slack: text and blocks. Teams: an Adaptive Card. Neither is signed.
    let slack = receiver.seen("slack");
    assert_eq!(slack.len(), 1);
    let msg: serde_json::Value = serde_json::from_slice(&slack[0].body).unwrap();
    assert_eq!(msg["text"], summary);
    assert!(msg["blocks"].as_array().is_some_and(|b| !b.is_empty()));
    assert!(slack[0].signature.is_none());
    let teams = receiver.seen("teams");
    assert_eq!(teams.len(), 1);
    let msg: serde_json::Value = serde_json::from_slice(&teams[0].body).unwrap();
    assert_eq!(
        msg["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(msg["attachments"][0]["content"]["type"], "AdaptiveCard");

    // The command: the facts in its environment, its argv as written, the event on stdin.
    let dir = out_dir.path();
    let env_text = read(&dir.join("env"));
    for line in [
        "CDS_ROTATOR_EVENT=rotated".to_owned(),
        "CDS_ROTATOR_CLIENT=app".to_owned(),
        format!("CDS_ROTATOR_CLIENT_ID={APP}"),
        format!("CDS_ROTATOR_SECRET_ID={}", record.secret_id),
        format!("CDS_ROTATOR_FINGERPRINT={}", record.fingerprint),
    ] {
        assert!(env_text.contains(&line), "{line} not in {env_text}");
    }
    let store = format!(
        "CDS_ROTATOR_STORE={}",
        env.secrets_dir().join("app").display()
    );
    assert!(env_text.contains(&store), "{env_text}");
    assert!(env_text.contains("CDS_ROTATOR_EXPIRATION=20"), "{env_text}");
    assert!(
        !env_text.contains("HOOK_KEY") && !env_text.contains("SLACK_URL"),
        "{env_text}"
    );
    assert_eq!(read(&dir.join("argv")), "notify-script\n--reload\n");
    let stdin: serde_json::Value = serde_json::from_str(&read(&dir.join("stdin"))).unwrap();
    assert_eq!(stdin["event"], "rotated");
    assert_eq!(stdin["summary"], summary);

    // No secret value anywhere: not sent, not in the program's view, not in the output.
    let values = secret_values(&env);
    assert_eq!(values.len(), 4);
    let mut sent = String::new();
    for s in receiver.seen.lock().unwrap().iter() {
        sent.push_str(&String::from_utf8_lossy(&s.body));
    }
    for captured in [
        &sent,
        &env_text,
        &read(&dir.join("argv")),
        &stdin.to_string(),
    ] {
        assert_no_secret(captured, &values);
    }
    let output = text(&out);
    assert!(output.contains("TRACE"), "{output}");
    assert_no_secret(&output, &values);
    for hidden in ["PathToken", HMAC_KEY] {
        assert!(!output.contains(hidden), "{hidden} in the output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_notifiers_do_not_change_the_rotation() {
    let env = Env::start().await;
    let (receiver, base) = start_receiver().await;
    env.write_notifier_policy(&format!(
            r#"  fails: {{ type: webhook, url: "{base}/fail/failPathToken", retries: 2, timeout: 60s }}
  refuses: {{ type: webhook, url: "{base}/bad/badPathToken", retries: 3 }}
  hangs: {{ type: webhook, url: "{base}/hang/hangPathToken", timeout: 2s }}
  sleeps: {{ type: command, program: /bin/sleep, args: ["600"], timeout: 1s }}
  exits: {{ type: command, program: /bin/sh, args: ["-c", "echo no reload >&2; exit 3"] }}"#
        ),
        "fails, refuses, hangs, sleeps, exits, ops",
        "",
    );
    let run = env.cli(&["--run-now"], &[]);
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends although a notifier hangs");
    let output = text(&out);
    assert_eq!(out.status.code(), Some(0), "{output}");
    let record = env.record("app").expect("published");
    let value = env.value("app").unwrap();
    assert!(env.gets_token(APP, &value).await);
    assert_eq!(record.fingerprint.as_str().len(), 16);

    // 500: the first attempt and two retries. 400: not retried.
    assert_eq!(receiver.seen("fail").len(), 3);
    assert_eq!(receiver.seen("bad").len(), 1);
    assert!(!receiver.seen("hang").is_empty());
    for (notifier, why) in [
        ("fails", "HTTP 500 from 127.0.0.1 (after 3 attempts)"),
        ("refuses", "HTTP 400 from 127.0.0.1"),
        ("hangs", "timeout"),
        ("sleeps", "killed after 1s (timeout)"),
        ("exits", "exit code 3; stderr: no reload"),
    ] {
        assert!(
            output.lines().any(|l| l.contains("notification failed")
                && l.contains(notifier)
                && l.contains(why)),
            "{notifier}: {why}\n{output}"
        );
    }
    assert!(!output.contains("PathToken"), "{output}");
    assert_no_secret(&output, &secret_values(&env));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_on_sends_only_the_listed_events() {
    let env = Env::start().await;
    let (receiver, base) = start_receiver().await;
    env.write_notifier_policy(
        &format!(r#"  hook: {{ type: webhook, url: "{base}/quiet/x" }}"#),
        "hook",
        "    notify_on: [rotation_failed, pickup_timeout]",
    );
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(env.record("app").is_some());
    assert!(receiver.seen("quiet").is_empty());

    // A failing pass is announced.
    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3600));
    let out = env
        .cli(&["--run-now", "--force", "--client", "app"], &[])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let seen = receiver.seen("quiet");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let event: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(event["event"], "rotation_failed");
    assert_no_secret(
        &String::from_utf8_lossy(&seen[0].body),
        &secret_values(&env),
    );
    assert_no_secret(&text(&out), &secret_values(&env));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_webhook_is_refused_by_validate_unless_it_is_loopback() {
    let env = Env::start().await;
    env.write_notifier_policy(
        r#"  hook: { type: webhook, url: "http://example.com/cds/hookPathToken" }"#,
        "hook",
        "",
    );
    let out = env.cli(&["validate"], &[]).await;
    let output = text(&out);
    assert!(!out.status.success(), "{output}");
    let policy = env.policy_path();
    let line = std::fs::read_to_string(&policy)
        .unwrap()
        .lines()
        .position(|l| l.contains("hook: {"))
        .unwrap()
        + 1;
    assert!(
        output.contains(&format!(
            "{}:{line}:31: notifier `hook`: url uses plain http to example.com, which is not a loopback host; use https",
            policy.display()
        )),
        "{output}"
    );
    assert!(!output.contains("PathToken"), "{output}");

    env.write_notifier_policy(
        r#"  hook: { type: webhook, url: "http://127.0.0.1:9/cds" }"#,
        "hook",
        "",
    );
    let out = env.cli(&["validate"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_from_the_environment_is_checked_at_start_and_never_shown() {
    let env = Env::start().await;
    env.write_notifier_policy(
        "  slack: { type: slack, webhook_url_env: SLACK_URL }",
        "slack",
        "",
    );
    let out = env
        .cli(
            &["--run-now"],
            &[(
                "SLACK_URL",
                "http://hooks.example.com/services/T0/B0/slackPathToken",
            )],
        )
        .await;
    let output = text(&out);
    assert!(!out.status.success(), "{output}");
    assert!(
        output.contains("notifier `slack`: the URL in environment variable SLACK_URL uses plain http to hooks.example.com"),
        "{output}"
    );
    assert!(!output.contains("slackPathToken"), "{output}");
    // Nothing was done.
    assert!(env.record("app").is_none());
    assert_eq!(env.count("POST", "/Secrets"), 0);

    let out = env.cli(&["--run-now"], &[]).await;
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("notifier `slack`: webhook_url: environment variable SLACK_URL is not set"),
        "{}",
        text(&out)
    );
    assert!(!Path::new(&env.secrets_dir().join("app")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_unless_that_passes_the_timeout() {
    use cds_rotator::notify::http::{Delivery, HttpSender, Target};
    let (receiver, base) = start_receiver().await;
    let sender = HttpSender::new();
    let post = |route: &str| {
        let url = cds_rotator::policy::ServiceUrl::parse(&format!("{base}/{route}/x")).unwrap();
        let target = Target::plain(&url);
        let sender = sender.clone();
        async move {
            sender
                .post(Delivery {
                    notifier: "hook",
                    target: &target,
                    body: b"{}".to_vec(),
                    key: None,
                    timeout: Duration::from_secs(30),
                    retries: 3,
                })
                .await
        }
    };
    post("busy").await.unwrap();
    assert_eq!(receiver.seen("busy").len(), 2);
    let e = post("later").await.unwrap_err().to_string();
    assert_eq!(receiver.seen("later").len(), 1);
    assert!(
        e.contains("notifier hook: HTTP 429 from 127.0.0.1 (after 1 attempt; waiting 3600s more would pass the 30s timeout)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_does_not_wait_for_a_hanging_notifier() {
    let env = Env::start().await;
    let (receiver, base) = start_receiver().await;
    env.write_notifier_policy(
        &format!(r#"  hangs: {{ type: webhook, url: "{base}/hang/x", timeout: 5m, retries: 0 }}"#),
        "hangs",
        "",
    );
    let mut cmd = env.command(&["--run-now", "--client", "app"], &[]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    support::wait_until("a notification", || !receiver.seen("hang").is_empty()).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops without waiting out the notifier's 5m timeout")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The rotation itself was done before the notification.
    let value = env.value("app").expect("published");
    assert!(env.gets_token(APP, &value).await);
    assert!(
        text(&out).contains("notifications still under way were abandoned"),
        "{}",
        text(&out)
    );
}

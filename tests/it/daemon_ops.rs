//! The daemon as operators watch and steer it: `/healthz`, `/readyz` and `/metrics`
//! (`daemon.listen`), and hot reload of the policy by an edit of the file and by SIGHUP —
//! a bad policy is refused and the old one keeps running, a good one applies at once.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use support::{
    ADMIN_SECRET, APP_SEEDED_SECRET, Env, assert_no_secret, eventually, free_port, get,
    send_signal, text,
};

/// [`eventually`] with the 30 s these tests allow.
async fn eventually30(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually(what, Duration::from_secs(30), check).await;
}

/// Every sample line of a Prometheus text exposition: `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample is `series value`");
            let value: f64 = value.parse().expect("a sample value is a number");
            (series.to_owned(), value)
        })
        .collect()
}

fn sample(all: &[(String, f64)], series: &str) -> Option<f64> {
    all.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_describe_the_daemon_and_hold_no_secret() {
    let env = Env::start().await;
    let port = free_port();
    env.replace_policy(&env.daemon_policy(port, true));
    let child = env
        .command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    eventually30("/readyz 200", async || get(port, "/readyz").await.0 == 200).await;
    let (status, body) = get(port, "/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(ready["first_pass_done"], true);
    assert_eq!(ready["token"], "ok");
    assert_eq!(ready["policy_reload_refused"], serde_json::Value::Null);
    assert_eq!(get(port, "/healthz").await.0, 200);
    let out = env.cli(&["health"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let (status, metrics) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    let all = samples(&metrics);
    let expires = env.record("app").unwrap().expiration.timestamp() as f64;
    assert_eq!(
        sample(
            &all,
            "cds_rotator_secret_expiration_timestamp_seconds{client=\"app\"}"
        ),
        Some(expires)
    );
    assert_eq!(
        sample(
            &all,
            "cds_rotator_rotations_total{client=\"app\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&all, "cds_rotator_secrets{client=\"web\",managed=\"true\"}"),
        Some(1.0)
    );
    // Every labelled counter exists from the start, at 0 until counted: an alert on
    // increase() sees the first failure.
    for series in [
        "cds_rotator_rotations_total{client=\"app\",result=\"failed\"}",
        "cds_rotator_notifications_total{notifier=\"ops\",result=\"failed\"}",
    ] {
        assert_eq!(sample(&all, series), Some(0.0), "{series}: {metrics}");
    }
    assert_eq!(
        sample(&all, "cds_rotator_pickup_pending{client=\"app\"}"),
        Some(0.0)
    );
    assert!(
        sample(
            &all,
            "cds_rotator_cds_requests_total{method=\"POST\",status=\"201\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        all.iter().any(
            |(s, _)| s.starts_with("cds_rotator_step_duration_seconds_bucket{")
                && s.contains("step=\"verify\"")
        ),
        "{metrics}"
    );
    assert!(
        sample(
            &all,
            "cds_rotator_last_success_timestamp_seconds{client=\"app\"}"
        )
        .is_some_and(|t| t > 1.7e9)
    );

    send_signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let down = env.cli(&["health"], &[]).await;
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    let mut values = vec![ADMIN_SECRET.to_owned(), APP_SEEDED_SECRET.to_owned()];
    values.extend(env.value("app"));
    values.extend(env.value("web"));
    assert_no_secret(&format!("{metrics}{body}{}", text(&out)), &values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_is_refused_and_a_good_one_applies_at_once_by_edit_and_by_sighup() {
    let env = Env::start().await;
    let port = free_port();
    let only_app = env.daemon_policy(port, false);
    let both = env.daemon_policy(port, true);
    env.replace_policy(&only_app);
    let child = env
        .command(&["--log-format", "json"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    eventually30("/readyz 200", async || get(port, "/readyz").await.0 == 200).await;
    assert!(env.record("app").is_some());
    assert!(env.record("web").is_none(), "web is not in the policy yet");

    // A broken edit: refused, said on /readyz and in the metrics, nothing changes.
    env.replace_policy(&both.replace("  grace: 0s", "  grace: 0s\n  graec: 1h"));
    eventually30("the refusal on /readyz", async || {
        let (_, body) = get(port, "/readyz").await;
        body.contains("graec")
    })
    .await;
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 200, "the old policy keeps running: {body}");
    assert!(
        body.contains("policy.yaml:"),
        "the refusal names the place: {body}"
    );
    let (_, metrics) = get(port, "/metrics").await;
    assert_eq!(
        sample(&samples(&metrics), "cds_rotator_policy_reload_failed"),
        Some(1.0)
    );
    assert!(env.record("web").is_none());

    // Fixed: the new client is rotated at once, without waiting for its schedule.
    env.replace_policy(&both);
    eventually30("web rotated after the reload", async || {
        env.record("web").is_some()
    })
    .await;
    eventually30("the refusal cleared", async || {
        let (_, body) = get(port, "/readyz").await;
        body.contains("\"policy_reload_refused\":null")
    })
    .await;

    // By SIGHUP (the write in place may be seen by the watch too; either reloads).
    let app_writes = env.count("POST", "/Secrets");
    std::fs::write(env.policy_path(), &only_app).unwrap();
    send_signal(pid, "HUP");
    eventually30("web's gauges gone after the reload", async || {
        let (_, metrics) = get(port, "/metrics").await;
        !metrics.contains("cds_rotator_secret_expiration_timestamp_seconds{client=\"web\"}")
    })
    .await;

    send_signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within 10 s")
        .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(env.count("POST", "/Secrets"), app_writes, "{log}");
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("a log line is not JSON: {line}"));
    }
    assert!(log.contains("the changed policy was refused"), "{log}");
    assert!(log.contains("policy reloaded"), "{log}");
    assert!(log.contains("SIGHUP"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_port_stops_the_start_before_any_write() {
    let env = Env::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    env.replace_policy(&env.daemon_policy(port, true));
    let out = tokio::time::timeout(Duration::from_secs(30), env.cli(&[], &[]))
        .await
        .expect("exits");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("daemon.listen"), "{}", text(&out));
    assert_eq!(env.count("POST", "/Secrets"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_the_running_daemon_though_the_policy_on_disk_has_a_typo() {
    let env = Env::start().await;
    let port = free_port();
    let good = env.daemon_policy(port, true);
    env.replace_policy(&good);
    let child = env
        .command(&[], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    eventually30("/readyz 200", async || get(port, "/readyz").await.0 == 200).await;

    // A typo the running daemon refuses to reload.
    env.replace_policy(&good.replace("  grace: 0s", "  grace: 0s\n  graec: 1h"));
    eventually30("the refusal on /readyz", async || {
        get(port, "/readyz").await.1.contains("graec")
    })
    .await;
    let out = env.cli(&["health"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("alive"), "{}", text(&out));

    // Worse: the file no longer parses, and it names another port. The daemon still
    // serves where it started, and `health` asks there.
    let other = free_port();
    env.replace_policy(&format!(
        "{}\n  - [ unclosed\n",
        good.replace(&format!(":{port}"), &format!(":{other}"))
    ));
    let out = env.cli(&["health"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(get(port, "/healthz").await.0, 200);

    send_signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Stopped: what it published is gone, and `health` asks the policy's address (the
    // file is fixed first), where nothing answers.
    env.replace_policy(&good);
    let down = env.cli(&["health"], &[]).await;
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
}

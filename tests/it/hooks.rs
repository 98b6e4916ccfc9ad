//! Slow hooks hold no rotation: the real daemon against the CDS emulator, with a command
//! notifier that takes far longer than a pass. Alert events are sent in the background,
//! so the rotation that follows them completes while the hook still runs, and `/healthz`
//! stays green throughout; a stop abandons the hook after its grace.

use crate::support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{APP, Env, TENANT, eventually, free_port, get, send_signal, text};

/// Whether a process runs whose command line is `sleep 600.25` (the hook; an odd
/// number, so that no other test's program looks like it).
fn hook_runs() -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00600.25\x00"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hook_on_an_alert_holds_neither_the_rotation_nor_healthz() {
    let env = Env::start().await;
    // A hand-made secret that expires within rotate_before: the pass sends
    // `expiring_unmanaged` before it rotates.
    env.emulator.add_secret(
        TENANT,
        APP,
        "hand-made-expiring-value-0123456789",
        Some("made by hand"),
        Some(chrono::Utc::now() + chrono::Duration::days(5)),
        Some(true),
    );
    let seen = env.dir.path().join("seen");
    std::fs::create_dir(&seen).unwrap();
    let port = free_port();
    env.write_policy("", "");
    let mut policy = std::fs::read_to_string(env.policy_path()).unwrap();
    policy.truncate(policy.find("  - name: web").unwrap());
    let policy = policy
        .replacen(
            "  ops: { type: log }\n",
            &format!(
                "  ops: {{ type: log }}\n  slow: {{ type: command, program: /bin/sh, args: [\"-c\", \"cat > {}/event-$$.json; exec sleep 600.25\"], timeout: 10m }}\n",
                seen.display()
            ),
            1,
        )
        .replacen("    notify: [ops]\n", "    notify: [slow, ops]\n", 1)
        + &format!("daemon:\n  listen: 127.0.0.1:{port}\n");
    std::fs::write(env.policy_path(), policy).unwrap();

    let child = env
        .command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();

    // /healthz, asked all along: once it answers, it never says anything but 200.
    let polling = Arc::new(AtomicBool::new(true));
    let answers = Arc::new(AtomicUsize::new(0));
    let poller = tokio::spawn({
        let (polling, answers) = (Arc::clone(&polling), Arc::clone(&answers));
        async move {
            let mut bad = Vec::new();
            while polling.load(Ordering::Relaxed) {
                match get(port, "/healthz").await {
                    (0, _) => {}
                    (200, _) => {
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    other => bad.push(other),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bad
        }
    });

    // The alert went to the hook, which now sleeps for ten minutes ...
    eventually("the hook started", Duration::from_secs(60), async || {
        std::fs::read_dir(&seen).unwrap().next().is_some() && hook_runs()
    })
    .await;
    let event = std::fs::read_dir(&seen).unwrap().flatten().next().unwrap();
    let event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(event.path()).unwrap()).unwrap();
    assert_eq!(event["event"], "expiring_unmanaged", "{event}");
    // ... and the rotation completed meanwhile: published, and its value gets a token.
    eventually(
        "the rotation",
        Duration::from_secs(60),
        async || match env.value("app") {
            Some(value) => env.record("app").is_some() && env.gets_token(APP, &value).await,
            None => false,
        },
    )
    .await;
    assert!(hook_runs(), "the hook still runs");
    let (status, metrics) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("cds_rotator_rotations_total{client=\"app\",result=\"ok\"} 1"),
        "{metrics}"
    );
    // The hook's send is still under way: neither done nor failed.
    for result in ["ok", "failed"] {
        let series =
            format!("cds_rotator_notifications_total{{notifier=\"slow\",result=\"{result}\"}} 0");
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
    eventually(
        "more /healthz answers",
        Duration::from_secs(30),
        async || answers.load(Ordering::Relaxed) >= 10,
    )
    .await;
    polling.store(false, Ordering::Relaxed);
    let bad = poller.await.unwrap();
    assert!(bad.is_empty(), "/healthz said {bad:?}");

    // A stop does not wait out the hook: it is abandoned after the stop's grace.
    send_signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops without waiting out the hook's 10m timeout")
        .unwrap();
    let output = text(&out);
    assert_eq!(out.status.code(), Some(0), "{output}");
    assert!(
        output.contains("notifications still under way were abandoned"),
        "{output}"
    );
    // Abandoned, the hook's program was killed with the run.
    eventually("the hook killed", Duration::from_secs(10), async || {
        !hook_runs()
    })
    .await;
}

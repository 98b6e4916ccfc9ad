//! `--run-now --client NAME --revoke-old`: the emergency rotation for a leaked secret.
//! A new secret is verified and published, then every other secret the policy lets the
//! rotator delete goes at once — no grace, no pickup — and nothing when the rotation fails.

use crate::support;

use std::time::Duration;

use support::{ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env, assert_no_secret, text};

const GRACE_24H: &str = "    grace: 24h";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_old_deletes_every_other_managed_secret_at_once_and_unmanaged_only_when_handed_over()
{
    let env = Env::start().await;
    env.write_policy("", GRACE_24H);
    let mut values = vec![ADMIN_SECRET.to_owned(), APP_SEEDED_SECRET.to_owned()];
    // Two managed secrets inside their grace, plus the seeded unmanaged one.
    for args in [
        &["--run-now"][..],
        &["--run-now", "--force", "--client", "app"],
    ] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        values.extend(env.value("app"));
    }
    let before = env.ids(APP);
    assert_eq!(before.len(), 3, "{before:?}");
    let seeded = before[0];

    let out = env
        .cli(
            &[
                "--run-now",
                "--client",
                "app",
                "--revoke-old",
                "--log-format",
                "json",
            ],
            &[],
        )
        .await;
    let all = text(&out);
    // The unmanaged secret (perhaps the leaked one) still gets tokens: not a success.
    assert_eq!(out.status.code(), Some(4), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l
            == format!(
                "app: NOT REVOKED, STILL VALID: secret {seeded} (expires 2099-01-01T00:00:00Z, \"made by hand\"); they were not created by the rotator and retire_unmanaged is false: delete them in the CDS portal, or set retire_unmanaged: true for client app and run --revoke-old again"
            )),
        "{all}"
    );
    assert!(env.gets_token(APP, APP_SEEDED_SECRET).await);
    let new = env.record("app").expect("record").secret_id;
    values.extend(env.value("app"));
    assert_eq!(env.ids(APP), vec![seeded, new], "{all}");
    for leaked in &values[2..4] {
        assert!(
            !env.gets_token(APP, leaked).await,
            "a revoked value still works"
        );
    }
    assert!(env.gets_token(APP, &values[4]).await);
    assert!(all.contains("(revoked)"), "{all}");
    let retired: Vec<serde_json::Value> = all
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["event"] == "retired" || v["fields"]["event"] == "rotated")
        .collect();
    assert_eq!(retired.len(), 2, "{all}");
    assert!(
        retired.iter().all(|v| v["fields"]["reason"] == "emergency"),
        "{all}"
    );
    // Its event says it too: ids, descriptions and how to revoke them.
    let detail = retired
        .iter()
        .find(|v| v["fields"]["event"] == "retired")
        .and_then(|v| v["fields"]["detail"].as_str())
        .unwrap_or_default();
    assert!(
        detail.starts_with(&format!(
            "still valid, not revoked: {seeded} (unmanaged, expires 2099-01-01 00:00:00 UTC, \"made by hand\"); they were not created by the rotator"
        )),
        "{all}"
    );
    assert!(detail.contains("delete them in the CDS portal"), "{all}");

    // Handed over: the unmanaged secret goes too.
    env.write_policy("", &format!("{GRACE_24H}\n    retire_unmanaged: true"));
    let out = env
        .cli(&["--run-now", "--client", "app", "--revoke-old"], &[])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    values.extend(env.value("app"));
    let now = env.record("app").expect("record").secret_id;
    assert_eq!(env.ids(APP), vec![now]);
    assert!(!env.gets_token(APP, APP_SEEDED_SECRET).await);
    assert_no_secret(&format!("{all}{}", text(&out)), &values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_emergency_rotation_deletes_nothing() {
    let env = Env::start().await;
    env.write_policy("", GRACE_24H);
    let out = env.cli(&["--run-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = (env.ids(APP), env.value("app"), env.record("app"));

    env.emulator
        .set_token_propagation_delay(Duration::from_secs(3600));
    let out = env
        .cli(&["--run-now", "--client", "app", "--revoke-old"], &[])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(before, (env.ids(APP), env.value("app"), env.record("app")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_old_needs_run_now_and_exactly_one_client_and_changes_nothing_otherwise() {
    let env = Env::start().await;
    env.write_policy("", "");
    for args in [
        &["--run-now", "--revoke-old"][..],
        &[
            "--run-now",
            "--revoke-old",
            "--client",
            "app",
            "--client",
            "web",
        ],
        &["--revoke-old", "--client", "app"],
        &["--run-now", "--yes"],
    ] {
        let out = env.cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("--revoke-old"), "{}", text(&out));
    }
    assert_eq!(
        env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets"),
        0
    );
    assert!(env.record("app").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_secret_that_never_expires_is_announced_once_per_run() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.add_secret(
        support::TENANT,
        APP,
        "never-expiring-value-0123456789",
        Some("by hand, forever"),
        None,
        Some(false),
    );
    let out = env.cli(&["--run-now", "--log-format", "json"], &[]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let events: Vec<serde_json::Value> = all
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["event"] == "expiring_unmanaged")
        .collect();
    assert_eq!(events.len(), 1, "{all}");
    assert_eq!(events[0]["fields"]["client"], "app");
    assert!(
        events[0]["fields"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("never expires")),
        "{all}"
    );
    assert_no_secret(&all, &["never-expiring-value-0123456789".to_owned()]);
}

//! Rotations end to end, in process, against the CDS emulator over loopback HTTP.

use crate::support;

use cds_rotator::clock::{Clock, ManualClock};
use cds_rotator::domain::{Current, Fingerprint, StoreRecord};
use cds_rotator::emulator::Fault;
use cds_rotator::emulator::IdPolicy;
use cds_rotator::rotation::marker::Marker;
use cds_rotator::rotation::{ClientJob, DeleteReason, PassOptions, Step};
use cds_rotator::store::{SecretStore, StoreError};
use secrecy::SecretString;
use support::{APP, Env, HYBRID, ID_POLICIES, PolicyText, pass_of};

fn fault(method: &str, path: &str, status: u16) -> Fault {
    Fault {
        method: Some(method.to_owned()),
        path_contains: Some(path.to_owned()),
        status,
        retry_after: None,
        delay_ms: 0,
        times: 1,
        after_commit: false,
    }
}

#[tokio::test]
async fn a_first_pass_publishes_a_verified_expiring_secret_for_each_kind() {
    let env = Env::start().await;
    env.write_policy("", "");
    let reports = env.pass(&[], false).await;
    for r in &reports {
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(r.rotated.is_some());
    }
    for (name, id) in [("app", APP), ("web", HYBRID)] {
        let record = env.record(name).expect("record");
        let value = env.value(name).expect("value");
        assert_eq!(record.client_id, id);
        assert_eq!(
            record.fingerprint,
            Fingerprint::of(&SecretString::from(value.clone()))
        );
        let secret = env
            .emulator
            .secrets(support::TENANT, id)
            .into_iter()
            .find(|s| s.id == record.secret_id)
            .expect("published secret exists in CDS");
        assert_eq!(secret.expires, Some(true));
        let expiration = secret.expiration.expect("always expires");
        let days = (expiration - chrono::Utc::now()).num_days();
        assert!((89..=90).contains(&days), "{days}");
        assert!(
            secret
                .description
                .unwrap()
                .starts_with("cds-rotator managed; created=")
        );
    }
    // The hand-made secret of `app` is still there: it is unmanaged.
    assert_eq!(env.ids(APP).len(), 2);
}

#[tokio::test]
async fn a_second_pass_right_after_changes_nothing() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.pass(&[], false).await;
    let before = (env.value("app"), env.record("app"), env.ids(APP));
    let writes = env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets");
    let reports = env.pass(&[], false).await;
    assert!(
        reports
            .iter()
            .all(|r| !r.changed_anything() && r.error.is_none())
    );
    assert_eq!(before, (env.value("app"), env.record("app"), env.ids(APP)));
    assert_eq!(
        writes,
        env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets")
    );
}

#[tokio::test]
async fn a_forced_rotation_replaces_a_healthy_secret_and_retires_the_old_after_grace() {
    for ids in ID_POLICIES {
        let env = Env::start_with(ids).await;
        env.write_policy("", "");
        env.pass(&["app"], false).await;
        let first = env.record("app").unwrap();
        let reports = env.pass(&["app"], true).await;
        let second = env.record("app").unwrap();
        assert_ne!(second.secret_id, first.secret_id);
        assert_ne!(second.fingerprint, first.fingerprint);
        // grace is 0s: the next pass retires the superseded managed secret, not the
        // unmanaged one.
        assert!(reports[0].deleted.is_empty());
        let reports = env.pass(&["app"], false).await;
        assert_eq!(
            reports[0].deleted,
            vec![(first.secret_id, DeleteReason::Superseded)],
            "{ids:?}"
        );
        let mut expected = vec![1, second.secret_id];
        expected.sort();
        assert_eq!(env.ids(APP), expected);
    }
}

#[tokio::test]
async fn unmanaged_secrets_are_never_deleted_unless_the_policy_says_so() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.pass(&["app"], false).await;
    env.pass(&["app"], true).await;
    env.pass(&["app"], false).await;
    assert!(env.ids(APP).contains(&1), "hand-made secret 1 survives");

    env.write_policy("", "    retire_unmanaged: true");
    env.pass(&["app"], false).await;
    let current = env.record("app").unwrap().secret_id;
    assert_eq!(env.ids(APP), vec![current]);
}

#[tokio::test]
async fn a_full_client_fails_with_a_listing_and_sends_no_create() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.add_hand_made(APP, 9);
    let reports = env.pass(&["app"], false).await;
    let err = reports[0].error.as_ref().expect("fails");
    assert_eq!(err.step, Step::MakeRoom);
    let msg = err.to_string();
    assert!(msg.contains("already has 10 secrets"), "{msg}");
    assert!(msg.contains("1 (unmanaged"), "{msg}");
    // Nothing of the rotator's is current: retire_unmanaged would not help.
    assert!(!msg.contains("retire_unmanaged"), "{msg}");
    assert!(msg.contains("delete a secret you no longer use"), "{msg}");
    assert_eq!(env.count("POST", "/Secrets"), 0);
    assert_eq!(env.ids(APP).len(), 10);
    assert!(env.record("app").is_none());
}

#[tokio::test]
async fn a_full_client_with_a_current_secret_is_told_what_would_unblock_it() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.pass(&["app"], false).await;
    env.add_hand_made(APP, 8);
    let reports = env.pass(&["app"], true).await;
    let msg = reports[0].error.as_ref().expect("fails").to_string();
    assert!(msg.contains("set retire_unmanaged: true"), "{msg}");
}

#[tokio::test]
async fn a_lost_create_response_is_found_deleted_and_created_again() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.inject(Fault {
        after_commit: true,
        ..fault("POST", "/Secrets", 500)
    });
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    let record = env.record("app").unwrap();
    // Secret 2 was created but its answer lost: deleted. Secret 3 is the published one.
    assert_eq!(env.ids(APP), vec![1, record.secret_id]);
    assert_eq!(record.secret_id, 3);
    assert_eq!(env.count("POST", "/Secrets"), 2);
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.inject(Fault {
        retry_after: Some(1),
        times: 2,
        ..fault("GET", "/Secrets", 503)
    });
    env.emulator.inject(Fault {
        retry_after: Some(1),
        ..fault("POST", "/Secrets", 429)
    });
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert!(env.record("app").is_some());
    assert_eq!(env.ids(APP).len(), 2);
}

#[tokio::test]
async fn a_secret_that_never_gets_a_token_is_deleted_and_the_store_untouched() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator
        .set_token_propagation_delay(std::time::Duration::from_secs(3600));
    let reports = env.pass(&["app"], false).await;
    let err = reports[0].error.as_ref().expect("fails");
    assert_eq!(err.step, Step::Verify);
    assert_eq!(env.ids(APP), vec![1]);
    assert!(env.record("app").is_none() && env.value("app").is_none());
}

#[tokio::test]
async fn a_slow_to_propagate_secret_is_verified_with_retries() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator
        .set_token_propagation_delay(std::time::Duration::from_millis(1500));
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
}

/// A store whose reads work and whose writes fail (a full disk, a revoked permission);
/// `true`: failing so that it cannot tell whether the value landed.
struct UnwritableStore(std::sync::Arc<dyn SecretStore>, bool);

#[async_trait::async_trait]
impl SecretStore for UnwritableStore {
    fn location(&self, key: &str) -> String {
        self.0.location(key)
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        self.0.read_current(key).await
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        self.0.read_value(key).await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.0.probe().await
    }

    async fn publish(
        &self,
        key: &str,
        _value: &SecretString,
        _record: &StoreRecord,
    ) -> Result<(), StoreError> {
        if self.1 {
            return Err(StoreError::OutcomeUnknown {
                store: "local".into(),
                location: self.0.location(key),
                detail: "Input/output error".into(),
            });
        }
        Err(StoreError::Io {
            store: "local".into(),
            operation: "write",
            location: self.0.location(key),
            detail: "No space left on device".into(),
        })
    }
}

/// The wired job of `app`, publishing through a store that fails.
fn with_failing_store(wired: &cds_rotator::app::Wired, in_doubt: bool) -> ClientJob {
    let job = &wired.jobs[0];
    ClientJob {
        name: job.name.clone(),
        client: job.client.clone(),
        store: std::sync::Arc::new(UnwritableStore(job.store.clone(), in_doubt)),
        store_key: job.store_key.clone(),
        notifiers: job.notifiers.clone(),
        pickup: job.pickup.clone(),
        timing: job.timing.clone(),
        retire_unmanaged: job.retire_unmanaged,
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_written_leaves_no_secret_behind() {
    let env = Env::start().await;
    env.write_policy("", "");
    let wired = env.wired(&["app"]);
    let job = with_failing_store(&wired, false);
    let report = wired.reconciler.pass(&job, PassOptions::default()).await;
    let err = report.error.as_ref().expect("fails");
    assert_eq!(err.step, Step::Publish);
    assert!(err.to_string().contains("store local"), "{err}");
    assert_eq!(env.ids(APP), vec![1], "the new secret was deleted again");
    assert!(env.record("app").is_none());
    assert!(!env.secrets_dir().exists());
}

#[tokio::test]
async fn a_publish_in_doubt_keeps_the_new_secret_and_the_next_pass_sorts_it_out() {
    let env = Env::start().await;
    env.write_policy("", "");
    let wired = env.wired(&["app"]);
    let job = with_failing_store(&wired, true);
    let report = wired.reconciler.pass(&job, PassOptions::default()).await;
    let err = report.error.as_ref().expect("fails");
    assert_eq!(err.step, Step::Publish);
    assert!(err.to_string().contains("was kept"), "{err}");
    let kept = *env.ids(APP).last().unwrap();
    assert_eq!(env.ids(APP).len(), 2, "not deleted: readers may hold it");
    // The value did not land: the next pass keeps it as possibly in use, publishes a new
    // secret, and (grace 0s) the pass after retires it.
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    let reports = env.pass(&["app"], false).await;
    assert!(
        reports[0]
            .deleted
            .contains(&(kept, DeleteReason::Superseded))
    );
}

#[tokio::test]
async fn a_store_secret_deleted_in_cds_is_replaced_at_once() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.pass(&["app"], false).await;
    let gone = env.record("app").unwrap().secret_id;
    // Someone deletes the published secret by hand, through the API.
    let client = reqwest::Client::new();
    let token: serde_json::Value = client
        .post(format!("{}/identity/connect/token", env.emulator.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            support::ADMIN,
            support::ADMIN_SECRET
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status = client
        .delete(format!(
            "{}/api/v1/Tenants/{}/ClientCredentialClients/{APP}/Secrets/{gone}",
            env.emulator.url(),
            support::TENANT
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    assert_ne!(env.record("app").unwrap().secret_id, gone);
}

#[tokio::test]
async fn an_orphan_from_a_dead_pass_is_deleted_by_the_next_one() {
    for ids in ID_POLICIES {
        let env = Env::start_with(ids).await;
        env.write_policy("", "    orphan_grace: 10m");
        let clock = ManualClock::new(chrono::Utc::now());
        let wired = env.wired_at(&["app"], &clock);
        pass_of(&wired, false).await;
        let published = env.record("app").unwrap().secret_id;
        // An hour later a pass died after its create: a managed secret made after the
        // published one, whose value nobody was handed.
        clock.advance(chrono::Duration::hours(1));
        let marker = Marker {
            created: clock.now(),
            run: "dead.1".into(),
        };
        let orphan = env.emulator.add_secret(
            support::TENANT,
            APP,
            "value-nobody-holds",
            Some(&marker.description()),
            Some(chrono::Utc::now() + chrono::Duration::days(90)),
            Some(true),
        );
        // Within orphan_grace its create may still be in flight: kept.
        let reports = pass_of(&wired, false).await;
        assert!(reports[0].deleted.is_empty(), "{ids:?}");
        clock.advance(chrono::Duration::minutes(10));
        let reports = pass_of(&wired, false).await;
        assert_eq!(
            reports[0].deleted,
            vec![(orphan, DeleteReason::Orphan)],
            "{ids:?}"
        );
        assert_eq!(env.record("app").unwrap().secret_id, published);
        let mut expected = vec![1, published];
        expected.sort();
        assert_eq!(env.ids(APP), expected, "{ids:?}");
    }
}

/// What consumers hold must keep working until it is retired after grace, whatever
/// happened to the store's record: removed by hand, or the client renamed so that its
/// store key changed.
#[tokio::test]
async fn a_lost_record_or_a_renamed_client_never_deletes_the_value_consumers_hold() {
    for (ids, rename) in [
        (IdPolicy::Increasing, false),
        (IdPolicy::LowestFree, false),
        (IdPolicy::Increasing, true),
        (IdPolicy::LowestFree, true),
    ] {
        let env = Env::start_with(ids).await;
        env.write_policy("", "    grace: 24h\n    orphan_grace: 0s");
        let clock = ManualClock::new(chrono::Utc::now());
        pass_of(&env.wired_at(&["app"], &clock), false).await;
        let held = env.value("app").unwrap();
        let held_id = env.record("app").unwrap().secret_id;
        clock.advance(chrono::Duration::days(3));
        if rename {
            // The store key changes: the new key has no record.
            let policy =
                support::read(&env.policy_path()).replace("secret: app }", "secret: app-renamed }");
            std::fs::write(env.policy_path(), policy).unwrap();
        } else {
            std::fs::remove_file(env.secrets_dir().join("app.json")).unwrap();
        }
        let key = if rename { "app-renamed" } else { "app" };
        let wired = env.wired_at(&["app"], &clock);
        let reports = pass_of(&wired, false).await;
        let r = &reports[0];
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(
            r.deleted.is_empty(),
            "{ids:?} rename={rename}: {:?}",
            r.deleted
        );
        assert_eq!(r.plan.as_ref().unwrap().possibly_in_use, vec![held_id]);
        assert_eq!(r.unrecorded, !rename);
        assert!(r.rotated.is_some(), "a new secret is published");
        assert!(
            env.gets_token(APP, &held).await,
            "the held value still works"
        );
        // Inside grace: still kept, even with orphan_grace 0s.
        clock.advance(chrono::Duration::hours(23));
        let reports = pass_of(&wired, false).await;
        assert!(reports[0].deleted.is_empty(), "{:?}", reports[0].deleted);
        assert!(env.gets_token(APP, &held).await);
        // After grace: retired as superseded; the hand-made secret 1 stays.
        clock.advance(chrono::Duration::hours(1));
        let reports = pass_of(&wired, false).await;
        assert_eq!(
            reports[0].deleted,
            vec![(held_id, DeleteReason::Superseded)]
        );
        let current = env.record(key).unwrap().secret_id;
        let mut expected = vec![1, current];
        expected.sort();
        assert_eq!(env.ids(APP), expected);
        assert!(env.gets_token(APP, &env.value(key).unwrap()).await);
    }
}

/// CDS may hand out a deleted secret's id again. Forced rotations every 6 hours with a
/// 24h grace: every value ever published keeps working until 24h after the latest
/// publish, the current and the hand-made secret are never deleted, and once the
/// rotations stop, one grace later only the hand-made and the current secret are left.
#[tokio::test]
async fn forced_rotations_keep_every_value_working_through_its_grace_under_either_id_order() {
    for ids in ID_POLICIES {
        let env = Env::start_with(ids).await;
        env.write_policy("", "    grace: 24h\n    orphan_grace: 10m");
        let clock = ManualClock::new(chrono::Utc::now());
        let wired = env.wired_at(&["app"], &clock);
        let mut published = Vec::new();
        for step in 0..6 {
            let reports = pass_of(&wired, true).await;
            assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
            published.push(env.value("app").unwrap());
            let held = env.ids(APP);
            assert!(
                held.contains(&1),
                "{ids:?} step {step}: the hand-made secret"
            );
            assert!(held.contains(&env.record("app").unwrap().secret_id));
            assert_eq!(held.len(), 1 + published.len(), "{ids:?} step {step}");
            for value in &published {
                assert!(env.gets_token(APP, value).await, "{ids:?} step {step}");
            }
            clock.advance(chrono::Duration::hours(6));
        }
        // Just inside the grace of the last publish: nothing goes.
        clock.advance(chrono::Duration::hours(17));
        let reports = pass_of(&wired, false).await;
        assert!(reports[0].deleted.is_empty(), "{:?}", reports[0].deleted);
        for value in &published {
            assert!(env.gets_token(APP, value).await, "{ids:?} inside grace");
        }
        clock.advance(chrono::Duration::hours(1));
        let reports = pass_of(&wired, false).await;
        assert_eq!(reports[0].deleted.len(), 5, "{ids:?}");
        let current = env.record("app").unwrap().secret_id;
        let mut expected = vec![1, current];
        expected.sort();
        assert_eq!(env.ids(APP), expected, "{ids:?}");
        assert!(env.gets_token(APP, published.last().unwrap()).await);
    }
}

#[tokio::test]
async fn the_rotator_rotates_its_own_secret_and_keeps_working_with_the_new_one() {
    let env = Env::start().await;
    // The rotator's credential file is the store file of its own client.
    std::fs::create_dir_all(env.secrets_dir()).unwrap();
    let own = env.secrets_dir().join("admin");
    std::fs::write(&own, support::ADMIN_SECRET).unwrap();
    let admin = support::ADMIN;
    let policy = PolicyText::new(&env.emulator.url(), support::TENANT)
        .credential(&format!("client_id: {admin}"))
        .credential(&format!("client_secret_file: {}", own.display()))
        .lock_dir(&env.dir.path().join("locks").display().to_string())
        .store(&format!(
            "local: {{ type: file, dir: {} }}",
            env.secrets_dir().display()
        ))
        .default("grace: 0s")
        .default("verify_timeout: 5s")
        .client(&format!(
            "  - name: admin\n    client_id: {admin}\n    store: {{ name: local, secret: admin }}\n    retire_unmanaged: true"
        ));
    env.write(&policy);
    let reports = env.pass(&[], false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    // Next pass: grace is over, the seeded (unmanaged) admin secret is retired; the
    // rotator authenticates with the new secret it published.
    let reports = env.pass(&[], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert_eq!(reports[0].deleted, vec![(1, DeleteReason::Superseded)]);
    let current = env.record("admin").unwrap().secret_id;
    assert_eq!(env.ids(support::ADMIN), vec![current]);
    let reports = env.pass(&[], true).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_call_repeated() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.emulator.inject(fault("GET", "/Secrets", 401));
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    // The rotator's first token, its renewal after the 401, and the new secret's check.
    assert_eq!(env.count("POST", "/identity/connect/token"), 3);
}

#[tokio::test]
async fn lists_are_read_page_by_page() {
    let env = Env::start().await;
    env.write_policy("", "");
    for i in 0..150 {
        env.emulator.add_secret(
            support::TENANT,
            APP,
            &format!("v{i}"),
            None,
            Some(chrono::Utc::now() + chrono::Duration::days(9)),
            Some(true),
        );
    }
    let reports = env.pass(&["app"], false).await;
    assert_eq!(reports[0].secrets.len(), 151);
    assert_eq!(env.count("GET", &format!("{APP}/Secrets")), 2);
}

#[tokio::test]
async fn a_create_whose_answer_never_comes_is_recognised_not_reposted_blindly() {
    let env = Env::start().await;
    env.write_policy("", "");
    // The create is carried out but the answer takes longer than request_timeout (2s).
    env.emulator.inject(Fault {
        delay_ms: 3_000,
        after_commit: true,
        ..fault("POST", "/Secrets", 0)
    });
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    let record = env.record("app").unwrap();
    // Secret 2: carried out, answer lost, found by its run id and deleted. Secret 3: published.
    assert_eq!(env.ids(APP), vec![1, record.secret_id]);
    assert_eq!(record.secret_id, 3);
}

#[tokio::test]
async fn an_unreachable_cds_fails_every_client_clearly_and_writes_nothing() {
    let env = Env::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    env.write_policy_at(&format!("http://{dead}"), "", "");
    let reports = env.pass(&[], false).await;
    for r in &reports {
        let err = r.error.as_ref().expect("fails").to_string();
        assert!(err.contains("no answer from CDS"), "{err}");
        assert!(err.contains("step observe"), "{err}");
    }
    assert!(!env.secrets_dir().exists());
}

#[tokio::test]
async fn a_regional_url_gets_an_error_that_names_the_primary_region() {
    let seed = support::seed_yaml().replace("region: primary", "region: regional");
    let emulator = cds_rotator::emulator::Emulator::start(
        ([127, 0, 0, 1], 0).into(),
        cds_rotator::emulator::Seed::from_yaml(&seed).unwrap(),
    )
    .await
    .unwrap();
    let env = Env::start().await;
    env.write_policy_at(&emulator.url(), "", "");
    let reports = env.pass(&["app"], false).await;
    let err = reports[0].error.as_ref().expect("fails").to_string();
    assert!(err.contains("HTTP 405"), "{err}");
    assert!(err.contains("uswe.datahub.connect.aveva.com"), "{err}");
    assert!(err.contains("OperationId"), "{err}");
}

#[tokio::test]
async fn a_store_record_of_another_client_stops_the_pass_before_any_change() {
    let env = Env::start().await;
    env.write_policy("", "");
    env.pass(&[], false).await;
    // Copy web's record over app's: app's store now names another client.
    let web_value = env.value("web").unwrap();
    std::fs::write(env.secrets_dir().join("app"), web_value).unwrap();
    std::fs::copy(
        env.secrets_dir().join("web.json"),
        env.secrets_dir().join("app.json"),
    )
    .unwrap();
    let before = env.ids(APP);
    let reports = env.pass(&["app"], true).await;
    let err = reports[0].error.as_ref().expect("fails").to_string();
    assert!(
        err.contains(&format!("holds a record of client {HYBRID}")),
        "{err}"
    );
    assert_eq!(env.ids(APP), before);
}

#[tokio::test]
async fn a_sidecar_rotates_its_own_client_with_the_self_role() {
    let env = Env::start().await;
    std::fs::create_dir_all(env.secrets_dir()).unwrap();
    let own = env.secrets_dir().join("app");
    std::fs::write(&own, support::APP_SEEDED_SECRET).unwrap();
    let policy = PolicyText::new(&env.emulator.url(), support::TENANT)
        .credential(&format!("client_id: {APP}"))
        .credential(&format!("client_secret_file: {}", own.display()))
        .lock_dir(&env.dir.path().join("locks").display().to_string())
        .store(&format!(
            "shared: {{ type: file, dir: {} }}",
            env.secrets_dir().display()
        ))
        .default("grace: 0s")
        .default("verify_timeout: 5s")
        .client(&format!(
            "  - name: app\n    client_id: {APP}\n    store: {{ name: shared, secret: app }}\n    retire_unmanaged: true"
        ));
    env.write(&policy);
    for force in [false, false, true, false] {
        let reports = env.pass(&[], force).await;
        assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    }
    let current = env.record("app").unwrap().secret_id;
    assert_eq!(env.ids(APP), vec![current]);
}

/// A year of daily passes on a hand-moved clock: every day the store's secret works and
/// is not expired (I1), the client never holds more than 10 secrets (I5), every secret
/// the rotator made expires (I6), and old secrets go once their grace period is over.
#[tokio::test]
async fn a_year_of_daily_passes_keeps_every_invariant() {
    for ids in ID_POLICIES {
        a_year_of_daily_passes(ids).await;
    }
}

async fn a_year_of_daily_passes(ids: IdPolicy) {
    let env = Env::start_with(ids).await;
    env.write_policy("", "    grace: 24h\n    retire_unmanaged: true");
    let clock = ManualClock::new(chrono::Utc::now());
    let wired = env.wired_at(&["app"], &clock);
    let mut rotations = 0;
    let mut max_held = 0;
    for _day in 0..365 {
        let reports = wired
            .reconciler
            .run_all(&wired.jobs, 1, PassOptions::default())
            .await;
        let r = &reports[0];
        assert!(r.error.is_none(), "{:?}", r.error);
        rotations += usize::from(r.rotated.is_some());
        let now = clock.now();
        let record = env.record("app").expect("always published");
        let secrets = env.emulator.secrets(support::TENANT, APP);
        max_held = max_held.max(secrets.len());
        let current = secrets
            .iter()
            .find(|s| s.id == record.secret_id)
            .expect("I1: the store's secret exists");
        assert!(current.expiration.unwrap() > now, "I1: not expired");
        assert!(secrets.len() <= 10, "I5");
        for s in &secrets {
            assert!(s.expiration.is_some() && s.expires != Some(false), "I6");
        }
        clock.advance(chrono::Duration::days(1));
    }
    // lifetime 90d, rotate_before 30d: a rotation every 60 days, the first on day 0.
    assert_eq!(rotations, 7);
    // At most the current secret and the one it replaced (for one day) at once.
    assert_eq!(max_held, 2);
}

#[tokio::test]
async fn a_create_answered_503_is_looked_for_before_it_is_sent_again() {
    let env = Env::start().await;
    env.write_policy("", "");
    // The create is carried out, then 503 + Retry-After: the rotator must not re-post
    // blindly; it finds its secret, deletes it (value unknown) and creates once more.
    env.emulator.inject(Fault {
        after_commit: true,
        retry_after: Some(1),
        ..fault("POST", "/Secrets", 503)
    });
    let reports = env.pass(&["app"], false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    let record = env.record("app").unwrap();
    assert_eq!(env.ids(APP), vec![1, record.secret_id]);
    assert_eq!(record.secret_id, 3);
}

/// The schedule is the rotation window: between windows a due rotation waits (the
/// daemon's start pass, follow-ups); at the window, or with `--run-now`, it happens.
#[tokio::test]
async fn a_due_rotation_waits_for_the_window_unless_waiting_is_unsafe() {
    use cds_rotator::rotation::RotateReason;

    let env = Env::start().await;
    // Windows at 03:00 UTC daily; rotate 30d before expiry of a 90d secret.
    env.write_policy("  schedule: \"0 0 3 * * *\"", "");
    let start = chrono::Utc::now();
    let clock = ManualClock::new(start);
    let wired = env.wired_at(&["app"], &clock);
    let between = PassOptions {
        in_window: false,
        ..PassOptions::default()
    };
    // No record yet: waiting would leave consumers with nothing, so it rotates now.
    let report = wired.reconciler.pass(&wired.jobs[0], between).await;
    assert!(report.rotated.is_some(), "{:?}", report.plan);
    let first = env.record("app").unwrap();

    // 61 days later the secret is due (expires in 29 days) but can wait for 03:00.
    clock.advance(chrono::Duration::days(61));
    let report = wired.reconciler.pass(&wired.jobs[0], between).await;
    let plan = report.plan.unwrap();
    assert!(report.rotated.is_none());
    let (reason, at) = plan.deferred.expect("deferred to the window");
    assert!(matches!(reason, RotateReason::ExpiresSoon(_)));
    assert_eq!(at.format("%H:%M:%S").to_string(), "03:00:00");
    assert!(at > clock.now() && at - clock.now() <= chrono::Duration::days(1));
    assert_eq!(env.record("app").unwrap(), first);

    // In the window (the schedule fired, or --run-now) it rotates.
    let report = wired
        .reconciler
        .pass(&wired.jobs[0], PassOptions::default())
        .await;
    assert!(report.rotated.is_some(), "{:?}", report.error);

    // A secret that would expire before the next window is rotated between windows.
    clock.advance(chrono::Duration::days(90) - chrono::Duration::minutes(1));
    let report = wired.reconciler.pass(&wired.jobs[0], between).await;
    assert!(report.rotated.is_some(), "{:?}", report.plan);
}

/// A store whose publish waits until `gate` is opened.
struct GatedStore(
    std::sync::Arc<dyn SecretStore>,
    std::sync::Arc<tokio::sync::Notify>,
);

#[async_trait::async_trait]
impl SecretStore for GatedStore {
    fn location(&self, key: &str) -> String {
        self.0.location(key)
    }

    async fn read_current(&self, key: &str) -> Result<Current, StoreError> {
        self.0.read_current(key).await
    }

    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        self.0.read_value(key).await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.0.probe().await
    }

    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        self.1.notified().await;
        self.0.publish(key, value, record).await
    }
}

#[tokio::test]
async fn a_pass_writing_to_its_store_holds_up_no_other_client_at_concurrency_one() {
    let env = Env::start().await;
    env.write_policy("", "");
    let wired = env.wired(&["app", "web"]);
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let job = |name: &str| {
        wired
            .jobs
            .iter()
            .find(|j| j.name == name)
            .expect("wired")
            .clone()
    };
    let app = job("app");
    let app = std::sync::Arc::new(ClientJob {
        name: app.name.clone(),
        client: app.client.clone(),
        store: std::sync::Arc::new(GatedStore(app.store.clone(), gate.clone())),
        store_key: app.store_key.clone(),
        notifiers: app.notifiers.clone(),
        pickup: app.pickup.clone(),
        timing: app.timing.clone(),
        retire_unmanaged: app.retire_unmanaged,
    });
    // At concurrency 1, app first: web's pass can only run while app's publish waits
    // (a store write holds no CDS request), and app's publish waits until web has
    // published.
    let options = PassOptions::default();
    let run = wired
        .reconciler
        .run_each(vec![(app, options), (job("web"), options)], 1);
    let open = async {
        support::wait_until("web's record", || env.record("web").is_some()).await;
        gate.notify_one();
    };
    let (reports, ()) = tokio::join!(run, open);
    for report in reports {
        let report = report.expect("no pass panicked");
        assert!(report.error.is_none(), "{:?}", report.error);
        assert!(report.rotated.is_some(), "{}", report.client);
    }
    assert!(env.record("app").is_some());
}

//! The azure_key_vault store against the conformance suite (support/conformance.rs) and its
//! own rules, driving the official Azure crates against an HTTPS fake of the Key Vault
//! secrets API on loopback (support/azure.rs).

use crate::support;
use crate::support::azure;
use crate::support::conformance;

use std::sync::Arc;

use cds_rotator::domain::Current;
use cds_rotator::store::azure_key_vault::AzureKeyVaultStore;
use cds_rotator::store::{SecretStore, StoreError};
use secrecy::SecretString;

fn store(fake: &azure::FakeVault) -> AzureKeyVaultStore {
    // The fake is at 127.0.0.1, not under the challenge's vault.azure.net.
    AzureKeyVaultStore::with_credential(
        "kv",
        fake.url.clone(),
        Arc::new(azure::FixedToken),
        fake.http_client(),
        false,
    )
}

#[tokio::test]
async fn the_azure_key_vault_store_conforms() {
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    conformance::publish_read_replace(&store, "cds-app", || fake.current_value("cds-app")).await;
    assert_eq!(
        store.location("cds-app"),
        format!("{}/secrets/cds-app", fake.url)
    );
    let state = fake.state.lock().unwrap();
    // The SDK met the bearer challenge first, then sent its token.
    assert_eq!(
        state.requests[..2],
        ["GET /secrets/cds-app 401", "GET /secrets/cds-app"]
    );
    assert!(
        state.requests[2..].iter().all(|r| !r.ends_with("401")),
        "{:?}",
        state.requests
    );
    assert_eq!(state.secrets["cds-app"].len(), 2, "one version per publish");
}

#[tokio::test]
async fn the_tags_and_expiry_round_trip() {
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    let v = conformance::value("v");
    let record = conformance::record(7, &v);
    store
        .publish("app", &SecretString::from(v.clone()), &record)
        .await
        .unwrap();
    let held = fake.current("app").unwrap();
    assert_eq!(held.value, v, "the value alone");
    assert_eq!(held.content_type.as_deref(), Some("text/plain"));
    let tags = held.tags.unwrap();
    assert_eq!(tags["client_id"], record.client_id);
    assert_eq!(tags["tenant_id"], record.tenant_id);
    assert_eq!(tags["secret_id"], "7");
    assert_eq!(tags["fingerprint"], record.fingerprint.as_str());
    assert_eq!(tags["published_at"], record.published_at.to_rfc3339());
    assert_eq!(tags.len(), 5);
    assert_eq!(held.attributes["exp"], record.expiration.timestamp());
    assert_eq!(
        store.read_current("app").await.unwrap(),
        Current::Published(record)
    );
}

#[tokio::test]
async fn a_value_without_our_tags_is_unrecorded() {
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    fake.put_by_hand("app", "set-in-the-portal", None);
    assert_eq!(
        store.read_current("app").await.unwrap(),
        Current::Unrecorded
    );
    let tags = [("owner".to_owned(), "team-a".to_owned())].into();
    fake.put_by_hand("app", "set-in-the-portal", Some(tags));
    assert_eq!(
        store.read_current("app").await.unwrap(),
        Current::Unrecorded
    );
}

#[tokio::test]
async fn a_value_changed_under_its_tags_is_corrupt() {
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    let v = conformance::value("v");
    store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .unwrap();
    let tags = fake.current("app").unwrap().tags;
    fake.put_by_hand("app", "changed-by-hand", tags);
    let err = store.read_current("app").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    conformance::names_the_store_without_values(&err, "kv", &[&v, "changed-by-hand"]);
}

#[tokio::test]
async fn a_forbidden_vault_names_the_store_and_the_role() {
    let fake = azure::FakeVault::start().await;
    fake.state.lock().unwrap().forbidden = true;
    let store = store(&fake);
    let v = conformance::value("v");
    let err = store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Io { .. }), "{text}");
    assert!(text.contains("store kv"), "{text}");
    assert!(text.contains("/secrets/app"), "{text}");
    assert!(text.contains("Forbidden") && text.contains("403"), "{text}");
    assert!(text.contains("Key Vault Secrets Officer"), "{text}");
    conformance::names_the_store_without_values(&err, "kv", &[&v]);
    let err = store.probe().await.unwrap_err().to_string();
    assert!(err.contains("Key Vault Secrets Officer"), "{err}");
}

#[tokio::test]
async fn a_stopped_vault_gives_an_error_naming_the_store() {
    let fake = azure::FakeVault::start().await;
    let http = fake.http_client();
    let url = fake.stop().await;
    let store =
        AzureKeyVaultStore::with_credential("kv", url, Arc::new(azure::FixedToken), http, false);
    let v = conformance::value("v");
    let err = store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .unwrap_err();
    conformance::names_the_store_without_values(&err, "kv", &[&v]);
    let err = store.read_current("app").await.unwrap_err();
    conformance::names_the_store_without_values(&err, "kv", &[&v]);
    assert!(err.to_string().contains("reachable"), "{err}");
}

#[tokio::test]
async fn the_azure_key_vault_store_conforms_under_faults() {
    let fake = azure::FakeVault::start().await;
    let proxy = fake.fault_proxy().await;
    let store = AzureKeyVaultStore::with_credential(
        "kv",
        proxy.url.clone(),
        Arc::new(azure::FixedToken),
        fake.http_client(),
        false,
    );
    let behind = conformance::Behind {
        store: &store,
        name: "kv",
        proxy: &proxy,
        write: "PUT /secrets/cds-app",
    };
    conformance::faults(&behind, "cds-app", || fake.current_value("cds-app")).await;
}

#[tokio::test]
async fn a_lost_answer_after_the_write_landed_is_a_success() {
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    let v = conformance::value("v");
    let record = conformance::record(2, &v);
    // Every attempt (the SDK retries a cut answer) lands and loses its answer.
    fake.state.lock().unwrap().lose_put_answers = 10;
    store
        .publish("app", &SecretString::from(v.clone()), &record)
        .await
        .expect("read back shows the value landed");
    {
        let state = fake.state.lock().unwrap();
        assert!(state.lose_put_answers < 10, "the answer was cut");
        // The store read the current version back after the cut answers.
        assert_eq!(state.requests.last().unwrap(), "GET /secrets/app");
    }
    assert_eq!(fake.current_value("app").await.as_deref(), Some(v.as_str()));
    assert_eq!(
        store.read_current("app").await.unwrap(),
        Current::Published(record)
    );
}

#[tokio::test]
async fn a_failed_write_that_the_read_back_does_not_show_is_in_doubt() {
    // Key Vault has no idempotency token and no conditional write: a set that got no
    // good answer may still land, whatever a read-back shows.
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    let old = conformance::value("old");
    store
        .publish(
            "app",
            &SecretString::from(old.clone()),
            &conformance::record(2, &old),
        )
        .await
        .unwrap();
    fake.state.lock().unwrap().fail_puts = 10;
    let v = conformance::value("v");
    let err = store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(3, &v),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutcomeUnknown { .. }), "{err}");
    assert!(err.to_string().contains("may still land"), "{err}");
    assert!(err.to_string().contains("InternalServerError"), "{err}");
    conformance::names_the_store_without_values(&err, "kv", &[&v, &old]);
    assert_eq!(
        fake.current_value("app").await.as_deref(),
        Some(old.as_str())
    );
}

#[tokio::test]
async fn a_lost_answer_that_cannot_be_read_back_is_outcome_unknown() {
    let fake = azure::FakeVault::start().await;
    let store = store(&fake);
    {
        let mut state = fake.state.lock().unwrap();
        state.lose_put_answers = 10;
        state.cut_gets = true;
    }
    let v = conformance::value("v");
    let err = store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutcomeUnknown { .. }), "{err}");
    conformance::names_the_store_without_values(&err, "kv", &[&v]);
}

/// The `app` client of `env`, publishing to `cds-app` in Key Vault at `url` (the fake,
/// or a proxy in front of it).
fn wired_into_key_vault(
    env: &support::Env,
    fake: &azure::FakeVault,
    url: &str,
) -> cds_rotator::app::Wired {
    let path = env.write_policy_on_store(
        &format!("kv: {{ type: azure_key_vault, vault_url: {url} }}"),
        "{ name: kv, secret: cds-app }",
    );
    let policy = cds_rotator::policy::Policy::load(&path).expect("policy");
    let store = AzureKeyVaultStore::with_credential(
        "kv",
        url.to_owned(),
        Arc::new(azure::FixedToken),
        fake.http_client(),
        false,
    );
    let options = cds_rotator::app::Options {
        only: vec!["app".to_owned()],
        stores: Some(Box::new(move |stores| {
            stores.insert("kv".to_owned(), Arc::new(store));
        })),
        ..cds_rotator::app::Options::default()
    };
    cds_rotator::app::wire(&policy, options).unwrap()
}

/// A set delayed in the network (the fault proxy holds it, the rotator hears nothing, a
/// read-back shows nothing new) lands after the pass: the new CDS secret was kept in
/// doubt, so what Key Vault then holds still works, and later passes keep it.
#[tokio::test]
async fn a_set_whose_answer_is_lost_keeps_the_new_secret_in_doubt_and_its_late_landing_works() {
    let fake = azure::FakeVault::start().await;
    let proxy = fake.fault_proxy().await;
    let env = support::Env::start().await;
    let wired = wired_into_key_vault(&env, &fake, &proxy.url);
    proxy.on(
        "PUT /secrets/cds-app",
        support::proxy::Fault::Hold,
        usize::MAX,
    );
    let reports = support::pass_of(&wired, false).await;
    let err = reports[0].error.as_ref().expect("the publish is in doubt");
    assert_eq!(err.step, cds_rotator::rotation::Step::Publish);
    assert!(err.to_string().contains("was kept"), "{err}");
    assert!(fake.current("cds-app").is_none(), "held in the network");
    let kept = *env.ids(support::APP).last().unwrap();
    assert_eq!(env.ids(support::APP).len(), 2, "kept: {err}");
    // A later pass, while the set may still land, does not delete it either.
    let _ = support::pass_of(&wired, false).await;
    assert!(env.ids(support::APP).contains(&kept));
    // The delayed set lands: Key Vault holds the kept secret, which still works.
    proxy.clear();
    let statuses = proxy.deliver_held().await;
    assert!(statuses.contains(&200), "{statuses:?}");
    let held = fake.current("cds-app").expect("landed late");
    assert!(env.gets_token(support::APP, &held.value).await);
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    let held = fake.current("cds-app").expect("still there");
    assert!(env.gets_token(support::APP, &held.value).await);
}

/// A whole pass through the reconciler: the CDS emulator creates the secret, the official
/// Azure crates publish it to the Key Vault fake; a second pass changes nothing. (The
/// binary cannot be pointed at the fake: it would ask Entra ID for a token.)
#[tokio::test]
async fn a_pass_rotates_a_client_into_key_vault_and_a_second_changes_nothing() {
    let fake = azure::FakeVault::start().await;
    let env = support::Env::start().await;
    let path = env.write_policy_on_store(
        &format!("kv: {{ type: azure_key_vault, vault_url: {} }}", fake.url),
        "{ name: kv, secret: cds-app }",
    );
    let policy = cds_rotator::policy::Policy::load(&path).expect("policy");
    let store = store(&fake);
    let options = cds_rotator::app::Options {
        only: vec!["app".to_owned()],
        stores: Some(Box::new(move |stores| {
            stores.insert("kv".to_owned(), Arc::new(store));
        })),
        ..cds_rotator::app::Options::default()
    };
    let wired = cds_rotator::app::wire(&policy, options).unwrap();
    let reports = support::pass_of(&wired, false).await;
    let rotated = reports[0].rotated.as_ref().expect("rotated");
    let held = fake.current("cds-app").expect("published to Key Vault");
    assert!(env.gets_token(support::APP, &held.value).await);
    assert_eq!(
        held.tags.unwrap()["secret_id"],
        rotated.secret_id.to_string()
    );
    let versions = fake.state.lock().unwrap().secrets["cds-app"].len();
    let reports = support::pass_of(&wired, false).await;
    assert!(!reports[0].changed_anything(), "{:?}", reports[0].plan);
    assert_eq!(
        fake.state.lock().unwrap().secrets["cds-app"].len(),
        versions
    );
}

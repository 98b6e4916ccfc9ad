//! The AWS stores (aws_secrets_manager, kms_file) against the conformance suite
//! (support/conformance.rs) and their own rules, on a moto server on loopback (support/moto).

use crate::support;
use crate::support::conformance;
use crate::support::moto;

use support::proxy::{Fault, FaultProxy};

use cds_rotator::domain::Current;
use cds_rotator::store::aws_secrets_manager::SecretsManagerStore;
use cds_rotator::store::kms_file::KmsFileStore;
use cds_rotator::store::{SecretStore, StoreError};
use secrecy::SecretString;

/// The client and tenant of `conformance::record`.
const CLIENT: &str = "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0";
const TENANT: &str = "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f";

fn secrets_manager(moto: &moto::Moto) -> SecretsManagerStore {
    SecretsManagerStore::with_sdk_config("aws", moto.target(), None, moto.sdk_config())
}

fn kms_file(moto: &moto::Moto, dir: &std::path::Path, key_id: &str) -> KmsFileStore {
    KmsFileStore::new("sealed", dir, key_id, moto.target())
        .with_sdk_config(moto.sdk_config())
        .for_secret("app", CLIENT, TENANT)
}

#[tokio::test]
async fn the_aws_secrets_manager_store_conforms() {
    let moto = moto::Moto::start().await;
    let store = secrets_manager(&moto);
    conformance::publish_read_replace(&store, "cds/app", || {
        moto.secrets_manager_value("cds/app", "AWSCURRENT")
    })
    .await;
    assert_eq!(
        store.location("cds/app"),
        "aws secretsmanager eu-west-1/cds/app"
    );
}

#[tokio::test]
async fn the_kms_file_store_conforms() {
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sealed");
    let store = kms_file(&moto, &dir, "alias/cds");
    let path = dir.join("app");
    conformance::publish_read_replace(&store, "app", || moto.kms_file_value(&path, CLIENT, TENANT))
        .await;
    // The file holds ciphertext only, 0600 in a 0700 directory like the file store's.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("client_secret") && !text.contains("second-"));
}

#[tokio::test]
async fn a_kms_file_sealed_for_another_client_does_not_read() {
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let tmp = tempfile::tempdir().unwrap();
    let store = kms_file(&moto, tmp.path(), "alias/cds");
    let v = conformance::value("v");
    store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .unwrap();
    let other = KmsFileStore::new("sealed", tmp.path(), "alias/cds", moto.target())
        .with_sdk_config(moto.sdk_config())
        .for_secret("app", "1b0c1d2e-3f40-4152-6374-8596a7b8c9d0", TENANT);
    let err = other.read_current("app").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    conformance::names_the_store_without_values(&err, "sealed", &[&v]);
}

#[tokio::test]
async fn secrets_manager_keeps_the_previous_value_as_awsprevious() {
    let moto = moto::Moto::start().await;
    let store = secrets_manager(&moto);
    let (a, b) = (conformance::value("a"), conformance::value("b"));
    for (id, v) in [(2, &a), (3, &b)] {
        store
            .publish(
                "cds/app",
                &SecretString::from(v.clone()),
                &conformance::record(id, v),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSCURRENT").await,
        Some(b.clone())
    );
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSPREVIOUS").await,
        Some(a.clone())
    );
}

#[tokio::test]
async fn a_retried_secrets_manager_publish_is_applied_once() {
    let moto = moto::Moto::start().await;
    let store = secrets_manager(&moto);
    let (a, b) = (conformance::value("a"), conformance::value("b"));
    let (ra, rb) = (conformance::record(2, &a), conformance::record(3, &b));
    store
        .publish("cds/app", &SecretString::from(a.clone()), &ra)
        .await
        .unwrap();
    // The same rotation twice (its answer lost, say): one version, same token.
    for _ in 0..2 {
        store
            .publish("cds/app", &SecretString::from(b.clone()), &rb)
            .await
            .unwrap();
    }
    let versions = moto
        .secrets_manager()
        .list_secret_version_ids()
        .secret_id("cds/app")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2, "one version per rotation");
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSPREVIOUS").await,
        Some(a)
    );
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(rb)
    );
}

#[tokio::test]
async fn a_secrets_manager_value_set_by_hand_is_unrecorded() {
    let moto = moto::Moto::start().await;
    moto.secrets_manager()
        .create_secret()
        .name("cds/app")
        .secret_string("typed-by-hand")
        .send()
        .await
        .unwrap();
    let store = secrets_manager(&moto);
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Unrecorded
    );
}

#[tokio::test]
async fn a_stopped_aws_server_gives_errors_that_name_the_store_and_no_value() {
    let mut moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let tmp = tempfile::tempdir().unwrap();
    let sm = secrets_manager(&moto);
    let sealed = kms_file(&moto, tmp.path(), "alias/cds");
    let v = conformance::value("v");
    for store in [&sm as &dyn SecretStore, &sealed] {
        store
            .publish(
                "app",
                &SecretString::from(v.clone()),
                &conformance::record(2, &v),
            )
            .await
            .unwrap();
    }
    moto.stop();
    let w = conformance::value("w");
    for (store, name) in [(&sm as &dyn SecretStore, "aws"), (&sealed, "sealed")] {
        let err = store.read_current("app").await.unwrap_err();
        conformance::names_the_store_without_values(&err, name, &[&v, &w]);
        assert!(err.to_string().contains("reachable"), "{err}");
        let err = store
            .publish(
                "app",
                &SecretString::from(w.clone()),
                &conformance::record(3, &w),
            )
            .await
            .unwrap_err();
        conformance::names_the_store_without_values(&err, name, &[&v, &w]);
    }
    // The file was never touched: KMS refused to seal, nothing was written.
    assert!(std::fs::read_to_string(tmp.path().join("app")).is_ok());
}

#[tokio::test]
async fn an_unknown_kms_key_is_an_error_naming_the_key_and_the_store() {
    let moto = moto::Moto::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = kms_file(&moto, tmp.path(), "alias/nope");
    let v = conformance::value("v");
    let err = store
        .publish(
            "app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .unwrap_err();
    conformance::names_the_store_without_values(&err, "sealed", &[&v]);
    let text = err.to_string();
    assert!(text.contains("alias/nope"), "{text}");
    assert!(text.contains("NotFoundException"), "{text}");
    assert!(!tmp.path().join("app").exists());
    let err = store.probe().await.unwrap_err().to_string();
    assert!(
        err.contains("alias/nope") && err.contains("sealed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_put_whose_answer_is_lost_but_landed_is_a_success() {
    let moto = moto::Moto::start().await;
    let (store, proxy) = behind_a_fault_proxy(&moto).await;
    let (a, b) = (conformance::value("a"), conformance::value("b"));
    store
        .publish(
            "cds/app",
            &SecretString::from(a.clone()),
            &conformance::record(2, &a),
        )
        .await
        .unwrap();
    proxy.on(PUT, Fault::DropAnswer, usize::MAX);
    let rb = conformance::record(3, &b);
    store
        .publish("cds/app", &SecretString::from(b.clone()), &rb)
        .await
        .expect("the value landed: reading back shows it");
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSCURRENT").await,
        Some(b)
    );
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSPREVIOUS").await,
        Some(a)
    );
}

#[tokio::test]
async fn a_put_that_gets_no_answer_is_in_doubt_and_the_old_value_stays() {
    // The put may be delayed in the network: a read-back that shows the old value proves
    // nothing, so this is in doubt, never a failure (which would delete the new secret).
    let moto = moto::Moto::start().await;
    let (store, proxy) = behind_a_fault_proxy(&moto).await;
    let (a, b) = (conformance::value("a"), conformance::value("b"));
    let ra = conformance::record(2, &a);
    store
        .publish("cds/app", &SecretString::from(a.clone()), &ra)
        .await
        .unwrap();
    proxy.on(PUT, Fault::Hold, usize::MAX);
    let err = store
        .publish(
            "cds/app",
            &SecretString::from(b.clone()),
            &conformance::record(3, &b),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutcomeUnknown { .. }), "{err}");
    assert!(err.to_string().contains("may still land"), "{err}");
    conformance::names_the_store_without_values(&err, "aws", &[&a, &b]);
    proxy.clear();
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(ra)
    );
}

/// A Secrets Manager store whose requests pass through a fault proxy (support/proxy.rs).
async fn behind_a_fault_proxy(moto: &moto::Moto) -> (SecretsManagerStore, FaultProxy) {
    let proxy = FaultProxy::start(&moto.url).await;
    let mut target = moto.target();
    target.endpoint_url = Some(proxy.url.clone());
    let store = SecretsManagerStore::with_sdk_config("aws", target, None, moto.sdk_config());
    (store, proxy)
}

/// The request head that names a `PutSecretValue`.
const PUT: &str = "x-amz-target: secretsmanager.PutSecretValue";

#[tokio::test]
async fn the_aws_secrets_manager_store_conforms_under_faults() {
    let moto = moto::Moto::start().await;
    let (store, proxy) = behind_a_fault_proxy(&moto).await;
    let behind = conformance::Behind {
        store: &store,
        name: "aws",
        proxy: &proxy,
        write: PUT,
    };
    conformance::faults(&behind, "cds/app", || {
        moto.secrets_manager_value("cds/app", "AWSCURRENT")
    })
    .await;
}

#[tokio::test]
async fn a_put_delayed_in_the_network_is_settled_by_putting_it_again_and_its_late_copy_changes_nothing()
 {
    let moto = moto::Moto::start().await;
    let (store, proxy) = behind_a_fault_proxy(&moto).await;
    let (a, b) = (conformance::value("a"), conformance::value("b"));
    let (ra, rb) = (conformance::record(2, &a), conformance::record(3, &b));
    store
        .publish("cds/app", &SecretString::from(a.clone()), &ra)
        .await
        .unwrap();
    // Every attempt of the first put is held in the network: its answer is lost, and a
    // read-back would show the old value.
    proxy.on(PUT, Fault::Hold, 3);
    store
        .publish("cds/app", &SecretString::from(b.clone()), &rb)
        .await
        .expect("settled by putting the same request again");
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(rb.clone())
    );
    // The delayed copies land now: same token, same value, so they change nothing.
    let held = proxy.held();
    assert!(held >= 1, "{:?}", proxy.log());
    assert_eq!(proxy.deliver_held().await, vec![200; held]);
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(rb)
    );
    let versions = moto
        .secrets_manager()
        .list_secret_version_ids()
        .secret_id("cds/app")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2, "one version per rotation");
    assert_eq!(
        moto.secrets_manager_value("cds/app", "AWSPREVIOUS").await,
        Some(a)
    );
}

#[tokio::test]
async fn a_put_whose_answers_are_throttled_and_dropped_is_settled_too() {
    let moto = moto::Moto::start().await;
    let (store, proxy) = behind_a_fault_proxy(&moto).await;
    let b = conformance::value("b");
    let rb = conformance::record(3, &b);
    store
        .publish("cds/app", &SecretString::from(b.clone()), &rb)
        .await
        .unwrap();
    let c = conformance::value("c");
    let rc = conformance::record(4, &c);
    // The first attempt lands but its answer is lost; the SDK's next ones are throttled.
    proxy.on(PUT, Fault::DropAnswer, 1);
    proxy.on(
        PUT,
        Fault::Refuse {
            status: 503,
            retry_after: 0,
        },
        2,
    );
    store
        .publish("cds/app", &SecretString::from(c.clone()), &rc)
        .await
        .expect("settled");
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(rc)
    );
}

#[tokio::test]
async fn a_put_that_cannot_be_read_back_is_an_unknown_outcome() {
    let moto = moto::Moto::start().await;
    let (store, proxy) = behind_a_fault_proxy(&moto).await;
    let (a, b) = (conformance::value("a"), conformance::value("b"));
    store
        .publish(
            "cds/app",
            &SecretString::from(a.clone()),
            &conformance::record(2, &a),
        )
        .await
        .unwrap();
    proxy.on("", Fault::Hold, usize::MAX);
    let err = store
        .publish(
            "cds/app",
            &SecretString::from(b.clone()),
            &conformance::record(3, &b),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutcomeUnknown { .. }), "{err}");
    conformance::names_the_store_without_values(&err, "aws", &[&a, &b]);
}

#[tokio::test]
async fn a_kms_file_sealed_by_hand_without_a_record_is_unrecorded() {
    use base64::Engine as _;
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let tmp = tempfile::tempdir().unwrap();
    let sealed = moto
        .kms()
        .encrypt()
        .key_id("alias/cds")
        .plaintext(aws_sdk_kms::primitives::Blob::new(&b"typed-by-hand"[..]))
        .encryption_context("client_id", CLIENT)
        .encryption_context("tenant_id", TENANT)
        .send()
        .await
        .unwrap();
    let text = base64::engine::general_purpose::STANDARD
        .encode(sealed.ciphertext_blob().unwrap().as_ref());
    std::fs::write(tmp.path().join("app"), text).unwrap();
    let store = kms_file(&moto, tmp.path(), "alias/cds");
    assert_eq!(
        store.read_current("app").await.unwrap(),
        Current::Unrecorded
    );
}

/// The `app` client of `env`, publishing to `cds/app` in Secrets Manager through `proxy`.
fn wired_through(
    env: &support::Env,
    moto: &moto::Moto,
    proxy: &FaultProxy,
) -> cds_rotator::app::Wired {
    use std::sync::Arc;
    let path = env.write_policy_on_store(
        &format!(
            "aws: {{ type: aws_secrets_manager, region: eu-west-1, endpoint_url: \"{}\" }}",
            proxy.url
        ),
        "{ name: aws, secret: cds/app }",
    );
    let policy = cds_rotator::policy::Policy::load(&path).expect("policy");
    let mut target = moto.target();
    target.endpoint_url = Some(proxy.url.clone());
    let store = SecretsManagerStore::with_sdk_config("aws", target, None, moto.sdk_config());
    let options = cds_rotator::app::Options {
        only: vec!["app".to_owned()],
        stores: Some(Box::new(move |stores| {
            stores.insert("aws".to_owned(), Arc::new(store));
        })),
        ..cds_rotator::app::Options::default()
    };
    cds_rotator::app::wire(&policy, options).unwrap()
}

/// What `AWSCURRENT` of `cds/app` holds; the test fails unless it gets a CDS token.
async fn current_works(env: &support::Env, moto: &moto::Moto) -> String {
    let value = moto
        .secrets_manager_value("cds/app", "AWSCURRENT")
        .await
        .expect("AWSCURRENT");
    assert!(
        env.gets_token(support::APP, &value).await,
        "AWSCURRENT holds a secret that does not work in CDS"
    );
    value
}

/// The run: `PutSecretValue` is held in the network (its answer lost, a read-back
/// shows the old value) and its copies land later. The rotator settles the put with the
/// same request token, and what lands late changes nothing: `AWSCURRENT` works.
#[tokio::test]
async fn a_put_delayed_in_the_network_never_leaves_a_deleted_secret_current() {
    let moto = moto::Moto::start().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let env = support::Env::start().await;
    let wired = wired_through(&env, &moto, &proxy);
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    current_works(&env, &moto).await;

    proxy.on(PUT, Fault::Hold, 3);
    let reports = support::pass_of(&wired, true).await;
    let rotated = reports[0].rotated.as_ref().expect("settled and rotated");
    assert!(env.ids(support::APP).contains(&rotated.secret_id));
    assert!(proxy.held() >= 1, "{:?}", proxy.log());
    let before = current_works(&env, &moto).await;
    let statuses = proxy.deliver_held().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(current_works(&env, &moto).await, before);
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert_eq!(current_works(&env, &moto).await, before);
}

/// No put gets an answer within the pass: the publish is in doubt, the new secret is kept
/// (and a later pass keeps it too, while its put may land); when the put lands late,
/// `AWSCURRENT` holds a secret that works.
#[tokio::test]
async fn a_put_without_any_answer_keeps_the_new_secret_until_its_late_write_lands() {
    let moto = moto::Moto::start().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let env = support::Env::start().await;
    let wired = wired_through(&env, &moto, &proxy);
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);

    proxy.on(PUT, Fault::Hold, usize::MAX);
    let reports = support::pass_of(&wired, true).await;
    let err = reports[0].error.as_ref().expect("the publish is in doubt");
    assert_eq!(err.step, cds_rotator::rotation::Step::Publish);
    assert!(err.to_string().contains("was kept"), "{err}");
    let kept = *env.ids(support::APP).last().unwrap();
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert!(
        env.ids(support::APP).contains(&kept),
        "not deleted as an orphan while its put may land"
    );

    proxy.clear();
    let statuses = proxy.deliver_held().await;
    assert!(statuses.contains(&200), "{statuses:?}");
    current_works(&env, &moto).await;
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    current_works(&env, &moto).await;
}

/// A stop while the publish is still settling a lost answer gives the publish up: the
/// pass ends, and the new secret is kept in doubt, never deleted.
#[tokio::test]
async fn a_stop_while_a_lost_put_is_settled_keeps_the_new_secret_in_doubt() {
    let moto = moto::Moto::start().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let env = support::Env::start().await;
    let wired = wired_through(&env, &moto, &proxy);
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    let before = current_works(&env, &moto).await;

    proxy.on(PUT, Fault::Hold, usize::MAX);
    let pass = support::pass_of(&wired, true);
    let stopper = async {
        support::eventually(
            "a held put",
            std::time::Duration::from_secs(60),
            async || proxy.held() >= 1,
        )
        .await;
        wired.reconciler.stop();
    };
    let (reports, ()) = tokio::join!(pass, stopper);
    let err = reports[0].error.as_ref().expect("given up");
    assert!(err.to_string().contains("was given up"), "{err}");
    assert!(err.to_string().contains("was kept"), "{err}");
    assert_eq!(
        env.ids(support::APP).len(),
        3,
        "seeded, current, kept: {err}"
    );
    assert_eq!(current_works(&env, &moto).await, before);
}

/// The fault proxy's own faults, against moto's plain HTTP API.
#[tokio::test]
async fn the_fault_proxy_refuses_resets_delays_and_duplicates() {
    let moto = moto::Moto::start().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let http = reqwest::Client::new();
    let get = || http.get(format!("{}/moto-api/", proxy.url)).send();
    proxy.on(
        "GET /moto-api/",
        Fault::Refuse {
            status: 429,
            retry_after: 7,
        },
        1,
    );
    let refused = get().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "7");
    proxy.on("GET /moto-api/", Fault::Reset, 1);
    assert!(get().await.is_err(), "reset");
    proxy.on("GET /moto-api/", Fault::DropAnswer, 1);
    assert!(get().await.is_err(), "answer dropped");
    proxy.on(
        "GET /moto-api/",
        Fault::Delay(std::time::Duration::from_millis(50)),
        1,
    );
    assert!(get().await.unwrap().status().is_success());
    proxy.on("GET /moto-api/", Fault::Duplicate, 1);
    assert!(get().await.unwrap().status().is_success());
    assert_eq!(proxy.held(), 1);
    assert_eq!(proxy.deliver_held().await, vec![200]);
    assert!(get().await.unwrap().status().is_success(), "rules used up");
    let log = proxy.log();
    assert_eq!(log.len(), 6, "{log:?}");
    assert_eq!(
        log[0],
        "GET /moto-api/ [Refuse { status: 429, retry_after: 7 }]"
    );
    assert_eq!(log[5], "GET /moto-api/");
}

/// The head of a KMS `Encrypt` request (the kms_file store's one network request in a
/// publish).
const ENCRYPT: &str = "x-amz-target: TrentService.Encrypt";

/// The kms_file store under faults of KMS: it writes nothing until KMS has sealed the
/// value, so whatever happens to `Encrypt` nothing is in doubt and readers keep the last
/// sealed value; a lost answer or a lost request is asked again, and a copy that lands
/// late changes nothing.
#[tokio::test]
async fn the_kms_file_store_under_faults_of_kms_never_changes_what_readers_see_unsealed() {
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let proxy = FaultProxy::start(&moto.url).await;
    let mut target = moto.target();
    target.endpoint_url = Some(proxy.url.clone());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("app");
    let store = KmsFileStore::new("sealed", tmp.path(), "alias/cds", target)
        .with_sdk_config(moto.sdk_config())
        .for_secret("app", CLIENT, TENANT);
    let publish = async |tag: &str, id: i32| {
        let v = conformance::value(tag);
        let r = conformance::record(id, &v);
        let result = store
            .publish("app", &SecretString::from(v.clone()), &r)
            .await;
        (v, r, result)
    };
    let (first, _, result) = publish("first", 2).await;
    result.expect("publish without faults");

    for (fault, tag, id) in [(Fault::DropAnswer, "dropped", 3), (Fault::Hold, "held", 4)] {
        proxy.on(ENCRYPT, fault, 1);
        let (v, r, result) = publish(tag, id).await;
        result.expect("asked again, KMS seals it");
        assert!(
            proxy.log().iter().any(|l| l.ends_with(']')),
            "{:?}",
            proxy.log()
        );
        proxy.clear();
        proxy.deliver_held().await;
        assert_eq!(
            moto.kms_file_value(&path, CLIENT, TENANT).await.as_deref(),
            Some(v.as_str())
        );
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(r)
        );
    }
    let (kept, kept_record) = {
        let (v, r, result) = publish("kept", 5).await;
        result.unwrap();
        (v, r)
    };
    for (fault, tag) in [
        (
            Fault::Refuse {
                status: 403,
                retry_after: 0,
            },
            "refused",
        ),
        (
            Fault::Refuse {
                status: 503,
                retry_after: 0,
            },
            "unavailable",
        ),
        (Fault::Reset, "reset"),
        (Fault::DropAnswer, "never-answered"),
    ] {
        proxy.on(ENCRYPT, fault, 100);
        let (v, _, result) = publish(tag, 6).await;
        let err = result.expect_err("not sealed, not written");
        proxy.clear();
        assert!(
            !matches!(err, StoreError::OutcomeUnknown { .. }),
            "nothing was written, nothing is in doubt: {err}"
        );
        conformance::names_the_store_without_values(&err, "sealed", &[&first, &kept, &v]);
        assert_eq!(
            moto.kms_file_value(&path, CLIENT, TENANT).await.as_deref(),
            Some(kept.as_str())
        );
        assert_eq!(
            store.read_current("app").await.unwrap(),
            Current::Published(kept_record.clone())
        );
    }
}

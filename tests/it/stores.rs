//! Every store against the conformance suite (support/conformance.rs): the file store here;
//! each other backend against its real server on loopback (the vault store against an
//! OpenBao dev server, see support/bao.rs).

use crate::support::bao;
use crate::support::conformance;

use std::path::Path;
use std::time::Duration;

use cds_rotator::domain::Current;
use cds_rotator::policy::vault::{RoleId, VaultAuth, VaultSpec};
use cds_rotator::policy::{SecretSource, ServiceUrl};
use cds_rotator::store::file::FileStore;
use cds_rotator::store::vault::VaultStore;
use cds_rotator::store::{SecretStore, StoreError};
use secrecy::SecretString;
use serde_json::json;

use crate::support::proxy::FaultProxy;
use bao::{Bao, Proxy, Trick};

#[tokio::test]
async fn the_file_store_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    let store = FileStore::new("local", &dir);
    let path = dir.join("app");
    conformance::publish_read_replace(&store, "app", || {
        let path = path.clone();
        async move { std::fs::read_to_string(path).ok() }
    })
    .await;

    // A store that cannot be written: named, no value shown, the previous record kept.
    let before = store.read_current("app").await.unwrap();
    std::fs::create_dir(dir.join(".app.pending.json")).ok();
    let v = conformance::value("third");
    let err = store
        .publish(
            "app",
            &secrecy::SecretString::from(v.clone()),
            &conformance::record(4, &v),
        )
        .await
        .expect_err("the pending record's path is a directory");
    conformance::names_the_store_without_values(&err, "local", &[&v]);
    std::fs::remove_dir(dir.join(".app.pending.json")).unwrap();
    assert_eq!(store.read_current("app").await.unwrap(), before);
}

/// A vault store named `name` at `address` whose token is read from a file in `dir`.
fn vault_store(name: &str, address: &str, dir: &Path, token: &str) -> VaultStore {
    let file = dir.join(format!("{name}-token"));
    std::fs::write(&file, token).unwrap();
    let spec = VaultSpec {
        address: ServiceUrl::parse(address).unwrap(),
        mount: "secret".to_owned(),
        namespace: None,
        auth: VaultAuth::Token(SecretSource::File(file)),
    };
    VaultStore::new(name, spec, Duration::from_secs(5))
        .unwrap()
        .with_probe_keys(vec!["cds/app".to_owned()])
}

/// Publishes a fresh value with a record; returns the value.
async fn publish_new(store: &VaultStore, key: &str, id: i32) -> Result<String, StoreError> {
    let v = conformance::value("v");
    store
        .publish(
            key,
            &SecretString::from(v.clone()),
            &conformance::record(id, &v),
        )
        .await
        .map(|()| v)
}

#[tokio::test]
async fn the_vault_store_conforms() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = vault_store("bao", &bao.addr, tmp.path(), &bao.root);
    conformance::publish_read_replace(&store, "cds/app", || bao.value("cds/app")).await;
    assert_eq!(
        store.location("cds/app"),
        format!("vault {}/v1/secret/data/cds/app", bao.addr)
    );
    // A KV version 1 mount is refused by the probe.
    let (status, body) = bao
        .api(
            "POST",
            "sys/mounts/kv1",
            Some(json!({ "type": "kv", "options": { "version": "1" } })),
        )
        .await;
    assert!(status / 100 == 2, "mount kv1: {body}");
    let file = tmp.path().join("kv1-token");
    std::fs::write(&file, &bao.root).unwrap();
    let kv1 = VaultSpec {
        address: ServiceUrl::parse(&bao.addr).unwrap(),
        mount: "kv1".to_owned(),
        namespace: None,
        auth: VaultAuth::Token(SecretSource::File(file)),
    };
    let err = VaultStore::new("bao", kv1, Duration::from_secs(5))
        .unwrap()
        .probe()
        .await
        .expect_err("kv version 1");
    assert!(err.to_string().contains("not a KV version 2"), "{err}");
    // The record's non-secret fields are copied to custom_metadata.
    let (_, meta) = bao.api("GET", "secret/metadata/cds/app", None).await;
    let custom = &meta["data"]["custom_metadata"];
    assert_eq!(custom["secret_id"], "3", "{meta}");
    assert!(custom.get("client_secret").is_none());
}

#[tokio::test]
async fn a_vault_value_without_a_record_is_unrecorded_and_a_deleted_one_is_empty() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = vault_store("bao", &bao.addr, tmp.path(), &bao.root);
    let (status, _) = bao
        .api(
            "POST",
            "secret/data/cds/app",
            Some(json!({ "data": { "client_secret": "pasted-by-hand" } })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        store.read_current("cds/app").await.unwrap(),
        Current::Unrecorded
    );
    let (status, _) = bao.api("DELETE", "secret/data/cds/app", None).await;
    assert_eq!(status, 204);
    assert_eq!(store.read_current("cds/app").await.unwrap(), Current::Empty);
    // A publish over a deleted version still lands (check-and-set on its number).
    let v = publish_new(&store, "cds/app", 5).await.expect("publish");
    assert_eq!(bao.value("cds/app").await.as_deref(), Some(v.as_str()));
}

#[tokio::test]
async fn a_vault_store_logs_in_with_approle() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (status, body) = bao
        .api(
            "POST",
            "sys/auth/approle",
            Some(json!({ "type": "approle" })),
        )
        .await;
    assert!(status / 100 == 2, "enable approle: {body}");
    bao.policy("rotator", bao::ROTATOR_HCL).await;
    let (status, body) = bao
        .api(
            "POST",
            "auth/approle/role/rotator",
            Some(json!({ "token_policies": ["rotator"] })),
        )
        .await;
    assert!(status / 100 == 2, "create role: {body}");
    let (_, body) = bao
        .api("GET", "auth/approle/role/rotator/role-id", None)
        .await;
    let role_id = body["data"]["role_id"].as_str().unwrap().to_owned();
    let (_, body) = bao
        .api("POST", "auth/approle/role/rotator/secret-id", None)
        .await;
    let secret_id = body["data"]["secret_id"].as_str().unwrap().to_owned();
    let secret_id_file = tmp.path().join("secret-id");
    std::fs::write(&secret_id_file, &secret_id).unwrap();
    let spec = VaultSpec {
        address: ServiceUrl::parse(&bao.addr).unwrap(),
        mount: "secret".to_owned(),
        namespace: None,
        auth: VaultAuth::AppRole {
            mount: "approle".to_owned(),
            role_id: RoleId::Value(role_id),
            secret_id_file,
        },
    };
    let store = VaultStore::new("bao", spec, Duration::from_secs(5))
        .unwrap()
        .with_probe_keys(vec!["cds/app".to_owned()]);
    store.probe().await.expect("probe with the approle token");
    let v = publish_new(&store, "cds/app", 2).await.expect("publish");
    assert_eq!(bao.value("cds/app").await.as_deref(), Some(v.as_str()));
    assert!(matches!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(r) if r.secret_id == 2
    ));
    let text = format!("{store:?}");
    assert!(!text.contains(&secret_id));

    // The cached login token is revoked: the store logs in again once and carries on.
    let (status, body) = bao
        .api("PUT", "sys/leases/revoke-prefix/auth/approle", None)
        .await;
    assert!(
        status / 100 == 2,
        "revoke the approle tokens: {status} {body}"
    );
    let v = publish_new(&store, "cds/app", 3)
        .await
        .expect("publish after a new login");
    assert_eq!(bao.value("cds/app").await.as_deref(), Some(v.as_str()));
}

#[tokio::test]
async fn a_vault_token_without_update_is_refused_naming_the_store_and_the_fix() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = vault_store("bao", &bao.addr, tmp.path(), &bao.root);
    let first = publish_new(&root, "cds/app", 2).await.expect("publish");
    let before = root.read_current("cds/app").await.unwrap();
    bao.policy(
        "readonly",
        r#"
path "secret/data/cds/*" { capabilities = ["read"] }
path "secret/metadata/cds/*" { capabilities = ["read"] }
"#,
    )
    .await;
    let token = bao.token_with(&["readonly"]).await;
    let denied = vault_store("bao", &bao.addr, tmp.path(), &token);
    let v = conformance::value("denied");
    let err = denied
        .publish(
            "cds/app",
            &SecretString::from(v.clone()),
            &conformance::record(3, &v),
        )
        .await
        .expect_err("a read-only token cannot publish");
    let text = err.to_string();
    assert!(text.contains("store bao"), "{text}");
    assert!(text.contains("403"), "{text}");
    assert!(text.contains("secret/data/cds/app"), "{text}");
    assert!(text.contains("\"create\", \"update\", \"read\""), "{text}");
    conformance::names_the_store_without_values(&err, "bao", &[&v, &first, &token]);
    assert_eq!(root.read_current("cds/app").await.unwrap(), before);
    let err = denied
        .probe()
        .await
        .expect_err("the probe sees the missing capabilities");
    assert!(err.to_string().contains("\"update\""), "{err}");
}

#[tokio::test]
async fn a_stopped_vault_server_is_an_error_naming_the_store() {
    let mut bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = vault_store("bao", &bao.addr, tmp.path(), &bao.root);
    let first = publish_new(&store, "cds/app", 2).await.expect("publish");
    bao.stop().await;
    let v = conformance::value("after-stop");
    let err = store
        .publish(
            "cds/app",
            &SecretString::from(v.clone()),
            &conformance::record(3, &v),
        )
        .await
        .expect_err("nobody answers");
    conformance::names_the_store_without_values(&err, "bao", &[&v, &first, &bao.root]);
    assert!(err.to_string().contains("reachable"), "{err}");
    let err = store
        .read_current("cds/app")
        .await
        .expect_err("nobody answers");
    conformance::names_the_store_without_values(&err, "bao", &[&first, &bao.root]);
}

#[tokio::test]
async fn another_writer_between_read_and_write_makes_the_publish_fail_unlanded() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&bao, Trick::WriteFirst).await;
    let store = vault_store("bao", &proxy.addr, tmp.path(), &bao.root);
    let v = conformance::value("raced");
    let err = store
        .publish(
            "cds/app",
            &SecretString::from(v.clone()),
            &conformance::record(2, &v),
        )
        .await
        .expect_err("check-and-set refuses the write");
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("another writer"), "{err}");
    conformance::names_the_store_without_values(&err, "bao", &[&v]);
    assert_eq!(
        bao.value("cds/app").await.as_deref(),
        Some("another-writers-value")
    );
}

#[tokio::test]
async fn the_vault_store_conforms_under_faults() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&bao.addr).await;
    let store = vault_store("bao", &proxy.url, tmp.path(), &bao.root);
    let behind = conformance::Behind {
        store: &store,
        name: "bao",
        proxy: &proxy,
        write: "POST /v1/secret/data/cds/app",
    };
    conformance::faults(&behind, "cds/app", || bao.value("cds/app")).await;
}

#[tokio::test]
async fn a_lost_answer_to_a_landed_write_is_a_success() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&bao, Trick::LoseAnswer).await;
    let store = vault_store("bao", &proxy.addr, tmp.path(), &bao.root);
    let v = publish_new(&store, "cds/app", 2)
        .await
        .expect("the value landed: no failure");
    assert_eq!(bao.value("cds/app").await.as_deref(), Some(v.as_str()));
    assert_eq!(bao.version("cds/app").await, 1, "written once");
    assert_eq!(
        proxy.writes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "resolved by reading back, not by writing again"
    );
    assert!(matches!(
        store.read_current("cds/app").await.unwrap(),
        Current::Published(r) if r.secret_id == 2
    ));
}

#[tokio::test]
async fn a_lost_write_is_sent_again_and_lands_once() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&bao, Trick::LoseRequest).await;
    let store = vault_store("bao", &proxy.addr, tmp.path(), &bao.root);
    let v = publish_new(&store, "cds/app", 2).await.expect("sent again");
    assert_eq!(bao.value("cds/app").await.as_deref(), Some(v.as_str()));
    assert_eq!(bao.version("cds/app").await, 1, "written once");
    assert!(proxy.writes.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_vault_store_with_a_namespace_writes_inside_it() {
    let bao = Bao::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (status, body) = bao.api("POST", "sys/namespaces/team", None).await;
    assert!(status / 100 == 2, "create namespace: {status} {body}");
    let (status, body) = bao
        .api_in(
            "team",
            &bao.root,
            "POST",
            "sys/mounts/secret",
            Some(json!({ "type": "kv", "options": { "version": "2" } })),
        )
        .await;
    assert!(status / 100 == 2, "mount kv in team: {status} {body}");
    let file = tmp.path().join("token");
    std::fs::write(&file, &bao.root).unwrap();
    let spec = VaultSpec {
        address: ServiceUrl::parse(&bao.addr).unwrap(),
        mount: "secret".to_owned(),
        namespace: Some("team".to_owned()),
        auth: VaultAuth::Token(SecretSource::File(file)),
    };
    let store = VaultStore::new("bao", spec, Duration::from_secs(5))
        .unwrap()
        .with_probe_keys(vec!["cds/app".to_owned()]);
    let v = publish_new(&store, "cds/app", 2).await.expect("publish");
    let (_, body) = bao
        .api_in("team", &bao.root, "GET", "secret/data/cds/app", None)
        .await;
    assert_eq!(
        body["data"]["data"]["client_secret"].as_str(),
        Some(v.as_str())
    );
    assert_eq!(
        bao.value("cds/app").await,
        None,
        "nothing in the root namespace"
    );
    store.probe().await.expect("probe in the namespace");
}

//! Every store against the conformance suite (tests/conformance): the file store here;
//! each other backend against its real server on loopback.

mod conformance;

use cds_rotator::store::SecretStore;
use cds_rotator::store::file::FileStore;

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

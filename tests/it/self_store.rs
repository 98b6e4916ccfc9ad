//! The rotator's own credential in a vault store (`client_secret_store`): it rotates its
//! own client into OpenBao and keeps working with the new secret it reads from there.

use crate::support;
use crate::support::bao;

use cds_rotator::app;
use cds_rotator::policy::Policy;
use cds_rotator::rotation::DeleteReason;
use serde_json::json;
use support::{ADMIN, ADMIN_SECRET, Env, PolicyText, TENANT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotator_rotates_its_own_secret_into_vault_and_reads_the_new_one_from_there() {
    let bao = bao::Bao::start().await;
    let env = Env::start().await;
    // The rotator's only copy of its secret is in vault (written there by hand).
    let (status, _) = bao
        .api(
            "POST",
            "secret/data/cds/rotator",
            Some(json!({ "data": { "client_secret": ADMIN_SECRET } })),
        )
        .await;
    assert_eq!(status, 200);
    std::fs::write(env.dir.path().join("bao-token"), &bao.root).unwrap();
    let address = &bao.addr;
    let policy = PolicyText::new(&env.emulator.url(), TENANT)
        .credential(&format!("client_id: {ADMIN}"))
        .credential("client_secret_store: { name: bao, secret: cds/rotator }")
        .connect("request_timeout: 5s")
        .lock_dir("./locks")
        .store(&format!(
            "bao: {{ type: vault, address: {address}, mount: secret, auth: {{ method: token, token_file: ./bao-token }} }}"
        ))
        .default("grace: 0s")
        .default("verify_timeout: 5s")
        .client(&format!(
            "  - name: admin\n    client_id: {ADMIN}\n    store: {{ name: bao, secret: cds/rotator }}\n    retire_unmanaged: true"
        ));
    env.write(&policy);

    // One set of stores shared by the CDS client and the jobs, as in the binary.
    let policy = Policy::load(&env.policy_path()).expect("policy");
    let wired = app::wire(&policy, app::Options::default()).expect("wire");

    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    let new = bao.value("cds/rotator").await.expect("a value in vault");
    assert_ne!(new, ADMIN_SECRET);
    assert!(
        env.gets_token(ADMIN, &new).await,
        "the published value works"
    );

    // Next pass: grace is over, the seeded (unmanaged) secret is retired; the rotator
    // authenticates with the new secret it reads from vault.
    let reports = support::pass_of(&wired, false).await;
    assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
    assert_eq!(reports[0].deleted, vec![(1, DeleteReason::Superseded)]);
    assert!(
        !env.gets_token(ADMIN, ADMIN_SECRET).await,
        "the seeded one is gone"
    );
    assert_eq!(env.ids(ADMIN).len(), 1);

    // A fresh rotator (new token) reads vault again and rotates once more.
    let reports = env.pass(&[], true).await;
    assert!(reports[0].rotated.is_some(), "{:?}", reports[0].error);
    let newer = bao.value("cds/rotator").await.expect("a value in vault");
    assert_ne!(newer, new);
    assert!(env.gets_token(ADMIN, &newer).await);
}

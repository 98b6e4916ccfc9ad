//! The binary end to end with a vault store: `--run-now` against the CDS emulator
//! publishes into an OpenBao dev server, a second `--run-now` changes nothing, and no
//! secret value reaches the output.

use crate::support;
use crate::support::bao;

use bao::Bao;
use support::{ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env};

/// A policy rotating the app client into `secret/cds/app` of `bao`, with the token in a
/// file next to the policy (a relative path).
fn write_vault_policy(env: &Env, bao: &Bao) {
    std::fs::write(env.dir.path().join("bao-token"), &bao.root).unwrap();
    let address = &bao.addr;
    let policy = env
        .relative_policy()
        .connect("request_timeout: 5s")
        .store(&format!(
            "bao: {{ type: vault, address: {address}, mount: secret, auth: {{ method: token, token_file: ./bao-token }} }}"
        ))
        .default("lifetime: 90d")
        .default("rotate_before: 30d")
        .default("grace: 0s")
        .default("verify_timeout: 5s")
        .client(&format!(
            "  - {{ name: app, client_id: {APP}, kind: client_credentials, store: {{ name: bao, secret: cds/app }} }}"
        ));
    env.write(&policy);
}

#[tokio::test]
async fn run_now_rotates_into_vault_and_a_second_run_changes_nothing() {
    let bao = Bao::start().await;
    let env = Env::start().await;
    write_vault_policy(&env, &bao);

    let first = env.cli(&["--run-now"], &[]).await;
    let first_text = support::text(&first);
    assert!(first.status.success(), "{first_text}");
    assert!(first_text.contains("rotated"), "{first_text}");
    assert!(
        first_text.contains(&format!("vault {}/v1/secret/data/cds/app", bao.addr)),
        "{first_text}"
    );
    let value = bao.value("cds/app").await.expect("a value in vault");
    assert!(
        env.gets_token(APP, &value).await,
        "the published value works"
    );
    let version = bao.version("cds/app").await;
    let ids = env.ids(APP);

    let second = env.cli(&["--run-now"], &[]).await;
    let second_text = support::text(&second);
    assert!(second.status.success(), "{second_text}");
    assert!(second_text.contains("up to date"), "{second_text}");
    assert_eq!(bao.version("cds/app").await, version, "vault unchanged");
    assert_eq!(env.ids(APP), ids, "CDS unchanged");

    // `check` probes the store: the token may write the client's secret.
    use std::os::unix::fs::PermissionsExt;
    let cred = env.dir.path().join("admin-secret");
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = env.cli(&["check"], &[]).await;
    let check_text = support::text(&check);
    assert!(
        check_text.contains("ok   store of client app:"),
        "{check_text}"
    );

    support::assert_no_secret(
        &format!("{first_text}{second_text}{check_text}"),
        &[
            value,
            ADMIN_SECRET.to_owned(),
            APP_SEEDED_SECRET.to_owned(),
            bao.root.clone(),
        ],
    );
}

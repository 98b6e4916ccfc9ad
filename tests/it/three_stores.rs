//! The binary end to end with three stores in one policy: `--run-now` against the CDS
//! emulator rotates three clients, one into a file store, one into an OpenBao vault and
//! one into AWS Secrets Manager (moto); a second `--run-now` changes nothing, and no
//! secret value reaches the output.

use crate::support;
use crate::support::bao;
use crate::support::moto;

use support::{ADMIN, ADMIN_SECRET, Env, TENANT, text};

const FILE_APP: &str = "3a0c1d2e-3f40-4152-6374-8596a7b8c9d1";
const VAULT_APP: &str = "3a0c1d2e-3f40-4152-6374-8596a7b8c9d2";
const AWS_APP: &str = "3a0c1d2e-3f40-4152-6374-8596a7b8c9d3";
const SEEDED: [&str; 3] = [
    "file-Seed-Secret-Value-0123456789abcdef",
    "vault-Seed-Secret-Value-0123456789abcdef",
    "aws-Seed-Secret-Value-0123456789abcdef",
];

/// An administrator and three client-credentials apps, each with one hand-made secret.
fn seed() -> String {
    let mut yaml = format!(
        r#"tenant_id: {TENANT}
region: primary
id_policy: increasing
clients:
  - id: {ADMIN}
    name: admin
    kind: client_credentials
    roles: [tenant_administrator]
    secrets:
      - value: "{ADMIN_SECRET}"
        description: "admin, made by hand"
        expiration: 2099-01-01T00:00:00Z
        expires: true
"#
    );
    for ((id, name), value) in [FILE_APP, VAULT_APP, AWS_APP]
        .into_iter()
        .zip(["file-app", "vault-app", "aws-app"])
        .zip(SEEDED)
    {
        yaml.push_str(&format!(
            r#"  - id: {id}
    name: {name}
    kind: client_credentials
    secrets:
      - value: "{value}"
        description: "made by hand"
        expiration: 2099-01-01T00:00:00Z
        expires: true
"#
        ));
    }
    yaml
}

async fn start_env() -> Env {
    Env::start_seeded(&seed()).await
}

/// One policy, three stores, one client in each.
fn write_policy(env: &Env, bao: &bao::Bao, moto: &moto::Moto) {
    std::fs::write(env.dir.path().join("bao-token"), &bao.root).unwrap();
    let (address, moto) = (&bao.addr, &moto.url);
    let policy = env
        .relative_policy()
        .connect("request_timeout: 5s")
        .store("local: { type: file, dir: ./secrets }")
        .store(&format!(
            "bao: {{ type: vault, address: {address}, mount: secret, auth: {{ method: token, token_file: ./bao-token }} }}"
        ))
        .store(&format!(
            r#"aws: {{ type: aws_secrets_manager, region: eu-west-1, kms_key_id: alias/cds, endpoint_url: "{moto}" }}"#
        ))
        .default("lifetime: 90d")
        .default("rotate_before: 30d")
        .default("grace: 0s")
        .default("verify_timeout: 5s")
        .client(&format!(
            "  - {{ name: file-app, client_id: {FILE_APP}, kind: client_credentials, store: {{ name: local, secret: file-app }} }}"
        ))
        .client(&format!(
            "  - {{ name: vault-app, client_id: {VAULT_APP}, kind: client_credentials, store: {{ name: bao, secret: cds/vault-app }} }}"
        ))
        .client(&format!(
            "  - {{ name: aws-app, client_id: {AWS_APP}, kind: client_credentials, store: {{ name: aws, secret: cds/aws-app }} }}"
        ));
    env.write(&policy);
}

/// AWS credentials in the environment only (no profile files, no instance metadata).
const AWS_ENV: [(&str, &str); 6] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "eu-west-1"),
    ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    ),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_rotates_into_file_vault_and_aws_then_a_second_run_changes_nothing() {
    let bao = bao::Bao::start().await;
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let env = start_env().await;
    write_policy(&env, &bao, &moto);

    let first = env.cli(&["--run-now"], &AWS_ENV).await;
    let mut output = text(&first);
    assert_eq!(first.status.code(), Some(0), "{output}");
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    for name in ["file-app", "vault-app", "aws-app"] {
        assert!(
            stdout.contains(&format!("{name}: rotated: new secret 2")),
            "{stdout}"
        );
    }

    // Each store holds a value that works in CDS for its client.
    let file_value = std::fs::read_to_string(env.dir.path().join("secrets/file-app"))
        .expect("the file store's value");
    let vault_value = bao.value("cds/vault-app").await.expect("a value in vault");
    let aws_value = moto
        .secrets_manager_value("cds/aws-app", "AWSCURRENT")
        .await
        .expect("a value in Secrets Manager");
    assert!(env.gets_token(FILE_APP, &file_value).await);
    assert!(env.gets_token(VAULT_APP, &vault_value).await);
    assert!(env.gets_token(AWS_APP, &aws_value).await);
    // grace 0s: the hand-made secrets are left alone (unmanaged), the new one added.
    for id in [FILE_APP, VAULT_APP, AWS_APP] {
        assert_eq!(env.ids(id), vec![1, 2], "{id}");
    }

    // A second run: nothing due, nothing written anywhere.
    let writes = env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets");
    let file_record = std::fs::read(env.dir.path().join("secrets/file-app.json")).unwrap();
    let vault_version = bao.version("cds/vault-app").await;
    let aws_versions = moto
        .secrets_manager()
        .list_secret_version_ids()
        .secret_id("cds/aws-app")
        .send()
        .await
        .unwrap()
        .versions()
        .len();

    let second = env.cli(&["--run-now"], &AWS_ENV).await;
    let second_text = text(&second);
    assert_eq!(second.status.code(), Some(0), "{second_text}");
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    for name in ["file-app", "vault-app", "aws-app"] {
        assert!(
            stdout.contains(&format!("{name}: up to date (current secret 2)")),
            "{stdout}"
        );
    }
    output.push_str(&second_text);
    assert_eq!(
        writes,
        env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets"),
        "CDS unchanged"
    );
    assert_eq!(
        file_record,
        std::fs::read(env.dir.path().join("secrets/file-app.json")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(env.dir.path().join("secrets/file-app")).unwrap(),
        file_value
    );
    assert_eq!(bao.version("cds/vault-app").await, vault_version);
    assert_eq!(
        moto.secrets_manager()
            .list_secret_version_ids()
            .secret_id("cds/aws-app")
            .send()
            .await
            .unwrap()
            .versions()
            .len(),
        aws_versions
    );

    let mut values = vec![
        file_value,
        vault_value,
        aws_value,
        ADMIN_SECRET.to_owned(),
        bao.root.clone(),
    ];
    values.extend(SEEDED.iter().map(|s| s.to_string()));
    support::assert_no_secret(&output, &values);
}

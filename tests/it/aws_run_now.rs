//! The binary end to end with the AWS stores: `--run-now` against the CDS emulator
//! rotates one client into `aws_secrets_manager` and one into `kms_file` on a moto
//! server, with credentials from the environment (the default chain), as in production.

use crate::support;
use crate::support::moto;

use support::{ADMIN_SECRET, APP, APP_SEEDED_SECRET, Env, HYBRID, TENANT, text};

/// A policy with one client in each AWS store.
fn write_policy(env: &Env, moto: &moto::Moto) {
    write_policy_with_key(env, moto, "alias/cds");
}

/// [`write_policy`] with the kms_file store sealing with `key`.
fn write_policy_with_key(env: &Env, moto: &moto::Moto, key: &str) {
    let moto = &moto.url;
    let policy = env
        .relative_policy()
        .connect("request_timeout: 5s")
        .store(&format!(
            r#"aws: {{ type: aws_secrets_manager, region: eu-west-1, kms_key_id: alias/cds, endpoint_url: "{moto}" }}"#
        ))
        .store(&format!(
            r#"sealed: {{ type: kms_file, dir: ./sealed, key_id: {key}, region: eu-west-1, endpoint_url: "{moto}" }}"#
        ))
        .notifier("ops: { type: log }")
        .default("grace: 0s")
        .default("verify_timeout: 5s")
        .client(&format!(
            "  - {{ name: app, client_id: {APP}, kind: client_credentials, store: {{ name: aws, secret: cds/app }}, notify: [ops] }}"
        ))
        .client(&format!(
            "  - {{ name: web, client_id: {HYBRID}, kind: hybrid, store: {{ name: sealed, secret: web }}, notify: [ops] }}"
        ));
    env.write(&policy);
}

/// The environment of a rotator on a host with AWS credentials in its environment, and
/// nothing else of the default chain (no profile files, no instance metadata).
const AWS_ENV: [(&str, &str); 8] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "eu-west-1"),
    ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    ),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("RUST_LOG", "trace"),
    ("LOG_SENSITIVE_BODIES", "true"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_rotates_into_both_aws_stores_then_a_second_run_changes_nothing() {
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let env = Env::start().await;
    write_policy(&env, &moto);

    let out = env.cli(&["--run-now"], &AWS_ENV).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app: rotated: new secret 2"), "{stdout}");
    assert!(stdout.contains("web: rotated: new secret 1"), "{stdout}");
    let mut output = text(&out);

    // Applications read the new values through AWS, and they work in CDS.
    let app = moto
        .secrets_manager_value("cds/app", "AWSCURRENT")
        .await
        .expect("the app's secret in Secrets Manager");
    let web = moto
        .kms_file_value(&env.dir.path().join("sealed/web"), HYBRID, TENANT)
        .await
        .expect("the web client's sealed file");
    assert!(env.gets_token(APP, &app).await);
    assert!(env.gets_token(HYBRID, &web).await);
    let described = moto
        .secrets_manager()
        .describe_secret()
        .secret_id("cds/app")
        .send()
        .await
        .unwrap();
    assert!(described.kms_key_id().is_some_and(|k| k.contains("cds")));

    // A second run: nothing due, nothing written anywhere.
    let writes = env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets");
    let versions = |name: &'static str| {
        let sm = moto.secrets_manager();
        async move {
            sm.list_secret_version_ids()
                .secret_id(name)
                .send()
                .await
                .unwrap()
                .versions()
                .len()
        }
    };
    let app_versions = versions("cds/app").await;
    let sealed = std::fs::read(env.dir.path().join("sealed/web")).unwrap();
    let out = env.cli(&["--run-now"], &AWS_ENV).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("app: up to date (current secret 2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("web: up to date (current secret 1)"),
        "{stdout}"
    );
    output.push_str(&text(&out));
    assert_eq!(
        writes,
        env.count("POST", "/Secrets") + env.count("DELETE", "/Secrets")
    );
    assert_eq!(app_versions, versions("cds/app").await);
    assert_eq!(
        sealed,
        std::fs::read(env.dir.path().join("sealed/web")).unwrap()
    );

    // The preflight proves both stores can be written, and changes nothing.
    let out = env.cli(&["check"], &AWS_ENV).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    output.push_str(&text(&out));
    assert_eq!(app_versions, versions("cds/app").await);
    assert_eq!(
        sealed,
        std::fs::read(env.dir.path().join("sealed/web")).unwrap()
    );

    // No value in any output, even at trace level (the SDK's own logs included).
    assert!(output.contains("TRACE"), "{output}");
    assert!(
        !output.contains("AWS4-HMAC-SHA256"),
        "AWS request signatures were logged"
    );
    support::assert_no_secret(
        &output,
        &[
            app,
            web,
            ADMIN_SECRET.to_owned(),
            APP_SEEDED_SECRET.to_owned(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_with_an_unknown_kms_key_fails_that_client_names_the_key_and_leaves_no_secret() {
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let env = Env::start().await;
    write_policy_with_key(&env, &moto, "alias/missing");
    let before = env.ids(HYBRID);

    let out = env.cli(&["--run-now"], &AWS_ENV).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let output = text(&out);
    assert!(output.contains("store sealed"), "{output}");
    assert!(output.contains("alias/missing"), "{output}");
    assert!(output.contains("NotFoundException"), "{output}");
    // The other client is not held up; the failed one's new secret was deleted again.
    assert!(
        moto.secrets_manager_value("cds/app", "AWSCURRENT")
            .await
            .is_some()
    );
    assert_eq!(env.ids(HYBRID), before);
    assert!(!env.dir.path().join("sealed/web").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_without_aws_credentials_says_where_they_are_looked_for() {
    let moto = moto::Moto::start().await;
    moto.create_key("alias/cds").await;
    let env = Env::start().await;
    write_policy(&env, &moto);
    let no_credentials: Vec<(&str, &str)> = AWS_ENV
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .collect();
    let mut cmd = env.command(&["--run-now"], &no_credentials);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().await.unwrap();
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in ["app: FAILED", "web: FAILED"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("only from the default chain"), "{line}");
    }
    // Nothing was sent, so the new secret of the client that got as far as publish was
    // deleted again rather than kept as a possible landing.
    assert!(stdout.contains("the new secret 1 was deleted"), "{stdout}");
    assert!(env.ids(HYBRID).is_empty());
}

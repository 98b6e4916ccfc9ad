use super::*;

const VALID: &str = r#"
connect:
  url: https://uswe.datahub.connect.aveva.com
  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
  credentials:
    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d
    client_secret_file: /run/credentials/cds-rotator.service/admin
  max_concurrency: 4
stores:
  local: { type: file, dir: secrets }
notifiers:
  ops: { type: log }
defaults:
  schedule: "0 0 3 * * *"
  lifetime: 90d
  rotate_before: 30d
  grace: 24h
  orphan_grace: 10m
clients:
  - name: historian-uploader
    client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    kind: client_credentials
    store: { name: local, secret: historian-uploader }
    notify: [ops]
    retire_unmanaged: false
  - name: dashboard
    client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    kind: hybrid
    store: { name: local }
    grace: 2h
"#;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text)
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn a_valid_policy_resolves_defaults_and_overrides() {
    let p = parse(VALID).unwrap();
    assert_eq!(p.connect.max_concurrency, 4);
    assert_eq!(
        p.stores["local"],
        StoreSpec::File {
            dir: PathBuf::from("/etc/cds-rotator/secrets")
        }
    );
    let dash = p.client("dashboard").unwrap();
    assert_eq!(dash.kind, ClientKind::Hybrid);
    assert_eq!(dash.secret, "dashboard");
    assert_eq!(dash.timing.grace, Duration::hours(2));
    assert_eq!(dash.timing.lifetime, Duration::days(90));
    assert!(!dash.retire_unmanaged);
}

#[test]
fn an_unknown_key_is_an_error_with_its_location() {
    let text = VALID.replace("retire_unmanaged: false", "retire_unmanged: false");
    let err = error_of(&text);
    assert!(
        err.starts_with("/etc/cds-rotator/policy.yaml:25:5:"),
        "{err}"
    );
    assert!(err.contains("retire_unmanged"), "{err}");
}

#[test]
fn a_plaintext_secret_is_refused_without_echoing_it() {
    let text = VALID.replace(
        "client_secret_file: /run/credentials/cds-rotator.service/admin",
        "client_secret: hunter2-very-secret",
    );
    let err = error_of(&text);
    assert!(err.contains("policy.yaml:7:20:"), "{err}");
    assert!(err.contains("plaintext client_secret"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn plain_http_is_only_for_loopback() {
    let err = error_of(&VALID.replace(
        "https://uswe.datahub.connect.aveva.com",
        "http://cds.example.com",
    ));
    assert!(err.contains("policy.yaml:3:8: connect.url"), "{err}");
    assert!(err.contains("use https"), "{err}");
    parse(&VALID.replace(
        "https://uswe.datahub.connect.aveva.com",
        "http://127.0.0.1:8080",
    ))
    .unwrap();
}

#[test]
fn a_regional_url_is_refused_naming_the_primary_one() {
    let err = error_of(&VALID.replace("uswe.", "euno."));
    assert!(err.contains("regional host"), "{err}");
    assert!(err.contains(PRIMARY_URL), "{err}");
}

#[test]
fn bad_durations_and_schedules_point_at_the_value() {
    let err = error_of(&VALID.replace("lifetime: 90d", "lifetime: 90"));
    assert!(err.contains("policy.yaml:15:13: lifetime"), "{err}");
    let err = error_of(&VALID.replace("\"0 0 3 * * *\"", "\"0 3 * * *\""));
    assert!(err.contains("policy.yaml:14:13: schedule"), "{err}");
}

#[test]
fn unsafe_timings_are_refused() {
    let err = error_of(&VALID.replace("rotate_before: 30d", "rotate_before: 90d"));
    assert!(
        err.contains("rotate_before (90d) must be shorter than lifetime"),
        "{err}"
    );
    let err = error_of(&VALID.replace("lifetime: 90d", "lifetime: 800d"));
    assert!(err.contains("at most 730d"), "{err}");
    let err = error_of(&VALID.replace("grace: 2h", "grace: 40d"));
    assert!(
        err.contains("grace (40d) must be shorter than rotate_before"),
        "{err}"
    );
}

#[test]
fn authorization_code_clients_are_refused() {
    let err = error_of(&VALID.replace("kind: hybrid", "kind: authorization_code"));
    assert!(
        err.contains("client `dashboard`: authorization-code"),
        "{err}"
    );
}

#[test]
fn references_must_be_declared_and_clients_unique() {
    let err = error_of(&VALID.replace("notify: [ops]", "notify: [pager]"));
    assert!(err.contains("notifier `pager` is not declared"), "{err}");
    let err = error_of(&VALID.replace("{ name: local }", "{ name: vault }"));
    assert!(err.contains("store `vault` is not declared"), "{err}");
    let err = error_of(&VALID.replace("1b0c1d2e", "0b0c1d2e"));
    assert!(err.contains("listed twice"), "{err}");
    let err = error_of(&VALID.replace("tenant_id: 8c6f", "tenant_id: zz6f"));
    assert!(err.contains("is not a GUID"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = VALID
        .replace("lifetime: 90d", "lifetime: soon")
        .replace("notify: [ops]", "notify: [pager]");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
}

#[test]
fn a_yaml_bomb_is_refused() {
    let mut text = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 1..12 {
        let prev = if i == 1 {
            "a".to_owned()
        } else {
            format!("a{}", i - 1)
        };
        text.push_str(&format!(
            "a{i}: &a{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems.len(), 1);
}

#[test]
fn self_rotation_needs_the_credential_file_to_be_the_published_one() {
    let own = VALID.replace(
        "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0",
        "2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d",
    );
    let err = error_of(&own);
    assert!(err.contains("is the rotator's own client"), "{err}");
    assert!(
        err.contains("/etc/cds-rotator/secrets/historian-uploader"),
        "{err}"
    );
    parse(&own.replace(
        "/run/credentials/cds-rotator.service/admin",
        "/etc/cds-rotator/secrets/historian-uploader",
    ))
    .unwrap();
}

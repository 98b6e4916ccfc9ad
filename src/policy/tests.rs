use super::*;
use crate::pickup::ack_file::spec::AckFileSpec;
use crate::pickup::http_probe::spec::HttpProbeSpec;
use crate::store::file::spec::FileSpec;

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

/// As inside the systemd unit (`$CREDENTIALS_DIRECTORY` set), whatever the test's own
/// environment.
fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse_with_credentials(
        Path::new("/etc/cds-rotator/policy.yaml"),
        text,
        Some(Path::new("/run/credentials/cds-rotator.service")),
    )
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
        StoreSpec::File(FileSpec {
            dir: PathBuf::from("/etc/cds-rotator/secrets"),
            mode: 0o600,
            group: None,
        })
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
        .replace("notify: [ops]", "notify: [pager]")
        .replace("1b0c1d2e", "0b0c1d2e");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    assert!(err.to_string().contains("listed twice"), "{err}");
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
    assert!(
        err.problems[0].message.contains("too large or too complex"),
        "{err}"
    );
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

const ADMIN_ID: &str = "2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d";
const CREDENTIAL: &str = "client_secret_file: /run/credentials/cds-rotator.service/admin";

/// VALID with the rotator's credential set by `line` (`client_secret_file: …` or
/// `client_secret_env: …`).
fn with_credential(line: &str) -> String {
    VALID.replace(CREDENTIAL, line)
}

/// VALID with historian-uploader turned into the rotator's own client.
fn self_rotating(credential_line: &str) -> String {
    with_credential(credential_line).replace("0b0c1d2e-3f40-4152-6374-8596a7b8c9d0", ADMIN_ID)
}

/// A policy with stores `a` and `b` (directories as given) and clients `x` (in `a`) and
/// `y` (in `b`), both with the secret `app`.
fn two_stores(dir_a: &str, dir_b: &str) -> String {
    format!(
        r#"
connect:
  url: https://uswe.datahub.connect.aveva.com
  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f
  credentials:
    client_id: {ADMIN_ID}
    {CREDENTIAL}
stores:
  a: {{ type: file, dir: "{dir_a}" }}
  b: {{ type: file, dir: "{dir_b}" }}
clients:
  - name: x
    client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: {{ name: a, secret: app }}
  - name: y
    client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0
    store: {{ name: b, secret: app }}
"#
    )
}

/// A temporary directory with `real/` and a symlink `link` -> `real`.
fn dir_with_link() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
    tmp
}

fn parse_in(dir: &Path, text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(&dir.join("policy.yaml"), text)
}

#[test]
fn every_relative_path_resolves_against_the_policy_directory() {
    let text = with_credential("client_secret_file: ./credentials/../credentials/./admin")
        .replace("dir: secrets", "dir: ./x/../secrets/.")
        .replace("clients:", "lock_dir: ../run/locks\nclients:");
    let p = parse(&text).unwrap();
    assert_eq!(
        p.connect.secret,
        SecretSource::File(PathBuf::from("/etc/cds-rotator/credentials/admin"))
    );
    assert_eq!(
        p.stores["local"],
        StoreSpec::File(FileSpec {
            dir: PathBuf::from("/etc/cds-rotator/secrets"),
            mode: 0o600,
            group: None,
        })
    );
    assert_eq!(p.lock_dir, PathBuf::from("/etc/run/locks"));
}

#[test]
fn a_bare_policy_file_name_resolves_against_the_current_directory() {
    let text = with_credential("client_secret_file: ./admin");
    let p = Policy::parse(Path::new("policy.yaml"), &text).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(p.connect.secret, SecretSource::File(cwd.join("admin")));
    assert_eq!(
        p.stores["local"],
        StoreSpec::File(FileSpec {
            dir: cwd.join("secrets"),
            mode: 0o600,
            group: None,
        })
    );
}

#[test]
fn an_ordinary_client_may_not_publish_over_the_rotators_credential() {
    for credential in [
        "client_secret_file: ./secrets/historian-uploader",
        "client_secret_file: ../cds-rotator/secrets/./historian-uploader",
        "client_secret_file: /etc/cds-rotator/secrets/historian-uploader",
    ] {
        let err = error_of(&with_credential(credential));
        assert!(
            err.contains("client `historian-uploader` would publish its secrets to /etc/cds-rotator/secrets/historian-uploader, which is the rotator's own credential"),
            "{credential}: {err}"
        );
        assert!(err.contains("another secret name or store"), "{err}");
    }
}

#[test]
fn a_store_reached_through_a_symlink_may_not_overwrite_the_credential() {
    let tmp = dir_with_link();
    let text = with_credential("client_secret_file: ./real/historian-uploader")
        .replace("dir: secrets", "dir: link");
    let err = parse_in(tmp.path(), &text).unwrap_err().to_string();
    assert!(
        err.contains("client `historian-uploader` would publish its secrets to"),
        "{err}"
    );
    assert!(err.contains("rotator's own credential"), "{err}");
}

#[test]
fn a_store_record_may_not_overwrite_the_credential() {
    for credential in [
        "client_secret_file: ./secrets/dashboard.json",
        "client_secret_file: ./secrets/.dashboard.pending.json",
    ] {
        let err = error_of(&with_credential(credential));
        assert!(
            err.contains(
                "client `dashboard` would write its store record to /etc/cds-rotator/secrets/"
            ),
            "{credential}: {err}"
        );
    }
}

#[test]
fn self_rotation_finds_its_credential_file_through_dots_and_symlinks() {
    parse(&self_rotating(
        "client_secret_file: ./secrets/../secrets/historian-uploader",
    ))
    .unwrap();
    let tmp = dir_with_link();
    let text = self_rotating("client_secret_file: ./real/historian-uploader")
        .replace("dir: secrets", "dir: link");
    let p = parse_in(tmp.path(), &text).unwrap();
    // Kept as written (resolved, not canonicalized): the rotator reads what it publishes.
    assert_eq!(
        p.connect.secret,
        SecretSource::File(tmp.path().join("real/historian-uploader"))
    );
}

#[test]
fn two_stores_in_one_directory_may_not_hold_the_same_secret_name() {
    let err = error_of(&two_stores("secrets", "secrets/./"));
    assert!(
        err.contains("store `a` and store `b` are the same directory (/etc/cds-rotator/secrets); clients `x` and `y` would overwrite each other's secret `app`"),
        "{err}"
    );
    assert_eq!(
        parse(&two_stores("secrets", "secrets/./"))
            .unwrap_err()
            .problems
            .len(),
        1
    );
    // Different secret names in one directory are fine.
    parse(
        &two_stores("secrets", "secrets/./")
            .replace("{ name: b, secret: app }", "{ name: b, secret: other }"),
    )
    .unwrap();
}

#[test]
fn two_stores_linked_to_one_directory_may_not_hold_the_same_secret_name() {
    let tmp = dir_with_link();
    let err = parse_in(tmp.path(), &two_stores("real", "link"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store `a` and store `b` are the same directory"),
        "{err}"
    );
    assert!(
        err.contains("clients `x` and `y` would overwrite each other's secret"),
        "{err}"
    );
}

#[test]
fn one_store_secret_used_by_two_clients_names_both() {
    let err = error_of(&two_stores("secrets", "secrets").replace("name: b,", "name: a,"));
    assert!(
        err.contains("store `a` secret `app` is used by clients `x` and `y`"),
        "{err}"
    );
}

#[test]
fn a_secret_name_ending_in_json_is_still_refused() {
    let err = error_of(&VALID.replace("secret: historian-uploader", "secret: dashboard.json"));
    assert!(err.contains("nor end with `.json`"), "{err}");
}

#[test]
fn a_value_pasted_as_client_secret_env_is_refused_without_being_shown() {
    let long = "A".repeat(129);
    for pasted in [
        "Xy9/+Q==kT3vB7",
        "9kT3vB7wQ",
        "kT3v B7wQ",
        "kT3v-B7wQ",
        "p@ssw0rd-kT3v",
        long.as_str(),
    ] {
        let err = parse(&with_credential(&format!(
            "client_secret_env: \"{pasted}\""
        )))
        .unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(
            shown.contains("policy.yaml:7:24: connect.credentials.client_secret_env must be the NAME of an environment variable"),
            "{shown}"
        );
        assert!(shown.contains("the value given is not shown"), "{shown}");
        assert!(!shown.contains(pasted), "{pasted} echoed: {shown}");
    }
}

#[test]
fn a_value_pasted_as_client_secret_file_is_refused_without_being_shown() {
    // (as written in YAML, a part of it that must not be shown)
    for (pasted, part) in [
        ("kT3vB7wQabc123", "kT3vB7wQabc123"),
        ("Xy9/+Q==", "Xy9/+Q=="),
        ("secrets/kT3vB7wQ", "kT3vB7wQ"),
        ("./kT3v\\aB7wQ\\n", "kT3v"),
    ] {
        let err = parse(&with_credential(&format!(
            "client_secret_file: \"{pasted}\""
        )))
        .unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(
            shown.contains("policy.yaml:7:25: connect.credentials.client_secret_file must be the PATH of a file"),
            "{shown}"
        );
        assert!(!shown.contains(part), "{pasted} echoed: {shown}");
    }
    for not_a_file in ["", ".", "./", "..", "../", "./dir/", "/"] {
        let err = error_of(&with_credential(&format!(
            "client_secret_file: \"{not_a_file}\""
        )));
        assert!(
            err.contains("must be the PATH of a file"),
            "{not_a_file}: {err}"
        );
    }
}

#[test]
fn variable_names_and_dotted_relative_paths_are_secret_sources() {
    for name in ["CDS_ROTATOR_SECRET", "_x", "a1"] {
        let p = parse(&with_credential(&format!("client_secret_env: {name}"))).unwrap();
        assert_eq!(p.connect.secret, SecretSource::Env(name.to_owned()));
    }
    let p = parse(&with_credential("client_secret_file: ../admin")).unwrap();
    assert_eq!(
        p.connect.secret,
        SecretSource::File(PathBuf::from("/etc/admin"))
    );
}

#[test]
fn rotate_before_of_zero_is_refused() {
    let err = error_of(&VALID.replace("rotate_before: 30d", "rotate_before: 0s"));
    assert!(
        err.contains("policy.yaml:16:18: rotate_before (0s) must be more than 0s"),
        "{err}"
    );
    assert!(err.contains("already locked out"), "{err}");
    // Reported once, at `defaults:`, not again for each client that inherits it.
    assert_eq!(
        parse(&VALID.replace("rotate_before: 30d", "rotate_before: 0s"))
            .unwrap_err()
            .problems
            .len(),
        1
    );
}

#[test]
fn rotate_before_must_leave_room_for_verify_and_grace() {
    // grace 24h + verify_timeout 1h do not fit in 24h30m.
    let err = error_of(&VALID.replace(
        "rotate_before: 30d",
        "rotate_before: 24h30m\n  verify_timeout: 1h",
    ));
    assert!(
        err.contains("grace (1d) must be shorter than rotate_before (1d30m), with room for verify_timeout (1h) too"),
        "{err}"
    );
    assert!(
        err.contains("the old secret must stay valid while the new one is verified"),
        "{err}"
    );
    parse(&VALID.replace(
        "rotate_before: 30d",
        "rotate_before: 25h\n  verify_timeout: 1h",
    ))
    .unwrap();
}

#[test]
fn hostile_durations_are_errors_not_panics() {
    let many_parts = "36500d".repeat(10_000);
    let many_small = "1d".repeat(40_000);
    let huge_number = "9".repeat(10_000) + "s";
    for text in [
        "9223372036854775807s",
        "18446744073709551616s",
        "9223372036854775807w",
        huge_number.as_str(),
        many_parts.as_str(),
        "36500d1s",
        "36501d",
        "5215w",
        "",
        " ",
        "d",
        "1dd",
        "1d d",
        "1 d",
        "s1",
        "-1d",
        "+1d",
        "1.5d",
        "1e9d",
        "0x10s",
        "\u{ff11}d",
        "\u{661}d",
        "1d\0",
    ] {
        let err = duration::parse(text).expect_err(text);
        assert!(err.chars().count() < 300, "{err}");
    }
    // The sum of small parts is capped too; 36500d itself is fine.
    assert!(duration::parse(&many_small).is_err());
    assert_eq!(duration::parse("5214w2d").unwrap(), Duration::days(36_500));
}

#[test]
fn a_duration_longer_than_100_years_in_total_is_refused() {
    let err = duration::parse("36500d36500d36500d").unwrap_err();
    assert_eq!(err, "`36500d36500d36500d` is longer than 36500d");
    let err = error_of(&VALID.replace(
        "orphan_grace: 10m",
        "orphan_grace: 10m\n  max_age: 36500d36500d36500d",
    ));
    assert!(
        err.contains("max_age: `36500d36500d36500d` is longer than 36500d"),
        "{err}"
    );
}

#[test]
fn durations_are_capped_per_key() {
    let with = |line: &str| VALID.replace("orphan_grace: 10m", line);
    let err = error_of(&with("orphan_grace: 10m\n  max_age: 731d"));
    assert!(err.contains("max_age (731d) must be at most 730d"), "{err}");
    let err = error_of(&with("orphan_grace: 10m\n  retry_interval: 8d"));
    assert!(
        err.contains("retry_interval (8d) must be between 1s and 7d"),
        "{err}"
    );
    let err = error_of(&with("orphan_grace: 90d"));
    assert!(
        err.contains("orphan_grace (90d) must be shorter than lifetime (90d)"),
        "{err}"
    );
    let err = error_of(&with("orphan_grace: 10m\n  verify_timeout: 61m"));
    assert!(
        err.contains("verify_timeout (1h1m) must be at most 1h"),
        "{err}"
    );
    parse(&with(
        "orphan_grace: 10m\n  max_age: 730d\n  retry_interval: 7d",
    ))
    .unwrap();
}

/// VALID with `lifetime:` in `defaults:` (line 15, value at column 13) set to `value`.
fn with_lifetime(value: &str) -> String {
    VALID.replace("lifetime: 90d", &format!("lifetime: \"{value}\""))
}

#[test]
fn a_number_without_a_unit_suggests_seconds_and_the_largest_exact_unit() {
    let err = error_of(&VALID.replace("lifetime: 90d", "lifetime: 86400"));
    assert!(
        err.contains("policy.yaml:15:13: lifetime: `86400` is not a duration: `86400` has no unit; in seconds write `86400s` (or `1d`)"),
        "{err}"
    );
    assert!(!err.contains("86400d"), "{err}");
    let err = duration::parse("90").unwrap_err();
    assert!(err.contains("write `90s`;"), "{err}");
    assert!(
        duration::parse("1209600")
            .unwrap_err()
            .contains("(or `2w`)")
    );
}

#[test]
fn every_malformed_duration_names_the_key_and_says_how_durations_are_written() {
    for bad in [
        "500ms",
        "-1h",
        "+1h",
        "1.5d",
        "1 d",
        "90y",
        "90D",
        "d",
        "1d12",
        "soon",
        "1dd",
        "1d\\0",
        "\u{ff11}d",
        "0x10s",
    ] {
        let err = error_of(&with_lifetime(bad));
        assert!(
            err.contains("policy.yaml:15:13: lifetime: `"),
            "{bad}: {err}"
        );
        assert!(
            err.contains("use whole numbers with units s, m, h, d or w, no sign or spaces, combined like 1d12h"),
            "{bad}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
    }
}

#[test]
fn a_malformed_duration_names_the_duration_meant_when_it_is_clear() {
    for (bad, says) in [
        ("1.5d", "whole numbers only: write `1d12h`"),
        ("0.5h", "whole numbers only: write `30m`"),
        ("1 d", "no spaces inside a duration: write `1d`"),
        ("1d 12h", "no spaces inside a duration: write `1d12h`"),
        ("-1h", "a duration cannot be negative: write `1h`"),
        ("+1h", "no sign: write `1h`"),
        (
            "500ms",
            "unknown unit `ms`: nothing shorter than a second (s) is supported",
        ),
        ("90days", "unknown unit `days`: for days write d"),
        (
            "1y",
            "months and years differ in length: write days, like 365d",
        ),
        ("2H", "units are lower case: write h"),
        ("1d12", "the last number `12` has no unit"),
        ("d", "a number must come before `d`"),
    ] {
        let err = duration::parse(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_wrong_kind_of_value_names_the_key_and_what_to_write() {
    let err = error_of(&VALID.replace("max_concurrency: 4", "max_concurrency: lots"));
    assert_eq!(
        err,
        "/etc/cds-rotator/policy.yaml:8:20: connect.max_concurrency: expected a whole number from 1 to 64"
    );
    for word in ["maybe", "yes", "1", "\"true\""] {
        let err = error_of(&VALID.replace(
            "retire_unmanaged: false",
            &format!("retire_unmanaged: {word}"),
        ));
        assert_eq!(
            err,
            "/etc/cds-rotator/policy.yaml:25:23: client `historian-uploader`: retire_unmanaged: expected true or false",
            "{word}"
        );
    }
    let err = error_of(&VALID.replace("notify: [ops]", "notify: ops"));
    assert!(
        err.contains(
            "client `historian-uploader`: notify: expected a list of notifier names, like [ops]"
        ),
        "{err}"
    );
    let err = error_of(&VALID.replace("lifetime: 90d", "lifetime: [90d]"));
    assert!(
        err.contains("policy.yaml:15:13: defaults.lifetime: expected a duration like 90d"),
        "{err}"
    );
    let err = error_of(&VALID.replace("max_concurrency: 4", "max_concurrency: 100"));
    assert!(
        err.contains("connect.max_concurrency (100) must be between 1 and 64"),
        "{err}"
    );
}

#[test]
fn a_key_set_twice_is_reported_at_each_repeat_without_parser_advice() {
    let text = VALID
        .replace("grace: 2h", "grace: 2h\n    grace: 3h")
        .replace("orphan_grace: 10m", "orphan_grace: 10m\n  lifetime: 30d");
    let err = parse(&text).unwrap_err();
    let all = err.to_string();
    assert_eq!(err.problems.len(), 2, "{all}");
    assert!(
        all.contains("policy.yaml:19:3: defaults.lifetime is set twice in this mapping (first at line 15); keep one"),
        "{all}"
    );
    assert!(
        all.contains("policy.yaml:32:5: client `dashboard`: grace is set twice in this mapping (first at line 31); keep one"),
        "{all}"
    );
    assert!(!all.contains("DuplicateKeyPolicy"), "{all}");
    assert!(!all.contains("Options"), "{all}");
}

#[test]
fn every_unknown_key_is_reported_at_once_with_a_suggestion() {
    let text = VALID
        .replace("max_concurrency: 4", "max_concurency: 4")
        .replace("rotate_before: 30d", "rotate_befor: 30d")
        .replace("dir: secrets", "dri: secrets")
        .replace("retire_unmanaged: false", "retire: false\n    colour: blue");
    let err = parse(&text).unwrap_err();
    let all = err.to_string();
    for line in [
        "policy.yaml:8:3: unknown field `max_concurency` in connect: did you mean `max_concurrency`?",
        "policy.yaml:10:24: unknown field `dri` in stores.local: did you mean `dir`?",
        "policy.yaml:16:3: unknown field `rotate_befor` in defaults: did you mean `rotate_before`?",
        "policy.yaml:25:5: unknown field `retire` in client `historian-uploader`: did you mean `retire_unmanaged`?",
        "policy.yaml:26:5: unknown field `colour` in client `historian-uploader`; remove it, or use one of: name, client_id, kind, store, notify, retire_unmanaged, schedule,",
    ] {
        assert!(all.contains(line), "{line}\n{all}");
    }
    // The store entry with a typo also lacks its `dir`.
    assert!(
        all.contains("policy.yaml:10:10: stores.local.dir is missing; set it to the directory"),
        "{all}"
    );
    assert_eq!(err.problems.len(), 6, "{all}");
}

#[test]
fn missing_and_empty_keys_say_what_to_set() {
    let err = error_of(&VALID.replace("  url: https://uswe.datahub.connect.aveva.com\n", ""));
    assert!(
        err.contains("policy.yaml:3:3: connect.url is missing; set it to the CDS URL, https://uswe.datahub.connect.aveva.com"),
        "{err}"
    );
    let err = error_of(&VALID.replace(
        "tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f",
        "tenant_id:",
    ));
    assert!(
        err.contains("connect.tenant_id is empty; set it to the GUID of your tenant"),
        "{err}"
    );
    let err = error_of(&VALID.replace("{ type: file, dir: secrets }", "{ dir: secrets }"));
    assert!(
        err.contains("policy.yaml:10:10: stores.local.type is missing; set it to file"),
        "{err}"
    );
    let err = error_of(&VALID.replace("{ type: file, dir: secrets }", "{ type: s3 }"));
    assert!(
        err.contains("stores.local.type: `s3` is not a store type; use file or vault"),
        "{err}"
    );
    let err = error_of("");
    assert!(err.contains("the policy is empty"), "{err}");
}

#[test]
fn shape_errors_never_echo_a_value() {
    let pasted = "Zq8Ws7xZpR2mLk4Vn9TbY3cHj6FdG1sAe";
    for text in [
        VALID.replace("max_concurrency: 4", &format!("max_concurrency: {pasted}")),
        VALID.replace(
            "retire_unmanaged: false",
            &format!("retire_unmanaged: {pasted}"),
        ),
        VALID.replace(
            "tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f",
            &format!("tenant_id: {pasted}"),
        ),
        VALID.replace(
            "client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0",
            &format!("client_id: {pasted}"),
        ),
        VALID
            .replace("lock_dir", "")
            .replace("stores:", &format!("lock_dir: [{pasted}]\nstores:")),
        VALID.replace(
            "max_concurrency: 4",
            &format!("max_concurrency: {{ {pasted}: 1 }}"),
        ),
    ] {
        let err = parse(&text).unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(!shown.contains(pasted), "echoed: {shown}");
    }
}

#[test]
fn a_wrong_default_is_reported_once_at_its_line_with_its_value() {
    let err = parse(&VALID.replace("lifetime: 90d", "lifetime: 900d")).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string()
            .contains("policy.yaml:15:13: lifetime (900d) must be more than 0s and at most 730d"),
        "{err}"
    );
    // A client that sets another key of the broken rule does not repeat it.
    let text = VALID
        .replace("grace: 24h", "grace: 40d")
        .replace("retire_unmanaged: false", "verify_timeout: 1m");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string()
            .contains("policy.yaml:17:10: grace (40d) must be shorter than rotate_before (30d)"),
        "{err}"
    );
    // A default that does not parse is reported once, and no rule is judged on it.
    let text = VALID
        .replace("lifetime: 90d", "lifetime: 90x")
        .replace("retire_unmanaged: false", "rotate_before: 100d");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string()
            .contains("policy.yaml:15:13: lifetime: `90x`"),
        "{err}"
    );
    // A client that breaks a rule itself is told, at its own key.
    let err = error_of(&VALID.replace("grace: 2h", "grace: 40d"));
    assert!(
        err.contains("policy.yaml:30:12: grace (40d) must be shorter than rotate_before (30d)"),
        "{err}"
    );
}

#[test]
fn max_age_not_longer_than_grace_gives_both_values() {
    let err = error_of(&VALID.replace("orphan_grace: 10m", "orphan_grace: 10m\n  max_age: 12h"));
    assert!(
        err.contains("policy.yaml:19:12: max_age (12h) must be longer than grace (1d)"),
        "{err}"
    );
    assert!(err.contains("raise max_age or lower grace"), "{err}");
}

#[test]
fn placeholders_must_be_replaced_and_say_with_what() {
    let text = VALID
        .replace("https://uswe.datahub.connect.aveva.com", "<cds-url>")
        .replace("8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f", "<your-tenant-id>")
        .replace("0b0c1d2e-3f40-4152-6374-8596a7b8c9d0", "<app-client-id>")
        .replace("dir: secrets", "dir: <secrets-dir>")
        .replace(
            "/run/credentials/cds-rotator.service/admin",
            "<secret-file>",
        );
    let err = parse(&text).unwrap_err();
    let all = err.to_string();
    for line in [
        "policy.yaml:3:8: connect.url: replace the placeholder `<cds-url>` with https://uswe.datahub.connect.aveva.com",
        "policy.yaml:4:14: connect.tenant_id: replace the placeholder `<your-tenant-id>` with the GUID of your tenant",
        "policy.yaml:7:25: connect.credentials.client_secret_file: replace the placeholder `<secret-file>` with the path of the file",
        "policy.yaml:10:29: stores.local.dir: replace the placeholder `<secrets-dir>` with the directory",
        "policy.yaml:21:16: client `historian-uploader`: client_id: replace the placeholder `<app-client-id>` with the GUID of the CDS client",
    ] {
        assert!(all.contains(line), "{line}\n{all}");
    }
    assert_eq!(err.problems.len(), 5, "{all}");
    // A value that merely has the shape of a placeholder is not shown.
    let err = error_of(&with_credential("client_secret_env: <Zq8Ws7xZ/pR2mLk4>"));
    assert!(err.contains("replace the placeholder `<…>`"), "{err}");
    assert!(!err.contains("Zq8Ws7xZ"), "{err}");
}

const EXAMPLE: &str = include_str!("../../config/policy.yaml");

#[test]
fn the_example_policy_fails_only_on_its_placeholders() {
    let err = parse(EXAMPLE).unwrap_err();
    assert_eq!(err.problems.len(), 4, "{err}");
    for p in &err.problems {
        assert!(p.message.contains("replace the placeholder `<"), "{err}");
    }
}

#[test]
fn the_example_policy_with_its_placeholders_replaced_is_valid() {
    let text = EXAMPLE
        .replace("<your-tenant-id>", "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f")
        .replace("<rotator-client-id>", ADMIN_ID)
        .replace(
            "<historian-uploader-client-id>",
            "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0",
        )
        .replace(
            "<dashboard-backend-client-id>",
            "1b0c1d2e-3f40-4152-6374-8596a7b8c9d0",
        );
    let p = parse(&text).unwrap();
    assert_eq!(p.clients.len(), 2);
    // The example spells out the built-in defaults.
    assert_eq!(p.clients[0].timing, Timing::default());
    assert_eq!(p.connect.max_concurrency, 8);
    assert_eq!(
        p.connect.request_timeout,
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn a_value_only_the_parser_refuses_still_names_the_key_and_what_to_write() {
    // The parser itself refuses the tagged value (a YAML int that is not one).
    let err = error_of(&VALID.replace("lifetime: 90d", "lifetime: !!int abc"));
    assert!(
        err.contains("policy.yaml:15:19: lifetime: expected a duration like 90d"),
        "{err}"
    );
}

#[test]
fn a_file_store_takes_mode_0600_or_0640_and_a_group_by_name_or_gid() {
    let with = |extra: &str| {
        VALID.replace(
            "local: { type: file, dir: secrets }",
            &format!("local: {{ type: file, dir: secrets{extra} }}"),
        )
    };
    let spec = |text: &str| parse(text).unwrap().stores["local"].clone();
    for (extra, mode, group) in [
        ("", 0o600, None),
        (", mode: \"0640\"", 0o640, None),
        (", mode: 0640", 0o640, None),
        (", mode: \"0600\", group: 1234", 0o600, Some(1234)),
        (", mode: \"0640\", group: root", 0o640, Some(0)),
    ] {
        match spec(&with(extra)) {
            StoreSpec::File(FileSpec {
                mode: m, group: g, ..
            }) => assert_eq!((m, g), (mode, group), "{extra}"),
            other => panic!("not a file store: {other:?}"),
        }
    }
    for (extra, says) in [
        (", mode: \"0644\"", "mode `0644` is not allowed"),
        (", mode: 0666", "mode `0666` is not allowed"),
        (", mode: \"rw\"", "is not allowed"),
        (", group: no-such-group-here", "not a group in /etc/group"),
    ] {
        let err = error_of(&with(extra));
        assert!(err.contains(says), "{extra}: {err}");
        assert!(err.contains("policy.yaml:10:"), "{extra}: {err}");
    }
}

/// VALID plus a vault store `bao` and an AWS store `aws`, with historian-uploader (the
/// rotator's own client) in `store`, and the rotator's credential set by `credential`.
fn self_in(store: &str, credential: &str) -> String {
    self_rotating(credential)
        .replace(
            "  local: { type: file, dir: secrets }\n",
            "  local: { type: file, dir: secrets }\n  bao: { type: vault, address: https://vault:8200, auth: { method: token, token_env: VAULT_TOKEN } }\n  aws: { type: aws_secrets_manager, region: eu-west-1 }\n",
        )
        .replace(
            "store: { name: local, secret: historian-uploader }",
            &format!("store: {store}"),
        )
}

#[test]
fn the_credential_may_come_from_a_declared_store() {
    let p = parse(&self_in(
        "{ name: bao, secret: cds/rotator }",
        "client_secret_store: { name: bao, secret: cds/rotator }",
    ))
    .unwrap();
    assert_eq!(
        p.connect.secret,
        SecretSource::Store {
            store: "bao".into(),
            secret: "cds/rotator".into()
        }
    );
    // Into AWS too, and into a file store: the same as client_secret_file.
    parse(&self_in(
        "{ name: aws, secret: cds/rotator }",
        "client_secret_store: { name: aws, secret: cds/rotator }",
    ))
    .unwrap();
    parse(&self_in(
        "{ name: local, secret: rotator }",
        "client_secret_store: { name: local, secret: rotator }",
    ))
    .unwrap();
    parse(&self_in(
        "{ name: local, secret: rotator }",
        "client_secret_file: /etc/cds-rotator/secrets/rotator",
    ))
    .unwrap();
}

#[test]
fn a_credential_store_is_checked_and_exactly_one_source_is_set() {
    let err = error_of(&with_credential(
        "client_secret_store: { name: nowhere, secret: x }",
    ));
    assert!(
        err.contains("client_secret_store: store `nowhere` is not declared"),
        "{err}"
    );
    let err = error_of(&with_credential(
        "client_secret_store: { name: local, secret: Pasted/Value-0123 }",
    ));
    assert!(err.contains("store `local` secret name must be"), "{err}");
    assert!(!err.contains("Pasted/Value-0123"), "{err}");
    let err = error_of(&with_credential("client_secret_store: { name: local }"));
    assert!(err.contains("needs secret"), "{err}");
    let err = error_of(&with_credential(&format!(
        "{CREDENTIAL}\n    client_secret_store: {{ name: local, secret: x }}"
    )));
    assert!(
        err.contains(
            "exactly one of client_secret_credential, client_secret_file, client_secret_env and client_secret_store"
        ),
        "{err}"
    );
}

#[test]
fn self_rotation_into_a_service_store_needs_the_credential_read_from_that_slot() {
    let pasted = "Pasted-Secret-Value-0123456789";
    for (store, credential) in [
        // A file credential, a vault slot.
        ("{ name: bao, secret: cds/rotator }", CREDENTIAL.to_owned()),
        // Another secret of the same store.
        (
            "{ name: bao, secret: cds/rotator }",
            "client_secret_store: { name: bao, secret: cds/other }".to_owned(),
        ),
        // Another store.
        (
            "{ name: aws, secret: cds/rotator }",
            "client_secret_store: { name: bao, secret: cds/rotator }".to_owned(),
        ),
        // A file slot, the credential in vault.
        (
            "{ name: local, secret: rotator }",
            "client_secret_store: { name: bao, secret: cds/rotator }".to_owned(),
        ),
        (
            "{ name: bao, secret: cds/rotator }",
            "client_secret_env: CDS_ROTATOR_SECRET".to_owned(),
        ),
        (
            "{ name: bao, secret: cds/rotator }",
            format!("client_secret_store: {{ name: bao, secret: {pasted} }}"),
        ),
    ] {
        let err = error_of(&self_in(store, &credential));
        assert!(err.contains("is the rotator's own client"), "{err}");
        assert!(err.contains("client_secret_store"), "{err}");
        assert!(!err.contains(pasted), "{err}");
    }
    // Another client may not publish to the rotator's credential.
    let text = with_credential("client_secret_store: { name: bao, secret: cds/rotator }")
        .replace(
            "  local: { type: file, dir: secrets }\n",
            "  local: { type: file, dir: secrets }\n  bao: { type: vault, address: https://vault:8200, auth: { method: token, token_env: VAULT_TOKEN } }\n",
        )
        .replace(
            "store: { name: local, secret: historian-uploader }",
            "store: { name: bao, secret: cds/rotator }",
        );
    let err = error_of(&text);
    assert!(
        err.contains(
            "which is the rotator's own credential (connect.credentials.client_secret_store)"
        ),
        "{err}"
    );
    let err = error_of(&with_credential(
        "client_secret_store: { name: local, secret: historian-uploader }",
    ));
    assert!(
        err.contains("which is the rotator's own credential"),
        "{err}"
    );
}

#[test]
fn a_systemd_credential_is_the_file_of_that_name_in_credentials_directory() {
    let text = with_credential("client_secret_credential: admin");
    let dir = Path::new("/run/credentials/cds-rotator.service");
    let p =
        Policy::parse_with_credentials(Path::new("/etc/cds-rotator/policy.yaml"), &text, Some(dir))
            .unwrap();
    assert_eq!(p.connect.secret, SecretSource::File(dir.join("admin")));
}

#[test]
fn a_systemd_credential_outside_systemd_says_where_and_how_to_run_by_hand() {
    let text = with_credential("client_secret_credential: admin");
    let at = Path::new("/etc/cds-rotator/policy.yaml");
    let err = Policy::parse_with_credentials(at, &text, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy.yaml:7:31: connect.credentials.client_secret_credential names a systemd credential, but $CREDENTIALS_DIRECTORY is not set"),
        "{err}"
    );
    assert!(
        err.contains("systemd-run --pipe --wait -p LoadCredential="),
        "{err}"
    );
    let dir = Some(Path::new("/run/credentials/x"));
    for bad in ["../admin", "a/b", "\".\"", "\"\""] {
        let text = with_credential(&format!("client_secret_credential: {bad}"));
        let err = Policy::parse_with_credentials(at, &text, dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be the NAME of a systemd credential"),
            "{bad}: {err}"
        );
    }
    let text = VALID.replacen(
        CREDENTIAL,
        &format!("{CREDENTIAL}\n    client_secret_credential: admin"),
        1,
    );
    let err = Policy::parse_with_credentials(at, &text, dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("set exactly one of"), "{err}");
}

#[test]
fn pickup_comes_from_the_client_else_defaults_else_grace() {
    let p = parse(&VALID.replace(
        "  orphan_grace: 10m\n",
        "  orphan_grace: 10m\n  pickup: { type: ack_file, path: ack/app.ack, timeout: 2h }\n",
    ))
    .unwrap();
    let ack = PickupSpec::AckFile(AckFileSpec {
        path: PathBuf::from("/etc/cds-rotator/ack/app.ack"),
        timeout: Duration::hours(2),
    });
    assert_eq!(p.client("dashboard").unwrap().pickup, ack);
    let text = VALID.replace(
        "    grace: 2h\n",
        "    grace: 2h\n    pickup:\n      type: http_probe\n      urls: [http://a:8080/fp, https://b/fp]\n      json_pointer: /fingerprint\n      interval: 10s\n",
    );
    let p = parse(&text).unwrap();
    assert_eq!(
        p.client("dashboard").unwrap().pickup,
        PickupSpec::HttpProbe(HttpProbeSpec {
            urls: vec!["http://a:8080/fp".into(), "https://b/fp".into()],
            json_pointer: Some("/fingerprint".into()),
            interval: Duration::seconds(10),
            timeout: Duration::hours(24),
        })
    );
    assert_eq!(
        p.client("historian-uploader").unwrap().pickup,
        PickupSpec::default()
    );
    let text = VALID.replace(
        "    grace: 2h\n",
        "    grace: 2h\n    pickup: { type: command, program: /usr/local/bin/switched, args: [--all], env: [KUBECONFIG] }\n",
    );
    let PickupSpec::Command(c) = parse(&text)
        .unwrap()
        .client("dashboard")
        .unwrap()
        .pickup
        .clone()
    else {
        panic!("not a command")
    };
    assert_eq!(c.program.args, vec!["--all".to_owned()]);
    assert_eq!(c.program.pass_env, vec!["KUBECONFIG".to_owned()]);
    assert_eq!(c.interval, Duration::minutes(1));
    assert_eq!(c.program.timeout, std::time::Duration::from_secs(30));
}

#[test]
fn a_bad_pickup_names_the_place_and_the_client() {
    let with = |pickup: &str| {
        error_of(&VALID.replace(
            "    grace: 2h\n",
            &format!("    grace: 2h\n    pickup: {pickup}\n"),
        ))
    };
    let err = with("{ type: ack_file, path: /a, timout: 1h }");
    assert!(err.contains("policy.yaml:31:"), "{err}");
    assert!(err.contains("did you mean `timeout`"), "{err}");
    assert!(err.contains("client `dashboard`: pickup"), "{err}");
    let err = with("{ type: http_prob, url: http://a }");
    assert!(
        err.contains("`http_prob` is not a pickup check type"),
        "{err}"
    );
    let err = with("{ type: http_probe, url: ftp://a/x }");
    assert!(
        err.contains("policy.yaml:31:38: client `dashboard`: pickup.url must be http or https"),
        "{err}"
    );
    let err = with("{ type: http_probe, url: \"http://u:hunter2@a/x\" }");
    assert!(
        err.contains("user or password") && !err.contains("hunter2"),
        "{err}"
    );
    let err = with("{ type: http_probe }");
    assert!(err.contains("set url, or urls"), "{err}");
    let err = with("{ type: command, program: bin/check, interval: 0s }");
    assert!(err.contains("absolute path"), "{err}");
    assert!(err.contains("interval (0s) must be from 1s to 1d"), "{err}");
    let err = with("{ type: ack_file }");
    assert!(err.contains("path is missing"), "{err}");
}

#[test]
fn an_ack_file_may_not_be_a_file_the_rotator_writes_or_reads() {
    for path in [
        "secrets/dashboard",
        "./secrets/historian-uploader.json",
        "/run/credentials/cds-rotator.service/admin",
    ] {
        let err = error_of(&VALID.replace(
            "    grace: 2h\n",
            &format!("    grace: 2h\n    pickup: {{ type: ack_file, path: {path} }}\n"),
        ));
        assert!(err.contains("client `dashboard`: pickup.path"), "{err}");
        assert!(err.contains("give it a path of its own"), "{err}");
    }
}

#[test]
fn a_coordination_section_resolves_its_defaults_and_files() {
    let text = format!(
        "{VALID}coordination:\n  type: etcd\n  endpoints: [https://etcd-0:2379/, http://127.0.0.1:2379]\n  key_prefix: /cds-rotator/prod/\n  username_env: ETCD_USER\n  password_file: etcd-password\n  tls: {{ ca_file: ca.pem, cert_file: c.pem, key_file: k.pem }}\n"
    );
    let p = parse(&text).unwrap();
    let c = p.coordination.unwrap();
    assert_eq!(
        c.endpoints,
        ["https://etcd-0:2379", "http://127.0.0.1:2379"]
    );
    assert_eq!(c.key_prefix, "/cds-rotator/prod");
    // Three request timeouts (30s by default): a whole request fits after a renewal.
    assert_eq!(c.lease_ttl, std::time::Duration::from_secs(90));
    assert_eq!(c.username, Some(ValueSource::Env("ETCD_USER".to_owned())));
    assert_eq!(
        c.password,
        Some(ValueSource::File(PathBuf::from(
            "/etc/cds-rotator/etcd-password"
        )))
    );
    assert_eq!(c.ca_file, Some(PathBuf::from("/etc/cds-rotator/ca.pem")));
    assert!(parse(VALID).unwrap().coordination.is_none());
}

#[test]
fn coordination_mistakes_are_reported_where_they_are() {
    let text = format!(
        "{VALID}coordination:\n  type: etcd\n  namespace: ns\n  endpoints: [http://etcd-0:2379]\n  key_prefix: cds\n  lease_ttl: 1s\n  username_env: ETCD_USER\n  tls: {{ cert_file: c.pem }}\n  leas_ttl: 3s\n"
    );
    // The shape is checked first: the misspelt key alone.
    let e = error_of(&text);
    assert!(e.contains("leas_ttl"), "{e}");
    let text = text.replace("  leas_ttl: 3s\n", "");
    let e = error_of(&text);
    let line = |needle: &str| {
        1 + text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}"))
    };
    for (needle, says) in [
        (
            "namespace: ns",
            "coordination.namespace does not apply to type etcd",
        ),
        (
            "endpoints:",
            "uses plain http to a non-loopback host; use https",
        ),
        (
            "key_prefix: cds",
            "coordination.key_prefix must be an absolute key path",
        ),
        (
            "lease_ttl: 1s",
            "coordination.lease_ttl must be at least 2s",
        ),
        ("tls:", "set cert_file and key_file together"),
    ] {
        let at = format!("/etc/cds-rotator/policy.yaml:{}:", line(needle));
        assert!(
            e.lines().any(|l| l.starts_with(&at) && l.contains(says)),
            "{says} at line {}: {e}",
            line(needle)
        );
    }
    assert!(e.contains("set both a username and a password"), "{e}");
    let e = error_of(&format!(
        "{VALID}coordination: {{ type: zookeeper, endpoints: [https://z:2181] }}\n"
    ));
    assert!(
        e.contains("coordination.type `zookeeper` is not supported; use etcd or kubernetes_lease"),
        "{e}"
    );
}

#[test]
fn a_kubernetes_lease_takes_its_own_keys() {
    let p = parse(&format!(
        "{VALID}coordination: {{ type: kubernetes_lease, namespace: ops, lease_duration: 90s }}\n"
    ))
    .unwrap();
    let c = p.coordination.unwrap();
    assert_eq!(
        c.kind,
        CoordinationKind::KubernetesLease {
            namespace: Some("ops".to_owned()),
            name: "cds-rotator".to_owned(),
            api_url: None,
            token_file: None,
        }
    );
    assert_eq!(c.lease_ttl, std::time::Duration::from_secs(90));
    let e = error_of(&format!(
        "{VALID}coordination: {{ type: kubernetes_lease, name: Bad_Name, key_prefix: /x }}\n"
    ));
    assert!(
        e.contains("coordination.name must be a Kubernetes object name"),
        "{e}"
    );
    assert!(
        e.contains("coordination.key_prefix does not apply to type kubernetes_lease"),
        "{e}"
    );
}

#[test]
fn the_lease_must_cover_a_whole_request_after_a_renewal() {
    let text = format!(
        "{VALID}coordination: {{ type: etcd, endpoints: [https://etcd:2379], key_prefix: /r, lease_ttl: 60s }}\n"
    )
    .replace("  max_concurrency: 4\n", "  max_concurrency: 4\n  request_timeout: 30s\n");
    let e = error_of(&text);
    assert!(
        e.contains(
            "coordination.lease_ttl (1m) must be at least 3 × connect.request_timeout (30s)"
        ),
        "{e}"
    );
    assert!(parse(&text.replace("lease_ttl: 60s", "lease_ttl: 90s")).is_ok());
}

#[test]
fn the_hint_for_a_credential_outside_systemd_names_that_credential_unless_it_looks_like_a_secret() {
    let at = Path::new("/etc/cds-rotator/policy.yaml");
    let text = with_credential("client_secret_credential: cds-admin");
    let err = Policy::parse_with_credentials(at, &text, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("-p LoadCredential=cds-admin:/etc/"), "{err}");
    assert!(!err.contains("LoadCredential=NAME:"), "{err}");
    let pasted = "q8ZrT2vXk9LmN4pQ7sW1yB3c";
    let text = with_credential(&format!("client_secret_credential: {pasted}"));
    let err = Policy::parse_with_credentials(at, &text, None)
        .unwrap_err()
        .to_string();
    assert!(!err.contains(pasted), "{err}");
    assert!(err.contains("LoadCredential=NAME:"), "{err}");
}

#[test]
fn an_unreadable_policy_names_the_fd_limit_when_the_process_is_out_of_descriptors() {
    let out_of_fds = std::io::Error::from_raw_os_error(libc::EMFILE);
    assert!(super::read_hint(&out_of_fds).contains("LimitNOFILE="));
    let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
    assert_eq!(
        super::read_hint(&missing),
        "pass --config PATH or set CDS_ROTATOR_CONFIG"
    );
}

#[test]
fn clients_with_one_schedule_share_one_parsed_copy() {
    let text = VALID
        .replace(
            "    retire_unmanaged: false\n",
            "    retire_unmanaged: false\n    schedule: \" 0 30 4 * * * \"\n",
        )
        .replace(
            "    grace: 2h\n",
            "    grace: 2h\n    schedule: \"0 0 3 * * *\"\n",
        )
        + "  - name: third\n    client_id: 2c0c1d2e-3f40-4152-6374-8596a7b8c9d0\n    store: { name: local }\n"
        + "  - name: fourth\n    client_id: 3c0c1d2e-3f40-4152-6374-8596a7b8c9d0\n    store: { name: local }\n    schedule: \"0 30 4 * * *\"\n";
    let p = parse(&text).unwrap();
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| &p.clients[i].timing.schedule);
    assert_eq!(a.as_str(), "0 30 4 * * *");
    assert!(
        a.shares_with(d),
        "one expression in two clients is parsed once"
    );
    // `defaults:` says "0 0 3 * * *": a client that inherits it and one that writes it
    // again share that copy too.
    assert_eq!(b.as_str(), "0 0 3 * * *");
    assert!(b.shares_with(c));
    assert!(!a.shares_with(b));
}

//! `validate` end to end on policies people write: the example in config/policy.yaml,
//! placeholders left in, typos, wrong kinds of values and bad durations. Every problem
//! comes out at once as `file:line:column: message` naming its key, with exit code 2.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

use support::text;

const EXAMPLE: &str = "config/policy.yaml";

/// `cds-rotator --config <config> validate`, run from the crate's directory as the
/// systemd unit runs it (the example's `client_secret_credential` needs
/// `$CREDENTIALS_DIRECTORY`).
fn validate(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--config")
        .arg(config)
        .arg("validate")
        .env(
            "CREDENTIALS_DIRECTORY",
            "/run/credentials/cds-rotator.service",
        )
        .env_remove("CDS_ROTATOR_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run cds-rotator")
}

/// The example policy with every `key: <placeholder>` value replaced by a distinct GUID.
fn example_filled_in() -> String {
    let example = example();
    let mut n = 0;
    let lines: Vec<String> = example
        .lines()
        .map(|line| match line.split_once(": <") {
            Some((key, value)) if !key.trim_start().starts_with('#') && value.ends_with('>') => {
                n += 1;
                format!("{key}: 0b0c1d2e-3f40-4152-6374-{n:012x}")
            }
            _ => line.to_owned(),
        })
        .collect();
    assert_eq!(n, 4, "the example's placeholders changed");
    lines.join("\n") + "\n"
}

/// The 1-based line of the first line of `text` that contains `needle` (line numbers
/// follow the example's comments without the tests pinning them).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` is not in the policy"))
}

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE))
        .expect("the example policy")
}

/// Writes `policy` to a temporary directory and validates it.
fn validate_text(policy: &str) -> (Output, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, policy).expect("write the policy");
    (validate(&path), path, dir)
}

#[test]
fn validate_refuses_the_example_policy_until_its_placeholders_are_replaced() {
    let out = validate(Path::new(EXAMPLE));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let ex = example();
    let at = |needle: &str| line_of(&ex, needle);
    for line in [
        format!(
            "config/policy.yaml:{}:14: connect.tenant_id: replace the placeholder `<your-tenant-id>` with the GUID of your tenant",
            at("<your-tenant-id>")
        ),
        format!(
            "config/policy.yaml:{}:16: connect.credentials.client_id: replace the placeholder `<rotator-client-id>` with the GUID of the rotator's own client",
            at("<rotator-client-id>")
        ),
        format!(
            "config/policy.yaml:{}:16: client `historian-uploader`: client_id: replace the placeholder `<historian-uploader-client-id>` with the GUID of the CDS client to rotate",
            at("<historian-uploader-client-id>")
        ),
        format!(
            "config/policy.yaml:{}:16: client `dashboard-backend`: client_id: replace the placeholder `<dashboard-backend-client-id>` with the GUID of the CDS client to rotate",
            at("<dashboard-backend-client-id>")
        ),
    ] {
        assert!(stderr.lines().any(|l| l == line), "{line}\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
}

#[test]
fn the_example_policy_validates_once_its_placeholders_are_replaced() {
    let (out, path, _dir) = validate_text(&example_filled_in());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "{}: valid (2 clients, 1 stores, 1 notifiers)",
            path.display()
        )
    );
}

#[test]
fn validate_reports_every_typo_and_wrong_kind_of_value_at_once_naming_each_key() {
    let policy = example_filled_in()
        .replace("max_concurrency: 8", "max_concurrency: lots")
        .replace("  rotate_before: 30d", "  rotate_befor: 30d")
        .replace("retire_unmanaged: false", "retire_unmanaged: maybe")
        .replace("    grace: 2h", "    grace: 2h\n    grace: 3h");
    let (out, path, _dir) = validate_text(&policy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let at = |needle: &str, column: usize, message: &str| {
        let line = line_of(&policy, needle);
        format!("{}:{line}:{column}: {message}", path.display())
    };
    let first_grace = line_of(&policy, "    grace: 2h");
    for line in [
        at(
            "max_concurrency: lots",
            20,
            "connect.max_concurrency: expected a whole number from 1 to 64",
        ),
        at(
            "rotate_befor:",
            3,
            "unknown field `rotate_befor` in defaults: did you mean `rotate_before`?",
        ),
        at(
            "retire_unmanaged: maybe",
            23,
            "client `historian-uploader`: retire_unmanaged: expected true or false",
        ),
        at(
            "    grace: 3h",
            5,
            &format!(
                "client `dashboard-backend`: grace is set twice in this mapping (first at line {first_grace}); keep one"
            ),
        ),
    ] {
        assert!(stderr.lines().any(|l| l == line), "{line}\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
    for leak in [
        "invalid",
        "u64",
        "DuplicateKeyPolicy",
        "Options",
        "lots",
        "maybe",
    ] {
        assert!(!stderr.contains(leak), "{leak}: {stderr}");
    }
}

#[test]
fn validate_explains_a_bad_duration_and_reports_a_bad_default_once() {
    let line = line_of(&example_filled_in(), "lifetime: 90d");
    let (out, path, _dir) =
        validate_text(&example_filled_in().replace("lifetime: 90d", "lifetime: 1.5d"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "{}:{line}:13: lifetime: `1.5d` is not a duration: whole numbers only: write `1d12h`; use whole numbers with units s, m, h, d or w, no sign or spaces, combined like 1d12h",
            path.display()
        )
    );

    // Both clients inherit it; it is reported once, where it is written.
    let (out, path, _dir) =
        validate_text(&example_filled_in().replace("lifetime: 90d", "lifetime: 900d"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "{}:{line}:13: lifetime (900d) must be more than 0s and at most 730d (CDS secrets should always expire); use e.g. 90d",
            path.display()
        )
    );
}

/// `cds-rotator --config <config> <args>` by hand: no `$CREDENTIALS_DIRECTORY`.
fn by_hand(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cds-rotator"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("CDS_ROTATOR_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run cds-rotator")
}

#[test]
fn validate_and_health_by_hand_need_no_systemd_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, example_filled_in()).unwrap();
    // Before, both exited 2: client_secret_credential needs $CREDENTIALS_DIRECTORY.
    let out = by_hand(&path, &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("connect.credentials.client_secret_credential admin: resolved at run time"),
        "{stdout}"
    );
    let out = by_hand(&path, &["health"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no daemon.listen"), "{}", text(&out));
    assert!(
        !text(&out).contains("CREDENTIALS_DIRECTORY"),
        "{}",
        text(&out)
    );
    // health needs only daemon.listen: nothing listens there, so "not alive".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let with_listen = example_filled_in().replacen(
        "daemon:\n",
        &format!("daemon:\n  listen: 127.0.0.1:{port}\n"),
        1,
    );
    std::fs::write(&path, with_listen).unwrap();
    let out = by_hand(&path, &["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("not alive"),
        "{}",
        text(&out)
    );
    // What reads the credential still says how to run with it, naming it.
    let out = by_hand(&path, &["plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("-p LoadCredential=admin:/etc/cds-rotator/admin.secret"),
        "{}",
        text(&out)
    );
}

//! The checks the AWS stores' entries share (`aws_secrets_manager`, `kms_file`): region
//! names, KMS key ids and endpoint URLs.
//!
//! Credentials are never part of the policy: the stores use the SDK's default chain.
//! Not here: each store's own keys and rules (its folder's `spec.rs`).

use crate::domain::service_url::{ServiceUrl, UrlProblem};
use serde_saphyr::Spanned;

use crate::schema::Entry;

/// An endpoint URL as written, without surrounding blanks or a trailing `/`.
pub fn clean_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`: letters in dash-separated parts, then a
/// number.
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    region.len() <= 32
        && parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// A key id, a multi-region key id (`mrk-…`), a key or alias ARN, or `alias/NAME`.
fn is_key_id(key: &str) -> bool {
    let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if let Some(name) = key.strip_prefix("alias/") {
        return !name.is_empty()
            && name.len() <= 250
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c));
    }
    if key.starts_with("arn:") {
        return key.len() <= 2048 && key.contains(":kms:") && printable(key);
    }
    if let Some(hex) = key.strip_prefix("mrk-") {
        return hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    key.len() == 36 && uuid::Uuid::parse_str(key).is_ok()
}

/// Reports a `region` that is not an AWS region name.
pub fn region(entry: &mut Entry<'_>, region: &Spanned<String>) {
    let at = region.referenced;
    let region = region.value.trim();
    if !is_region(region) {
        let store = entry.name;
        entry.problem_at(
            at,
            format!(
                "store `{store}`: region `{region}` is not an AWS region name (like eu-west-1)"
            ),
        );
    }
}

/// Reports a `field` that is not a KMS key (or, unless `aws_managed_ok`, an AWS managed
/// key, which only AWS services may encrypt with).
pub fn key_id(entry: &mut Entry<'_>, field: &str, key: &Spanned<String>, aws_managed_ok: bool) {
    let at = key.referenced;
    let key = key.value.trim();
    let store = entry.name;
    if !is_key_id(key) {
        entry.problem_at(at, format!("store `{store}`: {field} `{key}` is not a KMS key: use a key id, a key ARN, alias/NAME or an alias ARN"));
    } else if !aws_managed_ok && key.starts_with("alias/aws/") {
        entry.problem_at(at, format!("store `{store}`: {field} `{key}` is an AWS managed key, which only AWS services may use to encrypt: create a customer managed key and use its alias"));
    }
}

/// Reports an `endpoint_url` that is not a URL, is plain http to another host, or has a
/// query or fragment.
pub fn endpoint(entry: &mut Entry<'_>, raw: Option<&Spanned<String>>) {
    let Some(raw) = raw else {
        return;
    };
    let (at, store) = (raw.referenced, entry.name);
    let text = clean_url(&raw.value);
    let problem = match ServiceUrl::parse(&text) {
        Err(UrlProblem::NotAUrl) => {
            entry.problem_at(at, format!("store `{store}`: endpoint_url `{text}` is not a URL; remove it to use AWS's endpoint for the region"));
            return;
        }
        Err(p) => Some(crate::store::url_problem(p)),
        Ok(url) => (url.url().query().is_some() || url.url().fragment().is_some())
            .then(|| "must not have a query or fragment".to_owned()),
    };
    if let Some(p) = problem {
        entry.problem_at(at, format!("store `{store}`: endpoint_url `{text}` {p}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_look_like_aws_regions() {
        for ok in ["eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-2"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["", "eu-west", "EU-WEST-1", "eu_west_1", "eu-west-1a", "x-1"] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn key_ids_are_ids_arns_or_aliases() {
        for ok in [
            "alias/cds",
            "alias/team/cds_key-1",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/cds",
        ] {
            assert!(is_key_id(ok), "{ok}");
        }
        for bad in [
            "",
            "cds",
            "alias/",
            "alias/a b",
            "arn:aws:s3:::bucket",
            "mrk-xyz",
        ] {
            assert!(!is_key_id(bad), "{bad}");
        }
    }
}

/// The AWS stores in a whole policy (the rules every store shares included).
#[cfg(test)]
mod policy_tests {
    use std::path::Path;

    use crate::policy::{Policy, StoreSpec};
    use crate::store::aws_secrets_manager::spec::SecretsManagerSpec;
    use crate::store::kms_file::spec::KmsFileSpec;

    fn policy(stores: &str, secret: &str) -> Result<Policy, String> {
        let text = format!(
            "connect:\n  url: https://uswe.datahub.connect.aveva.com\n  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f\n  credentials:\n    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d\n    client_secret_file: /run/admin\nstores:\n{stores}\nclients:\n  - {{ name: app, client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0, kind: client_credentials, store: {{ name: aws, secret: {secret} }} }}\n"
        );
        Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_aws_stores_validate() {
        let p = policy(
            "  aws:    { type: aws_secrets_manager, region: eu-west-1, kms_key_id: alias/cds }\n  sealed: { type: kms_file, dir: /var/lib/cds-rotator/sealed, key_id: alias/cds, region: eu-west-1 }",
            "cds/app",
        )
        .unwrap();
        assert_eq!(
            p.stores["aws"],
            StoreSpec::AwsSecretsManager(SecretsManagerSpec {
                region: "eu-west-1".into(),
                kms_key_id: Some("alias/cds".into()),
                endpoint_url: None
            })
        );
        assert_eq!(
            p.stores["sealed"],
            StoreSpec::KmsFile(KmsFileSpec {
                dir: "/var/lib/cds-rotator/sealed".into(),
                key_id: "alias/cds".into(),
                region: "eu-west-1".into(),
                endpoint_url: None
            })
        );
        assert_eq!(p.clients[0].secret, "cds/app");
    }

    #[test]
    fn a_secret_name_against_secrets_manager_rules_names_the_store() {
        let err = policy(
            "  aws: { type: aws_secrets_manager, region: eu-west-1 }",
            "\"a b\"",
        )
        .unwrap_err();
        assert!(
            err.contains("store `aws` secret name `a b` must be 1-512"),
            "{err}"
        );
    }

    #[test]
    fn a_kms_file_secret_name_keeps_the_file_rule() {
        let err = policy(
            "  aws: { type: kms_file, dir: /tmp/x, key_id: alias/cds, region: eu-west-1 }",
            "cds/app",
        )
        .unwrap_err();
        assert!(err.contains("must be 1-64 letters"), "{err}");
    }

    #[test]
    fn two_clients_on_one_secrets_manager_secret_are_refused() {
        let text = "connect:\n  url: https://uswe.datahub.connect.aveva.com\n  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f\n  credentials:\n    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d\n    client_secret_file: /run/admin\nstores:\n  a: { type: aws_secrets_manager, region: eu-west-1 }\n  b: { type: aws_secrets_manager, region: eu-west-1 }\nclients:\n  - { name: one, client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0, store: { name: a, secret: cds/x } }\n  - { name: two, client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0, store: { name: b, secret: cds/x } }\n";
        let err = Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clients `one` (store `a`) and `two` (store `b`)"),
            "{err}"
        );
    }

    #[test]
    fn a_kms_file_on_a_file_stores_file_is_refused() {
        let text = "connect:\n  url: https://uswe.datahub.connect.aveva.com\n  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f\n  credentials:\n    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d\n    client_secret_file: /run/admin\nstores:\n  sealed: { type: kms_file, dir: /srv/s, key_id: alias/cds, region: eu-west-1 }\n  local: { type: file, dir: /srv/s }\nclients:\n  - { name: a, client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0, store: { name: local, secret: app } }\n  - { name: b, client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0, store: { name: sealed, secret: app } }\n";
        let err = Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("would overwrite each other"), "{err}");
    }

    #[test]
    fn the_rotators_own_client_cannot_be_rotated_into_an_aws_store() {
        let text = "connect:\n  url: https://uswe.datahub.connect.aveva.com\n  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f\n  credentials:\n    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d\n    client_secret_file: /run/admin\nstores:\n  aws: { type: aws_secrets_manager, region: eu-west-1 }\nclients:\n  - { name: me, client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d, store: { name: aws } }\n";
        let err = Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client `me` is the rotator's own client"),
            "{err}"
        );
        assert!(err.contains("aws_secrets_manager"), "{err}");
    }

    #[test]
    fn plain_http_endpoints_are_refused_unless_loopback() {
        let err = policy(
            "  aws: { type: aws_secrets_manager, region: eu-west-1, endpoint_url: \"http://sm.example.com\" }",
            "app",
        )
        .unwrap_err();
        assert!(err.contains("store `aws`: endpoint_url"), "{err}");
        assert!(err.contains("plain http"), "{err}");
        policy(
            "  aws: { type: aws_secrets_manager, region: eu-west-1, endpoint_url: \"http://127.0.0.1:5000\" }",
            "app",
        )
        .unwrap();
    }

    #[test]
    fn credentials_in_an_aws_store_are_unknown_keys() {
        let err = policy(
            "  aws: { type: aws_secrets_manager, region: eu-west-1, secret_access_key: x }",
            "app",
        )
        .unwrap_err();
        assert!(err.contains("secret_access_key"), "{err}");
    }

    #[test]
    fn a_bad_region_or_key_names_the_store() {
        let err = policy(
            "  aws: { type: kms_file, dir: /tmp/x, key_id: cds, region: ireland }",
            "app",
        )
        .unwrap_err();
        assert!(err.contains("store `aws`: region `ireland`"), "{err}");
        assert!(
            err.contains("store `aws`: key_id `cds` is not a KMS key"),
            "{err}"
        );
        assert!(!err.contains("not declared"), "{err}");
    }
}

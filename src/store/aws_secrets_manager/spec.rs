//! The `aws_secrets_manager` store in the policy: its keys, how its entry is checked,
//! Secrets Manager's secret-name rule, its slot and how it is built.
//!
//! Not here: talking to Secrets Manager (`store::aws_secrets_manager`), the checks the
//! AWS stores share (`store::aws::spec`), or the rules every store shares (`policy`).

use std::sync::Arc;

use super::SecretsManagerStore;
use crate::schema::{Entry, Key, Shape};
use crate::store::SecretStore;
use crate::store::aws::AwsTarget;
use crate::store::aws::spec::{self as aws, clean_url};
use crate::store::registry::{Backend, Claim, Declared, OwnCredential, Slot, Wiring};

/// AWS Secrets Manager, as the policy declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsManagerSpec {
    /// The region (`eu-west-1`).
    pub region: String,
    /// The KMS key new secrets are encrypted with (AWS's managed key when unset).
    pub kms_key_id: Option<String>,
    /// Another endpoint (https, or http to loopback only).
    pub endpoint_url: Option<String>,
}

/// A `type: aws_secrets_manager` entry as written.
/// Secrets Manager's rule: 1-512 characters of letters, digits and `/_+=.@-`.
fn secrets_manager_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err("must be 1-512 characters of letters, digits and `/_+=.@-` (Secrets Manager's rule for secret names)".to_owned())
    }
}

impl Declared for SecretsManagerSpec {
    const KEYS: &'static [Key] = &[
        Key::required("region", Shape::Value, "an AWS region, like eu-west-1"),
        Key::optional(
            "kms_key_id",
            Shape::Value,
            "the KMS key new secrets are encrypted with, like alias/cds",
        ),
        Key::optional(
            "endpoint_url",
            Shape::Value,
            "another endpoint (https, or http to loopback only)",
        ),
    ];

    fn parse(entry: &mut Entry<'_>) -> SecretsManagerSpec {
        let f = entry.fields;
        let (region, kms_key_id, endpoint_url) = (
            f.text("region"),
            f.text("kms_key_id"),
            f.text("endpoint_url"),
        );
        if let Some(region) = &region {
            aws::region(entry, region);
        }
        if let Some(key) = &kms_key_id {
            aws::key_id(entry, "kms_key_id", key, true);
        }
        aws::endpoint(entry, endpoint_url.as_ref());
        SecretsManagerSpec {
            region: region
                .map(|r| r.value.trim().to_owned())
                .unwrap_or_default(),
            kms_key_id: kms_key_id.map(|k| k.value.trim().to_owned()),
            endpoint_url: endpoint_url.map(|u| clean_url(&u.value)),
        }
    }
}

impl Backend for SecretsManagerSpec {
    fn secret_name_rule(&self, secret: &str) -> Option<String> {
        secrets_manager_name(secret).err()
    }

    /// One secret per name in a region and endpoint (also through two stores that are
    /// the same region and endpoint).
    fn slot(&self, secret: &str) -> Slot {
        Slot::Service {
            key: format!(
                "aws-secretsmanager:{}:{}:{secret}",
                self.region,
                self.endpoint_url.as_deref().unwrap_or("")
            ),
        }
    }

    fn shared(&self, mine: &Claim, other: &Claim) -> String {
        format!(
            "clients `{}` (store `{}`) and `{}` (store `{}`) would both publish to Secrets Manager secret `{}` in {}; they would overwrite each other's secret: give one of them another secret name",
            other.client, other.store, mine.client, mine.store, mine.secret, self.region
        )
    }

    fn own_credential(&self) -> OwnCredential {
        OwnCredential::Store { from: None }
    }

    fn build(&self, name: &str, _wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String> {
        Ok(Arc::new(SecretsManagerStore::new(
            name.to_owned(),
            AwsTarget {
                region: self.region.clone(),
                endpoint_url: self.endpoint_url.clone(),
            },
            self.kms_key_id.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_manager_names_allow_slashes_and_its_punctuation() {
        assert!(secrets_manager_name("cds/app").is_ok());
        assert!(secrets_manager_name("a+b=c.d@e-f_g").is_ok());
        assert!(secrets_manager_name(&"x".repeat(512)).is_ok());
        assert!(secrets_manager_name(&"x".repeat(513)).is_err());
        assert!(secrets_manager_name("").is_err());
        assert!(secrets_manager_name("a b").is_err());
        assert!(secrets_manager_name("a\nb").is_err());
    }
}

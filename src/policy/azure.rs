//! Validation of the `azure_key_vault` store and of the clients that publish to it:
//! the vault URL and Key Vault's secret-name rule.
//!
//! Credentials are never part of the policy: the store uses `azure_identity`'s chain.
//! Not here: the store itself (`store::azure_key_vault`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use super::{ClientPolicy, FileSlot, StoreSpec, Validator, store_url_problem};
use crate::domain::service_url::{ServiceUrl, UrlProblem};

/// Key Vault's rule: 1-127 characters of letters, digits and dashes.
pub(super) fn secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err("must be 1-127 characters of letters, digits and dashes (Key Vault's rule for secret names)".to_owned())
    }
}

impl Validator {
    /// Checks an `azure_key_vault` store, reporting problems at `at`. The store is
    /// returned even then, so that its clients are still checked against it.
    pub(super) fn azure_key_vault_store(
        &mut self,
        at: Location,
        name: &str,
        vault_url: String,
    ) -> StoreSpec {
        let text = vault_url.trim().trim_end_matches('/').to_owned();
        let problem = match ServiceUrl::parse(&text) {
            Err(UrlProblem::NotAUrl) => Some(
                "is not a URL; use the vault's URL, like https://myvault.vault.azure.net"
                    .to_owned(),
            ),
            Err(p) => Some(store_url_problem(p)),
            Ok(url) => {
                let url = url.url();
                (url.path() != "/" && !url.path().is_empty()
                    || url.query().is_some()
                    || url.fragment().is_some())
                .then(|| "must be the vault's base URL, without a path, query or fragment, like https://myvault.vault.azure.net".to_owned())
            }
        };
        if let Some(p) = problem {
            self.problem(at, format!("store `{name}`: vault_url `{text}` {p}"));
        }
        StoreSpec::AzureKeyVault { vault_url: text }
    }

    /// One secret per client in a vault: two clients on one name would overwrite each
    /// other (also through two stores with the same URL).
    pub(super) fn azure_client(
        &mut self,
        at: Location,
        c: &ClientPolicy,
        vault_url: &str,
        written: &mut BTreeMap<PathBuf, FileSlot>,
    ) {
        let place = PathBuf::from(format!(
            "azure-key-vault:{}:{}",
            vault_url.to_ascii_lowercase(),
            c.secret.to_ascii_lowercase()
        ));
        if let Some(other) = written.get(&place) {
            self.problem(
                at,
                format!(
                    "clients `{}` (store `{}`) and `{}` (store `{}`) would both publish to Key Vault secret `{}` in {vault_url}; they would overwrite each other's secret: give one of them another secret name",
                    other.client, other.store, c.name, c.store, c.secret
                ),
            );
        } else {
            written.insert(place, FileSlot::new(c, Path::new("")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use super::*;

    fn policy(stores: &str, secret: &str) -> Result<Policy, String> {
        let text = format!(
            "connect:\n  url: https://uswe.datahub.connect.aveva.com\n  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f\n  credentials:\n    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d\n    client_secret_file: /run/admin\nstores:\n{stores}\nclients:\n  - {{ name: app, client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0, kind: client_credentials, store: {{ name: kv, secret: {secret} }} }}\n"
        );
        Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_azure_key_vault_store_validates() {
        let p = policy(
            "  kv: { type: azure_key_vault, vault_url: https://myvault.vault.azure.net }",
            "cds-app",
        )
        .unwrap();
        assert_eq!(
            p.stores["kv"],
            StoreSpec::AzureKeyVault {
                vault_url: "https://myvault.vault.azure.net".into()
            }
        );
        assert_eq!(p.clients[0].secret, "cds-app");
    }

    #[test]
    fn a_vault_url_over_http_is_only_for_loopback() {
        let p = policy(
            "  kv: { type: azure_key_vault, vault_url: \"http://127.0.0.1:8443/\" }",
            "app",
        )
        .unwrap();
        assert_eq!(
            p.stores["kv"],
            StoreSpec::AzureKeyVault {
                vault_url: "http://127.0.0.1:8443".into()
            }
        );
        let err = policy(
            "  kv: { type: azure_key_vault, vault_url: http://myvault.vault.azure.net }",
            "app",
        )
        .unwrap_err();
        assert!(
            err.contains("store `kv`: vault_url `http://myvault.vault.azure.net` uses plain http"),
            "{err}"
        );
        for bad in [
            "myvault",
            "ftp://myvault",
            "https://myvault.vault.azure.net/secrets",
        ] {
            let err = policy(
                &format!("  kv: {{ type: azure_key_vault, vault_url: \"{bad}\" }}"),
                "app",
            )
            .unwrap_err();
            assert!(err.contains("store `kv`: vault_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_secret_name_against_key_vault_rules_names_the_store() {
        for bad in ["cds/app", "cds_app", "\"\"", &"a".repeat(128)] {
            let err = policy(
                "  kv: { type: azure_key_vault, vault_url: https://myvault.vault.azure.net }",
                bad,
            )
            .unwrap_err();
            assert!(err.contains("store `kv` secret name"), "{bad}: {err}");
            assert!(err.contains("1-127 characters"), "{bad}: {err}");
        }
        assert!(
            policy(
                "  kv: { type: azure_key_vault, vault_url: https://myvault.vault.azure.net }",
                &"a".repeat(127),
            )
            .is_ok()
        );
    }

    #[test]
    fn an_azure_key_vault_store_without_vault_url_is_refused() {
        let err = policy("  kv: { type: azure_key_vault }", "app").unwrap_err();
        assert!(err.contains("vault_url"), "{err}");
    }

    #[test]
    fn two_clients_on_one_key_vault_secret_are_refused() {
        let text = "connect:\n  url: https://uswe.datahub.connect.aveva.com\n  tenant_id: 8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f\n  credentials:\n    client_id: 2b1f0e9d-8c7b-4a6f-9e5d-4c3b2a1f0e9d\n    client_secret_file: /run/admin\nstores:\n  a: { type: azure_key_vault, vault_url: https://v.vault.azure.net }\n  b: { type: azure_key_vault, vault_url: https://V.vault.azure.net/ }\nclients:\n  - { name: one, client_id: 0b0c1d2e-3f40-4152-6374-8596a7b8c9d0, store: { name: a, secret: cds-x } }\n  - { name: two, client_id: 1b0c1d2e-3f40-4152-6374-8596a7b8c9d0, store: { name: b, secret: CDS-X } }\n";
        let err = Policy::parse(Path::new("/etc/cds-rotator/policy.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clients `one` (store `a`) and `two` (store `b`)"),
            "{err}"
        );
    }
}

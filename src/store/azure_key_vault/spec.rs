//! The `azure_key_vault` store in the policy: its key, how its entry is checked (the
//! vault URL), Key Vault's secret-name rule, its slot and how it is built.
//!
//! Credentials are never part of the policy: the store uses `azure_identity`'s chain.
//! Not here: talking to Key Vault (`store::azure_key_vault`), or the rules every store
//! shares (`policy`).

use std::sync::Arc;

use super::AzureKeyVaultStore;
use crate::domain::service_url::{ServiceUrl, UrlProblem};
use crate::schema::{Entry, Key, Shape};
use crate::store::SecretStore;
use crate::store::registry::{Backend, Claim, Declared, OwnCredential, Slot, Wiring};

/// Azure Key Vault secrets, as the policy declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVaultSpec {
    /// The vault's URL, like `https://myvault.vault.azure.net` (https, or http to
    /// loopback only), without a trailing `/`.
    pub vault_url: String,
}

/// A `type: azure_key_vault` entry as written.
/// Key Vault's rule: 1-127 characters of letters, digits and dashes.
fn secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err("must be 1-127 characters of letters, digits and dashes (Key Vault's rule for secret names)".to_owned())
    }
}

impl Declared for KeyVaultSpec {
    const KEYS: &'static [Key] = &[Key::required(
        "vault_url",
        Shape::Value,
        "the vault's URL, like https://myvault.vault.azure.net",
    )];

    fn parse(entry: &mut Entry<'_>) -> KeyVaultSpec {
        let url = entry.fields.text("vault_url");
        let at = url.as_ref().map_or(entry.at, |u| u.referenced);
        let text = url
            .map(|u| u.value.trim().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let problem = match ServiceUrl::parse(&text) {
            Err(UrlProblem::NotAUrl) => Some(
                "is not a URL; use the vault's URL, like https://myvault.vault.azure.net"
                    .to_owned(),
            ),
            Err(p) => Some(crate::store::url_problem(p)),
            Ok(url) => {
                let url = url.url();
                (url.path() != "/" && !url.path().is_empty()
                    || url.query().is_some()
                    || url.fragment().is_some())
                .then(|| "must be the vault's base URL, without a path, query or fragment, like https://myvault.vault.azure.net".to_owned())
            }
        };
        if let Some(p) = problem {
            let name = entry.name;
            entry.problem_at(at, format!("store `{name}`: vault_url `{text}` {p}"));
        }
        KeyVaultSpec { vault_url: text }
    }
}

impl Backend for KeyVaultSpec {
    fn secret_name_rule(&self, secret: &str) -> Option<String> {
        secret_name(secret).err()
    }

    /// One secret per name in a vault (names and URLs compare without case, so also
    /// through two stores with the same URL).
    fn slot(&self, secret: &str) -> Slot {
        Slot::Service {
            key: format!(
                "azure-key-vault:{}:{}",
                self.vault_url.to_ascii_lowercase(),
                secret.to_ascii_lowercase()
            ),
        }
    }

    fn shared(&self, mine: &Claim, other: &Claim) -> String {
        format!(
            "clients `{}` (store `{}`) and `{}` (store `{}`) would both publish to Key Vault secret `{}` in {}; they would overwrite each other's secret: give one of them another secret name",
            other.client, other.store, mine.client, mine.store, mine.secret, self.vault_url
        )
    }

    fn own_credential(&self) -> OwnCredential {
        OwnCredential::Store { from: None }
    }

    fn build(&self, name: &str, _wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String> {
        Ok(Arc::new(AzureKeyVaultStore::new(
            name.to_owned(),
            self.vault_url.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{Policy, StoreSpec};

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
            StoreSpec::AzureKeyVault(KeyVaultSpec {
                vault_url: "https://myvault.vault.azure.net".into()
            })
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
            StoreSpec::AzureKeyVault(KeyVaultSpec {
                vault_url: "http://127.0.0.1:8443".into()
            })
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

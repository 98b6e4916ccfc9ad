//! The one list of store backends: for each `type:` name, its spec, its keys, how its
//! entry is checked, its rules and how it is built.
//!
//! Adding a store is a folder `store/<name>/` (the store in `mod.rs`, its [`Backend`]
//! in `spec.rs`) and one line in [`stores!`] below; the compiler points at anything
//! else. The rules every store shares (two clients never write one [`Slot`], the
//! rotator's own credential) are written once, over slots, in `policy`.
//! Not here: the stores' behaviour (each folder), or what the rules mean for a policy
//! (`policy`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::SecretStore;
use super::aws_secrets_manager::spec::SecretsManagerSpec;
use super::azure_key_vault::spec::KeyVaultSpec;
use super::file::spec::FileSpec;
use super::kms_file::spec::KmsFileSpec;
use super::vault::spec::VaultSpec;
use crate::schema::{Entry, Key};

/// What two clients may not share: the second publish would destroy the first client's
/// secret while its consumers use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Files on this host: `<dir>/<secret>`, the value consumers read, and the records
    /// beside it (`<secret>.json`, `.<secret>.pending.json`). Compared on disk.
    Files {
        /// The directory.
        dir: PathBuf,
    },
    /// One secret of a service: two clients whose keys are equal write the same secret.
    Service {
        /// The secret's identity in the service (its address, its name), prefixed with
        /// the service so that two services never compare equal.
        key: String,
    },
}

/// Whether the rotator may read its own credential from a store, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnCredential {
    /// A file on this host: `client_secret_file` naming the value file, or
    /// `client_secret_store` naming the slot.
    File,
    /// Only `client_secret_store` naming the slot. `from` is where the rotator must read
    /// it, for the message ("where it is published"); `None`: "its `<type>` store".
    Store {
        /// Where the rotator must read its credential from, in words.
        from: Option<&'static str>,
    },
}

/// A client as a slot's user, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The client's name.
    pub client: String,
    /// The store's name.
    pub store: String,
    /// The secret's name in the store.
    pub secret: String,
}

/// What building a store needs besides its spec.
#[derive(Clone, Debug)]
pub struct Wiring<'a> {
    /// How long one request to the store may take.
    pub request_timeout: Duration,
    /// The tenant (GUID), for stores that bind a secret to its client.
    pub tenant_id: &'a str,
    /// The clients that publish to this store: `(secret, client_id)`, in policy order.
    pub publishers: Vec<(&'a str, &'a str)>,
}

/// The rules of one store backend, asked by the policy's checks and by the wiring.
pub trait Backend {
    /// What is wrong with `secret` as a secret name in this store, in words that follow
    /// "secret name" (`must be …`), or `None`.
    fn secret_name_rule(&self, secret: &str) -> Option<String>;

    /// The problem with client `client`'s secret name `secret` in store `store`, if any.
    fn client_secret_problem(&self, client: &str, store: &str, secret: &str) -> Option<String> {
        self.secret_name_rule(secret)
            .map(|rule| format!("client `{client}`: store `{store}` secret name `{secret}` {rule}"))
    }

    /// What a client publishing `secret` here may not share with another client.
    fn slot(&self, secret: &str) -> Slot;

    /// When two clients share a [`Slot::Service`]: `mine` (this store's) and `other`.
    fn shared(&self, mine: &Claim, other: &Claim) -> String {
        format!(
            "clients `{}` (store `{}`) and `{}` (store `{}`) would both publish to secret `{}`; they would overwrite each other's secret: give one of them another secret name",
            other.client, other.store, mine.client, mine.store, mine.secret
        )
    }

    /// How the rotator may hold its own credential here.
    fn own_credential(&self) -> OwnCredential;

    /// The credential files the store logs in with, each with what it is for (they must
    /// be files only this user or root can change).
    fn credential_files(&self) -> Vec<(&'static str, &Path)> {
        Vec::new()
    }

    /// The environment variables the store reads a credential from, each with what it
    /// holds (`Vault token`): no program the rotator runs gets one.
    fn credential_variables(&self) -> Vec<(&str, &'static str)> {
        Vec::new()
    }

    /// The directory on this host that consumers read, if any (it must be one others
    /// cannot change).
    fn dir(&self) -> Option<&Path> {
        None
    }

    /// What the store's probe leaves unchecked while [`Backend::dir`] is not there yet
    /// (the first pass makes it), in words; `None`: nothing.
    fn unprobed_without_dir(&self) -> Option<&'static str> {
        None
    }

    /// The store named `name`.
    fn build(&self, name: &str, wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String>;
}

pub use crate::schema::Declared;

/// Declares [`StoreSpec`] from the one list of backends.
macro_rules! stores {
    ($($variant:ident($spec:ty) = $name:literal,)*) => {
        /// A store as the policy declares it.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum StoreSpec {
            $(
                #[doc = concat!("`type: ", $name, "`.")]
                $variant($spec),
            )*
        }

        impl StoreSpec {
            /// Its `type:` name.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(StoreSpec::$variant(_) => $name,)*
                }
            }

            /// Its rules.
            pub fn backend(&self) -> &dyn Backend {
                match self {
                    $(StoreSpec::$variant(spec) => spec,)*
                }
            }
        }

        impl StoreSpec {
            /// Every store type with its keys besides `type`.
            pub const TYPES: &[(&str, &[Key])] = &[$(($name, <$spec as Declared>::KEYS),)*];

            /// Checks the entry of type `type_name` (see [`Declared::parse`]); `None` for
            /// a type not listed (the shape check refused it).
            pub fn parse(type_name: &str, entry: &mut Entry<'_>) -> Option<StoreSpec> {
                match type_name {
                    $($name => Some(StoreSpec::$variant(<$spec>::parse(entry))),)*
                    _ => None,
                }
            }
        }
    };
}

stores! {
    File(FileSpec) = "file",
    Vault(VaultSpec) = "vault",
    AwsSecretsManager(SecretsManagerSpec) = "aws_secrets_manager",
    KmsFile(KmsFileSpec) = "kms_file",
    AzureKeyVault(KeyVaultSpec) = "azure_key_vault",
}

impl StoreSpec {
    /// The store named `name`, built from this spec.
    pub fn build(&self, name: &str, wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String> {
        self.backend().build(name, wiring)
    }
}

/// The secret-name problem of a client whose store is not declared (that is reported
/// too): the file store's rule, the strictest.
pub fn undeclared_secret_problem(client: &str, secret: &str) -> Option<String> {
    super::file::spec::client_secret_problem(client, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SecretSource;
    use crate::store::vault::spec::VaultAuth;

    fn specs() -> Vec<StoreSpec> {
        vec![
            StoreSpec::File(FileSpec {
                dir: "/srv/s".into(),
                mode: 0o600,
                group: None,
            }),
            StoreSpec::Vault(VaultSpec {
                address: crate::domain::service_url::ServiceUrl::parse("https://vault:8200")
                    .unwrap(),
                mount: "secret".into(),
                namespace: None,
                auth: VaultAuth::Token(SecretSource::Env("VAULT_TOKEN".into())),
            }),
            StoreSpec::AwsSecretsManager(SecretsManagerSpec {
                region: "eu-west-1".into(),
                kms_key_id: None,
                endpoint_url: None,
            }),
            StoreSpec::KmsFile(KmsFileSpec {
                dir: "/srv/k".into(),
                key_id: "alias/cds".into(),
                region: "eu-west-1".into(),
                endpoint_url: None,
            }),
            StoreSpec::AzureKeyVault(KeyVaultSpec {
                vault_url: "https://v.vault.azure.net".into(),
            }),
        ]
    }

    #[test]
    fn every_store_type_is_listed_once_under_its_name() {
        let listed: Vec<&str> = StoreSpec::TYPES.iter().map(|(name, _)| *name).collect();
        let named: Vec<&str> = specs().iter().map(StoreSpec::type_name).collect();
        assert_eq!(listed, named);
        let unique: std::collections::BTreeSet<&str> = listed.iter().copied().collect();
        assert_eq!(unique.len(), listed.len());
    }

    #[test]
    fn one_secret_name_in_two_services_is_two_slots() {
        let slots: Vec<Slot> = specs().iter().map(|s| s.backend().slot("app")).collect();
        for (i, a) in slots.iter().enumerate() {
            for b in &slots[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            slots[0],
            Slot::Files {
                dir: "/srv/s".into()
            }
        );
    }

    #[test]
    fn only_stores_on_this_host_may_hold_the_credential_as_a_file() {
        let own: Vec<OwnCredential> = specs()
            .iter()
            .map(|s| s.backend().own_credential())
            .collect();
        assert_eq!(own[0], OwnCredential::File);
        assert!(
            own[1..]
                .iter()
                .all(|o| matches!(o, OwnCredential::Store { .. }))
        );
    }
}

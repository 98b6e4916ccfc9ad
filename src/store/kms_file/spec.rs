//! The `kms_file` store in the policy: its keys, how its entry is checked, its rules
//! (the file store's secret names and slot) and how it is built.
//!
//! Not here: sealing and writing the files (`store::kms_file`), the checks the AWS
//! stores share (`store::aws::spec`), or the rules every store shares (`policy`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::KmsFileStore;
use crate::schema::{Entry, Key, Shape};
use crate::store::SecretStore;
use crate::store::aws::AwsTarget;
use crate::store::aws::spec::{self as aws, clean_url};
use crate::store::file::spec as file;
use crate::store::registry::{Backend, Declared, OwnCredential, Slot, Wiring};

/// KMS-sealed files in a directory, as the policy declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsFileSpec {
    /// The directory, resolved like a file store's.
    pub dir: PathBuf,
    /// The KMS key that seals the files (id, ARN, alias/NAME or alias ARN).
    pub key_id: String,
    /// The key's region.
    pub region: String,
    /// Another KMS endpoint (https, or http to loopback only).
    pub endpoint_url: Option<String>,
}

/// A `type: kms_file` entry as written.
impl Declared for KmsFileSpec {
    const KEYS: &'static [Key] = &[
        Key::required(
            "dir",
            Shape::Value,
            "the directory the sealed secrets are written to, like /var/lib/cds-rotator/sealed",
        ),
        Key::required(
            "key_id",
            Shape::Value,
            "the KMS key that seals the files, like alias/cds",
        ),
        Key::required(
            "region",
            Shape::Value,
            "the key's AWS region, like eu-west-1",
        ),
        Key::optional(
            "endpoint_url",
            Shape::Value,
            "another KMS endpoint (https, or http to loopback only)",
        ),
    ];

    fn parse(entry: &mut Entry<'_>) -> KmsFileSpec {
        let f = entry.fields;
        let (region, key_id, endpoint_url) =
            (f.text("region"), f.text("key_id"), f.text("endpoint_url"));
        if let Some(region) = &region {
            aws::region(entry, region);
        }
        if let Some(key) = &key_id {
            aws::key_id(entry, "key_id", key, false);
        }
        aws::endpoint(entry, endpoint_url.as_ref());
        KmsFileSpec {
            dir: entry.resolve(&f.path("dir").map(|d| d.value).unwrap_or_default()),
            key_id: key_id
                .map(|k| k.value.trim().to_owned())
                .unwrap_or_default(),
            region: region
                .map(|r| r.value.trim().to_owned())
                .unwrap_or_default(),
            endpoint_url: endpoint_url.map(|u| clean_url(&u.value)),
        }
    }
}

/// The file store's rules: a sealed secret is a file beside its record.
impl Backend for KmsFileSpec {
    fn secret_name_rule(&self, secret: &str) -> Option<String> {
        file::secret_name_rule(secret)
    }

    fn client_secret_problem(&self, client: &str, _store: &str, secret: &str) -> Option<String> {
        file::client_secret_problem(client, secret)
    }

    fn slot(&self, _secret: &str) -> Slot {
        Slot::Files {
            dir: self.dir.clone(),
        }
    }

    /// The rotator reads a sealed credential only through `client_secret_store`.
    fn own_credential(&self) -> OwnCredential {
        OwnCredential::Store { from: None }
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    /// The probe makes the directory after its KMS calls.
    fn unprobed_without_dir(&self) -> Option<&'static str> {
        Some(
            "its KMS key is probed once the directory exists (run check again after the first pass)",
        )
    }

    /// Each secret is sealed for its client (the encryption context).
    fn build(&self, name: &str, wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String> {
        let target = AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        };
        let store = wiring.publishers.iter().fold(
            KmsFileStore::new(
                name.to_owned(),
                self.dir.clone(),
                self.key_id.clone(),
                target,
            ),
            |store, (secret, client_id)| store.for_secret(*secret, *client_id, wiring.tenant_id),
        );
        Ok(Arc::new(store))
    }
}

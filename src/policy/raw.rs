//! The policy document as written, with the location of every value, before validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::{Location, Spanned};

use super::Diagnostic;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub connect: Spanned<RawConnect>,
    #[serde(default)]
    pub lock_dir: Option<Spanned<PathBuf>>,
    pub stores: BTreeMap<String, Spanned<RawStore>>,
    #[serde(default)]
    pub notifiers: BTreeMap<String, Spanned<RawNotifier>>,
    #[serde(default)]
    pub defaults: Option<Spanned<RawTiming>>,
    pub clients: Vec<Spanned<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnect {
    pub url: Spanned<String>,
    pub tenant_id: Spanned<String>,
    pub credentials: Spanned<RawCredentials>,
    #[serde(default)]
    pub max_concurrency: Option<Spanned<usize>>,
    #[serde(default)]
    pub request_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub client_id: Spanned<String>,
    #[serde(default)]
    pub client_secret_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub client_secret_env: Option<Spanned<String>>,
    /// Only to refuse it: the value is never kept.
    #[serde(default)]
    pub client_secret: Option<Spanned<IgnoredAny>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawStore {
    File {
        dir: PathBuf,
    },
    /// Checked in `policy::aws`.
    AwsSecretsManager {
        region: String,
        #[serde(default)]
        kms_key_id: Option<String>,
        #[serde(default)]
        endpoint_url: Option<String>,
    },
    /// Checked in `policy::aws`.
    KmsFile {
        dir: PathBuf,
        key_id: String,
        region: String,
        #[serde(default)]
        endpoint_url: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawNotifier {
    Log {},
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub lifetime: Option<Spanned<String>>,
    #[serde(default)]
    pub rotate_before: Option<Spanned<String>>,
    #[serde(default)]
    pub grace: Option<Spanned<String>>,
    #[serde(default)]
    pub orphan_grace: Option<Spanned<String>>,
    #[serde(default)]
    pub max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub verify_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub retry_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStoreRef {
    pub name: Spanned<String>,
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
}

/// A client entry. The timing keys repeat [`RawTiming`]'s because serde cannot flatten
/// into a struct that refuses unknown keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub name: Spanned<String>,
    pub client_id: Spanned<String>,
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    pub store: Spanned<RawStoreRef>,
    #[serde(default)]
    pub notify: Vec<Spanned<String>>,
    #[serde(default)]
    pub retire_unmanaged: Option<bool>,
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub lifetime: Option<Spanned<String>>,
    #[serde(default)]
    pub rotate_before: Option<Spanned<String>>,
    #[serde(default)]
    pub grace: Option<Spanned<String>>,
    #[serde(default)]
    pub orphan_grace: Option<Spanned<String>>,
    #[serde(default)]
    pub max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub verify_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub retry_interval: Option<Spanned<String>>,
}

impl RawClient {
    /// The client's timing overrides as a timing section.
    pub fn timing(&self) -> RawTiming {
        RawTiming {
            schedule: self.schedule.clone(),
            lifetime: self.lifetime.clone(),
            rotate_before: self.rotate_before.clone(),
            grace: self.grace.clone(),
            orphan_grace: self.orphan_grace.clone(),
            max_age: self.max_age.clone(),
            verify_timeout: self.verify_timeout.clone(),
            retry_interval: self.retry_interval.clone(),
        }
    }
}

/// Parses the document. The parser's budget and alias limits refuse YAML bombs; error
/// snippets are off so that a line holding a secret is never echoed.
pub(super) fn parse(text: &str) -> Result<RawPolicy, Diagnostic> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let at = e.location().unwrap_or(Location::UNKNOWN);
        let mut message = e.without_snippet().to_string();
        // The location is already in front; drop the parser's own copy of it.
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        Diagnostic {
            line: at.line(),
            column: at.column(),
            message: format!("{message}; see the policy reference in README.md"),
        }
    })
}

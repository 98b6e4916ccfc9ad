//! Secret stores: where a rotated value is published for the applications to read.
//!
//! A store holds, per stored secret, the current value and a [`StoreRecord`] of
//! metadata about it (which CDS secret it is, when it expires, its fingerprint). The
//! reconciler reads the record to observe, and publishes value + record together.
//!
//! Each store type is a folder: the store in `<type>/mod.rs`, its policy entry (spec,
//! keys, checks, secret-name rule, slot, own-credential rule, construction) in
//! `<type>/spec.rs`; [`registry`] lists them, and `policy` asks it for each `type:`.
//! Stores never import `policy`. Not here: deciding when to publish (that is
//! `rotation`), or the rules across stores (`policy`).

pub mod aws;
pub mod aws_secrets_manager;
pub mod azure_key_vault;
pub mod file;
pub mod kms_file;
pub mod registry;
pub mod vault;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::domain::service_url::UrlProblem;
use crate::domain::{Current, StoreRecord};
use crate::writes::Writes;

pub use registry::StoreSpec;

/// A failed store operation; the message names the store and the stored secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("store {store}: {operation} {location}: {detail}")]
    Io {
        /// The store's name in the policy.
        store: String,
        /// What was being done.
        operation: &'static str,
        /// Where (a path, a secret name).
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// A publish failed in a way that leaves unknown whether readers now hold the new
    /// value, or will: the write is *in doubt* (its answer was lost, and nothing proved
    /// it can never land). The caller must not delete the new secret: if the value lands,
    /// consumers hold it. A later pass reads the store; the secret is retired only as a
    /// superseded one, or as an orphan once [`SecretStore::late_write`] has passed.
    #[error("store {store}: {location}: could not tell whether the new value landed ({detail})")]
    OutcomeUnknown {
        /// The store's name in the policy.
        store: String,
        /// Where.
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// Nothing was written: this process no longer surely holds the coordination lease.
    #[error(
        "{location}: not written: lost the coordination lease; nothing more is written until this process leads again"
    )]
    LeaseLost {
        /// Where.
        location: String,
    },
    /// The store holds something that is not a record the rotator wrote.
    #[error("store {store}: {location} is not a valid record: {detail}")]
    Corrupt {
        /// The store's name in the policy.
        store: String,
        /// Where.
        location: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// How long after a publish began a write of it whose answer was lost can still land in
/// the store: what tells a later pass whether a managed secret that the store does not
/// hold may yet become current (then it is never deleted as an orphan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateWrite {
    /// Never once the publish call returned (the writer is this process: a file).
    Never,
    /// Until at most this long after the publish began (AWS: a signed request is
    /// refused once its signature expires).
    Within(chrono::Duration),
    /// At any time: nothing the rotator can see bounds it (Key Vault: no idempotency,
    /// no conditional write, and a bearer token lives as long as the issuer says).
    Unbounded,
}

/// A place the rotator publishes secrets to.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Where `key` lives, for people and notifications (a path, a vault URL); no value.
    fn location(&self, key: &str) -> String;

    /// How late a write of a publish whose answer was lost can land (see [`LateWrite`]).
    fn late_write(&self) -> LateWrite {
        LateWrite::Never
    }

    /// What is currently published under `key`: its record, nothing, or a value whose
    /// record is missing.
    async fn read_current(&self, key: &str) -> Result<Current, StoreError>;

    /// The value readers currently get from `key` (what the rotator reads its own
    /// credential from with `connect.credentials.client_secret_store`); `None` when
    /// nothing (or an empty value) is stored. The value never reaches an error.
    async fn read_value(&self, key: &str) -> Result<Option<SecretString>, StoreError>;

    /// Proves the store can be written with the permissions a rotation needs, without
    /// touching any published secret (the preflight `check`): a file store writes and
    /// removes a probe file, a service checks its credentials and capabilities.
    async fn probe(&self) -> Result<(), StoreError>;

    /// Publishes `value` with `record` as the new current version of `key`, atomically:
    /// a reader sees the old value or the new one, never a mix.
    async fn publish(
        &self,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError>;

    /// [`SecretStore::publish`] through the write handle, as the reconciler publishes:
    /// asked right before, and by each request of the publish through
    /// [`crate::writes::may_send_now`]: the Vault store's own requests, the Secrets
    /// Manager client's attempts (an interceptor) and the Key Vault pipeline's tries (a
    /// per-try policy), retries and token requests included.
    /// Refused before anything was sent, it fails with [`StoreError::LeaseLost`].
    async fn publish_through(
        &self,
        writes: &Writes,
        key: &str,
        value: &SecretString,
        record: &StoreRecord,
    ) -> Result<(), StoreError> {
        if writes.may_send(std::time::Duration::ZERO).is_err() {
            return Err(StoreError::LeaseLost {
                location: self.location(key),
            });
        }
        writes.scope(self.publish(key, value, record)).await
    }
}

/// What is wrong with a store's URL, after its key: the [`UrlProblem`] wording, except
/// that plain http names no host and says what it would cost.
pub(crate) fn url_problem(problem: UrlProblem) -> String {
    match problem {
        UrlProblem::PlainHttp { .. } => "uses plain http to a non-loopback host; the secrets would travel unencrypted: use https".to_owned(),
        other => other.to_string(),
    }
}

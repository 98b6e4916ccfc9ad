//! What a store holds about its value: the [`StoreRecord`] published with it, and
//! [`Current`], what a store holds under a key as read at the start of a pass.
//!
//! Not here: reading or writing a store (that is `store`), or deciding what a record
//! means for a rotation (that is `rotation`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Fingerprint, SecretId};

/// Metadata of the value a store currently holds. Never contains the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRecord {
    /// The CDS client the value belongs to.
    pub client_id: String,
    /// The CDS tenant.
    pub tenant_id: String,
    /// The CDS id of the secret whose value this is.
    pub secret_id: SecretId,
    /// When that secret expires in CDS.
    pub expiration: DateTime<Utc>,
    /// When the rotator published it.
    pub published_at: DateTime<Utc>,
    /// The first 16 hex digits of the SHA-256 of the value.
    pub fingerprint: Fingerprint,
}

/// What a store holds under a key, as read at the start of a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Current {
    /// Nothing has been published under the key.
    Empty,
    /// The value the rotator published, and its record.
    Published(StoreRecord),
    /// A value whose record is gone (removed by hand, a partial restore): consumers may
    /// hold it, but which CDS secret it is cannot be told. Never a reason to delete.
    Unrecorded,
}

impl Current {
    /// The record, when there is one.
    pub fn record(&self) -> Option<&StoreRecord> {
        match self {
            Current::Published(r) => Some(r),
            Current::Empty | Current::Unrecorded => None,
        }
    }

    /// Takes the record out, when there is one.
    pub fn into_record(self) -> Option<StoreRecord> {
        match self {
            Current::Published(r) => Some(r),
            Current::Empty | Current::Unrecorded => None,
        }
    }
}

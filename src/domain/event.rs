//! What the rotator did, as a value: an [`Event`] and its [`EventKind`]. Holds ids,
//! fingerprints, expirations and store locations — never a secret value.
//!
//! Not here: rendering an event (its summary, JSON and chat facts) or sending it (that
//! is `notify`), or deciding which events happen (that is `rotation`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{Fingerprint, SecretId};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new secret was created, verified and published.
    Rotated,
    /// Old secrets were deleted after the new one was picked up.
    Retired,
    /// A rotation failed; the store still holds the previous secret.
    RotationFailed,
    /// Consumers did not confirm the new secret within the pickup check's timeout: both
    /// secrets are kept and the check goes on.
    PickupTimeout,
    /// A secret the rotator does not manage expires within `rotate_before`, or never.
    ExpiringUnmanaged,
    /// A secret left behind by a pass that died before publishing was deleted.
    OrphanDeleted,
    /// The store's current secret no longer works in CDS: consumers are broken.
    StoreCurrentInvalid,
    /// The store has no record of its value while CDS holds managed secrets: those are
    /// kept (any may be in use) and retired only after grace once a new one is published.
    StoreRecordMissing,
}

impl EventKind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [EventKind; 8] = [
        EventKind::Rotated,
        EventKind::Retired,
        EventKind::RotationFailed,
        EventKind::PickupTimeout,
        EventKind::ExpiringUnmanaged,
        EventKind::OrphanDeleted,
        EventKind::StoreCurrentInvalid,
        EventKind::StoreRecordMissing,
    ];

    /// The kind named `name` (`rotated`, `pickup_timeout`, …).
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.to_string() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Rotated => "rotated",
            EventKind::Retired => "retired",
            EventKind::RotationFailed => "rotation_failed",
            EventKind::PickupTimeout => "pickup_timeout",
            EventKind::ExpiringUnmanaged => "expiring_unmanaged",
            EventKind::OrphanDeleted => "orphan_deleted",
            EventKind::StoreCurrentInvalid => "store_current_invalid",
            EventKind::StoreRecordMissing => "store_record_missing",
        })
    }
}

/// One notification. Holds no secret value by construction. Its JSON (see
/// [`Event::to_json`]) is this struct's serde form plus a `summary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// What happened.
    #[serde(rename = "event")]
    pub kind: EventKind,
    /// The CDS tenant.
    pub tenant_id: String,
    /// The client's name in the policy.
    pub client: String,
    /// The CDS client id.
    pub client_id: String,
    /// The secret concerned (the new one for `rotated`).
    pub secret_ids: Vec<SecretId>,
    /// The new value's fingerprint (`rotated`).
    pub fingerprint: Option<Fingerprint>,
    /// The new secret's expiration (`rotated`).
    pub expiration: Option<DateTime<Utc>>,
    /// Where the value is published.
    pub store_location: Option<String>,
    /// A human-readable detail (the error for `rotation_failed`).
    pub detail: Option<String>,
    /// Why it happened, where there is a choice (`emergency` for `--revoke-old`).
    pub reason: Option<String>,
    /// The rotator process that sent it (also in its log lines).
    pub run_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
}

//! Pickup checks: has every consumer switched to the newly published secret?
//!
//! The reconciler retires old secrets only once the grace period after publishing has
//! passed *and* the client's pickup check confirms. The check is asked on each pass; it
//! never blocks a worker while it waits: while it is pending the pass asks for a
//! follow-up after the check's [`PickupCheck::interval`], and a check that can notice a
//! change itself (the ack file) wakes the daemon through [`PickupCheck::watch`].
//!
//! Every check compares what it learns with the current record's fingerprint, exactly
//! (trimmed); it never sees or hands out a secret value. Not here: what to do while a
//! check is pending or overdue (that is `rotation::decide::pickup_wait`).

pub mod ack_file;
pub mod command;
pub mod http_probe;
pub mod registry;
pub mod spec;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Duration;
use tokio::sync::Notify;

use crate::domain::StoreRecord;
use registry::PickupSpec;

/// What a pickup check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pickup {
    /// Consumers use the current secret: older ones may be retired.
    Confirmed,
    /// Not yet; ask again on a later pass. Says why, for logs and `plan`.
    Pending(String),
}

/// A way to learn whether consumers have loaded the current secret.
#[async_trait]
pub trait PickupCheck: Send + Sync {
    /// Asked once the grace period after `current` was published has passed.
    async fn check(&self, current: &StoreRecord) -> Pickup;

    /// How long after the end of grace the check may stay unconfirmed before a
    /// `pickup_timeout` is sent; `None`: it never is (the grace period alone).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// How long to wait before asking again while pending; `None`: the check wakes the
    /// daemon itself ([`PickupCheck::watch`]), so only its timeout and a long fallback
    /// are scheduled.
    fn interval(&self) -> Option<Duration> {
        None
    }

    /// A wake-up the check triggers when what it reads may have changed (a write to the
    /// ack file). Started on the first call; `None` when the check has none or watching
    /// failed (it then falls back to [`PickupCheck::interval`]).
    fn watch(&self) -> Option<Arc<Notify>> {
        None
    }

    /// What `check` can tell of the check offline, before any secret is published (as
    /// a store's `probe`); `None`: nothing to tell.
    fn preflight(&self) -> Option<Preflight> {
        None
    }
}

/// What a pickup check's preflight found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// It can run: what it will do.
    Ok(String),
    /// It runs, but worse than it could: what to fix.
    Warn(String),
    /// It would never confirm: why.
    Fail(String),
}

/// The default check: the grace period alone is the confirmation.
#[derive(Clone, Copy, Debug, Default)]
pub struct GraceOnly;

#[async_trait]
impl PickupCheck for GraceOnly {
    async fn check(&self, _current: &StoreRecord) -> Pickup {
        Pickup::Confirmed
    }
}

/// Where the client is, for checks that tell a program about it.
#[derive(Clone)]
pub struct ClientInfo {
    /// The client's name in the policy.
    pub name: String,
    /// Where its secret is published.
    pub store_location: String,
    /// Its store and key: a program's output is scrubbed of the current value.
    pub store: Arc<dyn crate::store::SecretStore>,
    /// The secret's name in the store.
    pub store_key: String,
}

/// The check a policy's `pickup:` asks for.
pub fn from_spec(spec: &PickupSpec, client: ClientInfo) -> Arc<dyn PickupCheck> {
    spec.backend().build(client)
}

/// The preflight of the check `spec` asks for, without building it (`check` tells of
/// every client's, wired or not): [`PickupCheck::preflight`] of that check.
pub fn preflight(spec: &PickupSpec) -> Option<Preflight> {
    spec.backend().preflight()
}

/// How a value someone reported may be shown: itself when it has the shape of a
/// fingerprint (16 hex digits), else only that it is something else — whatever was
/// reported could be a secret value.
pub(crate) fn shown(reported: &str) -> String {
    if reported.len() == 16 && reported.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("fingerprint {reported}")
    } else if reported.is_empty() {
        "nothing".to_owned()
    } else {
        "something that is not a fingerprint".to_owned()
    }
}

/// Whether `reported` (as read, untrimmed) confirms `current`.
pub(crate) fn confirms(reported: &str, current: &StoreRecord) -> bool {
    reported.trim() == current.fingerprint.as_str()
}

/// The pending reason when `reported` is not the current fingerprint.
pub(crate) fn mismatch(source: &str, reported: &str, current: &StoreRecord) -> String {
    format!(
        "{source} reports {}, not the current {}",
        shown(reported.trim()),
        current.fingerprint
    )
}

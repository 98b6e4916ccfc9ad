//! Pickup checks: has every consumer switched to the newly published secret?
//!
//! The reconciler retires old secrets only once the grace period after publishing has
//! passed *and* the client's pickup check confirms. The check is asked on each pass; it
//! never blocks a worker while it waits. Only `grace` exists so far; an HTTP probe, an
//! ack file and a command will implement the same trait.

use async_trait::async_trait;

use crate::store::StoreRecord;

/// What a pickup check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pickup {
    /// Consumers use the current secret: older ones may be retired.
    Confirmed,
    /// Not yet; ask again on a later pass.
    Pending(String),
}

/// A way to learn whether consumers have loaded the current secret.
#[async_trait]
pub trait PickupCheck: Send + Sync {
    /// Asked once the grace period after `current` was published has passed.
    async fn check(&self, current: &StoreRecord) -> Pickup;
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

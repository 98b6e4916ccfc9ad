//! The value types every layer shares: which client and secret a thing is about, what a
//! store holds about its value, a value's fingerprint, and the events the rotator sends.
//!
//! A leaf: it imports nothing from the rest of the crate (only std, external crates and
//! itself), so two behaviour modules that share a type never import each other.
//! Not here: behaviour (talking to CDS, stores, notifiers, deciding what to do): the
//! types here only hold, compare, parse and print themselves.

mod client;
mod event;
mod fingerprint;
mod record;

pub use client::{ClientKind, ClientRef, SecretId};
pub use event::{Event, EventKind};
pub use fingerprint::Fingerprint;
pub use record::{Current, StoreRecord};

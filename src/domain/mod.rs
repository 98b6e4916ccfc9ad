//! The value types every layer shares: which client and secret a thing is about, what a
//! store holds about its value, a value's fingerprint, the events the rotator sends, and
//! a client's schedule.
//!
//! A leaf: it imports nothing from the rest of the crate (only std, external crates and
//! itself), so two behaviour modules that share a type never import each other.
//! Not here: behaviour (talking to CDS, stores, notifiers, deciding what to do): the
//! types here only hold, compare, parse and print themselves.

mod client;
mod event;
mod fingerprint;
mod record;
mod schedule;
pub mod service_url;
pub mod source;

pub use client::{ClientKind, ClientRef, SecretId};
pub use event::{Event, EventKind};
pub use fingerprint::Fingerprint;
pub use record::{Current, StoreRecord};
pub use schedule::{DEFAULT_SCHEDULE, InvalidSchedule, Schedule};
pub use source::{SecretSource, SourceError, ValueSource};

#[cfg(test)]
mod tests {
    /// The leaf rule, read off the source: every `crate::` path in `src/domain/` names
    /// `domain` itself (comments aside).
    #[test]
    fn domain_imports_nothing_of_the_crate_but_itself() {
        // Spelled in two pieces so that this line does not name the crate itself.
        let prefix = concat!("crate", "::");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
        let mut outside = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for (i, _) in code.match_indices(prefix) {
                    if !code[i + prefix.len()..].starts_with("domain") {
                        outside.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(outside.is_empty(), "domain imports the crate: {outside:#?}");
    }
}

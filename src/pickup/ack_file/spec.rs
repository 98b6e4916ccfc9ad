//! The `ack_file` pickup check in the policy: its keys, how its mapping is checked, its
//! preflight and how it is built.
//!
//! Not here: reading and watching the file (`pickup::ack_file`), or that no store
//! writes it (`policy`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;

use super::AckFile;
use crate::pickup::registry::Backend;
use crate::pickup::spec::{TIMEOUT, problem_at, timeout};
use crate::pickup::{ClientInfo, PickupCheck, Preflight};
use crate::schema::{Declared, Entry, Key, Shape};

/// `type: ack_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckFileSpec {
    /// The file, resolved against the policy's directory.
    pub path: PathBuf,
    /// See [`crate::pickup::registry::PickupSpec::timeout`].
    pub timeout: Duration,
}

/// A `type: ack_file` mapping as written.
impl Declared for AckFileSpec {
    const KEYS: &'static [Key] = &[
        Key::required(
            "path",
            Shape::Value,
            "the file the app writes the fingerprint it loaded to, like /shared/cds-secret.ack",
        ),
        TIMEOUT,
    ];

    fn parse(entry: &mut Entry<'_>) -> AckFileSpec {
        let path = entry.fields.path("path");
        let at = path.as_ref().map_or(entry.at, |p| p.referenced);
        let path = path.map(|p| p.value).unwrap_or_default();
        let text = path.to_string_lossy();
        if text.trim().is_empty() || text.chars().any(char::is_control) {
            problem_at(
                entry,
                at,
                "path must name a file, like /shared/cds-secret.ack".to_owned(),
            );
        } else {
            let owner = entry.name;
            entry.placeholder(
                at,
                &text,
                &format!("{owner}: pickup.path"),
                "the file the app writes the fingerprint it loaded to",
            );
        }
        AckFileSpec {
            path: entry.resolve(&path),
            timeout: timeout(entry),
        }
    }
}

impl Backend for AckFileSpec {
    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn app_file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn preflight(&self) -> Option<Preflight> {
        Some(AckFile::preflight_of(self))
    }

    fn build(&self, _client: ClientInfo) -> Arc<dyn PickupCheck> {
        Arc::new(AckFile::new(self.clone()))
    }
}

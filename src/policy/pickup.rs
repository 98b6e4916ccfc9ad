//! The `pickup:` key of a client or of `defaults:`: how the rotator learns that the
//! consumers switched to a newly published secret before it retires the old one.
//!
//! A client's `pickup:` replaces the one in `defaults:` as a whole; without either it is
//! `{ type: grace }` (the grace period alone). Each check's keys and rules are in its
//! folder (`pickup::<type>::spec`), listed in `pickup::registry`; here is what crosses
//! clients (no store writes an ack file). Not here: running the checks (that is
//! `crate::pickup`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use super::{ConnectSettings, FileSlot, SecretSource, Validator, physical};
pub use crate::pickup::registry::PickupSpec;
use crate::schema::Entry;
use crate::schema::tree::Map;

impl Validator {
    /// Checks the `pickup:` mapping of `section` (a client or `defaults:`), `None` when
    /// it has none or it is refused; `owner` names where it is ("client `app`",
    /// "defaults"). A program it runs never gets the policy's credential variables.
    pub(super) fn pickup(
        &mut self,
        section: Map<'_>,
        owner: &str,
        base: &Path,
    ) -> Option<PickupSpec> {
        let (type_name, fields) = section.typed("pickup")?;
        let before = self.problems.len();
        let variables = std::mem::take(&mut self.credential_variables);
        let mut entry = Entry::new(fields, owner, base, &mut self.problems)
            .with_credential_variables(&variables);
        let spec = PickupSpec::parse(type_name, &mut entry);
        self.credential_variables = variables;
        spec.filter(|_| self.problems.len() == before)
    }
}

impl Validator {
    /// An ack file is the app's to write: never a file the rotator writes (a store's
    /// value or record) nor its own credential, where the check would read a secret.
    pub(super) fn ack_files(
        &mut self,
        acks: &[(Location, String, PathBuf)],
        written: &BTreeMap<PathBuf, FileSlot>,
        connect: Option<&ConnectSettings>,
    ) {
        let credential = match connect.map(|c| &c.secret) {
            Some(SecretSource::File(p)) => Some(physical(p)),
            _ => None,
        };
        for (at, client, path) in acks {
            let ack = physical(path);
            let what = if let Some(slot) = written.get(&ack) {
                format!(
                    "a file the rotator writes (store `{}` secret `{}`)",
                    slot.store, slot.secret
                )
            } else if credential.as_ref() == Some(&ack) {
                "the rotator's own credential file".to_owned()
            } else {
                continue;
            };
            self.problem(
                *at,
                format!(
                    "client `{client}`: pickup.path {} is {what}; the app writes the ack file: give it a path of its own, like /shared/ack/{client}.ack",
                    ack.display()
                ),
            );
        }
    }
}

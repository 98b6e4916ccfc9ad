//! The `file` store in the policy: its keys, how its entry is checked (directory, mode,
//! group), its secret-name rule, its slot and how it is built.
//!
//! Not here: writing the files (`store::file`), or the rules every store shares
//! (`policy`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::{Access, FileStore};
use crate::schema::{Entry, Key, Shape, is_safe_name};
use crate::store::SecretStore;
use crate::store::registry::{Backend, Declared, OwnCredential, Slot, Wiring};

/// Files in a directory, as the policy declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// The directory: absolute, `.` and `..` removed (relative paths resolve against the
    /// policy file's directory).
    pub dir: PathBuf,
    /// The files' mode: 0o600 (default) or 0o640.
    pub mode: u32,
    /// The files' and directory's group (a gid), when set.
    pub group: Option<u32>,
}

/// The file rule for secret names (the `kms_file` store's too): the name is a file name
/// beside its `.json` record.
pub fn secret_name_rule(secret: &str) -> Option<String> {
    (!is_safe_name(secret) || secret.ends_with(".json")).then(|| {
        "must be 1-64 letters, digits, `-`, `_`, `.`, not start with `.` nor end with `.json`"
            .to_owned()
    })
}

/// The file rule's message for a client's secret name.
pub fn client_secret_problem(client: &str, secret: &str) -> Option<String> {
    secret_name_rule(secret)
        .map(|rule| format!("client `{client}`: store secret name `{secret}` {rule}"))
}

impl Declared for FileSpec {
    const KEYS: &'static [Key] = &[
        Key::required(
            "dir",
            Shape::Value,
            "the directory the secrets are written to, like /var/lib/cds-rotator/secrets",
        ),
        Key::optional(
            "mode",
            Shape::Value,
            "the files' mode: \"0600\" (the default) or \"0640\" (the group may read)",
        ),
        Key::optional(
            "group",
            Shape::Value,
            "the files' group, a name from /etc/group or a gid, like cds-readers",
        ),
    ];

    fn parse(entry: &mut Entry<'_>) -> FileSpec {
        let (name, f) = (entry.name, entry.fields);
        let dir = f.path("dir");
        if let Some(dir) = &dir {
            entry.placeholder(
                dir.referenced,
                &dir.value.to_string_lossy(),
                &format!("stores.{name}.dir"),
                "the directory the secrets are written to, like /var/lib/cds-rotator/secrets",
            );
        }
        FileSpec {
            dir: entry.resolve(&dir.map(|d| d.value).unwrap_or_default()),
            mode: file_mode(entry, f.text("mode").as_ref()),
            group: f.text("group").and_then(|g| file_group(entry, &g)),
        }
    }
}

/// A file store's `mode`: 0600 (default) or 0640; nothing wider, since the value is a
/// secret.
fn file_mode(entry: &mut Entry<'_>, mode: Option<&Spanned<String>>) -> u32 {
    let Some(mode) = mode else {
        return 0o600;
    };
    let text = mode.value.trim();
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m @ (0o600 | 0o640)) => m,
        _ => {
            let store = entry.name;
            entry.problem_at(mode.referenced, format!(
                "stores.{store}.mode `{}` is not allowed: write \"0600\" (only the rotator's user reads the files, the default) or \"0640\" (its group reads them too); nothing wider, the files hold secrets",
                crate::text::clip(&crate::text::escape_control(text), 12)
            ));
            0o600
        }
    }
}

/// A file store's `group`: a gid, or a name looked up in /etc/group.
fn file_group(entry: &mut Entry<'_>, group: &Spanned<String>) -> Option<u32> {
    let text = group.value.trim();
    if let Ok(gid) = text.parse::<u32>() {
        return Some(gid);
    }
    let found = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let gid = fields.nth(1)?;
                (name == text).then(|| gid.parse::<u32>().ok()).flatten()
            })
        });
    if found.is_none() {
        let store = entry.name;
        entry.problem_at(group.referenced, format!(
            "stores.{store}.group `{}` is not a group in /etc/group: create it (groupadd), or give its numeric gid",
            crate::text::clip(&crate::text::escape_control(text), 40)
        ));
    }
    found
}

impl Backend for FileSpec {
    fn secret_name_rule(&self, secret: &str) -> Option<String> {
        secret_name_rule(secret)
    }

    fn client_secret_problem(&self, client: &str, _store: &str, secret: &str) -> Option<String> {
        client_secret_problem(client, secret)
    }

    fn slot(&self, _secret: &str) -> Slot {
        Slot::Files {
            dir: self.dir.clone(),
        }
    }

    fn own_credential(&self) -> OwnCredential {
        OwnCredential::File
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn build(&self, name: &str, _wiring: &Wiring<'_>) -> Result<Arc<dyn SecretStore>, String> {
        Ok(Arc::new(
            FileStore::new(name.to_owned(), self.dir.clone()).with_access(Access {
                mode: self.mode,
                group: self.group,
            }),
        ))
    }
}

//! The `file` store in the policy: its keys, how its entry is checked (directory, mode,
//! group), its secret-name rule, its slot and how it is built.
//!
//! Not here: writing the files (`store::file`), or the rules every store shares
//! (`policy`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

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

/// A `type: file` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    dir: PathBuf,
    #[serde(default)]
    mode: Option<ModeText>,
    #[serde(default)]
    group: Option<ModeText>,
}

/// A file mode or a group as written: `"0640"`, `cds-readers`, or a number (inside a
/// `type:` entry YAML hands `0640` over as the number 640, `1001` as 1001). The check
/// reads its digits.
#[derive(Clone, Debug)]
struct ModeText(String);

impl ModeText {
    /// The text as written (a number's decimal digits).
    fn text(&self) -> String {
        self.0.trim().to_owned()
    }
}

impl<'de> Deserialize<'de> for ModeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ModeText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mode like \"0640\" or a group name or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModeText, E> {
                Ok(ModeText(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ModeText, E> {
                Ok(ModeText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ModeText, E> {
                Ok(ModeText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ModeText, E> {
                if v.fract() == 0.0 && (0.0..1e12).contains(&v) {
                    Ok(ModeText(format!("{v:.0}")))
                } else {
                    Err(E::custom("expected a mode like \"0640\" or a group"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
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
    type Raw = RawFile;

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

    fn parse(raw: RawFile, entry: &mut Entry<'_>) -> FileSpec {
        let name = entry.name;
        entry.placeholder(
            &raw.dir.to_string_lossy(),
            &format!("stores.{name}.dir"),
            "the directory the secrets are written to, like /var/lib/cds-rotator/secrets",
        );
        FileSpec {
            dir: entry.resolve(&raw.dir),
            mode: file_mode(entry, raw.mode.as_ref()),
            group: raw.group.and_then(|g| file_group(entry, &g)),
        }
    }
}

/// A file store's `mode`: 0600 (default) or 0640; nothing wider, since the value is a
/// secret.
fn file_mode(entry: &mut Entry<'_>, mode: Option<&ModeText>) -> u32 {
    let Some(mode) = mode else {
        return 0o600;
    };
    let text = mode.text();
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m @ (0o600 | 0o640)) => m,
        _ => {
            let store = entry.name;
            entry.problem(format!(
                "stores.{store}.mode `{}` is not allowed: write \"0600\" (only the rotator's user reads the files, the default) or \"0640\" (its group reads them too); nothing wider, the files hold secrets",
                crate::text::clip(&crate::text::escape_control(&text), 12)
            ));
            0o600
        }
    }
}

/// A file store's `group`: a gid, or a name looked up in /etc/group.
fn file_group(entry: &mut Entry<'_>, group: &ModeText) -> Option<u32> {
    let text = group.text();
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
        entry.problem(format!(
            "stores.{store}.group `{}` is not a group in /etc/group: create it (groupadd), or give its numeric gid",
            crate::text::clip(&crate::text::escape_control(&text), 40)
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

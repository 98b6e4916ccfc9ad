//! The building blocks of the policy's schema that the policy and every backend share:
//! how a key is declared ([`Key`], [`Shape`]), how a problem is reported ([`Diagnostic`],
//! [`Entry`]), how a backend declares its typed entry ([`Declared`]), durations, and the
//! rules for names and paths that many keys follow.
//!
//! A leaf beside `domain`: it imports nothing of the crate but `domain`, so a backend can
//! declare and check its own keys without importing `policy`, and `policy` can ask the
//! backends for theirs. Not here: any section or key of the policy itself (`policy`,
//! each backend's `spec`).

pub mod duration;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_saphyr::Location;

/// One problem in a policy, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong and what to do.
    pub message: String,
}

/// What a key's value must look like before it is deserialized.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// One value (text, number or boolean); what it means is checked after parsing.
    Value,
    /// `true` or `false`.
    Bool,
    /// A whole number, not negative.
    Count,
    /// Anything: refused after parsing without being looked at (`client_secret`).
    Any,
    /// A list of single values.
    Values,
    /// A mapping with these keys.
    Section(&'static [Key]),
    /// A list of mappings, each taking the keys of all these groups (the clients).
    Sections(&'static [&'static [Key]]),
    /// Named entries, each a mapping with `type:` one of these and that type's keys.
    Named(&'static Kinds),
    /// One mapping with `type:` one of these and that type's keys (`pickup:`).
    Typed(&'static Kinds),
}

/// One key a section takes.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
    /// What the value should be, for messages ("a duration like 90d").
    pub expect: &'static str,
}

impl Key {
    pub const fn optional(name: &'static str, shape: Shape, expect: &'static str) -> Key {
        Key {
            name,
            shape,
            required: false,
            expect,
        }
    }

    pub const fn required(name: &'static str, shape: Shape, expect: &'static str) -> Key {
        Key {
            name,
            shape,
            required: true,
            expect,
        }
    }
}

/// The types of a typed mapping (`stores:` and `notifiers:` entries, `pickup:`, a vault
/// store's `auth:`), told apart by their tag key.
#[derive(Debug)]
pub struct Kinds {
    /// "store", "notifier", "pickup check", "Vault auth".
    pub what: &'static str,
    /// The key that names the type: `type`, or `method` for a vault store's `auth:`.
    pub tag: &'static str,
    pub types: &'static [(&'static str, &'static [Key])],
}

/// A backend's entry in the policy: its keys and how its entry is checked.
pub trait Declared: Sized {
    /// Its keys besides `type`: the one declaration of each (its shape, whether it is
    /// required, what it should be).
    const KEYS: &'static [Key];
    /// Checks the entry (its keys in [`Entry::fields`]), reporting problems at the key
    /// they are about. The spec is returned even then, so that its clients are still
    /// checked against it (the policy is refused anyway).
    fn parse(entry: &mut Entry<'_>) -> Self;
}

/// One typed entry being checked (a store under `stores:`): where it is, its keys, its
/// name, the policy's directory, and where its problems go.
pub struct Entry<'a> {
    /// Where the entry is.
    pub at: Location,
    /// Its keys as written (shape already checked).
    pub fields: tree::Map<'a>,
    /// Its name (the key under `stores:`).
    pub name: &'a str,
    /// The policy file's directory, which relative paths resolve against.
    pub base: &'a Path,
    problems: &'a mut Vec<Diagnostic>,
    /// The variables the policy reads a credential from, with what each holds, when
    /// known (no program the entry declares may get one).
    credential_variables: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Entry<'a> {
    /// The entry `name` at `at`, reporting into `problems`.
    pub fn new(
        fields: tree::Map<'a>,
        name: &'a str,
        base: &'a Path,
        problems: &'a mut Vec<Diagnostic>,
    ) -> Self {
        Entry {
            at: fields.at,
            fields,
            name,
            base,
            problems,
            credential_variables: None,
        }
    }

    /// The same entry, knowing the policy's credential variables.
    pub fn with_credential_variables(mut self, variables: &'a BTreeMap<String, String>) -> Self {
        self.credential_variables = Some(variables);
        self
    }

    /// The policy's credential variables with what each holds (none when not known).
    pub fn credential_variables(&self) -> impl Iterator<Item = (&'a String, &'a String)> + use<'a> {
        self.credential_variables.into_iter().flatten()
    }

    /// Reports a problem with the entry as a whole.
    pub fn problem(&mut self, message: impl Into<String>) {
        let at = self.at;
        self.problem_at(at, message);
    }

    /// Reports a problem at `at` (a key's value).
    pub fn problem_at(&mut self, at: Location, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            line: at.line(),
            column: at.column(),
            message: message.into(),
        });
    }

    /// Reports a template placeholder (`<your-dir>`) left in `value` (at `at`) of key
    /// `what`; true when there was one.
    pub fn placeholder(&mut self, at: Location, value: &str, what: &str, expect: &str) -> bool {
        let Some(shown) = placeholder(value) else {
            return false;
        };
        self.problem_at(
            at,
            format!("{what}: replace the placeholder `{shown}` with {expect}"),
        );
        true
    }

    /// `p` resolved against the policy's directory and normalized.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(self.base, p)
    }
}

/// `p` resolved against `base` (the policy's directory) and normalized.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    normalize(&base.join(p))
}

/// Removes `.` and folds `..` into its parent without touching the file system (`/..` is
/// `/`; a relative path keeps its leading `..`).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in p.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::CurDir | Component::ParentDir) | None => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// A path that cannot be a pasted secret: absolute, or relative and starting with `./`
/// or `../`; naming a file (not ending in `/`, `.` or `..`); without control characters.
pub fn is_file_path(p: &Path) -> bool {
    let Some(text) = p.to_str() else {
        return false;
    };
    (p.is_absolute() || text.starts_with("./") || text.starts_with("../"))
        && !text.ends_with('/')
        && matches!(p.components().next_back(), Some(Component::Normal(_)))
        && text.len() <= 4096
        && !text.chars().any(char::is_control)
}

/// A template placeholder such as `<your-tenant-id>` (a value starting with `<` and
/// ending with `>`), as it may be shown: itself when it reads like a placeholder
/// (lowercase words), else `<…>`, so that a pasted value is never echoed.
pub fn placeholder(value: &str) -> Option<&str> {
    let v = value.trim();
    let inner = v.strip_prefix('<')?.strip_suffix('>')?;
    let readable = !inner.is_empty()
        && inner.len() <= 48
        && inner
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | ' '));
    Some(if readable { v } else { "<…>" })
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-64 characters of letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

//! The policy document's shape: every section and key of the policy itself ([`TOP`] and
//! the tables under it, each key declared once), and the check of the document's tree
//! against them, so that every unknown, repeated, missing or wrongly shaped key is
//! reported in one run, at its position. The checks of what the values mean (durations,
//! GUIDs, paths) then read the same tree (`Validator` in `mod.rs`, each backend's
//! `spec`). Not here: the backends' own keys (their `spec`), the tree itself
//! (`schema::tree`).

use std::collections::BTreeMap;

use serde_saphyr::{
    DuplicateKeyPolicy, Error, Location, MessageFormatter, NonFiniteFloatPolicy, Options, Spanned,
    UserMessageFormatter,
};

pub(super) use crate::coordination::check::{COORDINATION, COORDINATION_TLS};
use crate::notify::registry::NotifierSpec;
use crate::pickup::registry::PickupSpec;
pub(super) use crate::schema::tree::Node;
pub(super) use crate::schema::{Diagnostic, Key, Kinds, Shape};
use crate::store::registry::StoreSpec;

/// The typed entries under `stores:`.
pub(super) const STORES: Kinds = Kinds {
    what: "store",
    tag: "type",
    types: StoreSpec::TYPES,
};

/// The typed entries under `notifiers:`.
pub(super) const NOTIFIERS: Kinds = Kinds {
    what: "notifier",
    tag: "type",
    types: NotifierSpec::TYPES,
};

/// The types of `pickup:`.
pub(super) const PICKUPS: Kinds = Kinds {
    what: "pickup check",
    tag: "type",
    types: PickupSpec::TYPES,
};

// ---------------------------------------------------------------------------------------
// The shape of the document: every section and key, for the first pass.

pub(super) const TOP: &[Key] = &[
    Key::required(
        "connect",
        Shape::Section(CONNECT),
        "a mapping with url, tenant_id and credentials",
    ),
    Key::optional(
        "lock_dir",
        Shape::Value,
        "a directory for lock files, like /run/cds-rotator",
    ),
    Key::optional(
        "daemon",
        Shape::Section(DAEMON),
        "a mapping with listen and audit_log",
    ),
    Key::optional(
        "coordination",
        Shape::Section(COORDINATION),
        "a mapping with type: etcd, endpoints and key_prefix",
    ),
    Key::required(
        "stores",
        Shape::Named(&STORES),
        "named stores, like `local: { type: file, dir: /var/lib/cds-rotator/secrets }`",
    ),
    Key::optional(
        "notifiers",
        Shape::Named(&NOTIFIERS),
        "named notifiers, like `ops: { type: log }`",
    ),
    Key::optional(
        "defaults",
        Shape::Section(TIMING),
        "a mapping of timing keys (lifetime, rotate_before, grace, …)",
    ),
    Key::required(
        "clients",
        Shape::Sections(&[CLIENT, TIMING]),
        "a list of clients, each starting with `- name:`",
    ),
];

pub(super) const DAEMON: &[Key] = &[
    Key::optional(
        "listen",
        Shape::Value,
        "an address and port for /healthz, /readyz and /metrics, like 127.0.0.1:9464",
    ),
    Key::optional(
        "audit_log",
        Shape::Value,
        "the path of the audit log, like /var/lib/cds-rotator/audit.jsonl",
    ),
];

pub(super) const CONNECT: &[Key] = &[
    Key::required(
        "url",
        Shape::Value,
        "the CDS URL, https://uswe.datahub.connect.aveva.com",
    ),
    Key::required("tenant_id", Shape::Value, "the GUID of your tenant"),
    Key::required(
        "credentials",
        Shape::Section(CREDENTIALS),
        "a mapping with client_id and one of client_secret_credential, client_secret_file, client_secret_env, client_secret_store",
    ),
    Key::optional(
        "max_concurrency",
        Shape::Count,
        "a whole number from 1 to 64",
    ),
    Key::optional(
        "request_timeout",
        Shape::Value,
        "a duration from 1s to 5m, like 30s",
    ),
];

pub(super) const CREDENTIALS: &[Key] = &[
    Key::required(
        "client_id",
        Shape::Value,
        "the GUID of the rotator's own client",
    ),
    Key::optional(
        "client_secret_file",
        Shape::Value,
        "the path of a file holding the rotator's secret",
    ),
    Key::optional(
        "client_secret_env",
        Shape::Value,
        "the name of an environment variable holding the rotator's secret",
    ),
    Key::optional(
        "client_secret_credential",
        Shape::Value,
        "the name of a systemd credential (LoadCredential=NAME:…) holding the rotator's secret",
    ),
    Key::optional(
        "client_secret_store",
        Shape::Section(STORE_REF),
        "a mapping with name (a store under `stores:`) and secret (the secret's name in it)",
    ),
    Key::optional(
        "client_secret",
        Shape::Any,
        "nothing: set client_secret_credential, client_secret_file, client_secret_env or client_secret_store instead",
    ),
];

pub(super) const TIMING: &[Key] = &[
    Key::optional(
        "schedule",
        Shape::Value,
        "a cron expression with seconds, like \"0 0 3 * * *\"",
    ),
    Key::optional("lifetime", Shape::Value, "a duration like 90d"),
    Key::optional("rotate_before", Shape::Value, "a duration like 30d"),
    Key::optional("grace", Shape::Value, "a duration like 24h"),
    Key::optional("orphan_grace", Shape::Value, "a duration like 10m"),
    Key::optional("max_age", Shape::Value, "a duration like 60d"),
    Key::optional("verify_timeout", Shape::Value, "a duration like 2m"),
    Key::optional("retry_interval", Shape::Value, "a duration like 15m"),
    // Not timing, but set in `defaults:` or per client the same way.
    Key::optional(
        "notify_on",
        Shape::Values,
        "a list of event kinds, like [rotated, rotation_failed] (all when unset)",
    ),
    Key::optional(
        "pickup",
        Shape::Typed(&PICKUPS),
        "a pickup check, like `{ type: ack_file, path: /shared/cds-secret.ack }`",
    ),
];

/// A client's own keys; it takes [`TIMING`]'s too.
pub(super) const CLIENT: &[Key] = &[
    Key::required(
        "name",
        Shape::Value,
        "the client's name (letters, digits, `-`, `_`, `.`)",
    ),
    Key::required("client_id", Shape::Value, "the GUID of the CDS client"),
    Key::optional("kind", Shape::Value, "client_credentials or hybrid"),
    Key::required(
        "store",
        Shape::Section(STORE_REF),
        "a mapping like `{ name: local, secret: my-app }`",
    ),
    Key::optional(
        "notify",
        Shape::Values,
        "a list of notifier names, like [ops]",
    ),
    Key::optional("retire_unmanaged", Shape::Bool, "true or false"),
];

pub(super) const STORE_REF: &[Key] = &[
    Key::required("name", Shape::Value, "the name of a store under `stores:`"),
    Key::optional(
        "secret",
        Shape::Value,
        "the secret's name in the store (letters, digits, `-`, `_`, `.`)",
    ),
];

/// What a key's value should be, wherever the key appears (the same name means the same
/// thing in every section).
fn expect_of(name: &str) -> Option<&'static str> {
    let typed = StoreSpec::TYPES
        .iter()
        .chain(NotifierSpec::TYPES)
        .chain(PickupSpec::TYPES)
        .flat_map(|(_, keys)| keys.iter());
    [
        TOP,
        DAEMON,
        COORDINATION,
        COORDINATION_TLS,
        CONNECT,
        CREDENTIALS,
        TIMING,
        CLIENT,
        STORE_REF,
    ]
    .into_iter()
    .flatten()
    .chain(typed)
    .find(|k| k.name == name)
    .map(|k| k.expect)
}

// ---------------------------------------------------------------------------------------
// Parsing.

/// Reads the document into its tree and checks its shape. The parser's budget and alias
/// limits refuse YAML bombs; error snippets are off and messages are our own so that no
/// value is ever echoed (a line may hold a secret).
pub(super) fn parse(text: &str) -> Result<Spanned<Node>, Vec<Diagnostic>> {
    let mut options: Options = serde_saphyr::options! {
        with_snippet: false,
        // `yes`, `no`, `on`, `off` are text, so `retire_unmanaged: yes` is refused, not
        // guessed.
        strict_booleans: true,
    };
    // Every repeated key reaches the shape check, which reports each of them.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // `.nan` is a value like any other here, not an error that would echo it.
    options.non_finite_float_policy = NonFiniteFloatPolicy::AsString;
    let tree = crate::schema::tree::read(text, options).map_err(|e| vec![diagnostic(&e, text)])?;
    let mut check = ShapeCheck::default();
    check.document(&tree);
    if !check.problems.is_empty() {
        let mut problems = check.problems;
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    Ok(tree)
}

/// Where in the document a mapping is, for messages.
struct Place {
    /// Put before a key: "connect.", "client `app`: ".
    prefix: String,
    /// The mapping itself: "connect", "client `app`".
    label: String,
}

impl Place {
    fn top() -> Place {
        Place {
            prefix: String::new(),
            label: "the policy".to_owned(),
        }
    }

    fn child(&self, key: &str) -> Place {
        Place {
            prefix: format!("{}{key}.", self.prefix),
            label: format!("{}{key}", self.prefix),
        }
    }

    fn named(label: String) -> Place {
        Place {
            prefix: format!("{label}: "),
            label,
        }
    }
}

/// The first pass: compares the node tree with [`TOP`].
#[derive(Default)]
struct ShapeCheck {
    problems: Vec<Diagnostic>,
}

impl ShapeCheck {
    fn problem(&mut self, at: Location, message: String) {
        self.problems.push(Diagnostic {
            line: at.line(),
            column: at.column(),
            message,
        });
    }

    fn document(&mut self, tree: &Spanned<Node>) {
        match &tree.value {
            Node::Map(entries) => self.section(tree.referenced, entries, &[TOP], &Place::top()),
            Node::Null => self.problem(
                Location::UNKNOWN,
                "the policy is empty: it needs connect, stores and clients; start from config/policy.yaml".to_owned(),
            ),
            other => self.problem(
                tree.referenced,
                format!(
                    "the policy is {}, not a mapping of connect, stores, clients, …; start from config/policy.yaml",
                    other.kind()
                ),
            ),
        }
    }

    /// A mapping that takes `keys`: each key known and set once, the required ones set.
    fn section(
        &mut self,
        at: Location,
        entries: &[(Spanned<Node>, Spanned<Node>)],
        keys: &[&[Key]],
        place: &Place,
    ) {
        let known: Vec<&Key> = keys.iter().flat_map(|k| k.iter()).collect();
        let names: Vec<&str> = known.iter().map(|k| k.name).collect();
        let mut seen: BTreeMap<&str, Location> = BTreeMap::new();
        for (key, value) in entries {
            let Some(name) = self.key_name(key, &seen, &names, place) else {
                continue;
            };
            seen.insert(name, key.referenced);
            match known.iter().find(|k| k.name == name) {
                Some(k) => self.value(value, k, place),
                None => self.unknown(key.referenced, name, &names, place),
            }
        }
        for k in known.iter().filter(|k| k.required) {
            if !seen.contains_key(k.name) {
                self.problem(
                    at,
                    format!(
                        "{}{} is missing; set it to {}",
                        place.prefix, k.name, k.expect
                    ),
                );
            }
        }
    }

    /// The key's name if it is text and not a repeat (each is reported).
    fn key_name<'a>(
        &mut self,
        key: &'a Spanned<Node>,
        seen: &BTreeMap<&str, Location>,
        known: &[&str],
        place: &Place,
    ) -> Option<&'a str> {
        let Some(name) = key.value.text() else {
            let hint = if known.is_empty() {
                "; write a name like `local`".to_owned()
            } else {
                format!("; use one of: {}", known.join(", "))
            };
            self.problem(
                key.referenced,
                format!("a key in {} is not a name{hint}", place.label),
            );
            return None;
        };
        if let Some(first) = seen.get(name) {
            self.problem(
                key.referenced,
                format!(
                    "{}{} is set twice in this mapping (first at line {}); keep one",
                    place.prefix,
                    shown_key(name),
                    first.line()
                ),
            );
            return None;
        }
        Some(name)
    }

    fn unknown(&mut self, at: Location, name: &str, names: &[&str], place: &Place) {
        let message = match (is_name(name), nearest(name, names)) {
            (true, Some(near)) => format!(
                "unknown field `{name}` in {}: did you mean `{near}`?",
                place.label
            ),
            (true, None) => format!(
                "unknown field `{name}` in {}; remove it, or use one of: {}",
                place.label,
                names.join(", ")
            ),
            (false, _) => format!(
                "unknown field (not shown) in {}; remove it, or use one of: {}",
                place.label,
                names.join(", ")
            ),
        };
        self.problem(at, message);
    }

    fn value(&mut self, value: &Spanned<Node>, key: &Key, place: &Place) {
        let at = value.referenced;
        let node = &value.value;
        let fits = match (key.shape, node) {
            (Shape::Any, _) => true,
            // An optional key left empty is as if it were not there.
            (Shape::Value | Shape::Bool | Shape::Count | Shape::Section(_), Node::Null) => {
                !key.required
            }
            (Shape::Value, n) => n.is_single(),
            (Shape::Bool, Node::Bool { .. }) => true,
            (Shape::Count, Node::Number { count, .. }) => count.is_some(),
            (Shape::Values, Node::List(items)) => {
                for item in items.iter().filter(|i| !i.value.is_single()) {
                    self.expected(item.referenced, key, place);
                }
                true
            }
            (Shape::Section(keys), Node::Map(entries)) => {
                self.section(at, entries, &[keys], &place.child(key.name));
                true
            }
            (Shape::Sections(groups), Node::List(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        Node::Map(entries) => {
                            let client = Place::named(client_label(entries, i));
                            self.section(item.referenced, entries, groups, &client);
                        }
                        _ => self.expected(item.referenced, key, place),
                    }
                }
                true
            }
            (Shape::Named(kinds), Node::Map(entries)) => {
                self.named(entries, kinds, &place.child(key.name));
                true
            }
            (Shape::Typed(kinds), Node::Map(fields)) => {
                self.typed(at, fields, kinds, &place.child(key.name));
                true
            }
            _ => false,
        };
        if !fits {
            if matches!(node, Node::Null) {
                self.problem(
                    at,
                    format!(
                        "{}{} is empty; set it to {}",
                        place.prefix, key.name, key.expect
                    ),
                );
            } else {
                self.expected(at, key, place);
            }
        }
    }

    fn expected(&mut self, at: Location, key: &Key, place: &Place) {
        self.problem(
            at,
            format!("{}{}: expected {}", place.prefix, key.name, key.expect),
        );
    }

    /// `stores:` or `notifiers:`: named entries, each with a known `type:` and its keys.
    fn named(&mut self, entries: &[(Spanned<Node>, Spanned<Node>)], kinds: &Kinds, place: &Place) {
        let types: Vec<&str> = kinds.types.iter().map(|(t, _)| *t).collect();
        let example = format!("{} (like `{{ type: {} }}`)", kinds.what, types.join(" | "));
        let mut seen: BTreeMap<&str, Location> = BTreeMap::new();
        for (key, value) in entries {
            let Some(name) = self.key_name(key, &seen, &[], place) else {
                continue;
            };
            seen.insert(name, key.referenced);
            let entry = place.child(if is_name(name) { name } else { "…" });
            let Node::Map(fields) = &value.value else {
                self.problem(
                    value.referenced,
                    format!("{}: expected a {example}", entry.label),
                );
                continue;
            };
            self.typed(value.referenced, fields, kinds, &entry);
        }
    }

    /// One mapping with a known `type:` and that type's keys.
    fn typed(
        &mut self,
        at: Location,
        fields: &[(Spanned<Node>, Spanned<Node>)],
        kinds: &Kinds,
        entry: &Place,
    ) {
        let types: Vec<&str> = kinds.types.iter().map(|(t, _)| *t).collect();
        let tag = kinds.tag;
        let type_of = fields.iter().find_map(|(k, v)| {
            (k.value.text() == Some(tag)).then_some((v.referenced, v.value.text()))
        });
        let keys = match type_of {
            None => {
                self.problem(
                    at,
                    format!(
                        "{}{tag} is missing; set it to {}",
                        entry.prefix,
                        types.join(" or ")
                    ),
                );
                return;
            }
            Some((type_at, t)) => match kinds.types.iter().find(|(n, _)| Some(*n) == t) {
                Some((_, keys)) => *keys,
                None => {
                    let what = match t {
                        Some(t) if is_name(t) => format!("`{t}` is not a {} type", kinds.what),
                        _ => format!("unknown {} type", kinds.what),
                    };
                    self.problem(
                        type_at,
                        format!("{}{tag}: {what}; use {}", entry.prefix, types.join(" or ")),
                    );
                    return;
                }
            },
        };
        let tag = [Key::required(tag, Shape::Any, "")];
        self.section(at, fields, &[&tag[..], keys], entry);
    }
}

/// "client `name`" when the entry has a usable name, else "client #3" (1-based).
fn client_label(entries: &[(Spanned<Node>, Spanned<Node>)], index: usize) -> String {
    let name = entries
        .iter()
        .find(|(k, _)| k.value.text() == Some("name"))
        .and_then(|(_, v)| v.value.text())
        .filter(|n| is_name(n));
    match name {
        Some(n) => format!("client `{n}`"),
        None => format!("client #{}", index + 1),
    }
}

/// Whether `s` looks like a key or a name (and so may be shown): 1-64 of letters, digits,
/// `-`, `_`, `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn shown_key(name: &str) -> &str {
    if is_name(name) { name } else { "a key" }
}

/// The known name `name` is most likely a typo of: at most 2 edits away, or one a prefix
/// of the other (3 characters at least).
pub(super) fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| {
            *d <= 2 || (lower.len() >= 3 && (k.starts_with(&lower) || lower.starts_with(*k)))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------
// Parser errors, in our words.

/// A parser error as a problem naming the key, in words that say what to write. Never
/// shows a value: only key names read back from the document.
fn diagnostic(err: &Error, text: &str) -> Diagnostic {
    let at = err.location().unwrap_or(Location::UNKNOWN);
    let key = key_at(text, at);
    let about = |what: &str| match key {
        Some(k) => format!("{k}: {what}"),
        None => format!("this value: {what}"),
    };
    let expected = |fallback: &str| {
        let what = key.and_then(expect_of).unwrap_or(fallback);
        about(&format!("expected {what}"))
    };
    let message = match original(err) {
        Error::DuplicateMappingKey { key: dup, .. } => format!(
            "{} is set twice in this mapping; keep one",
            dup.as_deref().map_or("a key", shown_key)
        ),
        Error::SerdeUnknownField {
            field, expected: e, ..
        } => format!(
            "unknown field `{}`; use one of: {}",
            shown_key(field),
            e.join(", ")
        ),
        Error::SerdeMissingField { field, .. } => format!(
            "{field} is missing; set it to {}",
            expect_of(field).unwrap_or("a value")
        ),
        Error::InvalidBooleanStrict { .. } => expected("true or false"),
        Error::InvalidScalar { ty, .. } => expected(scalar_kind(ty)),
        Error::NullIntoString { .. } => about("is empty; give it a value"),
        Error::SerdeInvalidType { .. }
        | Error::SerdeInvalidValue { .. }
        | Error::SerdeInvalidLength { .. }
        | Error::SerdeUnknownVariant { .. }
        | Error::SerdeVariantId { .. }
        | Error::NonFiniteFloat { .. }
        | Error::Message { .. }
        | Error::Unexpected { .. }
        | Error::TaggedEnumMismatch { .. }
        | Error::TaggedScalarCannotDeserializeIntoString { .. }
        | Error::QuotingRequired { .. }
        | Error::InvalidBinaryBase64 { .. }
        | Error::BinaryNotUtf8 { .. } => expected("another kind of value"),
        Error::Budget { .. }
        | Error::AliasReplayCounterOverflow { .. }
        | Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => "the policy is too large or too complex (too many values, too deeply nested, or anchors and aliases that expand too much); write it out plainly".to_owned(),
        // Syntax errors: the parser's words, which carry no value.
        other => UserMessageFormatter.format_message(other).into_owned(),
    };
    Diagnostic {
        line: at.line(),
        column: at.column(),
        message: format!("{message}; see the policy reference in README.md"),
    }
}

/// The error itself, without the wrappers that add a snippet or an alias's location.
fn original(mut err: &Error) -> &Error {
    loop {
        match err {
            Error::WithSnippet { error, .. } | Error::AliasError { error, .. } => err = error,
            other => return other,
        }
    }
}

fn scalar_kind(ty: &str) -> &'static str {
    match ty {
        "bool" => "true or false",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        _ => "another kind of value",
    }
}

/// The key whose value is at `at`: the last `name:` before that column on that line. Only
/// a name is returned, never a value.
fn key_at(text: &str, at: Location) -> Option<&str> {
    let line_no = usize::try_from(at.line()).ok()?.checked_sub(1)?;
    let column = usize::try_from(at.column()).ok()?.checked_sub(1)?;
    let line = text.lines().nth(line_no)?;
    let end = line
        .char_indices()
        .nth(column)
        .map_or(line.len(), |(i, _)| i);
    let before = &line[..end];
    let colon = before.rfind(':')?;
    let key = before[..colon]
        .rsplit(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '-' | '['))
        .find(|part| !part.is_empty())?;
    let key = key.trim_matches(|c| c == '"' || c == '\'');
    (is_name(key) && expect_of(key).is_some()).then_some(key)
}

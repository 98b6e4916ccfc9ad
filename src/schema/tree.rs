//! The policy document as a tree of YAML nodes with the location of every one, and the
//! typed reads of a mapping that the checks of the policy and of every backend make.
//!
//! The document is read once into this tree; its shape is compared with the keys the
//! sections declare (`policy`), then each section's check reads its values from the same
//! tree through [`Map`], at the key's own position. A read names a key its section
//! declares (debug builds check it), so a key is declared in one place: its [`Key`].
//! Not here: what the values mean (each section's check).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::{Key, Kinds, Shape};

/// A YAML node as written. A scalar keeps its text as written (a number's digits, so
/// `0640` stays `0640`); nothing here prints a value.
pub enum Node {
    Null,
    Bool { text: String },
    Number { count: Option<u64>, text: String },
    Text(String),
    Other { text: String },
    List(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl fmt::Debug for Node {
    /// The node's kind only: a value may be a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl Node {
    /// A text value's text (what a key or a `type:` is).
    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A single value's text as written, whatever YAML took it for.
    pub fn scalar(&self) -> Option<&str> {
        match self {
            Node::Text(s)
            | Node::Bool { text: s }
            | Node::Number { text: s, .. }
            | Node::Other { text: s } => Some(s),
            _ => None,
        }
    }

    /// One value (not empty, a list or a mapping).
    pub fn is_single(&self) -> bool {
        self.scalar().is_some()
    }

    /// What it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "empty",
            Node::List(_) => "a list",
            Node::Map(_) => "a mapping",
            _ => "a single value",
        }
    }

    /// Puts each non-text scalar's text as written, read back from the document.
    fn fill(node: &mut Spanned<Node>, source: &str) {
        let span = node.defined.span();
        let written = || {
            let start = usize::try_from(span.byte_offset()?).ok()?;
            let len = usize::try_from(span.byte_len()?).ok()?;
            source.get(start..start + len).map(|s| s.trim().to_owned())
        };
        match &mut node.value {
            Node::Bool { text } | Node::Number { text, .. } | Node::Other { text } => {
                if let Some(w) = written() {
                    *text = w;
                }
            }
            Node::List(items) => items.iter_mut().for_each(|i| Node::fill(i, source)),
            Node::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                Node::fill(k, source);
                Node::fill(v, source);
            }),
            Node::Null | Node::Text(_) => {}
        }
    }
}

/// Reads `text` into a tree with `options` (the caller's limits).
pub fn read(
    text: &str,
    options: serde_saphyr::Options,
) -> Result<Spanned<Node>, serde_saphyr::Error> {
    let mut tree: Spanned<Node> = serde_saphyr::from_str_with_options(text, options)?;
    Node::fill(&mut tree, text);
    Ok(tree)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn number(count: Option<u64>) -> Node {
        Node::Number {
            count,
            text: String::new(),
        }
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool {
            text: v.to_string(),
        })
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Self::number(u64::try_from(v).ok()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Self::number(u64::try_from(v).ok()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Self::number(Some(v)))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(Self::number(u64::try_from(v).ok()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Self::number(None))
    }

    fn visit_char<E>(self, v: char) -> Result<Node, E> {
        Ok(Node::Text(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Text(v))
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Other {
            text: String::new(),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

/// The keys a mapping takes: one section's, or several groups (a client takes its own
/// and the timing keys).
#[derive(Clone, Copy, Debug)]
pub enum Keys {
    One(&'static [Key]),
    Groups(&'static [&'static [Key]]),
}

impl Keys {
    fn find(self, name: &str) -> Option<&'static Key> {
        match self {
            Keys::One(keys) => keys.iter().find(|k| k.name == name),
            Keys::Groups(groups) => groups
                .iter()
                .flat_map(|g| g.iter())
                .find(|k| k.name == name),
        }
    }
}

/// A mapping whose shape was checked against its [`Keys`], read key by key. An empty
/// value reads as a key not set, as it was checked to be allowed.
#[derive(Clone, Copy, Debug)]
pub struct Map<'a> {
    /// Where the mapping is.
    pub at: Location,
    entries: &'a [(Spanned<Node>, Spanned<Node>)],
    keys: Keys,
    /// The key naming its type, when it is typed.
    tag: Option<&'static str>,
}

/// One entry of named typed entries (`stores:`, `notifiers:`).
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// The entry's name (the key).
    pub name: &'a str,
    /// Its `type:`.
    pub type_name: &'a str,
    /// Its keys, `type` included.
    pub fields: Map<'a>,
}

impl<'a> Map<'a> {
    /// The mapping `node` taking `keys`; `None` when it is not a mapping.
    pub fn of(node: &'a Spanned<Node>, keys: Keys) -> Option<Map<'a>> {
        match &node.value {
            Node::Map(entries) => Some(Map {
                at: node.referenced,
                entries,
                keys,
                tag: None,
            }),
            _ => None,
        }
    }

    /// The value of `name`, unless unset or empty. `name` must be one of its keys.
    pub fn get(&self, name: &str) -> Option<&'a Spanned<Node>> {
        debug_assert!(
            self.tag == Some(name) || self.keys.find(name).is_some(),
            "`{name}` is not a declared key of this mapping"
        );
        self.entries
            .iter()
            .find(|(k, _)| k.value.text() == Some(name))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.value, Node::Null))
    }

    /// Whether `name` is set (even to something refused).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A single value's text as written.
    pub fn text(&self, name: &str) -> Option<Spanned<String>> {
        let v = self.get(name)?;
        Some(spanned(v, v.value.scalar()?.to_owned()))
    }

    /// A single value as a path.
    pub fn path(&self, name: &str) -> Option<Spanned<PathBuf>> {
        self.text(name)
            .map(|t| Spanned::new(PathBuf::from(t.value), t.referenced, t.defined))
    }

    /// `true` or `false`.
    pub fn flag(&self, name: &str) -> Option<Spanned<bool>> {
        let v = self.get(name)?;
        match &v.value {
            Node::Bool { text } => Some(spanned(v, text.eq_ignore_ascii_case("true"))),
            _ => None,
        }
    }

    /// A whole number, not negative.
    pub fn count(&self, name: &str) -> Option<Spanned<u64>> {
        let v = self.get(name)?;
        match &v.value {
            Node::Number { count: Some(n), .. } => Some(spanned(v, *n)),
            _ => None,
        }
    }

    /// A list of single values (an empty list when unset).
    pub fn texts(&self, name: &str) -> Vec<Spanned<String>> {
        self.list(name).unwrap_or_default()
    }

    /// A list of single values, `None` when unset (as against an empty list).
    pub fn list(&self, name: &str) -> Option<Vec<Spanned<String>>> {
        let Node::List(items) = &self.get(name)?.value else {
            return None;
        };
        Some(
            items
                .iter()
                .filter_map(|i| Some(spanned(i, i.value.scalar()?.to_owned())))
                .collect(),
        )
    }

    /// The mapping under `name` (a section, or a mapping with `type:`).
    pub fn map(&self, name: &str) -> Option<Map<'a>> {
        let v = self.get(name)?;
        match self.keys.find(name).map(|k| k.shape) {
            Some(Shape::Section(keys)) => Map::of(v, Keys::One(keys)),
            Some(Shape::Typed(kinds)) => typed(v, kinds).map(|(_, m)| m),
            _ => None,
        }
    }

    /// The `type:` of the mapping under `name` with its keys.
    pub fn typed(&self, name: &str) -> Option<(&'a str, Map<'a>)> {
        let v = self.get(name)?;
        match self.keys.find(name).map(|k| k.shape) {
            Some(Shape::Typed(kinds)) => typed(v, kinds),
            _ => None,
        }
    }

    /// The list of mappings under `name` (the clients), each with where it is.
    pub fn maps(&self, name: &str) -> Vec<Map<'a>> {
        let (Some(v), Some(Shape::Sections(groups))) =
            (self.get(name), self.keys.find(name).map(|k| k.shape))
        else {
            return Vec::new();
        };
        let Node::List(items) = &v.value else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|i| Map::of(i, Keys::Groups(groups)))
            .collect()
    }

    /// The named typed entries under `name`, ordered by name.
    pub fn named(&self, name: &str) -> Vec<Named<'a>> {
        let (Some(v), Some(Shape::Named(kinds))) =
            (self.get(name), self.keys.find(name).map(|k| k.shape))
        else {
            return Vec::new();
        };
        let Node::Map(entries) = &v.value else {
            return Vec::new();
        };
        let mut named: Vec<Named<'a>> = entries
            .iter()
            .filter_map(|(k, v)| {
                let (type_name, fields) = typed(v, kinds)?;
                Some(Named {
                    name: k.value.text()?,
                    type_name,
                    fields,
                })
            })
            .collect();
        named.sort_by(|a, b| a.name.cmp(b.name));
        named
    }
}

/// A mapping with a known `type:`, with that type's keys.
fn typed<'a>(node: &'a Spanned<Node>, kinds: &'static Kinds) -> Option<(&'a str, Map<'a>)> {
    let Node::Map(entries) = &node.value else {
        return None;
    };
    let type_name = entries
        .iter()
        .find(|(k, _)| k.value.text() == Some(kinds.tag))
        .and_then(|(_, v)| v.value.text())?;
    let (_, keys) = kinds.types.iter().find(|(t, _)| *t == type_name)?;
    let map = Map::of(node, Keys::One(keys))?;
    Some((
        type_name,
        Map {
            tag: Some(kinds.tag),
            ..map
        },
    ))
}

fn spanned<T, U>(at: &Spanned<U>, value: T) -> Spanned<T> {
    Spanned::new(value, at.referenced, at.defined)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[
        Key::optional("mode", Shape::Value, ""),
        Key::optional("size", Shape::Count, ""),
        Key::optional("enabled", Shape::Bool, ""),
        Key::optional("list", Shape::Values, ""),
        Key::optional("empty", Shape::Value, ""),
    ];

    #[test]
    fn a_number_reads_as_written_with_its_position() {
        let text = "mode: 0640\nsize: 16\nenabled: True\nlist: [007, \"a b\", 1.50]\nempty:\n";
        let tree = read(text, serde_saphyr::Options::default()).unwrap();
        let map = Map::of(&tree, Keys::One(KEYS)).unwrap();
        let mode = map.text("mode").unwrap();
        assert_eq!(mode.value, "0640");
        assert_eq!((mode.referenced.line(), mode.referenced.column()), (1, 7));
        assert_eq!(map.count("size").unwrap().value, 16);
        assert!(map.flag("enabled").unwrap().value);
        let list: Vec<String> = map.texts("list").into_iter().map(|t| t.value).collect();
        assert_eq!(list, ["007", "a b", "1.50"]);
        assert!(!map.has("empty"));
    }

    #[test]
    #[should_panic(expected = "not a declared key")]
    fn a_check_cannot_read_a_key_its_section_does_not_declare() {
        let tree = read("mode: x\n", serde_saphyr::Options::default()).unwrap();
        let map = Map::of(&tree, Keys::One(KEYS)).unwrap();
        let _ = map.text("modes");
    }
}

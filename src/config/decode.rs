//! Reading a [`Node`] tree into typed config, collecting every problem.
//!
//! Every type a config key can hold implements [`ConfigValue`]: how to read
//! it from a node, how to print it back, its JSON Schema and its name in the
//! reference docs. Sections (`circuit_breaker:`, `routes[]:`) implement it
//! through the `section!` declarations of [`super::declare`]; this module
//! holds the leaf types and the containers.
//!
//! A reader that meets a bad value records a [`ConfigIssue`] (key path,
//! line, what was expected, what was found) and carries on: an optional key
//! that fails keeps its default, a list item that fails is left out while
//! its siblings are kept, an unknown key is reported and skipped. So one run
//! lists every error in the file, and cross-section validation still runs.
//! A config with any issue is refused as a whole by the loader.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::check::{Check, Checked, Fault};
use super::docs::pattern;
use super::docs::SectionDoc;
use super::yaml::{Node, Value};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigIssue {
    /// Key path such as `listeners[0].routes[2].timeouts.request`, or the
    /// flag that set the value (`--admin 0.0.0.0:15000`); empty for the
    /// document itself.
    pub path: String,
    /// 1-based line in the file, when known (never for a flag).
    pub line: Option<usize>,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.path, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// The decoding context: where we are in the tree and what went wrong so far.
#[derive(Debug, Default)]
pub struct Cx {
    path: Vec<Segment>,
    /// Every problem found, in order of discovery.
    pub issues: Vec<ConfigIssue>,
    /// For a list some of whose items failed: the file index of each item
    /// kept, by the list's path. Lists without a failed item are absent.
    kept: HashMap<String, Vec<usize>>,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Cx {
    /// Records an issue for each of `faults`, found in the value read
    /// from `node` (whose key is on `line`): at the item or entry at fault
    /// when the fault names one.
    pub fn report(&mut self, node: &Node, line: usize, faults: Vec<Fault>) {
        for fault in faults {
            let item = fault.item.and_then(|index| {
                let index = self.source_index(&self.path(), index);
                match &node.value {
                    Value::Seq(items) => items
                        .get(index)
                        .map(|item| (format!("[{index}]"), item.line)),
                    Value::Map(entries) => entries.get(index).map(|(key, _)| {
                        let name = match &key.value {
                            Value::Scalar { text, .. } => text.clone(),
                            _ => format!("[{index}]"),
                        };
                        (name, key.line)
                    }),
                    _ => None,
                }
            });
            match item {
                Some((relative, line)) => self.error_at(&relative, Some(line), fault.message),
                None => self.error(line, fault.message),
            }
        }
    }

    /// The current key path, formatted as `a.b[2].c`.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(index) => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    /// Records a problem at the current path.
    pub fn error(&mut self, line: usize, message: impl Into<String>) {
        let path = self.path();
        self.issues.push(ConfigIssue {
            path,
            line: Some(line),
            message: message.into(),
        });
    }

    /// Records a problem at `relative` (`key`, `a.b` or `[2]`) below the
    /// current path.
    pub fn error_at(&mut self, relative: &str, line: Option<usize>, message: impl Into<String>) {
        let mut path = self.path();
        if !relative.is_empty() {
            if !path.is_empty() && !relative.starts_with('[') {
                path.push('.');
            }
            path.push_str(relative);
        }
        self.issues.push(ConfigIssue {
            path,
            line,
            message: message.into(),
        });
    }

    /// Runs `f` with `key` appended to the path.
    pub fn at_key<T>(&mut self, key: &str, f: impl FnOnce(&mut Cx) -> T) -> T {
        self.path.push(Segment::Key(key.to_owned()));
        let out = f(self);
        self.path.pop();
        out
    }

    /// Runs `f` with `[index]` appended to the path.
    pub fn at_index<T>(&mut self, index: usize, f: impl FnOnce(&mut Cx) -> T) -> T {
        self.path.push(Segment::Index(index));
        let out = f(self);
        self.path.pop();
        out
    }

    /// Records "expected X, found Y" for `node`. A value that came from the
    /// environment is not echoed: it may be a secret.
    pub fn expected(&mut self, node: &Node, what: &str) {
        let found = match &node.value {
            Value::Scalar { text, .. } if !node.from_env => format!("{text:?}"),
            _ => node.kind().to_owned(),
        };
        self.error(node.line, format!("expected {what}, found {found}"));
    }

    /// The index in the file of item `index` of the decoded list at `list`
    /// (a path like `listeners[1].routes`): they differ once an earlier
    /// item failed and was left out.
    pub fn source_index(&self, list: &str, index: usize) -> usize {
        self.kept
            .get(list)
            .and_then(|kept| kept.get(index).copied())
            .unwrap_or(index)
    }
}

/// A type a config key can hold.
///
/// Sections get their impl from `section!`; leaf types (numbers,
/// durations, addresses, word sets) and containers are implemented here
/// and in the section modules. Whatever `to_json` prints, `decode` reads
/// back to an equal value (secrets excepted: they print as `<redacted>`).
pub trait ConfigValue: Clone {
    /// Reads `node` (never `null`: a `null` key counts as absent); on
    /// failure records an issue in `cx` and returns `None`.
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self>;
    /// The value as the config writes it, for `breakwater check`.
    fn to_json(&self) -> Json;
    /// The JSON Schema of the value.
    fn schema() -> Json;
    /// The type's name in the reference docs: `duration`, `list of string`.
    fn type_name() -> String;
    /// Adds the docs of the sections this type holds, found at `path`.
    fn sections(_path: &str, _out: &mut Vec<SectionDoc>) {}
    /// Takes `base`'s value for every key absent from `node`: how a
    /// listener's `limits:` override the global ones key by key.
    fn inherit(&mut self, _base: &Self, _node: &Node) {}
}

/// The text of a scalar node, or "expected {what}".
pub fn scalar<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<&'n str> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text.as_str()),
        _ => {
            cx.expected(node, what);
            None
        }
    }
}

/// Reads a scalar and converts it with `parse`, whose error is a sentence.
pub fn parse_with<T>(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let text = scalar(cx, node, what)?;
    match parse(text) {
        Ok(value) => Some(value),
        Err(message) => {
            cx.error(node.line, message);
            None
        }
    }
}

/// Reads one of a fixed set of words.
pub fn one_of<T: Copy>(cx: &mut Cx, node: &Node, choices: &[(&str, T)]) -> Option<T> {
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let what = format!("one of {}", names.join(", "));
    let text = scalar(cx, node, &what)?;
    match choices.iter().find(|(name, _)| *name == text) {
        Some((_, value)) => Some(*value),
        None => {
            cx.expected(node, &what);
            None
        }
    }
}

/// `a`, `b` or `c` in backticks, for the docs.
pub fn words_name(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|word| format!("`{word}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

// === the mapping reader ===

/// The keys of one mapping, read by name. Keys nobody asked for are
/// reported by [`Keys::finish`]; validation hooks use it to see which keys
/// were written and where.
pub struct Keys<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
}

impl<'n> Keys<'n> {
    /// Starts reading `node` as a mapping. `null` reads as an empty one, so
    /// `admin:` with nothing under it means "all defaults".
    pub fn new(cx: &mut Cx, node: &'n Node) -> Option<Keys<'n>> {
        static EMPTY: [(Node, Node); 0] = [];
        let entries: &'n [(Node, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &EMPTY,
            _ => {
                cx.expected(node, "a mapping of keys");
                return None;
            }
        };
        Some(Keys {
            node,
            entries,
            used: vec![false; entries.len()],
        })
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(name, _)| matches!(&name.value, Value::Scalar { text, .. } if text == key))
    }

    /// The value under `key` unless it is absent or `null`.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        let (_, value) = &self.entries[self.position(key)?];
        (value.value != Value::Null).then_some(value)
    }

    /// Whether `key` was written with a value.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Line of `key` if it is written.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.position(key).map(|at| self.entries[at].0.line)
    }

    /// Records `message` at `key`: its line if written, else the mapping's.
    pub fn error(&self, cx: &mut Cx, key: &str, message: impl Into<String>) {
        let line = self.line(key).unwrap_or(self.node.line);
        cx.error_at(key, Some(line), message);
    }

    /// Reads `key`: decoded and checked when written, else `default`. A
    /// written value that fails gives `default` too (its issue is
    /// recorded); with no default, `None` means the section cannot be built.
    /// A check of the value as a whole is skipped when part of it failed.
    pub fn read<T: ConfigValue>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        checks: &[Check<T>],
        default: Option<T>,
    ) -> Option<T> {
        if let Some(at) = self.position(key) {
            self.used[at] = true;
        }
        let Some(node) = self.get(key) else {
            if default.is_none() {
                cx.error_at(key, Some(self.node.line), "required key is missing");
            }
            return default;
        };
        let line = self.line(key).unwrap_or(node.line);
        let value = cx.at_key(key, |cx| {
            let before = cx.issues.len();
            let value = T::decode(cx, node)?;
            // A value some of whose parts failed (a list item left out) is
            // not judged as a whole: "needs at least one route" after the
            // only route failed would repeat that failure.
            let parts_failed = cx.issues.len() > before;
            for check in checks.iter().filter(|check| !(check.whole && parts_failed)) {
                cx.report(node, line, check.faults(&value));
            }
            Some(value)
        });
        value.or(default)
    }

    /// Reports every key that was not read: as unknown, listing the known
    /// ones, or, for the keys in `later` (in the SPEC, for a part this build
    /// does not have yet), as not supported yet.
    pub fn finish(&self, cx: &mut Cx, known: &[&str], later: &[&str]) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let Value::Scalar { text: name, .. } = &key.value else {
                cx.error(key.line, "keys must be plain strings");
                continue;
            };
            if later.contains(&name.as_str()) {
                cx.error_at(
                    name,
                    Some(key.line),
                    "is in the breakwater spec but not supported by this build yet; remove it",
                );
            } else {
                cx.error_at(
                    name,
                    Some(key.line),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
    }
}

// === leaf values ===

impl ConfigValue for String {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        scalar(cx, node, "a string").map(str::to_owned)
    }
    fn to_json(&self) -> Json {
        Json::from(self.as_str())
    }
    /// Any scalar reads as its text, so `args: [--port, 8080]` works.
    fn schema() -> Json {
        json!({"type": ["string", "number", "boolean"]})
    }
    fn type_name() -> String {
        "string".to_owned()
    }
}

impl ConfigValue for bool {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Scalar {
                text,
                quoted: false,
            } if text == "true" => Some(true),
            Value::Scalar {
                text,
                quoted: false,
            } if text == "false" => Some(false),
            _ => {
                cx.expected(node, "true or false");
                None
            }
        }
    }
    fn to_json(&self) -> Json {
        Json::from(*self)
    }
    fn schema() -> Json {
        json!({"type": "boolean"})
    }
    fn type_name() -> String {
        "`true` or `false`".to_owned()
    }
}

macro_rules! whole_numbers {
    ($($ty:ty => $what:expr),* $(,)?) => {$(
        impl ConfigValue for $ty {
            fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
                match &node.value {
                    Value::Scalar { text, quoted: false } => match text.parse::<$ty>() {
                        Ok(value) => Some(value),
                        Err(_) => { cx.expected(node, $what); None }
                    },
                    _ => { cx.expected(node, $what); None }
                }
            }
            fn to_json(&self) -> Json {
                Json::from(*self)
            }
            fn schema() -> Json {
                let mut schema = json!({"type": "integer", "minimum": 0});
                // Beyond 2^32 the bound says nothing a reader needs.
                if u64::try_from(<$ty>::MAX).is_ok_and(|max| max <= u64::from(u32::MAX)) {
                    schema["maximum"] = json!(<$ty>::MAX);
                }
                schema
            }
            fn type_name() -> String {
                "integer".to_owned()
            }
        }
    )*};
}

whole_numbers! {
    u16 => "a whole number from 0 to 65535",
    u32 => "a whole number from 0 to 4294967295",
    u64 => "a whole number",
    usize => "a whole number",
}

impl ConfigValue for f64 {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Scalar {
                text,
                quoted: false,
            } => match text.parse::<f64>() {
                Ok(value) if value.is_finite() => Some(value),
                _ => {
                    cx.expected(node, "a number");
                    None
                }
            },
            _ => {
                cx.expected(node, "a number");
                None
            }
        }
    }
    fn to_json(&self) -> Json {
        Json::from(*self)
    }
    fn schema() -> Json {
        json!({"type": "number"})
    }
    fn type_name() -> String {
        "number".to_owned()
    }
}

impl ConfigValue for Duration {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        parse_with(
            cx,
            node,
            "a duration like 250ms, 5s or 1m",
            crate::units::parse_duration,
        )
    }
    fn to_json(&self) -> Json {
        Json::from(crate::units::format_duration(*self))
    }
    /// `0` is the one duration without a unit, and YAML reads it as a number.
    fn schema() -> Json {
        json!({
            "type": ["string", "integer"],
            "pattern": pattern("[0-9]+(\\.[0-9]+)?(us|µs|ms|s|m|h)|0"),
            "minimum": 0,
            "maximum": 0,
        })
    }
    fn type_name() -> String {
        "duration".to_owned()
    }
}

/// A byte size written as `64KiB`, `512MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::units::format_size(self.0))
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.to_json(), serializer)
    }
}

impl Checked for ByteSize {
    type Item = ByteSize;
    fn item(&self) -> Option<&ByteSize> {
        Some(self)
    }
}

impl ConfigValue for ByteSize {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        parse_with(
            cx,
            node,
            "a size like 64KiB or 512MiB",
            crate::units::parse_size,
        )
        .map(ByteSize)
    }
    fn to_json(&self) -> Json {
        Json::from(self.to_string())
    }
    /// A bare number is bytes.
    fn schema() -> Json {
        json!({
            "type": ["string", "integer"],
            "pattern": pattern("[0-9]+ ?(B|KiB|MiB|GiB|KB|kB|MB|GB)?"),
            "minimum": 0,
        })
    }
    fn type_name() -> String {
        "size".to_owned()
    }
}

impl ConfigValue for SocketAddr {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        parse_with(cx, node, "an address like 127.0.0.1:8080", |text| {
            text.parse().map_err(|_| {
                format!("expected an address like 127.0.0.1:8080 or [::1]:8080, found {text:?}")
            })
        })
    }
    fn to_json(&self) -> Json {
        Json::from(self.to_string())
    }
    fn schema() -> Json {
        json!({
            "type": "string",
            "pattern": pattern("([0-9]{1,3}\\.){3}[0-9]{1,3}:[0-9]{1,5}|\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5}"),
        })
    }
    fn type_name() -> String {
        "address".to_owned()
    }
}

// === containers ===

/// A list: an item that fails is left out (its issue recorded) and the
/// others are kept, so later checks still see them.
impl<T: ConfigValue> ConfigValue for Vec<T> {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.expected(node, "a list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut kept = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            if let Some(value) = cx.at_index(index, |cx| T::decode(cx, item)) {
                out.push(value);
                kept.push(index);
            }
        }
        if kept.len() < items.len() {
            cx.kept.insert(cx.path(), kept);
        }
        Some(out)
    }
    fn to_json(&self) -> Json {
        Json::Array(self.iter().map(T::to_json).collect())
    }
    fn schema() -> Json {
        json!({"type": "array", "items": T::schema()})
    }
    fn type_name() -> String {
        format!("list of {}", T::type_name())
    }
    fn sections(path: &str, out: &mut Vec<SectionDoc>) {
        T::sections(&format!("{path}[]"), out);
    }
}

/// Present or not; `null` counts as absent.
impl<T: ConfigValue> ConfigValue for Option<T> {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        if node.value == Value::Null {
            return Some(None);
        }
        T::decode(cx, node).map(Some)
    }
    fn to_json(&self) -> Json {
        self.as_ref().map_or(Json::Null, T::to_json)
    }
    fn schema() -> Json {
        json!({"anyOf": [{"type": "null"}, T::schema()]})
    }
    fn type_name() -> String {
        T::type_name()
    }
    fn sections(path: &str, out: &mut Vec<SectionDoc>) {
        T::sections(path, out);
    }
}

/// A string-to-string mapping in file order (`env:`, `match.headers:`).
impl ConfigValue for Vec<(String, String)> {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            cx.expected(node, "a mapping of names to values");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut kept = Vec::with_capacity(entries.len());
        for (index, (key, value)) in entries.iter().enumerate() {
            let name = String::decode(cx, key);
            let value = match &name {
                Some(name) => cx.at_key(name, |cx| String::decode(cx, value)),
                None => None,
            };
            if let (Some(name), Some(value)) = (name, value) {
                out.push((name, value));
                kept.push(index);
            }
        }
        if kept.len() < entries.len() {
            cx.kept.insert(cx.path(), kept);
        }
        Some(out)
    }
    fn to_json(&self) -> Json {
        Json::Object(
            self.iter()
                .map(|(name, value)| (name.clone(), Json::from(value.as_str())))
                .collect(),
        )
    }
    fn schema() -> Json {
        json!({"type": "object", "additionalProperties": String::schema()})
    }
    fn type_name() -> String {
        "mapping of string to string".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn tree(text: &str) -> Node {
        parse(text, &|_| None).unwrap()
    }

    #[test]
    fn collects_every_issue_with_path_and_line() {
        let node = tree("a: 1\nb: nope\nc: 5 parsecs\nd: extra\n");
        let mut cx = Cx::default();
        let mut keys = Keys::new(&mut cx, &node).unwrap();
        let a: Option<u32> = keys.read(&mut cx, "a", &[], None);
        let b: Option<u32> = keys.read(&mut cx, "b", &[], Some(7));
        let c: Option<Duration> = keys.read(&mut cx, "c", &[], None);
        let e: Option<u32> = keys.read(&mut cx, "e", &[], None);
        keys.finish(&mut cx, &["a", "b", "c", "e"], &[]);
        assert_eq!((a, b, c, e), (Some(1), Some(7), None, None));
        let lines: Vec<_> = cx
            .issues
            .iter()
            .map(|issue| (issue.path.as_str(), issue.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("b", Some(2)),
                ("c", Some(3)),
                ("e", Some(1)),
                ("d", Some(4))
            ]
        );
        assert!(cx.issues[3].message.contains("unknown key"));
    }

    #[test]
    fn nested_paths_and_kept_items() {
        let node = tree("list:\n  - 1\n  - oops\n  - 3\n");
        let mut cx = Cx::default();
        let mut keys = Keys::new(&mut cx, &node).unwrap();
        let list: Option<Vec<u32>> = keys.read(&mut cx, "list", &[], None);
        assert_eq!(list, Some(vec![1, 3]), "a failed item is left out");
        assert_eq!(cx.issues[0].path, "list[1]");
        assert_eq!(cx.issues[0].line, Some(3));
        assert_eq!(cx.source_index("list", 1), 2);
        assert_eq!(cx.source_index("other", 1), 1);
    }

    #[test]
    fn quoted_numbers_are_not_numbers() {
        let node = tree("a: \"1\"\n");
        let mut cx = Cx::default();
        let mut keys = Keys::new(&mut cx, &node).unwrap();
        let a: Option<u32> = keys.read(&mut cx, "a", &[], None);
        assert_eq!(a, None);
        assert_eq!(cx.issues.len(), 1);
    }

    #[test]
    fn words_read_as_docs() {
        assert_eq!(words_name(&["a", "b", "c"]), "`a`, `b` or `c`");
        assert_eq!(words_name(&["a"]), "`a`");
    }
}

//! Decoding a [`Node`] tree into typed config, collecting every problem.
//!
//! Each config type implements [`Decode`]. A decoder that meets a bad value
//! records a [`ConfigIssue`] (key path, line, what was expected, what was
//! found) and returns `None`; its parent carries on with the next key. So
//! one run of `breakwater check` lists every error in the file, not just the
//! first, and no half-valid config ever leaves this module: the loader
//! returns a [`super::Config`] only when the issue list is empty.
//!
//! Struct-like mappings are read through [`Fields`], which also reports the
//! keys nobody asked for: unknown keys are errors, because a typo such as
//! `consecutive_failure: 3` silently meaning "default 5" is worse than a
//! failed deploy.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::yaml::{Node, Value};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigIssue {
    /// Key path such as `listeners[0].routes[2].timeouts.request`; empty for
    /// the document itself.
    pub path: String,
    /// 1-based line in the file, when known.
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
    /// Every problem found, in file order of discovery.
    pub issues: Vec<ConfigIssue>,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Cx {
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

    /// Records a problem at `path`, which is relative to the current one.
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

    /// Records "expected X, found Y" for `node`.
    pub fn expected(&mut self, node: &Node, what: &str) {
        let found = match &node.value {
            Value::Scalar { text, .. } if !node.from_env => format!("{text:?}"),
            _ => node.kind().to_owned(),
        };
        self.error(node.line, format!("expected {what}, found {found}"));
    }
}

/// A config value that can be read from a node.
pub trait Decode: Sized {
    /// Reads `node`; on failure records an issue in `cx` and returns `None`.
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self>;
}

/// Reads the text of a scalar node, or records "expected {what}".
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

impl Decode for String {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        scalar(cx, node, "a string").map(str::to_owned)
    }
}

impl Decode for bool {
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
}

macro_rules! decode_number {
    ($($ty:ty => $what:expr),* $(,)?) => {$(
        impl Decode for $ty {
            fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
                match &node.value {
                    Value::Scalar { text, quoted: false } => match text.parse::<$ty>() {
                        Ok(value) => Some(value),
                        Err(_) => { cx.expected(node, $what); None }
                    },
                    _ => { cx.expected(node, $what); None }
                }
            }
        }
    )*};
}

decode_number! {
    u16 => "a whole number from 0 to 65535",
    u32 => "a whole number from 0 to 4294967295",
    u64 => "a whole number",
    usize => "a whole number",
}

impl Decode for f64 {
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
}

impl Decode for Duration {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        parse_with(
            cx,
            node,
            "a duration like 250ms, 5s or 1m",
            crate::units::parse_duration,
        )
    }
}

impl Decode for SocketAddr {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        parse_with(cx, node, "an address like 127.0.0.1:8080", |text| {
            text.parse().map_err(|_| {
                format!("expected an address like 127.0.0.1:8080 or [::1]:8080, found {text:?}")
            })
        })
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (index, item) in items.iter().enumerate() {
                    match cx.at_index(index, |cx| T::decode(cx, item)) {
                        Some(value) => out.push(value),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                cx.expected(node, "a list");
                None
            }
        }
    }
}

/// Serializes a duration the way the config writes it (`250ms`, `5s`).
pub fn ser_duration<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::units::format_duration(*duration))
}

/// A byte size written as `64KiB`, `512MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Decode for ByteSize {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        parse_with(
            cx,
            node,
            "a size like 64KiB or 512MiB",
            crate::units::parse_size,
        )
        .map(ByteSize)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::units::format_size(self.0))
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

/// The keys of one mapping, read by name; unread keys are reported by
/// [`Fields::finish`].
pub struct Fields<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    ok: bool,
}

impl<'n> Fields<'n> {
    /// Starts reading `node` as a mapping. `Null` reads as an empty mapping,
    /// so `admin:` with nothing under it means "all defaults".
    pub fn new(cx: &mut Cx, node: &'n Node) -> Option<Fields<'n>> {
        static EMPTY: [(Node, Node); 0] = [];
        match &node.value {
            Value::Map(entries) => Some(Fields {
                node,
                entries,
                used: vec![false; entries.len()],
                ok: true,
            }),
            Value::Null => Some(Fields {
                node,
                entries: &EMPTY,
                used: Vec::new(),
                ok: true,
            }),
            _ => {
                cx.expected(node, "a mapping of keys");
                None
            }
        }
    }

    /// The node under `key`, if present (and marks it read).
    pub fn node(&mut self, key: &str) -> Option<&'n Node> {
        let position = self.entries.iter().position(
            |(name, _)| matches!(&name.value, Value::Scalar { text, .. } if text == key),
        )?;
        self.used[position] = true;
        Some(&self.entries[position].1)
    }

    /// Line of `key` if it is present.
    pub fn key_line(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(name, _)| matches!(&name.value, Value::Scalar { text, .. } if text == key))
            .map(|(name, _)| name.line)
    }

    /// Reads an optional key. A present key holding `null` counts as absent.
    pub fn opt<T: Decode>(&mut self, cx: &mut Cx, key: &str) -> Option<T> {
        self.opt_with(cx, key, T::decode)
    }

    /// Reads an optional key with a custom decoder.
    pub fn opt_with<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        decode: impl FnOnce(&mut Cx, &Node) -> Option<T>,
    ) -> Option<T> {
        let node = self.node(key)?;
        if node.value == Value::Null {
            return None;
        }
        let value = cx.at_key(key, |cx| decode(cx, node));
        if value.is_none() {
            self.ok = false;
        }
        value
    }

    /// Reads a key with a default for when it is absent.
    pub fn or<T: Decode>(&mut self, cx: &mut Cx, key: &str, default: T) -> T {
        self.opt(cx, key).unwrap_or(default)
    }

    /// Reads a key that must be present.
    pub fn req<T: Decode>(&mut self, cx: &mut Cx, key: &str) -> Option<T> {
        self.req_with(cx, key, T::decode)
    }

    /// Reads a key that must be present, with a custom decoder.
    pub fn req_with<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        decode: impl FnOnce(&mut Cx, &Node) -> Option<T>,
    ) -> Option<T> {
        let present = matches!(self.node(key), Some(node) if node.value != Value::Null);
        if !present {
            cx.error_at(key, Some(self.node.line), "required key is missing");
            self.ok = false;
            return None;
        }
        self.opt_with(cx, key, decode)
    }

    /// Reports every key that was not read as unknown, listing the known
    /// ones. `later` names keys the SPEC defines for a part this build does
    /// not have yet: they get a clearer message than "unknown".
    pub fn finish(self, cx: &mut Cx, known: &[&str], later: &[&str]) -> bool {
        let mut ok = self.ok;
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            ok = false;
            let name = match &key.value {
                Value::Scalar { text, .. } => text.as_str(),
                _ => {
                    cx.error(key.line, "keys must be plain strings");
                    continue;
                }
            };
            if later.contains(&name) {
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
        ok
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
        let mut fields = Fields::new(&mut cx, &node).unwrap();
        let a: Option<u32> = fields.opt(&mut cx, "a");
        let b: Option<u32> = fields.opt(&mut cx, "b");
        let c: Option<Duration> = fields.opt(&mut cx, "c");
        let e: Option<u32> = fields.req(&mut cx, "e");
        fields.finish(&mut cx, &["a", "b", "c", "e"], &[]);
        assert_eq!((a, b, c, e), (Some(1), None, None, None));
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
    fn nested_paths() {
        let node = tree("list:\n  - x: 1\n  - x: oops\n");
        let mut cx = Cx::default();
        let mut fields = Fields::new(&mut cx, &node).unwrap();
        let _ = fields.opt_with(&mut cx, "list", Vec::<Inner>::decode);
        assert_eq!(cx.issues[0].path, "list[1].x");
        assert_eq!(cx.issues[0].line, Some(3));
    }

    struct Inner;
    impl Decode for Inner {
        fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
            let mut fields = Fields::new(cx, node)?;
            let x: Option<u32> = fields.req(cx, "x");
            fields.finish(cx, &["x"], &[]).then_some(())?;
            x.map(|_| Inner)
        }
    }

    #[test]
    fn quoted_numbers_are_not_numbers() {
        let node = tree("a: \"1\"\n");
        let mut cx = Cx::default();
        let mut fields = Fields::new(&mut cx, &node).unwrap();
        let a: Option<u32> = fields.opt(&mut cx, "a");
        assert_eq!(a, None);
        assert_eq!(cx.issues.len(), 1);
    }
}

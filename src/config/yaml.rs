//! A YAML document as a tree of nodes that remember their line.
//!
//! The config loader needs two things serde's YAML path does not give it at
//! once: the line of every key (so each error can point at it) and the
//! chance to keep going after the first error (so every error is reported in
//! one run). This module parses with `yaml-rust2`'s event API into a small
//! [`Node`] tree, which the decoder (`decode.rs`) walks.
//!
//! [`Node::to_json`] gives the tree as an editor sees it (YAML's core
//! schema), which is what `breakwater schema` describes.
//!
//! `${NAME}` in a scalar value is replaced by the environment variable
//! `NAME` (write `$${` for a literal `${`). Aliases are expanded, with a cap
//! on the total number of nodes so a "billion laughs" file cannot exhaust
//! memory.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Upper bound on nodes in one document, aliases expanded.
const MAX_NODES: usize = 100_000;

/// One YAML node and where it starts in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: Value,
    /// 1-based line of the node's first character.
    pub line: usize,
    /// Set when `${ENV}` substitution produced (part of) this scalar; such
    /// values may be secrets and are never printed back.
    pub from_env: bool,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// Any scalar, as written; `quoted` is true for '…' and "…" scalars,
    /// which are always strings.
    Scalar {
        /// The scalar's text after `${ENV}` substitution.
        text: String,
        /// True for quoted scalars.
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order: (key, value).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short name of the node's kind for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A quoted (so always string) scalar, for values that come from
    /// elsewhere than the file, such as command-line flags.
    pub fn string(text: impl Into<String>, line: usize) -> Node {
        Node {
            value: Value::Scalar {
                text: text.into(),
                quoted: true,
            },
            line,
            from_env: false,
        }
    }

    /// The value under `key` if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(name, _)| matches!(&name.value, Value::Scalar { text, .. } if text == key))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// Line of `key` if this is a mapping that has it.
    pub fn key_line(&self, key: &str) -> Option<usize> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(name, _)| matches!(&name.value, Value::Scalar { text, .. } if text == key))
                .map(|(name, _)| name.line),
            _ => None,
        }
    }

    /// The value under `key`, created (as `null`) if this is a mapping
    /// without it; a `null` node becomes an empty mapping first. `None` if
    /// this is neither.
    pub fn entry(&mut self, key: &str) -> Option<&mut Node> {
        let line = self.line;
        if self.value == Value::Null {
            self.value = Value::Map(Vec::new());
        }
        let Value::Map(entries) = &mut self.value else {
            return None;
        };
        let at = match entries
            .iter()
            .position(|(name, _)| matches!(&name.value, Value::Scalar { text, .. } if text == key))
        {
            Some(at) => at,
            None => {
                let null = Node {
                    value: Value::Null,
                    line,
                    from_env: false,
                };
                entries.push((Node::string(key, line), null));
                entries.len() - 1
            }
        };
        entries.get_mut(at).map(|(_, value)| value)
    }

    /// The node as JSON, typed the way YAML's core schema reads plain
    /// scalars (`5` a number, `true` a boolean, `5s` a string; quoted
    /// scalars are strings): what an editor validating the file against
    /// `breakwater schema` sees.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match &self.value {
            Value::Null => Json::Null,
            Value::Scalar { text, quoted: true } => Json::from(text.as_str()),
            Value::Scalar {
                text,
                quoted: false,
            } => plain_scalar(text),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(key, value)| {
                        let key = match &key.value {
                            Value::Scalar { text, .. } => text.clone(),
                            _ => key.to_json().to_string(),
                        };
                        (key, value.to_json())
                    })
                    .collect(),
            ),
        }
    }
}

/// A plain scalar as YAML 1.2's core schema types it.
fn plain_scalar(text: &str) -> serde_json::Value {
    use serde_json::Value as Json;
    match text {
        "true" | "True" | "TRUE" => return Json::Bool(true),
        "false" | "False" | "FALSE" => return Json::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if numeric {
        if let Ok(number) = text.parse::<i64>() {
            return Json::from(number);
        }
        if let Ok(number) = text.parse::<u64>() {
            return Json::from(number);
        }
        if let Some(number) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Json::Number(number);
        }
    }
    Json::from(text)
}

/// A problem found while parsing, before any key is looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

/// Parses one YAML document. An empty document is [`Value::Null`].
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Node, ParseError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        n_nodes: 0,
        error: None,
        env,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, true)
        .map_err(|error| ParseError {
            line: error.marker().line(),
            message: error.info().to_owned(),
        })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        line: 1,
        from_env: false,
    }))
}

/// A container being filled while its events arrive.
enum Open {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<Node>,
    },
}

struct Builder<'e> {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    n_nodes: usize,
    error: Option<ParseError>,
    env: &'e dyn Fn(&str) -> Option<String>,
    documents: usize,
}

impl Builder<'_> {
    fn fail(&mut self, line: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(ParseError { line, message });
        }
    }

    fn count(&mut self, n: usize, line: usize) -> bool {
        self.n_nodes = self.n_nodes.saturating_add(n);
        if self.n_nodes > MAX_NODES {
            self.fail(
                line,
                format!("document too large: more than {MAX_NODES} nodes (aliases expanded)"),
            );
            return false;
        }
        true
    }

    /// Places a finished node into its parent, or makes it the root.
    fn place(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { node: parent, .. }) => {
                if let Value::Seq(items) = &mut parent.value {
                    items.push(node);
                }
            }
            Some(Open::Map {
                node: parent,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Value::Map(entries) = &mut parent.value {
                        let duplicate = entries
                            .iter()
                            .any(|(existing, _)| existing.value == key.value);
                        if duplicate {
                            let line = key.line;
                            let name = match &key.value {
                                Value::Scalar { text, .. } => text.clone(),
                                _ => "(complex key)".to_owned(),
                            };
                            self.fail(line, format!("duplicate key {name:?}"));
                        } else {
                            entries.push((key, node));
                        }
                    }
                }
            },
        }
    }

    fn substitute(&mut self, text: String, line: usize) -> (String, bool) {
        if !text.contains('$') {
            return (text, false);
        }
        let mut out = String::with_capacity(text.len());
        let mut from_env = false;
        let mut rest = text.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(stripped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix("${") {
                match body.find('}') {
                    Some(end) => {
                        let name = &body[..end];
                        match (self.env)(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                self.fail(line, format!("environment variable {name:?} is not set"))
                            }
                        }
                        from_env = true;
                        rest = &body[end + 1..];
                    }
                    None => {
                        self.fail(line, "unterminated ${ in value".to_owned());
                        return (text, false);
                    }
                }
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        (out, from_env)
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        line,
                        "only one YAML document is allowed in a config file".to_owned(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if tag.is_some() {
                    self.fail(
                        line,
                        "YAML tags (!…) are not supported in config".to_owned(),
                    );
                    return;
                }
                if !self.count(1, line) {
                    return;
                }
                let quoted = !matches!(style, TScalarStyle::Plain);
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Node {
                            value: Value::Null,
                            line,
                            from_env: false,
                        }
                    } else {
                        let (text, from_env) = self.substitute(text, line);
                        Node {
                            value: Value::Scalar { text, quoted },
                            line,
                            from_env,
                        }
                    };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.place(value);
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if tag.is_some() =>
            {
                let _ = anchor;
                self.fail(
                    line,
                    "YAML tags (!…) are not supported in config".to_owned(),
                );
            }
            Event::SequenceStart(anchor, _) => {
                if self.count(1, line) {
                    let node = Node {
                        value: Value::Seq(Vec::new()),
                        line,
                        from_env: false,
                    };
                    self.stack.push(Open::Seq { node, anchor });
                }
            }
            Event::MappingStart(anchor, _) => {
                if self.count(1, line) {
                    let node = Node {
                        value: Value::Map(Vec::new()),
                        line,
                        from_env: false,
                    };
                    self.stack.push(Open::Map {
                        node,
                        anchor,
                        pending_key: None,
                    });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    let (node, anchor) = match open {
                        Open::Seq { node, anchor } => (node, anchor),
                        Open::Map { node, anchor, .. } => (node, anchor),
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.place(node);
                }
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor).cloned() {
                Some(node) => {
                    if self.count(size_of_tree(&node), line) {
                        self.place(node);
                    }
                }
                None => self.fail(line, "alias to an unknown anchor".to_owned()),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

fn size_of_tree(node: &Node) -> usize {
    match &node.value {
        Value::Null | Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(size_of_tree).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(key, value)| size_of_tree(key) + size_of_tree(value))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn lines_are_remembered() {
        let doc = parse("a: 1\nb:\n  c: [x, y]\n", &no_env).unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.line, 1);
        assert_eq!(entries[1].0.line, 2);
        let Value::Map(inner) = &entries[1].1.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.line, 3);
    }

    #[test]
    fn env_substitution_and_escape() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        let doc = parse("a: \"x-${TOKEN}\"\nb: $${TOKEN}\n", &env).unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(
            entries[0].1.value,
            Value::Scalar {
                text: "x-s3cret".into(),
                quoted: true
            }
        );
        assert!(entries[0].1.from_env);
        assert_eq!(
            entries[1].1.value,
            Value::Scalar {
                text: "${TOKEN}".into(),
                quoted: false
            }
        );
        let missing = parse("a: ${NOPE}\n", &env).unwrap_err();
        assert!(missing.message.contains("NOPE"));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let error = parse("a: 1\na: 2\n", &no_env).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("duplicate"));
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let error = parse(&text, &no_env).unwrap_err();
        assert!(error.message.contains("too large"));
    }

    #[test]
    fn json_types_plain_scalars_like_yaml() {
        let doc = parse(
            "a: 5\nb: \"5\"\nc: 5s\nd: true\ne: 0.5\nf: [x, -1]\ng:\nh: 1e3\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({
                "a": 5, "b": "5", "c": "5s", "d": true, "e": 0.5,
                "f": ["x", -1], "g": null, "h": 1000.0,
            })
        );
    }

    #[test]
    fn entries_are_found_and_made() {
        let mut doc = parse("a: {b: 1}\nc:\n", &no_env).unwrap();
        assert_eq!(doc.key_line("c"), Some(2));
        assert!(doc.get("a").and_then(|a| a.get("b")).is_some());
        *doc.entry("c").unwrap().entry("d").unwrap() = Node::string("x", 9);
        assert_eq!(doc.to_json()["c"]["d"], "x");
        assert!(doc.get("a").unwrap().get("b").unwrap().get("z").is_none());
    }

    #[test]
    fn syntax_errors_have_lines() {
        let error = parse("a: 1\nb: [unclosed\n", &no_env).unwrap_err();
        assert!(error.line >= 2, "{error:?}");
    }
}

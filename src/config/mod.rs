//! Configuration: YAML file → validated [`Config`], or every problem at once.
//!
//! The pipeline is `yaml::parse` (text → [`yaml::Node`] tree with lines) →
//! [`Overrides`] (command-line flags written into the tree) → decoding
//! (tree → typed sections, defaults filled, values checked) → `validate`
//! (what spans sections). Decoding recovers from each problem, so all of
//! them are reported in one run, each with its key path and line — or the
//! flag it came from. Nothing else in breakwater parses config;
//! `crate::reload` swaps a new one in.
//!
//! Each section is declared once (`section!` in `declare.rs`): its keys,
//! defaults, checks and docs. The decoder, `Default`, the effective-config
//! printout of `breakwater check` ([`Config::to_yaml`]), the JSON Schema of
//! `breakwater schema` ([`schema`]) and `docs/CONFIG.md`
//! ([`reference_markdown`]) are generated from those declarations.
//!
//! With no file, breakwater runs [`DEFAULT_CONFIG`], which goes through the
//! same pipeline so the embedded default can never drift from the rules.

pub(crate) mod check;
#[macro_use]
mod declare;
mod checks;
mod decode;
pub mod degrade;
pub(crate) mod docs;
mod model;
pub mod ops;
pub mod policy;
pub(crate) mod reference;
mod supervisor;
mod validate;
pub mod yaml;

use std::net::SocketAddr;
use std::path::Path;

pub use decode::{ByteSize, ConfigIssue, ConfigValue, Cx};
pub use degrade::{
    Degradation, DegradationSetting, Fallback, FallbackWhen, Priority, StaleIfError,
};
pub use docs::{KeyDoc, SectionDoc};
pub use model::*;
pub use ops::{
    ConfigRollback, Dependency, DependencyCheck, FaultAbort, FaultDelay, FaultInjection, Rollback,
};
pub use policy::{
    Backoff, BreakerWindow, Bulkhead, CircuitBreaker, HealthCheck, OutlierDetection, Probe,
    RateLimit, Retry, RetryBudget, RetryOn, Toggle,
};
pub use reference::{reference, reference_markdown, schema};

use yaml::{Node, Value};

/// The embedded default of SPEC §8.3: one catch-all route to
/// `127.0.0.1:8080`, admin on loopback.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// Command-line values that override the file. Each flag that is set is
/// written into the config tree before it is read, so its value gets the
/// same checks as the file's; a problem with it names the flag.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: the address of the (single) listener.
    pub listen: Option<SocketAddr>,
    /// `--upstream`: the one endpoint of the (single) upstream.
    pub upstream: Option<String>,
    /// `--admin`: the admin address.
    pub admin: Option<SocketAddr>,
    /// `--threads`: worker threads.
    pub threads: Option<usize>,
    /// `-- CMD ARGS…`: the process to supervise (replaces `supervisor.process`).
    pub command: Vec<String>,
}

impl Overrides {
    /// Each flag that is set, as written (`--admin 127.0.0.1:15000`), with
    /// the key path it sets; an issue at or under that path is the flag's.
    pub fn flags(&self) -> Vec<(String, &'static str)> {
        let mut flags = Vec::new();
        if let Some(listen) = self.listen {
            flags.push((format!("--listen {listen}"), "listeners[0].listen"));
        }
        if let Some(upstream) = &self.upstream {
            flags.push((format!("--upstream {upstream}"), "upstreams[0].endpoints"));
        }
        if let Some(admin) = self.admin {
            flags.push((format!("--admin {admin}"), "admin.listen"));
        }
        if let Some(threads) = self.threads {
            flags.push((format!("--threads {threads}"), "runtime.threads"));
        }
        if !self.command.is_empty() {
            flags.push((
                format!("-- {}", self.command.join(" ")),
                "supervisor.process",
            ));
        }
        flags
    }

    /// Writes the flags that are set into `tree`. A flag that cannot apply
    /// (`--listen` with two listeners) is an issue.
    fn apply(&self, tree: &mut Node, cx: &mut Cx) {
        if !matches!(tree.value, Value::Map(_) | Value::Null) {
            return; // "expected a mapping" is reported by decoding.
        }
        for (flag, path) in self.flags() {
            let value = match path {
                "listeners[0].listen" => self.listen.map(|a| Node::string(a.to_string(), 0)),
                "upstreams[0].endpoints" => self.upstream.as_ref().map(|endpoint| Node {
                    value: Value::Seq(vec![Node::string(endpoint.as_str(), 0)]),
                    line: 0,
                    from_env: false,
                }),
                "admin.listen" => self.admin.map(|a| Node::string(a.to_string(), 0)),
                "runtime.threads" => self.threads.map(|n| Node {
                    value: Value::Scalar {
                        text: n.to_string(),
                        quoted: false,
                    },
                    line: 0,
                    from_env: false,
                }),
                _ => supervisor::command_node(&self.command, 0),
            };
            let Some(value) = value else { continue };
            match slot(tree, path) {
                Ok(slot) => *slot = value,
                Err(message) => cx.error_at(&flag, None, message),
            }
        }
    }

    /// Moves an issue on a key a flag set over to that flag.
    fn attribute(&self, issue: &mut ConfigIssue) {
        for (flag, path) in self.flags() {
            let under = issue.path.strip_prefix(path);
            if under.is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '['])) {
                issue.path = flag;
                issue.line = None;
                return;
            }
        }
    }
}

/// The node at `path` (one of [`Overrides::flags`]' paths), made if absent.
fn slot<'t>(tree: &'t mut Node, path: &str) -> Result<&'t mut Node, &'static str> {
    let (list, rest) = match path.split_once("[0].") {
        Some((list, rest)) => (Some(list), rest),
        None => (None, path),
    };
    let mut node = tree;
    if let Some(list) = list {
        let what = match list {
            "listeners" => "needs a config with exactly one listener",
            _ => "needs a config with exactly one upstream",
        };
        node = match node.entry(list).map(|node| &mut node.value) {
            Some(Value::Seq(items)) if items.len() == 1 => &mut items[0],
            _ => return Err(what),
        };
    }
    for key in rest.split('.') {
        node = node.entry(key).ok_or("the config has no mapping here")?;
    }
    Ok(node)
}

/// Why a config was refused: every issue found, and where the text came from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render_issues(.source_name, .issues))]
pub struct ConfigError {
    /// File name or `<embedded default>`.
    pub source_name: String,
    /// Every problem, each with key path and line, or the flag.
    pub issues: Vec<ConfigIssue>,
}

fn render_issues(source: &str, issues: &[ConfigIssue]) -> String {
    let mut out = format!(
        "{source}: {} error{}",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for issue in issues {
        out.push_str("\n  ");
        out.push_str(&issue.to_string());
    }
    out
}

/// Reads, parses and validates the file at `path`.
pub fn load_file(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        source_name: source_name.clone(),
        issues: vec![ConfigIssue {
            path: String::new(),
            line: None,
            message: format!("cannot read file: {error}"),
        }],
    })?;
    load_str(&text, &source_name, overrides)
}

/// Parses and validates config text; `source_name` labels the errors.
pub fn load_str(
    text: &str,
    source_name: &str,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let fail = |issues| ConfigError {
        source_name: source_name.to_owned(),
        issues,
    };
    let env = |name: &str| std::env::var(name).ok();
    let mut tree = yaml::parse(text, &env).map_err(|error| {
        fail(vec![ConfigIssue {
            path: String::new(),
            line: Some(error.line),
            message: error.message,
        }])
    })?;
    let mut cx = Cx::default();
    overrides.apply(&mut tree, &mut cx);
    let config = Config::decode(&mut cx, &tree);
    if let Some(config) = &config {
        let decoded = cx.issues.len();
        validate::validate(config, &tree, &mut cx);
        // One issue per key: a cross-section check on a value decoding
        // already complained about would only repeat it.
        let follow_ons = cx.issues.split_off(decoded);
        for issue in follow_ons {
            if !cx.issues.iter().any(|earlier| earlier.path == issue.path) {
                cx.issues.push(issue);
            }
        }
    }
    for issue in &mut cx.issues {
        overrides.attribute(issue);
    }
    match config {
        Some(config) if cx.issues.is_empty() => Ok(config),
        _ => {
            if cx.issues.is_empty() {
                cx.issues.push(ConfigIssue {
                    path: String::new(),
                    line: Some(1),
                    message: "invalid config".to_owned(),
                });
            }
            Err(fail(cx.issues))
        }
    }
}

/// Reads one section (such as a fault sent to the admin port) from JSON
/// or YAML text with the config's own rules; no `${ENV}` is substituted.
/// Every problem is returned as `path: message`.
pub fn decode_section<T: ConfigValue>(text: &str) -> Result<T, Vec<String>> {
    let tree = yaml::parse(text, &|_| None).map_err(|error| vec![error.message])?;
    let mut cx = Cx::default();
    let value = T::decode(&mut cx, &tree);
    let problems: Vec<String> = cx
        .issues
        .iter()
        .map(|issue| match issue.path.as_str() {
            "" => issue.message.clone(),
            path => format!("{path}: {}", issue.message),
        })
        .collect();
    match value {
        Some(value) if problems.is_empty() => Ok(value),
        _ if problems.is_empty() => Err(vec!["invalid value".to_owned()]),
        _ => Err(problems),
    }
}

impl Config {
    /// The effective config as YAML, defaults filled in and secrets shown
    /// as `<redacted>`: what `breakwater check` prints. It loads back to the
    /// same config (the secrets aside).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        write_yaml(&mut out, &self.to_json(), 0);
        out
    }
}

/// A small block-style YAML emitter for the effective config. Strings are
/// written as JSON strings, which YAML reads as double-quoted scalars.
fn write_yaml(out: &mut String, value: &serde_json::Value, indent: usize) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match value {
        J::Object(map) => {
            for (key, value) in map {
                match value {
                    J::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(out, value, indent + 2);
                    }
                    J::Array(items) if !items.is_empty() && !is_flat(items) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(out, value, indent);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", inline(value))),
                }
            }
        }
        J::Array(items) => {
            for item in items {
                match item {
                    J::Object(inner) if !inner.is_empty() => {
                        let mut nested = String::new();
                        write_yaml(&mut nested, item, indent + 2);
                        out.push_str(&format!("{pad}- {}", &nested[indent + 2..]));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", inline(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", inline(other))),
    }
}

fn is_flat(items: &[serde_json::Value]) -> bool {
    items
        .iter()
        .all(|item| !item.is_object() && !item.is_array())
}

fn inline(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) if is_flat(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        serde_json::Value::Object(map) if map.is_empty() => "{}".to_owned(),
        serde_json::Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

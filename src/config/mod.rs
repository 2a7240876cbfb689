//! Configuration: YAML file → validated [`Config`], or every problem at once.
//!
//! The pipeline is `yaml::parse` (text → [`yaml::Node`] tree with lines) →
//! [`Decode`] (tree → typed values, defaults filled, ranges checked) →
//! [`validate`] (cross-references) → [`Overrides`] (CLI flags). Nothing
//! else in breakwater parses config; `crate::reload` swaps a new one in.
//!
//! With no file, breakwater runs [`DEFAULT_CONFIG`], which goes through the
//! same pipeline so the embedded default can never drift from the rules.

mod decode;
mod model;
pub mod policy;
mod supervisor;
mod validate;
pub mod yaml;

use std::net::SocketAddr;
use std::path::Path;

pub use decode::{ByteSize, ConfigIssue, Cx, Decode};
pub use model::*;

/// The embedded default of SPEC §8.3: one catch-all route to
/// `127.0.0.1:8080`, admin on loopback.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// Command-line values that override the file.
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

/// Why a config was refused: every issue found, and where the text came from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render_issues(.source_name, .issues))]
pub struct ConfigError {
    /// File name or `<embedded default>`.
    pub source_name: String,
    /// Every problem, each with key path and line.
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
    let tree = yaml::parse(text, &env).map_err(|error| {
        fail(vec![ConfigIssue {
            path: String::new(),
            line: Some(error.line),
            message: error.message,
        }])
    })?;
    let mut cx = Cx::default();
    let config = Config::decode(&mut cx, &tree);
    match config {
        Some(mut config) if cx.issues.is_empty() => {
            apply_overrides(&mut config, overrides, &mut cx);
            validate::validate(&config, &tree, &mut cx);
            if cx.issues.is_empty() {
                Ok(config)
            } else {
                Err(fail(cx.issues))
            }
        }
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

fn apply_overrides(config: &mut Config, overrides: &Overrides, cx: &mut Cx) {
    if let Some(listen) = overrides.listen {
        match config.listeners.as_mut_slice() {
            [only] => only.listen = listen,
            _ => cx.error_at("--listen", None, "needs a config with exactly one listener"),
        }
    }
    if let Some(upstream) = &overrides.upstream {
        match config.upstreams.as_mut_slice() {
            [only] => only.endpoints = vec![upstream.clone()],
            _ => cx.error_at(
                "--upstream",
                None,
                "needs a config with exactly one upstream",
            ),
        }
        if upstream
            .parse::<http::uri::Authority>()
            .ok()
            .and_then(|a| a.port_u16())
            .is_none()
        {
            cx.error_at(
                "--upstream",
                None,
                format!("expected host:port like 127.0.0.1:8080, found {upstream:?}"),
            );
        }
    }
    if let Some(admin) = overrides.admin {
        config.admin.listen = admin;
    }
    if let Some(threads) = overrides.threads {
        config.runtime.threads = Some(threads);
    }
    if let Some(process) = Process::from_command(&overrides.command) {
        config.supervisor.process = Some(process);
    }
}

impl Config {
    /// The effective config as YAML, defaults filled in and secrets redacted:
    /// what `breakwater check` prints. It loads back to the same config.
    pub fn to_yaml(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut out = String::new();
        write_yaml(&mut out, &value, 0);
        out
    }

    /// Finds an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
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
                    J::Array(items) if !items.is_empty() => {
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

fn inline(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items)
            if items
                .iter()
                .all(|item| !item.is_object() && !item.is_array()) =>
        {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        serde_json::Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

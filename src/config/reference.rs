//! What the declarations tell users: the JSON Schema of `breakwater schema`
//! and the key reference `docs/CONFIG.md`.
//!
//! Both are walks over the same `section!` declarations the decoder comes
//! from, so a key, default or range cannot be documented one way and read
//! another. `docs/CONFIG.md` is checked in; a test fails when it is stale
//! and says how to regenerate it.

use serde_json::{json, Value as Json};

use super::decode::ConfigValue;
use super::docs::{KeyDoc, SectionDoc};
use super::Config;

/// The config's JSON Schema (draft-07), for editors and CI.
pub fn schema() -> Json {
    let mut schema = Config::schema();
    if let Json::Object(map) = &mut schema {
        let mut top = serde_json::Map::new();
        top.insert(
            "$schema".to_owned(),
            json!("http://json-schema.org/draft-07/schema#"),
        );
        top.insert("title".to_owned(), json!("breakwater config"));
        top.extend(std::mem::take(map));
        *map = top;
    }
    cross_key_rules(&mut schema);
    schema
}

/// The rules that span keys, as far as JSON Schema can say them: a route
/// may leave out `upstream` only on a transparent listener, and an
/// upstream needs `endpoints` unless it has `original_dst`.
fn cross_key_rules(schema: &mut Json) {
    let listener = &mut schema["properties"]["listeners"]["items"];
    if let Json::Object(listener) = listener {
        listener.insert(
            "if".to_owned(),
            json!({"properties": {"transparent": {"const": true}}, "required": ["transparent"]}),
        );
        listener.insert(
            "else".to_owned(),
            json!({"properties": {"routes": {"items": {"required": ["upstream"]}}}}),
        );
    }
    if let Json::Object(upstream) = &mut schema["properties"]["upstreams"]["items"] {
        upstream.insert(
            "anyOf".to_owned(),
            json!([{"required": ["endpoints"]}, {"required": ["original_dst"]}]),
        );
    }
}

/// Every section with its keys, top level first, each followed by the
/// sections nested in it.
pub fn reference() -> Vec<SectionDoc> {
    let mut sections = Vec::new();
    Config::sections("", &mut sections);
    sections
}

const INTRO: &str = "\
# Configuration reference

<!-- Generated from the key declarations in src/config/ by
     `BREAKWATER_BLESS=1 cargo test config_reference_is_current`; do not edit. -->

breakwater reads one YAML file (`breakwater run --config FILE`); with none it
runs its embedded default, which `breakwater check` prints. An annotated
example is [`config/breakwater.yaml`](../config/breakwater.yaml).

- **Durations** are written `250ms`, `5s`, `1m`, `1h` (also `us`; `1.5s`
  works; a bare number does not, except `0`).
- **Sizes** are written `64KiB`, `512MiB`, `1GiB` (binary) or `1KB`, `1MB`
  (decimal); a bare number is bytes.
- **`${NAME}`** in a value is replaced by the environment variable `NAME`
  (`$${` for a literal `${`); a variable that is not set is an error. Values
  that came from the environment are never echoed in errors.
- **Unknown keys are errors**, so a typo never silently means \"default\".
  Keys the spec defines for parts this build does not have yet are refused
  with a message saying so; each section lists them.
- **Every error at once**: `breakwater check --config FILE` lists every
  problem, each with its key path and line (or the flag it came from), and
  prints the effective config (every default filled in, secrets as
  `<redacted>`) when there is none.
- **`breakwater schema`** prints the JSON Schema generated from the same
  declarations as this page, for editors and CI.
- **Reload**: `SIGHUP`, `POST /config/reload` or a change to the file loads
  the new config atomically if it is valid; otherwise the errors are logged
  and returned and the old config keeps serving. Changing a listener, the
  admin address or `runtime` needs a restart.
";

/// `docs/CONFIG.md`: every section, every key with its type, default,
/// allowed values and meaning.
pub fn reference_markdown() -> String {
    let sections = reference();
    let paths: Vec<&str> = sections
        .iter()
        .map(|section| section.path.as_str())
        .collect();
    let mut out = String::from(INTRO);
    out.push_str("\n## Sections\n\n");
    for section in &sections {
        let depth = section.path.split('.').count() - 1;
        out.push_str(&format!(
            "{}- [{}](#{})\n",
            "  ".repeat(depth.min(4)),
            heading(&section.path),
            anchor(&section.path)
        ));
    }
    for (index, section) in sections.iter().enumerate() {
        out.push_str(&format!("\n## {}\n\n", heading(&section.path)));
        let doc = prose(&section.doc);
        if !doc.is_empty() {
            out.push_str(&doc);
            out.push_str("\n\n");
        }
        let same = sections[..index]
            .iter()
            .find(|earlier| earlier.doc == section.doc && same_keys(earlier, section));
        if let Some(earlier) = same {
            out.push_str(&format!(
                "The keys of [{}](#{}).\n",
                heading(&earlier.path),
                anchor(&earlier.path)
            ));
        } else if section.keys.is_empty() {
            out.push_str("No keys.\n");
        } else {
            out.push_str("| key | type | default | allowed | meaning |\n");
            out.push_str("| --- | --- | --- | --- | --- |\n");
            for key in &section.keys {
                out.push_str(&key_row(&section.path, key, &paths));
            }
        }
        if !section.later.is_empty() {
            let later: Vec<String> = section.later.iter().map(|key| format!("`{key}`")).collect();
            out.push_str(&format!(
                "\nIn the spec but not supported by this build yet (refused): {}.\n",
                later.join(", ")
            ));
        }
    }
    out
}

/// A section's doc without its code-side lead-in: "`bulkhead:` (SPEC
/// §3.2) — on every route…" reads "On every route…" under its heading.
fn prose(doc: &str) -> String {
    let mut rest = doc;
    if let Some(after) = rest.strip_prefix('`') {
        rest = after.split_once('`').map_or(rest, |(_, after)| after);
        rest = rest.trim_start();
        if rest.starts_with("(SPEC") {
            rest = rest.split_once(')').map_or(rest, |(_, after)| after);
        }
        rest = rest.trim_start();
        rest = rest.strip_prefix('—').unwrap_or(rest).trim_start();
    }
    let mut chars = rest.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn same_keys(a: &SectionDoc, b: &SectionDoc) -> bool {
    a.keys.len() == b.keys.len()
        && a.keys
            .iter()
            .zip(&b.keys)
            .all(|(a, b)| a.name == b.name && a.doc == b.doc)
}

fn key_row(section: &str, key: &KeyDoc, paths: &[&str]) -> String {
    let path = super::declare::join_path(section, key.name);
    let nested = [path.clone(), format!("{path}[]")]
        .into_iter()
        .find(|nested| paths.contains(&nested.as_str()));
    let type_name = match &nested {
        Some(nested) => format!("{} ([keys](#{}))", key.type_name, anchor(nested)),
        None => key.type_name.clone(),
    };
    let default = match (&key.default_text, &key.default) {
        (Some(text), _) => text.to_string(),
        (None, None) => "**required**".to_owned(),
        (None, Some(Json::Null)) => "none".to_owned(),
        (None, Some(Json::Object(_))) if nested.is_some() => "see its keys".to_owned(),
        (None, Some(value)) => format!("`{}`", flow(value)),
    };
    format!(
        "| `{}` | {} | {} | {} | {} |\n",
        key.name,
        cell(&type_name),
        cell(&default),
        cell(&key.checks.join("; ")),
        cell(&key.doc),
    )
}

/// A value as flow YAML: `[500, 502]`, `{type: count, size: 100}`, `15s`.
pub fn flow(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Json::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{key}: {}", flow(value)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        Json::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() && float.fract() == 0.0 => format!("{float:.0}"),
            _ => number.to_string(),
        },
        other => other.to_string(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace("\n\n", "<br>")
        .replace('\n', " ")
}

fn heading(path: &str) -> String {
    if path.is_empty() {
        "Top level".to_owned()
    } else {
        format!("`{path}`")
    }
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped
/// except `-` and `_`, spaces as `-`.
fn anchor(path: &str) -> String {
    heading(path)
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

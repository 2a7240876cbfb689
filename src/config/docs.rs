//! What the reference docs and the JSON Schema are made of: the
//! [`SectionDoc`] and [`KeyDoc`] each declared section yields, and the
//! schema helpers every layer of the config code shares.

use serde_json::Value as Json;

use super::yaml::Node;

/// One section of the reference docs.
#[derive(Debug, Clone)]
pub struct SectionDoc {
    /// Where it lives: `listeners[].routes[].circuit_breaker`; empty for
    /// the top level.
    pub path: String,
    /// The section's doc comment.
    pub doc: String,
    /// Its keys, in declaration order.
    pub keys: Vec<KeyDoc>,
    /// Keys the SPEC defines for a later part; refused for now.
    pub later: Vec<&'static str>,
}

/// One key of a [`SectionDoc`].
#[derive(Debug, Clone)]
pub struct KeyDoc {
    /// The key as written in YAML.
    pub name: &'static str,
    /// Its type, for the docs.
    pub type_name: String,
    /// Its doc comment.
    pub doc: String,
    /// The default as printed, `None` when the key is required.
    pub default: Option<Json>,
    /// What the docs say instead of `default`, when it depends on other keys.
    pub default_text: Option<&'static str>,
    /// The value rules, in words.
    pub checks: Vec<String>,
    /// Decodes a node as this key's type and prints it the canonical way,
    /// or `None` if it does not decode: how a value written in the
    /// reference config is compared with the default.
    pub normalize: fn(&Node) -> Option<Json>,
}

/// Merges `extra` into `schema`, objects key by key.
pub fn merge(schema: &mut Json, extra: &Json) {
    match (schema, extra) {
        (Json::Object(schema), Json::Object(extra)) => {
            for (key, value) in extra {
                match schema.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        schema.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (schema, extra) => *schema = extra.clone(),
    }
}

/// A JSON Schema pattern that also accepts any text holding `${NAME}`:
/// such a value is only known once the environment is read.
pub fn pattern(regex: &str) -> String {
    format!("^(?:{regex})$|\\$\\{{")
}

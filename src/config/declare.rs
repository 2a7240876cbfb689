//! Config sections declared once: keys, defaults, checks and docs in one
//! place, and everything else generated from it.
//!
//! A section is written as a struct whose fields carry their default and
//! their checks:
//!
//! ```text
//! section! {
//!     /// `bulkhead:` (SPEC §3.2) …
//!     pub struct Bulkhead {
//!         /// Requests in flight to the upstream.
//!         #[check(at_least(1))]
//!         max_concurrent: usize = 1024,
//!         // … the other keys
//!     }
//!     later: ["adaptive", "min_concurrent"],
//!     validate: check_bulkhead,
//! }
//! ```
//!
//! and `section!` turns that into the struct (fields `pub`, doc comments
//! kept), its `Default` (when every key has one), and its [`ConfigValue`]
//! impl: the decoder (unknown keys reported with the known ones, `later`
//! keys refused as "not supported by this build yet", a missing key without
//! a default reported as required), the printout, the JSON Schema and the
//! [`SectionDoc`] that `docs/CONFIG.md` is rendered from. A field may also
//! carry `#[key = "match"]` (its YAML name, when that is a Rust keyword)
//! and `#[default_text = "…"]` (what the docs say when the default depends
//! on other keys); the attributes go in the order doc, key, check,
//! default_text. `validate:` names a hook that runs after the keys are read,
//! for checks that span keys and for defaults derived from other keys.
//!
//! The rules in `#[check(…)]` are [`super::checks`]' [`Check`]s: each carries
//! its docs and its schema keywords, so the decoder, the schema and the docs
//! cannot disagree on a range.

use serde_json::{json, Map, Value as Json};

use super::check::Check;
use super::decode::{ConfigValue, Cx};
use super::docs::merge;
use super::yaml::{Node, Value};

// === docs ===

/// Joins doc-comment lines into one paragraph (blank lines kept as breaks).
pub fn join_doc(lines: &[&str]) -> String {
    let mut out = String::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            out.push_str("\n\n");
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(line);
        }
    }
    out.trim().to_owned()
}

/// `path.key`, or `key` at the top.
pub fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// [`KeyDoc::normalize`] for type `T`.
pub fn normalize<T: ConfigValue>(node: &Node) -> Option<Json> {
    let mut cx = Cx::default();
    let value = Option::<T>::decode(&mut cx, node)?;
    cx.issues.is_empty().then(|| value.to_json())
}

// === schema ===

/// The schema of one key: its type's, with its doc, default and checks.
/// A default that depends on other keys (`default_text`) is said in the
/// description rather than given as a value.
pub fn key_schema<T: ConfigValue>(
    doc: &str,
    default: Option<&T>,
    default_text: Option<&str>,
    checks: &[Check<T>],
) -> Json {
    let mut schema = T::schema();
    for check in checks {
        merge(&mut schema, &check.schema);
    }
    if let Json::Object(map) = &mut schema {
        match default_text {
            Some(text) => {
                map.insert(
                    "description".to_owned(),
                    Json::from(format!("{doc} Default: {text}.")),
                );
            }
            None => {
                map.insert("description".to_owned(), Json::from(doc));
                // A section's default is its keys' defaults, given on each.
                let default = default
                    .map(T::to_json)
                    .filter(|json| !json.is_null() && !json.is_object());
                if let Some(default) = default {
                    map.insert("default".to_owned(), default);
                }
            }
        }
    }
    schema
}

/// The schema of a section: fixed keys, nothing else.
pub fn section_schema(doc: &str, properties: Map<String, Json>, required: Vec<&str>) -> Json {
    let mut schema = json!({
        "type": if required.is_empty() { json!(["object", "null"]) } else { json!("object") },
        "description": without_spec_reference(doc),
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// A doc without its code-side pointer into the team's spec (`(SPEC
/// §3.1)`): editors show the description to users, who have no spec.
fn without_spec_reference(doc: &str) -> String {
    match doc.split_once(" (SPEC") {
        Some((before, after)) => match after.split_once(')') {
            Some((_, rest)) => format!("{before}{rest}"),
            None => doc.to_owned(),
        },
        None => doc.to_owned(),
    }
}

/// The value under `key` in a mapping node, unless absent or `null`.
pub fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.get(key).filter(|value| value.value != Value::Null)
}

// === the macros ===

/// Declares a config section; see the module docs.
macro_rules! section {
    (
        $(#[doc = $doc:literal])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $key_doc:literal])*
                $(#[key = $key:literal])?
                $(#[check($($check:expr),+ $(,)?)])?
                $(#[default_text = $default_text:literal])?
                $field:ident : $ty:ty $(= $default:expr)?
            ),* $(,)?
        }
        $(later: [$($later:literal),* $(,)?] $(,)?)?
        $(validate: $validate:path $(,)?)?
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $(
                $(#[doc = $key_doc])*
                pub $field: $ty,
            )*
        }

        section!(@default $name { $( $field [$($default)?] )* });
        serialize_as_json!($name);

        impl $crate::config::decode::ConfigValue for $name {
            fn decode(
                cx: &mut $crate::config::decode::Cx,
                node: &$crate::config::yaml::Node,
            ) -> Option<Self> {
                #[allow(unused_mut)]
                let mut keys = $crate::config::decode::Keys::new(cx, node)?;
                $(
                    let $field: Option<$ty> = keys.read(
                        cx,
                        section!(@key $($key)? ; $field),
                        &section!(@checks $ty ; $($($check),+)?),
                        section!(@default_value [$($default)?]),
                    );
                )*
                keys.finish(
                    cx,
                    &[$( section!(@key $($key)? ; $field) ),*],
                    &[$($($later),*)?],
                );
                #[allow(irrefutable_let_patterns)]
                let ($(Some($field),)*) = ($($field,)*) else {
                    return None;
                };
                #[allow(unused_mut)]
                let mut value = $name { $($field),* };
                $( $validate(&mut value, &keys, cx); )?
                Some(value)
            }

            fn to_json(&self) -> serde_json::Value {
                #[allow(unused_mut)]
                let mut map = serde_json::Map::new();
                $(
                    let json = $crate::config::decode::ConfigValue::to_json(&self.$field);
                    if !json.is_null() {
                        map.insert(section!(@key $($key)? ; $field).to_owned(), json);
                    }
                )*
                serde_json::Value::Object(map)
            }

            fn schema() -> serde_json::Value {
                #[allow(unused_mut)]
                let mut properties = serde_json::Map::new();
                #[allow(unused_mut)]
                let mut required: Vec<&str> = Vec::new();
                $(
                    let default: Option<$ty> = section!(@default_value [$($default)?]);
                    if default.is_none() {
                        required.push(section!(@key $($key)? ; $field));
                    }
                    properties.insert(
                        section!(@key $($key)? ; $field).to_owned(),
                        $crate::config::declare::key_schema::<$ty>(
                            &$crate::config::declare::join_doc(&[$($key_doc),*]),
                            default.as_ref(),
                            None $(.or(Some($default_text)))?,
                            &section!(@checks $ty ; $($($check),+)?),
                        ),
                    );
                )*
                $crate::config::declare::section_schema(
                    &$crate::config::declare::join_doc(&[$($doc),*]),
                    properties,
                    required,
                )
            }

            fn type_name() -> String {
                "mapping".to_owned()
            }

            fn sections(path: &str, out: &mut Vec<$crate::config::docs::SectionDoc>) {
                out.push($crate::config::docs::SectionDoc {
                    path: path.to_owned(),
                    doc: $crate::config::declare::join_doc(&[$($doc),*]),
                    keys: vec![$(
                        $crate::config::docs::KeyDoc {
                            name: section!(@key $($key)? ; $field),
                            type_name: <$ty as $crate::config::decode::ConfigValue>::type_name(),
                            doc: $crate::config::declare::join_doc(&[$($key_doc),*]),
                            default: {
                                let default: Option<$ty> = section!(@default_value [$($default)?]);
                                default.map(|value| {
                                    $crate::config::decode::ConfigValue::to_json(&value)
                                })
                            },
                            default_text: None $(.or(Some($default_text)))?,
                            checks: section!(@checks $ty ; $($($check),+)?)
                                .into_iter()
                                .map(|check| check.doc)
                                .collect(),
                            normalize: $crate::config::declare::normalize::<$ty>,
                        }
                    ),*],
                    later: vec![$($($later),*)?],
                });
                $(
                    <$ty as $crate::config::decode::ConfigValue>::sections(
                        &$crate::config::declare::join_path(path, section!(@key $($key)? ; $field)),
                        out,
                    );
                )*
            }

            fn inherit(&mut self, base: &Self, node: &$crate::config::yaml::Node) {
                let _ = (base, node);
                $(
                    match $crate::config::declare::child(node, section!(@key $($key)? ; $field)) {
                        Some(node) => $crate::config::decode::ConfigValue::inherit(
                            &mut self.$field,
                            &base.$field,
                            node,
                        ),
                        None => self.$field = base.$field.clone(),
                    }
                )*
            }
        }
    };

    (@key $key:literal ; $field:ident) => { $key };
    (@key ; $field:ident) => { stringify!($field) };

    (@checks $ty:ty ; $($check:expr),*) => {{
        let checks: Vec<$crate::config::check::Check<$ty>> = vec![$($check),*];
        checks
    }};

    (@default_value [$default:expr]) => { Some($default) };
    (@default_value []) => { None };

    // `Default` only when every key has one: the first arm does not match
    // if any `[…]` is empty.
    (@default $name:ident { $( $field:ident [$default:expr] )* }) => {
        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default ),* }
            }
        }
    };
    (@default $name:ident { $($rest:tt)* }) => {};
}

/// `Serialize` as the printout ([`ConfigValue::to_json`]), for the admin
/// port's JSON.
macro_rules! serialize_as_json {
    ($($name:ty),* $(,)?) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(
                    &$crate::config::decode::ConfigValue::to_json(self),
                    serializer,
                )
            }
        }
    )*};
}

/// Declares an enum of config words (`http1 | http2 | auto`) with its
/// [`ConfigValue`] impl, `as_str` and `Serialize` as the word.
macro_rules! words {
    (
        $(#[doc = $doc:literal])*
        $vis:vis enum $name:ident {
            $( $(#[doc = $variant_doc:literal])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[doc = $variant_doc])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$( $name::$variant ),+];

            /// The word config uses, also the label in metrics and events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word ),+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl_words!($name { $( $variant = $word ),+ });
    };
}

/// The [`ConfigValue`] impl of an enum read as one of a set of words, for
/// enums declared elsewhere (`events::Severity`).
macro_rules! impl_words {
    ($name:ident { $( $variant:ident = $word:literal ),+ $(,)? }) => {
        impl $crate::config::decode::ConfigValue for $name {
            fn decode(
                cx: &mut $crate::config::decode::Cx,
                node: &$crate::config::yaml::Node,
            ) -> Option<Self> {
                $crate::config::decode::one_of(cx, node, &[$( ($word, $name::$variant) ),+])
            }
            fn to_json(&self) -> serde_json::Value {
                serde_json::Value::from(match self {
                    $( $name::$variant => $word ),+
                })
            }
            fn schema() -> serde_json::Value {
                serde_json::json!({ "enum": [$($word),+] })
            }
            fn type_name() -> String {
                $crate::config::decode::words_name(&[$($word),+])
            }
        }
    };
}

/// The [`ConfigValue`] impl of a type read through a declared key struct,
/// for types whose fields are not their keys one to one (`admin.token_env`
/// becomes the token; `health_check`'s `http`/`tcp`/`exec` become one
/// `Probe`). `decode` builds the type from the keys (recording issues),
/// `encode` gives the keys that print it, `schema` may add keywords.
macro_rules! via_keys {
    (
        $outer:ty => $keys:ty,
        decode: $decode:path,
        encode: $encode:path
        $(, schema: $schema:path)? $(,)?
    ) => {
        impl $crate::config::decode::ConfigValue for $outer {
            fn decode(
                cx: &mut $crate::config::decode::Cx,
                node: &$crate::config::yaml::Node,
            ) -> Option<Self> {
                let keys = <$keys as $crate::config::decode::ConfigValue>::decode(cx, node)?;
                $decode(cx, node, keys)
            }
            fn to_json(&self) -> serde_json::Value {
                $crate::config::decode::ConfigValue::to_json(&$encode(self))
            }
            fn schema() -> serde_json::Value {
                #[allow(unused_mut)]
                let mut schema = <$keys as $crate::config::decode::ConfigValue>::schema();
                $( $schema(&mut schema); )?
                schema
            }
            fn type_name() -> String {
                <$keys as $crate::config::decode::ConfigValue>::type_name()
            }
            fn sections(path: &str, out: &mut Vec<$crate::config::docs::SectionDoc>) {
                <$keys as $crate::config::decode::ConfigValue>::sections(path, out)
            }
        }

        serialize_as_json!($outer);
    };
}

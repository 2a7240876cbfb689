//! The value rules of `#[check(…)]`: `at_least(1)`, `between(1, 10)`,
//! `ratio()`, `host_ports()`…
//!
//! A [`Check`] is a rule, its wording for `docs/CONFIG.md` and the JSON
//! Schema keywords that say the same, built together so they cannot
//! disagree. A rule sees the value, or nothing for an absent `Option`
//! ([`Checked`]), so one rule serves `u32` and `Option<u32>` keys; a rule on
//! a list or mapping may blame one item, and the error then points at that
//! item's line.

use std::time::Duration;

use serde_json::{json, Value as Json};

pub use super::check::{Check, Checked, Fault};
use super::decode::ByteSize;
use super::docs::{merge, pattern};

/// A check of the checked item, passing absent values.
fn check<V: Checked>(
    doc: impl Into<String>,
    schema: Json,
    test: impl Fn(&V::Item) -> Result<(), Fault> + 'static,
) -> Check<V> {
    Check::new(doc, schema, move |value: &V| match value.item() {
        Some(item) => test(item),
        None => Ok(()),
    })
}

/// Values with an order that a range can bound: numbers, durations, sizes.
pub trait Ordered: PartialOrd + Copy + 'static {
    /// The value as the config writes it.
    fn show(self) -> String;
    /// The value as a JSON Schema number, when the schema sees a number.
    fn schema_number(self) -> Option<Json>;
    /// Zero of the type.
    fn zero() -> Self;
}

macro_rules! ordered_numbers {
    ($($ty:ty),*) => {$(
        impl Ordered for $ty {
            fn show(self) -> String {
                self.to_string()
            }
            fn schema_number(self) -> Option<Json> {
                Some(Json::from(self))
            }
            fn zero() -> Self {
                0 as $ty
            }
        }
    )*};
}

ordered_numbers!(u16, u32, u64, usize, f64);

impl Ordered for Duration {
    fn show(self) -> String {
        crate::units::format_duration(self)
    }
    fn schema_number(self) -> Option<Json> {
        None
    }
    fn zero() -> Self {
        Duration::ZERO
    }
}

impl Ordered for ByteSize {
    fn show(self) -> String {
        self.to_string()
    }
    fn schema_number(self) -> Option<Json> {
        None
    }
    fn zero() -> Self {
        ByteSize(0)
    }
}

fn bound_schema<T: Ordered>(keyword: &str, bound: T) -> Json {
    match bound.schema_number() {
        Some(number) => json!({ keyword: number }),
        None => json!({}),
    }
}

/// `value ≥ min`.
pub fn at_least<V: Checked>(min: V::Item) -> Check<V>
where
    V::Item: Ordered,
{
    check(
        format!("at least {}", min.show()),
        bound_schema("minimum", min),
        move |value: &V::Item| {
            if *value >= min {
                Ok(())
            } else {
                Err(format!("must be at least {}, found {}", min.show(), value.show()).into())
            }
        },
    )
}

/// `value ≤ max`.
pub fn at_most<V: Checked>(max: V::Item) -> Check<V>
where
    V::Item: Ordered,
{
    check(
        format!("at most {}", max.show()),
        bound_schema("maximum", max),
        move |value: &V::Item| {
            if *value <= max {
                Ok(())
            } else {
                Err(format!("must be at most {}, found {}", max.show(), value.show()).into())
            }
        },
    )
}

/// `min ≤ value ≤ max`.
pub fn between<V: Checked>(min: V::Item, max: V::Item) -> Check<V>
where
    V::Item: Ordered,
{
    let mut schema = bound_schema("minimum", min);
    merge(&mut schema, &bound_schema("maximum", max));
    check(
        format!("{} to {}", min.show(), max.show()),
        schema,
        move |value: &V::Item| {
            if min <= *value && *value <= max {
                Ok(())
            } else {
                Err(format!(
                    "must be between {} and {}, found {}",
                    min.show(),
                    max.show(),
                    value.show()
                )
                .into())
            }
        },
    )
}

/// `value > 0`.
pub fn above_zero<V: Checked>() -> Check<V>
where
    V::Item: Ordered,
{
    let zero = V::Item::zero();
    check(
        "greater than 0",
        bound_schema("exclusiveMinimum", zero),
        move |value: &V::Item| {
            if *value > zero {
                Ok(())
            } else {
                Err(Fault::from("must be greater than 0".to_owned()))
            }
        },
    )
}

/// A rate: above 0 and at most 1.
pub fn ratio<V: Checked<Item = f64>>() -> Check<V> {
    check(
        "above 0, at most 1",
        json!({"exclusiveMinimum": 0, "maximum": 1}),
        |value: &f64| {
            if *value > 0.0 && *value <= 1.0 {
                Ok(())
            } else {
                Err(format!("must be above 0 and at most 1, found {value}").into())
            }
        },
    )
}

/// A share: 0 to 1.
pub fn fraction<V: Checked<Item = f64>>() -> Check<V> {
    check(
        "0 to 1",
        json!({"minimum": 0, "maximum": 1}),
        |value: &f64| {
            if (0.0..=1.0).contains(value) {
                Ok(())
            } else {
                Err(format!("must be between 0 and 1, found {value}").into())
            }
        },
    )
}

/// Something with a length: strings and lists.
pub trait HasLength {
    /// True when empty.
    fn is_empty_value(&self) -> bool;
}

impl HasLength for String {
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

impl<T> HasLength for Vec<T> {
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

/// Not empty; `what` names what is needed: `at least one endpoint`.
pub fn non_empty<V: Checked>(what: &'static str) -> Check<V>
where
    V::Item: HasLength,
{
    let mut check = check(
        what,
        json!({"minItems": 1, "minLength": 1}),
        move |value: &V::Item| {
            if value.is_empty_value() {
                Err(format!("needs {what}").into())
            } else {
                Ok(())
            }
        },
    );
    check.whole = true;
    check
}

/// Names become metric labels and URL path segments: keep them plain.
pub fn plain_name<V: Checked<Item = String>>() -> Check<V> {
    check(
        "1-64 of a-z A-Z 0-9 - _ .",
        json!({"pattern": pattern("[A-Za-z0-9._-]{1,64}")}),
        |name: &String| {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if valid {
                Ok(())
            } else {
                Err(format!(
                    "names are 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'; found {name:?}"
                )
                .into())
            }
        },
    )
}

/// A URL path: starts with `/`.
pub fn url_path<V: Checked<Item = String>>() -> Check<V> {
    check(
        "starts with /",
        json!({"pattern": "^/"}),
        |path: &String| {
            if path.starts_with('/') {
                Ok(())
            } else {
                Err(Fault::from("a path must start with '/'".to_owned()))
            }
        },
    )
}

/// HTTP statuses, 100 to 599.
pub fn statuses<V: Checked<Item = Vec<u16>>>() -> Check<V> {
    Check::each(
        "each 100 to 599",
        json!({"items": {"minimum": 100, "maximum": 599}}),
        |status: &u16| {
            if (100..=599).contains(status) {
                Ok(())
            } else {
                Err(format!("HTTP statuses are 100 to 599, found {status}"))
            }
        },
    )
}

/// `host:port` endpoints with a non-zero port and no user info.
pub fn host_ports<V: Checked<Item = Vec<String>>>() -> Check<V> {
    Check::each(
        "each host:port",
        json!({"items": {"pattern": pattern("[^@/\\s]+:[0-9]{1,5}")}}),
        |endpoint: &String| {
            let valid = endpoint
                .parse::<http::uri::Authority>()
                .ok()
                .is_some_and(|authority| {
                    authority.port_u16().is_some_and(|port| port != 0) && !endpoint.contains('@')
                });
            if valid {
                Ok(())
            } else {
                Err(format!(
                    "expected host:port like 127.0.0.1:8080, found {endpoint:?}"
                ))
            }
        },
    )
}

/// Header names and values HTTP accepts.
pub fn header_fields() -> Check<Vec<(String, String)>> {
    Check::each(
        "valid header names and values",
        serde_json::json!({"propertyNames": {"pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"}}),
        |(name, value): &(String, String)| {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                Err(format!("{name:?} is not a valid header name"))
            } else if http::HeaderValue::from_str(value).is_err() {
                Err(format!("{value:?} is not a valid header value"))
            } else {
                Ok(())
            }
        },
    )
}

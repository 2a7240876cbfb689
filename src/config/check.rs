//! What a value rule is: a [`Check`] — the rule, its wording for
//! `docs/CONFIG.md` and the JSON Schema keywords that say the same, built
//! together so they cannot disagree. A rule sees the value, or nothing
//! for an absent `Option` ([`Checked`]), so one rule serves `u32` and
//! `Option<u32>` keys; a rule on a list or mapping may blame one item
//! ([`Fault::item`]), and the decoder then reports it at that item's line.
//! The rules themselves are in `checks.rs`.

use std::time::Duration;

use serde_json::Value as Json;

/// Why a value failed a check: the message, and the list item or mapping
/// entry at fault, if it is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Index of the item (list) or entry (mapping) at fault.
    pub item: Option<usize>,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        Fault {
            item: None,
            message,
        }
    }
}

type Test<V> = Box<dyn Fn(&V) -> Vec<Fault>>;

/// One rule a value of type `V` must follow, with its docs and schema.
pub struct Check<V> {
    /// The rule in words, for the docs: `at least 1`.
    pub doc: String,
    /// JSON Schema keywords that say the same, merged into the key's schema.
    pub schema: Json,
    /// Whether the rule judges the value as a whole (a list not empty),
    /// which it cannot do once an item failed to decode and was left out.
    pub whole: bool,
    test: Test<V>,
}

impl<V> Check<V> {
    /// A rule on the whole value.
    pub fn new(
        doc: impl Into<String>,
        schema: Json,
        test: impl Fn(&V) -> Result<(), Fault> + 'static,
    ) -> Self {
        Check {
            doc: doc.into(),
            schema,
            whole: false,
            test: Box::new(move |value| test(value).err().into_iter().collect()),
        }
    }

    /// A rule on each item of a list (or entry of a mapping): every item
    /// that breaks it is reported, at its own line.
    pub fn each<T: 'static>(
        doc: impl Into<String>,
        schema: Json,
        test: impl Fn(&T) -> Result<(), String> + 'static,
    ) -> Self
    where
        V: Checked<Item = Vec<T>>,
    {
        Check {
            doc: doc.into(),
            schema,
            whole: false,
            test: Box::new(move |value: &V| {
                let items = value.item().map_or(&[][..], Vec::as_slice);
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(at, item)| {
                        test(item).err().map(|message| Fault {
                            item: Some(at),
                            message,
                        })
                    })
                    .collect()
            }),
        }
    }

    /// The faults of `value`: none when it follows the rule.
    pub fn faults(&self, value: &V) -> Vec<Fault> {
        (self.test)(value)
    }
}

/// What a check looks at: the value itself, or nothing for an absent
/// `Option`, so one check serves `u32` and `Option<u32>` fields alike.
pub trait Checked: 'static {
    /// The checked type.
    type Item;
    /// The value to check, if any.
    fn item(&self) -> Option<&Self::Item>;
}

macro_rules! checked_as_itself {
    ($($ty:ty),*) => {$(
        impl Checked for $ty {
            type Item = $ty;
            fn item(&self) -> Option<&$ty> {
                Some(self)
            }
        }
    )*};
}

checked_as_itself!(u16, u32, u64, usize, f64, Duration, String);

impl<T: 'static> Checked for Vec<T> {
    type Item = Vec<T>;
    fn item(&self) -> Option<&Vec<T>> {
        Some(self)
    }
}

impl<T: Checked> Checked for Option<T> {
    type Item = T::Item;
    fn item(&self) -> Option<&T::Item> {
        self.as_ref().and_then(Checked::item)
    }
}

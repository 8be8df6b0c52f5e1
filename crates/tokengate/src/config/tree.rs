//! Helpers over `toml`'s spanned document tree ([`DeTable`]): entries in document order,
//! integers, and the kind of a value for messages.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Byte offsets into the document.
pub(super) type Span = Range<usize>;

/// A key of a table with its span.
pub(super) type Key<'i> = Spanned<toml::de::DeString<'i>>;

/// A value with its span.
pub(super) type Node<'i> = Spanned<DeValue<'i>>;

/// Parses a whole document.
pub(super) fn parse(text: &str) -> Result<Spanned<DeTable<'_>>, toml::de::Error> {
    DeTable::parse(text)
}

/// The entries of a table in the order they appear in the document (`toml` keeps them sorted
/// by name).
pub(super) fn entries<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Node<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// The kind of a value, with an article, for "found ..." in messages.
pub(super) fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The value of an integer; `None` for other values. Integers beyond `i128` (which TOML does
/// not allow) saturate.
pub(super) fn integer(value: &DeValue<'_>) -> Option<i128> {
    match value {
        DeValue::Integer(i) => Some(i128::from_str_radix(i.as_str(), i.radix()).unwrap_or(
            if i.as_str().starts_with('-') {
                i128::MIN
            } else {
                i128::MAX
            },
        )),
        _ => None,
    }
}

//! The shape of the command's own TOML files (the workload file, a provider file's
//! `[provider]` table): the keys of each table, the type of each value, the keys required.
//! A file is checked against its shape before it is read into typed structs, so that every
//! mistake is reported as a limits file's are, `FILE:LINE:COL: field `x`: message`: an unknown
//! key with the keys allowed and the closest one (`did you mean`), a value of the wrong type
//! with the type expected, a missing key with an example.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::duration;
use crate::error::{line_column, Error};

/// What a value must be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A whole number.
    Integer,
    /// A whole number of at least 0.
    Unsigned,
    /// A number, whole or not.
    Number,
    /// A string.
    String,
    /// A duration: a string such as `"90s"` ([`duration::parse`] reads it).
    Duration,
    /// A table with these keys.
    Table(&'static [Field]),
    /// An array of these.
    ArrayOf(&'static Kind),
}

/// A key of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// The key.
    pub(crate) name: &'static str,
    /// What its value must be.
    pub(crate) kind: Kind,
    /// `Some(example)` when the key is required: what to write, for the message when it is
    /// missing.
    pub(crate) required: Option<&'static str>,
}

impl Field {
    /// A key that may be left out.
    pub(crate) const fn optional(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            required: None,
        }
    }

    /// A key that must be given; `example` shows one.
    pub(crate) const fn required(name: &'static str, kind: Kind, example: &'static str) -> Self {
        Self {
            name,
            kind,
            required: Some(example),
        }
    }
}

/// Checks `text` (named `file` in errors) against the table of `fields`.
///
/// # Errors
/// The first mistake in document order: a syntax error, an unknown key, a value of the wrong
/// type, then a missing key.
pub(crate) fn check(text: &str, file: &str, fields: &'static [Field]) -> Result<(), Error> {
    let root = DeTable::parse(text).map_err(|e| syntax(file, text, &e))?;
    Walk { text, file }.table(root.get_ref(), None, "", fields)
}

/// A syntax error (or any other error of the `toml` crate) as `FILE:LINE:COL: message`, naming
/// the field at its place when `text` parses.
pub(crate) fn syntax(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return Error::new(format!("{file}: {message}"));
    };
    let (line, column) = line_column(text, span.start);
    let field = DeTable::parse(text)
        .ok()
        .and_then(|root| field_at(root.get_ref(), "", span.start))
        .map(|f| format!("field `{f}`: "))
        .unwrap_or_default();
    Error::new(format!("{file}:{line}:{column}: {field}{message}"))
}

/// The path of the innermost key whose key or value holds byte `offset`.
fn field_at(table: &DeTable<'_>, path: &str, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let here = child(path, key.get_ref());
        if key.span().contains(&offset) {
            return Some(here);
        }
        if !value.span().contains(&offset) && !holds(value.get_ref(), offset) {
            return None;
        }
        inner(value.get_ref(), &here, offset).or(Some(here))
    })
}

/// Whether a table or array value holds `offset` in one of its entries (a `[table]`'s own span
/// does not cover the lines below its header).
fn holds(value: &DeValue<'_>, offset: usize) -> bool {
    match value {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| k.span().contains(&offset) || v.span().contains(&offset)),
        DeValue::Array(a) => a.iter().any(|v| v.span().contains(&offset)),
        _ => false,
    }
}

fn inner(value: &DeValue<'_>, path: &str, offset: usize) -> Option<String> {
    match value {
        DeValue::Table(t) => field_at(t, path, offset),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
            let here = format!("{path}[{i}]");
            if !v.span().contains(&offset) && !holds(v.get_ref(), offset) {
                return None;
            }
            inner(v.get_ref(), &here, offset).or(Some(here))
        }),
        _ => None,
    }
}

struct Walk<'t> {
    text: &'t str,
    file: &'t str,
}

impl Walk<'_> {
    fn error(&self, at: Option<usize>, field: &str, message: String) -> Error {
        match at {
            Some(offset) => {
                let (line, column) = line_column(self.text, offset);
                Error::new(format!(
                    "{}:{line}:{column}: field `{field}`: {message}",
                    self.file
                ))
            }
            None => Error::new(format!("{}: field `{field}`: {message}", self.file)),
        }
    }

    /// Checks a table at `path`; `at` is where it is named (its key), `None` for the root.
    fn table(
        &self,
        table: &DeTable<'_>,
        at: Option<usize>,
        path: &str,
        fields: &'static [Field],
    ) -> Result<(), Error> {
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in entries {
            let name: &str = key.get_ref();
            let here = child(path, name);
            let Some(field) = fields.iter().find(|f| f.name == name) else {
                return Err(self.error(Some(key.span().start), &here, unknown_field(name, fields)));
            };
            self.value(value, key.span().start, &here, field.kind)?;
        }
        for field in fields {
            if let Some(example) = field.required {
                if !table.iter().any(|(k, _)| *k.get_ref() == field.name) {
                    return Err(self.error(
                        at,
                        &child(path, field.name),
                        format!("is missing: expected e.g. {example}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn value(
        &self,
        value: &Spanned<DeValue<'_>>,
        key_at: usize,
        path: &str,
        kind: Kind,
    ) -> Result<(), Error> {
        let found = value.get_ref();
        let at = Some(value.span().start);
        let wrong = |expected: &str, hint: &str| {
            self.error(
                at,
                path,
                format!("expected {expected}, found {}{hint}", kind_of(found)),
            )
        };
        let quoted_number = match found {
            DeValue::String(s) if s.trim().replace('_', "").parse::<f64>().is_ok() => {
                format!(": write {} without quotes", s.trim())
            }
            _ => String::new(),
        };
        match (kind, found) {
            (Kind::Integer, DeValue::Integer(_)) | (Kind::String, DeValue::String(_)) => Ok(()),
            (Kind::Number, DeValue::Integer(_) | DeValue::Float(_)) => Ok(()),
            (Kind::Duration, DeValue::String(_)) => Ok(()),
            (Kind::Unsigned, DeValue::Integer(i)) if !i.as_str().starts_with('-') => Ok(()),
            (Kind::Unsigned, DeValue::Integer(i)) => Err(self.error(
                at,
                path,
                format!(
                    "expected a whole number of at least 0, found {}",
                    i.as_str()
                ),
            )),
            (Kind::Integer | Kind::Unsigned, DeValue::Float(_)) => {
                Err(wrong("a whole number", ": write it without a fraction"))
            }
            (Kind::Integer | Kind::Unsigned, _) => Err(wrong("a whole number", &quoted_number)),
            (Kind::Number, _) => Err(wrong("a number", &quoted_number)),
            (Kind::String, _) => Err(wrong("a string", ": write it in quotes")),
            (Kind::Duration, DeValue::Integer(_) | DeValue::Float(_)) => Err(wrong(
                duration::EXPECTED,
                ": a duration needs a unit and quotes, e.g. \"60s\"",
            )),
            (Kind::Duration, _) => Err(wrong(duration::EXPECTED, "")),
            (Kind::Table(fields), DeValue::Table(t)) => self.table(t, Some(key_at), path, fields),
            (Kind::Table(_), _) => Err(wrong("a table", "")),
            (Kind::ArrayOf(element), DeValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{path}[{i}]");
                    self.value(item, item.span().start, &here, *element)?;
                }
                Ok(())
            }
            (Kind::ArrayOf(Kind::Table(_)), _) => Err(wrong("an array of tables", "")),
            (Kind::ArrayOf(_), _) => Err(wrong("an array", "")),
        }
    }
}

/// The kind of a value, with an article, for "found ..." in messages.
fn kind_of(value: &DeValue<'_>) -> &'static str {
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

/// "unknown field `x`: expected one of a, b, c (did you mean `b`?)", as a limits file says it.
pub(crate) fn unknown_field(name: &str, fields: &[Field]) -> String {
    let allowed: Vec<&str> = fields.iter().map(|f| f.name).collect();
    unknown_field_among(name, &allowed)
}

/// [`unknown_field`] over key names.
pub(crate) fn unknown_field_among(name: &str, allowed: &[&str]) -> String {
    let mut message = format!(
        "unknown field `{}`: expected one of {}",
        name.escape_debug(),
        allowed.join(", ")
    );
    if let Some(near) = suggest(name, allowed) {
        message.push_str(&format!(" (did you mean `{near}`?)"));
    }
    message
}

/// The closest of `candidates` to `word` (compared in lower case), when close enough to be a
/// typo: the rule of the library's limits files ([`tokengate::config::suggest`]).
pub(crate) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    tokengate::config::suggest(&word.to_lowercase(), candidates)
}

/// `path.key`, the key quoted unless it is bare.
fn child(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("\"{}\"", key.escape_debug())
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: &[Field] = &[
        Field::required("rate", Kind::Number, "rate = 5"),
        Field::optional("process", Kind::String),
    ];
    const ROOT: &[Field] = &[
        Field::required("count", Kind::Integer, "count = 1"),
        Field::optional("seed", Kind::Unsigned),
        Field::optional("wait", Kind::Duration),
        Field::required("inner", Kind::Table(INNER), "[inner] rate = 5"),
        Field::optional("list", Kind::ArrayOf(&Kind::Table(INNER))),
    ];

    fn err(text: &str) -> String {
        check(text, "f.toml", ROOT).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_file_passes() {
        let text = "count = 1\nseed = 3\nwait = \"1d\"\n[inner]\nrate = 2.5\n[[list]]\nrate = 1\n";
        assert_eq!(check(text, "f.toml", ROOT), Ok(()));
    }

    #[test]
    fn unknown_keys_name_the_field_and_the_closest() {
        assert_eq!(
            err("count = 1\n[inner]\nrat = 2\n"),
            "f.toml:3:1: field `inner.rat`: unknown field `rat`: expected one of rate, process (did you mean `rate`?)"
        );
        assert_eq!(
            err("count = 1\n[inner]\nrate = 1\n[[list]]\nrate = 1\n[[list]]\nproces = \"x\"\n"),
            "f.toml:7:1: field `list[1].proces`: unknown field `proces`: expected one of rate, process (did you mean `process`?)"
        );
        assert!(err("count = 1\nzzz = 1\n[inner]\nrate = 1\n")
            .ends_with("expected one of count, seed, wait, inner, list"));
    }

    #[test]
    fn wrong_types_say_what_is_expected() {
        assert_eq!(
            err("count = \"64\"\n[inner]\nrate = 1\n"),
            "f.toml:1:9: field `count`: expected a whole number, found a string: write 64 without quotes"
        );
        assert_eq!(
            err("count = 1\nseed = -3\n[inner]\nrate = 1\n"),
            "f.toml:2:8: field `seed`: expected a whole number of at least 0, found -3"
        );
        assert!(err("count = 1\nwait = 60\n[inner]\nrate = 1\n")
            .contains("field `wait`: expected a duration such as"));
        assert!(err("count = 1\ninner = 5\n").contains("field `inner`: expected a table"));
    }

    #[test]
    fn a_missing_key_is_named_with_an_example() {
        assert_eq!(
            err("[inner]\nrate = 1\n"),
            "f.toml: field `count`: is missing: expected e.g. count = 1"
        );
        assert_eq!(
            err("count = 1\n[inner]\nprocess = \"x\"\n"),
            "f.toml:2:2: field `inner.rate`: is missing: expected e.g. rate = 5"
        );
    }

    #[test]
    fn a_serde_error_is_placed_at_its_field() {
        let text = "count = 1\n[inner]\nrate = 1\n";
        let root = DeTable::parse(text).unwrap();
        assert_eq!(
            field_at(root.get_ref(), "", text.find("1\n[").unwrap()),
            Some("count".to_owned())
        );
        assert_eq!(
            field_at(root.get_ref(), "", text.rfind('1').unwrap()),
            Some("inner.rate".to_owned())
        );
    }
}

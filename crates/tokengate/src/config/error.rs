//! What is wrong with a configuration file, and where.

use std::fmt;

use crate::error::BuildError;

/// A mistake in a configuration file: where it is (file, line, column, field) and what is
/// expected instead.
///
/// Displayed as `FILE:LINE:COL: field `FIELD`: MESSAGE`, the form editors and terminals turn
/// into a link:
///
/// ```
/// use tokengate::config::{Config, ErrorKind};
///
/// let err = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 0\n", "limits.toml")
///     .unwrap_err();
/// assert_eq!((err.line, err.column), (2, 23));
/// assert_eq!(err.field, "models.gpt-4o.requests_per_minute");
/// assert_eq!(err.kind, ErrorKind::InvalidValue);
/// assert!(err.to_string().starts_with(
///     "limits.toml:2:23: field `models.gpt-4o.requests_per_minute`: expected a whole number of at least 1"
/// ));
/// ```
///
/// `Debug` reads the same (the struct's fields with `{:#?}`), so that `main` returning a
/// `Result<_, ConfigError>`, or a `Box<dyn Error>` holding one, prints the message, not the
/// struct:
/// ```
/// use tokengate::config::Config;
///
/// let err = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 0\n", "limits.toml").unwrap_err();
/// assert_eq!(format!("{err:?}"), err.to_string());
/// assert!(format!("{err:#?}").starts_with("ConfigError {"));
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The file, as named to [`Config::from_toml_str`](super::Config::from_toml_str) or the
    /// path given to [`Config::from_file`](super::Config::from_file).
    pub file: String,
    /// The line, from 1; 0 when the error is about the whole file (it could not be read).
    pub line: usize,
    /// The column, from 1, in characters; 0 when `line` is 0.
    pub column: usize,
    /// The field as a TOML path (`models."gpt-4o".limits[0].per`, indices from 0); empty
    /// when the mistake is not in one field (a syntax error, an unreadable file).
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
    /// The kind of mistake.
    pub kind: ErrorKind,
}

/// The kinds of [`ConfigError`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    Io(std::io::ErrorKind),
    /// The text is not valid TOML (this includes a key or table written twice).
    Syntax,
    /// A field the schema does not have; the message lists those allowed.
    UnknownField,
    /// A value of the wrong type (a string for a number, ...).
    WrongType,
    /// A value of the right type that is not allowed: 0 or negative amounts, bad durations,
    /// unknown algorithms, malformed patterns.
    InvalidValue,
    /// A required field is missing.
    Missing,
    /// The same model (ignoring case), or the same limit (dimension and period), given twice.
    Duplicate,
    /// A model name covered by two families, or listed both in `models` and as an exact name
    /// of a family.
    Overlap,
    /// A policy table, or the whole file, with no limit.
    Empty,
    /// The library refused a limit ([`Policy`](crate::Policy) validation).
    Policy(Box<BuildError>),
    /// The file asks for what this build of the library lacks: a `[store]` without the
    /// `redis` feature.
    Unsupported,
    /// A reload ([`Limiter::try_reload`](crate::Limiter::try_reload)) whose `[store]` is not
    /// the one the limiter was built with: a limiter's store is fixed when it is built.
    StoreChanged,
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        f.debug_struct("ConfigError")
            .field("file", &self.file)
            .field("line", &self.line)
            .field("column", &self.column)
            .field("field", &self.field)
            .field("message", &self.message)
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line != 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Policy(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// The line and column (both from 1, the column in characters) of a byte offset. Offsets past
/// the end or inside a character are clamped; never panics.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    // Count characters: every byte that does not continue a UTF-8 sequence.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    (line, column)
}

/// Appends `key` to a TOML path, quoting it unless it is a bare key.
pub(super) fn child(path: &str, key: &str) -> String {
    let key = quote_key(key);
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Appends an array index to a TOML path.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A key as TOML writes it: bare when it can be, else a basic string.
pub(super) fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return key.to_owned();
    }
    let mut quoted = String::with_capacity(key.len() + 2);
    quoted.push('"');
    for c in key.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_and_clamps() {
        let text = "ab\nçd\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 2)); // after the two-byte ç
        assert_eq!(line_column(text, 4), (2, 2)); // inside ç: clamped to it
        assert_eq!(line_column(text, 99), (3, 1));
    }

    #[test]
    fn keys_are_quoted_when_not_bare() {
        assert_eq!(child("", "models"), "models");
        assert_eq!(child("models", "gpt-4o"), "models.gpt-4o");
        assert_eq!(
            child("models", "anthropic.claude"),
            "models.\"anthropic.claude\""
        );
        assert_eq!(quote_key(""), "\"\"");
        assert_eq!(quote_key("a\"b\n"), "\"a\\\"b\\u000A\"");
        assert_eq!(index("m.limits", 2), "m.limits[2]");
    }
}

//! Reading the fields of a reply's JSON: exact `u64` counts (or the reason they are not),
//! objects, strings and error messages, and the shortened excerpts errors quote.

use serde_json::{Map, Number, Value};

use super::UsageError;

/// The longest excerpt of a value or message kept in an error, in characters.
const EXCERPT_CHARS: usize = 160;
/// 2^64: a JSON number at or above it does not fit in a `u64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

// Reasons a field is invalid, one wording each.
const NEGATIVE: &str = "negative number";
const NOT_INTEGER: &str = "not an integer";
const TOO_LARGE: &str = "number too large";
const NOT_A_NUMBER: &str = "not a number";
pub(super) const NOT_AN_OBJECT: &str = "not an object";

/// The key a path ends with.
pub(super) fn key(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// A count at `path` in `map`: absent or null is `None`; anything but a `u64` is an error.
pub(super) fn count(
    map: &Map<String, Value>,
    path: &'static str,
) -> Result<Option<u64>, UsageError> {
    match map.get(key(path)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => number(n, path).map(Some),
        Some(other) => Err(UsageError::InvalidField {
            path,
            reason: NOT_A_NUMBER,
            found: excerpt(other),
        }),
    }
}

pub(super) fn required(map: &Map<String, Value>, path: &'static str) -> Result<u64, UsageError> {
    count(map, path)?.ok_or(UsageError::MissingField { path })
}

fn number(n: &Number, path: &'static str) -> Result<u64, UsageError> {
    if let Some(n) = n.as_u64() {
        return Ok(n);
    }
    let reason = if n.is_i64() {
        NEGATIVE
    } else {
        match n.as_f64() {
            Some(f) if f.is_sign_negative() => NEGATIVE,
            Some(f) if f >= TWO_POW_64 => TOO_LARGE,
            _ => NOT_INTEGER,
        }
    };
    Err(UsageError::InvalidField {
        path,
        reason,
        found: n.to_string(),
    })
}

/// The object at the key `path` ends with: absent or null is `None`.
pub(super) fn object_field_at<'a>(
    map: &'a Map<String, Value>,
    path: &'static str,
) -> Result<Option<&'a Map<String, Value>>, UsageError> {
    if path.is_empty() {
        return Ok(Some(map));
    }
    match map.get(key(path)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(other) => Err(UsageError::InvalidField {
            path,
            reason: NOT_AN_OBJECT,
            found: excerpt(other),
        }),
    }
}

/// The object under `key` (a key of the reply's top level or an event's): absent or null is
/// `None`.
pub(super) fn object_field<'a>(
    map: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a Map<String, Value>>, UsageError> {
    object_field_at(map, key)
}

pub(super) fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// "type: message" of a non-null `error` object (OpenAI, Anthropic), or of the object itself
/// when it is an error event (`"type": "error"` with `code` and `message`).
pub(super) fn error_message(map: &Map<String, Value>) -> Option<String> {
    let error = match map.get("error") {
        Some(Value::Object(error)) => error,
        Some(Value::Null) | None if str_field(map, "type") == Some("error") => map,
        Some(Value::String(message)) => return Some(shorten(message.clone())),
        _ => return None,
    };
    let kind = str_field(error, "type")
        .filter(|k| *k != "error")
        .or_else(|| str_field(error, "code"));
    let message = str_field(error, "message");
    Some(shorten(match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_owned(),
        (Some(kind), None) => kind.to_owned(),
        (None, None) => excerpt_map(error),
    }))
}

pub(super) fn excerpt(value: &Value) -> String {
    shorten(value.to_string())
}

pub(super) fn excerpt_map(map: &Map<String, Value>) -> String {
    excerpt(&Value::Object(map.clone()))
}

/// At most [`EXCERPT_CHARS`] characters, with `...` when cut.
pub(super) fn shorten(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(EXCERPT_CHARS) {
        text.truncate(at);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Number {
        match serde_json::from_str(text) {
            Ok(Value::Number(n)) => n,
            other => panic!("{text} is not a number: {other:?}"),
        }
    }

    fn reason_of(text: &str) -> Result<u64, &'static str> {
        number(&n(text), "usage.x").map_err(|e| match e {
            UsageError::InvalidField { reason, path, .. } => {
                assert_eq!(path, "usage.x");
                reason
            }
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn numbers_are_u64_or_say_why_not() {
        assert_eq!(reason_of("0"), Ok(0));
        assert_eq!(reason_of("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(reason_of("18446744073709551616"), Err(TOO_LARGE));
        assert_eq!(reason_of("1e19"), Err(NOT_INTEGER)); // below 2^64, but written as a float
        assert_eq!(reason_of("1e20"), Err(TOO_LARGE));
        assert_eq!(reason_of("-1"), Err(NEGATIVE));
        assert_eq!(reason_of("-0"), Err(NEGATIVE));
        assert_eq!(reason_of("-99999999999999999999"), Err(NEGATIVE));
        assert_eq!(reason_of("1.5"), Err(NOT_INTEGER));
        assert_eq!(reason_of("12.0"), Err(NOT_INTEGER));
    }

    #[test]
    fn shorten_cuts_at_a_character() {
        assert_eq!(shorten("abc".to_owned()), "abc");
        let long = "ü".repeat(EXCERPT_CHARS + 1);
        let short = shorten(long);
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 3);
        assert!(short.ends_with("ü..."));
        assert_eq!(shorten("x".repeat(EXCERPT_CHARS)).len(), EXCERPT_CHARS);
    }

    #[test]
    fn error_messages_of_both_providers() {
        let map = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        let cases = [
            (
                r#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#,
                Some("requests: Rate limit reached"),
            ),
            (
                r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
                Some("overloaded_error: Overloaded"),
            ),
            (
                r#"{"type": "error", "code": "server_error", "message": "boom", "sequence_number": 3}"#,
                Some("server_error: boom"),
            ),
            (
                r#"{"error": {"code": "server_error"}}"#,
                Some("server_error"),
            ),
            (r#"{"error": "plain"}"#, Some("plain")),
            (r#"{"error": {"param": 1}}"#, Some(r#"{"param":1}"#)),
            (r#"{"error": null}"#, None),
            (r#"{"error": 5}"#, None),
            (r#"{"type": "message"}"#, None),
        ];
        for (text, message) in cases {
            assert_eq!(error_message(&map(text)).as_deref(), message, "{text}");
        }
    }
}

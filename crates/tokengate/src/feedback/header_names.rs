//! Which rate-limit header means what: the names OpenAI (`x-ratelimit-*`) and Anthropic
//! (`anthropic-ratelimit-*`) use for each dimension's limit, remainder and reset, and
//! `retry-after`, `retry-after-ms`; and which grammar of `header_values` each is written in.

use std::time::{Duration, SystemTime};

use super::header_values::{delay, go_duration, parse_count, parse_rfc3339};
use crate::Dimension;

/// Which part of a limit a header gives, and how its reset is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Limit,
    Remaining,
    /// Anthropic's token figures: rounded to the nearest thousand.
    RemainingRounded,
    /// OpenAI: a Go duration from now.
    ResetDuration,
    /// Anthropic: an RFC 3339 instant.
    ResetInstant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldValue {
    Limit(u64),
    /// The figure, and how far the true one may be above it.
    Remaining(u64, u64),
    Reset(Duration),
}

/// What a header name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Limit(Dimension, Field),
    RetryAfter,
    RetryAfterMs,
    /// In a rate-limit family, but not a header this module reads.
    UnknownRateLimit,
    /// Any other header: skipped silently.
    Other,
}

pub(super) fn classify(name: &[u8]) -> Kind {
    if name.eq_ignore_ascii_case(b"retry-after") {
        Kind::RetryAfter
    } else if name.eq_ignore_ascii_case(b"retry-after-ms") {
        Kind::RetryAfterMs
    } else if let Some(rest) = strip_prefix_ignore_case(name, b"x-ratelimit-") {
        classify_openai(rest).unwrap_or(Kind::UnknownRateLimit)
    } else if let Some(rest) = strip_prefix_ignore_case(name, b"anthropic-ratelimit-") {
        classify_anthropic(rest).unwrap_or(Kind::UnknownRateLimit)
    } else {
        Kind::Other
    }
}

/// `{limit,remaining,reset}-{requests,tokens}`.
fn classify_openai(rest: &[u8]) -> Option<Kind> {
    let (field, dimension) = if let Some(d) = strip_prefix_ignore_case(rest, b"limit-") {
        (Field::Limit, d)
    } else if let Some(d) = strip_prefix_ignore_case(rest, b"remaining-") {
        (Field::Remaining, d)
    } else if let Some(d) = strip_prefix_ignore_case(rest, b"reset-") {
        (Field::ResetDuration, d)
    } else {
        return None;
    };
    let dimension = if dimension.eq_ignore_ascii_case(b"requests") {
        Dimension::Requests
    } else if dimension.eq_ignore_ascii_case(b"tokens") {
        Dimension::Tokens
    } else {
        return None;
    };
    Some(Kind::Limit(dimension, field))
}

/// How far above its token `remaining` figures Anthropic's true figure may be: it rounds them
/// to the nearest thousand ("rounded to the nearest thousand",
/// <https://docs.anthropic.com/en/api/rate-limits#response-headers>).
const ANTHROPIC_TOKEN_ROUNDING: u64 = 500;

/// `{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
fn classify_anthropic(rest: &[u8]) -> Option<Kind> {
    let (dimension, field) = if let Some(d) = strip_suffix_ignore_case(rest, b"-limit") {
        (d, Field::Limit)
    } else if let Some(d) = strip_suffix_ignore_case(rest, b"-remaining") {
        (d, Field::Remaining)
    } else if let Some(d) = strip_suffix_ignore_case(rest, b"-reset") {
        (d, Field::ResetInstant)
    } else {
        return None;
    };
    let dimension = if dimension.eq_ignore_ascii_case(b"requests") {
        Dimension::Requests
    } else if dimension.eq_ignore_ascii_case(b"tokens") {
        Dimension::Tokens
    } else if dimension.eq_ignore_ascii_case(b"input-tokens") {
        Dimension::InputTokens
    } else if dimension.eq_ignore_ascii_case(b"output-tokens") {
        Dimension::OutputTokens
    } else {
        return None;
    };
    let field = match (field, &dimension) {
        (Field::Remaining, Dimension::Requests) => Field::Remaining,
        (Field::Remaining, _) => Field::RemainingRounded,
        (other, _) => other,
    };
    Some(Kind::Limit(dimension, field))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, tail) = s.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(tail)
}

fn strip_suffix_ignore_case<'a>(s: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let (head, tail) = s.split_at_checked(s.len().checked_sub(suffix.len())?)?;
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

pub(super) fn parse_field(
    field: Field,
    text: &str,
    now: SystemTime,
) -> Result<FieldValue, &'static str> {
    match field {
        Field::Limit => parse_count(text).map(FieldValue::Limit),
        Field::Remaining => parse_count(text).map(|n| FieldValue::Remaining(n, 0)),
        Field::RemainingRounded => {
            parse_count(text).map(|n| FieldValue::Remaining(n, ANTHROPIC_TOKEN_ROUNDING))
        }
        Field::ResetDuration => go_duration(text).map(FieldValue::Reset),
        Field::ResetInstant => parse_rfc3339(text).map(|at| FieldValue::Reset(delay(now, at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_case_insensitively() {
        use Dimension::*;
        let cases = [
            (
                "x-ratelimit-limit-requests",
                Kind::Limit(Requests, Field::Limit),
            ),
            (
                "X-RateLimit-Remaining-Tokens",
                Kind::Limit(Tokens, Field::Remaining),
            ),
            (
                "X-RATELIMIT-RESET-TOKENS",
                Kind::Limit(Tokens, Field::ResetDuration),
            ),
            (
                "anthropic-ratelimit-requests-reset",
                Kind::Limit(Requests, Field::ResetInstant),
            ),
            (
                "Anthropic-Ratelimit-Input-Tokens-Limit",
                Kind::Limit(InputTokens, Field::Limit),
            ),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                Kind::Limit(OutputTokens, Field::RemainingRounded),
            ),
            (
                "anthropic-ratelimit-requests-remaining",
                Kind::Limit(Requests, Field::Remaining),
            ),
            (
                "anthropic-ratelimit-tokens-limit",
                Kind::Limit(Tokens, Field::Limit),
            ),
            ("Retry-After", Kind::RetryAfter),
            ("RETRY-AFTER-MS", Kind::RetryAfterMs),
            (
                "x-ratelimit-limit-tokens_usage_based",
                Kind::UnknownRateLimit,
            ),
            ("x-ratelimit-limit", Kind::UnknownRateLimit),
            ("x-ratelimit-", Kind::UnknownRateLimit),
            ("x-ratelimit-requests-limit", Kind::UnknownRateLimit),
            ("anthropic-ratelimit-limit", Kind::UnknownRateLimit),
            ("anthropic-ratelimit--limit", Kind::UnknownRateLimit),
            ("anthropic-ratelimit-unified-status", Kind::UnknownRateLimit),
            ("anthropic-ratelimit-limit-requests", Kind::UnknownRateLimit),
            ("x-ratelimit", Kind::Other),
            ("retry-after-s", Kind::Other),
            (" retry-after", Kind::Other),
            ("content-type", Kind::Other),
            ("", Kind::Other),
        ];
        for (name, kind) in cases {
            assert_eq!(classify(name.as_bytes()), kind, "{name}");
        }
    }
}

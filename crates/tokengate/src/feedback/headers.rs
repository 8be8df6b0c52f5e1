//! Rate-limit response headers of OpenAI, Anthropic and `Retry-After`, read into one report.
//!
//! Which header means what is `header_names`; how each value is written, `header_values`.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::header_names::{classify, parse_field, FieldValue, Kind};
use super::header_values::{parse_decimal, parse_retry_after, NANOS_PER_MILLI};
use crate::Dimension;

/// What one provider response said about its limits.
///
/// Built by [`ProviderReport::from_headers`] from the headers of any response, successful or
/// 429. Headers it does not know are skipped; headers of the rate-limit families it cannot
/// read land in [`ignored`](Self::ignored), never in an error.
///
/// # Examples
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokengate::feedback::ProviderReport;
/// use tokengate::Dimension;
///
/// let headers = [
///     ("x-ratelimit-limit-requests", "60"),
///     ("x-ratelimit-remaining-requests", "59"),
///     ("x-ratelimit-reset-requests", "1s"),
///     ("retry-after", "2"),
/// ];
/// let report = ProviderReport::from_headers(headers, SystemTime::now());
/// let requests = report.limit(&Dimension::Requests).expect("requests were reported");
/// assert_eq!(requests.remaining, Some(59));
/// assert_eq!(report.retry_after, Some(Duration::from_secs(2)));
/// assert!(report.ignored.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderReport {
    /// One entry per dimension that at least one well-formed rate-limit header described, in
    /// the order the dimensions were first mentioned.
    pub limits: Vec<ReportedLimit>,
    /// How long the provider asked to wait: from `retry-after-ms` when it is well-formed, else
    /// from `retry-after` (delay-seconds, possibly fractional, or an HTTP-date).
    pub retry_after: Option<Duration>,
    /// Rate-limit headers whose value (or name) could not be read, in the order given.
    pub ignored: Vec<IgnoredHeader>,
}

/// What the provider said about one dimension.
///
/// # Examples
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokengate::feedback::{ProviderReport, ReportedLimit};
/// use tokengate::Dimension;
///
/// let report = ProviderReport::from_headers(
///     [("x-ratelimit-remaining-tokens", "149984"), ("x-ratelimit-reset-tokens", "6m0s")],
///     SystemTime::now(),
/// );
/// assert_eq!(
///     report.limits,
///     [ReportedLimit {
///         dimension: Dimension::Tokens,
///         limit: None,
///         remaining: Some(149_984),
///         remaining_slack: 0,
///         reset_after: Some(Duration::from_secs(360)),
///     }]
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedLimit {
    /// What the limit counts.
    pub dimension: Dimension,
    /// The provider's limit (`...-limit`): units per the provider's period.
    pub limit: Option<u64>,
    /// Units left now (`...-remaining`), as written: see
    /// [`remaining_slack`](Self::remaining_slack).
    pub remaining: Option<u64>,
    /// How far the units really left may be above `remaining`: 0 when the figure is exact;
    /// 500 for Anthropic's token figures, which it rounds to the nearest thousand. The
    /// limiter reads `remaining + remaining_slack`: a rounded figure never lowers it.
    pub remaining_slack: u64,
    /// Time from the response until the limit is replenished (`...-reset`): OpenAI sends a
    /// duration, Anthropic an instant, which becomes the time from `now` to it (zero if it is
    /// already past).
    pub reset_after: Option<Duration>,
}

/// A rate-limit header that could not be read, kept so the caller can log it.
///
/// # Examples
/// ```
/// use std::time::SystemTime;
/// use tokengate::feedback::{IgnoredHeader, ProviderReport};
///
/// let report = ProviderReport::from_headers(
///     [("X-RateLimit-Remaining-Requests", "1.5")],
///     SystemTime::now(),
/// );
/// assert_eq!(
///     report.ignored,
///     [IgnoredHeader {
///         name: "X-RateLimit-Remaining-Requests".to_owned(),
///         value: "1.5".to_owned(),
///         reason: "not an integer",
///     }]
/// );
/// assert_eq!(
///     report.ignored[0].to_string(),
///     r#"ignored header X-RateLimit-Remaining-Requests: "1.5": not an integer"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredHeader {
    /// The header's name as given (bytes that are not UTF-8 replaced by U+FFFD).
    pub name: String,
    /// The header's value as given (bytes that are not UTF-8 replaced by U+FFFD).
    pub value: String,
    /// Why it was ignored, e.g. `"negative number"` or `"unknown unit"`.
    pub reason: &'static str,
}

impl fmt::Display for IgnoredHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ignored header {}: {:?}: {}",
            self.name, self.value, self.reason
        )
    }
}

// Reasons of the report's own, one wording each (those of values are in `header_values`).
const NOT_UTF8: &str = "not UTF-8";
const UNKNOWN_HEADER: &str = "unknown rate-limit header";

impl ProviderReport {
    /// Reads rate-limit headers.
    ///
    /// `headers` are (name, value) pairs as strings or bytes: `[(&str, &str)]`,
    /// `&HashMap<String, String>`, or `&http::HeaderMap` (what `reqwest` and `hyper` responses
    /// return from `headers()`), whose names and values are `AsRef<[u8]>`. Names match
    /// case-insensitively; values may have surrounding whitespace.
    /// `now` is the wall-clock time of the response: RFC 3339 and HTTP-date instants become
    /// the delay from `now` to them, and instants already past become [`Duration::ZERO`].
    ///
    /// | headers | dimension | values |
    /// |---|---|---|
    /// | `x-ratelimit-{limit,remaining,reset}-requests` (OpenAI) | [`Dimension::Requests`] | integers; reset a Go duration (`1s`, `6m0s`, `2m59.56s`) |
    /// | `x-ratelimit-{limit,remaining,reset}-tokens` (OpenAI) | [`Dimension::Tokens`] | same |
    /// | `anthropic-ratelimit-requests-{limit,remaining,reset}` | [`Dimension::Requests`] | integers; reset an RFC 3339 instant |
    /// | `anthropic-ratelimit-tokens-{...}` | [`Dimension::Tokens`] (the most restrictive token limit) | same |
    /// | `anthropic-ratelimit-input-tokens-{...}` | [`Dimension::InputTokens`] | same |
    /// | `anthropic-ratelimit-output-tokens-{...}` | [`Dimension::OutputTokens`] | same |
    /// | `retry-after-ms` | [`retry_after`](Self::retry_after) | milliseconds, possibly fractional |
    /// | `retry-after` | [`retry_after`](Self::retry_after) when `retry-after-ms` is absent or malformed | seconds, possibly fractional, or an HTTP-date |
    ///
    /// Counts are plain integers (`1*DIGIT`). Durations are exact: a fraction finer than a
    /// nanosecond rounds up, so a wait is never shorter than the provider said. When a header
    /// repeats, the most cautious value wins: the smallest limit and remainder, the longest
    /// reset and retry delay.
    ///
    /// Never fails and never panics: a malformed value, an unknown `x-ratelimit-*` or
    /// `anthropic-ratelimit-*` header and a value that is not UTF-8 are recorded in
    /// [`ignored`](Self::ignored) with the reason; other headers are skipped silently.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokengate::feedback::ProviderReport;
    /// use tokengate::Dimension;
    ///
    /// // When the response arrived (or its `date` header): 2024-06-04T18:31:15Z.
    /// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_525_875);
    /// let headers = [
    ///     ("Anthropic-RateLimit-Input-Tokens-Limit", "40000"),
    ///     ("anthropic-ratelimit-input-tokens-remaining", " 39000 "),
    ///     ("anthropic-ratelimit-input-tokens-reset", "2024-06-04T18:31:45Z"),
    ///     ("anthropic-ratelimit-output-tokens-remaining", "-3"),
    ///     ("retry-after", "30"),
    ///     ("content-type", "application/json"),
    /// ];
    /// let report = ProviderReport::from_headers(headers, now);
    /// let input = report.limit(&Dimension::InputTokens).expect("reported");
    /// assert_eq!((input.limit, input.remaining), (Some(40_000), Some(39_000)));
    /// assert_eq!(input.reset_after, Some(Duration::from_secs(30)));
    /// assert_eq!(report.retry_after, Some(Duration::from_secs(30)));
    /// assert_eq!(report.limit(&Dimension::OutputTokens), None);
    /// assert_eq!(report.ignored[0].reason, "negative number");
    /// ```
    pub fn from_headers<I, K, V>(headers: I, now: SystemTime) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut report = ProviderReport::default();
        let mut retry_after_ms = None;
        let mut retry_after = None;
        for (name, value) in headers {
            let (name, value) = (name.as_ref(), value.as_ref());
            let kind = classify(name);
            if kind == Kind::Other {
                continue;
            }
            let ignore = |reason| IgnoredHeader {
                name: String::from_utf8_lossy(name).into_owned(),
                value: String::from_utf8_lossy(value).into_owned(),
                reason,
            };
            let Ok(text) = std::str::from_utf8(value) else {
                report.ignored.push(ignore(NOT_UTF8));
                continue;
            };
            let text = text.trim_ascii();
            let outcome = match kind {
                Kind::Other => continue,
                Kind::UnknownRateLimit => Err(UNKNOWN_HEADER),
                Kind::RetryAfterMs => parse_decimal(text, NANOS_PER_MILLI)
                    .map(|d| retry_after_ms = max_of(retry_after_ms, d)),
                Kind::RetryAfter => {
                    parse_retry_after(text, now).map(|d| retry_after = max_of(retry_after, d))
                }
                Kind::Limit(dimension, field) => {
                    parse_field(field, text, now).map(|value| report.merge(dimension, value))
                }
            };
            if let Err(reason) = outcome {
                report.ignored.push(ignore(reason));
            }
        }
        report.retry_after = retry_after_ms.or(retry_after);
        report
    }

    /// The entry for `dimension`, if the provider reported on it.
    ///
    /// # Examples
    /// ```
    /// use std::time::SystemTime;
    /// use tokengate::feedback::ProviderReport;
    /// use tokengate::Dimension;
    ///
    /// let report = ProviderReport::from_headers(
    ///     [("anthropic-ratelimit-requests-remaining", "49")],
    ///     SystemTime::now(),
    /// );
    /// assert_eq!(report.limit(&Dimension::Requests).and_then(|l| l.remaining), Some(49));
    /// assert!(report.limit(&Dimension::Tokens).is_none());
    /// ```
    pub fn limit(&self, dimension: &Dimension) -> Option<&ReportedLimit> {
        self.limits.iter().find(|l| &l.dimension == dimension)
    }

    /// How long a 429 with these headers asks to wait: its `retry_after`; without one, until
    /// the latest reset of a dimension it reports exhausted (`remaining` 0); without either,
    /// one second.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokengate::feedback::ProviderReport;
    ///
    /// let now = SystemTime::now();
    /// let ms = ProviderReport::from_headers([("retry-after-ms", "250"), ("retry-after", "1")], now);
    /// assert_eq!(ms.wait_after_429(), Duration::from_millis(250));
    /// let reset = ProviderReport::from_headers(
    ///     [("x-ratelimit-remaining-tokens", "0"), ("x-ratelimit-reset-tokens", "1.5s")],
    ///     now,
    /// );
    /// assert_eq!(reset.wait_after_429(), Duration::from_millis(1_500));
    /// assert_eq!(ProviderReport::default().wait_after_429(), Duration::from_secs(1));
    /// ```
    pub fn wait_after_429(&self) -> Duration {
        let exhausted = self
            .limits
            .iter()
            .filter(|r| r.remaining == Some(0))
            .filter_map(|r| r.reset_after)
            .max();
        self.retry_after
            .or(exhausted)
            .unwrap_or(Duration::from_secs(1))
    }

    /// Folds one well-formed value into the entry for `dimension`, cautiously.
    fn merge(&mut self, dimension: Dimension, value: FieldValue) {
        let index = match self.limits.iter().position(|l| l.dimension == dimension) {
            Some(index) => index,
            None => {
                self.limits.push(ReportedLimit {
                    dimension,
                    limit: None,
                    remaining: None,
                    remaining_slack: 0,
                    reset_after: None,
                });
                self.limits.len() - 1
            }
        };
        let Some(entry) = self.limits.get_mut(index) else {
            return;
        };
        match value {
            FieldValue::Limit(n) => entry.limit = min_of(entry.limit, n),
            FieldValue::Remaining(n, slack) => {
                entry.remaining = min_of(entry.remaining, n);
                entry.remaining_slack = entry.remaining_slack.max(slack);
            }
            FieldValue::Reset(d) => entry.reset_after = max_of(entry.reset_after, d),
        }
    }
}

fn min_of<T: Ord>(old: Option<T>, new: T) -> Option<T> {
    Some(match old {
        Some(old) => old.min(new),
        None => new,
    })
}

fn max_of<T: Ord>(old: Option<T>, new: T) -> Option<T> {
    Some(match old {
        Some(old) => old.max(new),
        None => new,
    })
}

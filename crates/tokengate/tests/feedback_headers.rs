//! Reading providers' rate-limit headers ([`tokengate::feedback`]): full header sets as OpenAI,
//! Groq, Azure OpenAI and Anthropic send them, every format of reset and `retry-after`, names
//! in any case, malformed values of every kind (each ignored with its reason, never an error
//! or a panic), and properties: Go durations round-trip through a formatter written here from
//! Go's `Duration.String`, instants written by `humantime` and `httpdate` come back as the
//! right delays, and no name or value panics the reader.
//!
//! Run: `cargo test -p tokengate --test feedback_headers` (256 cases per property, or
//! `PROPTEST_CASES`). Failures are persisted to
//! `crates/tokengate/proptest-regressions/feedback_headers.txt` and replayed first.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tokengate::feedback::{parse_go_duration, IgnoredHeader, ProviderReport, ReportedLimit};
use tokengate::Dimension;

mod common;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// 2024-06-04T18:31:15Z, the `date` of the Anthropic samples.
fn anthropic_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + secs(1_717_525_875)
}

fn limit(
    dimension: Dimension,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_after: Option<Duration>,
) -> ReportedLimit {
    ReportedLimit {
        dimension,
        limit,
        remaining,
        remaining_slack: 0,
        reset_after,
    }
}

/// An Anthropic token limit: its remaining figure is rounded to the nearest thousand.
fn rounded(mut limit: ReportedLimit) -> ReportedLimit {
    limit.remaining_slack = 500;
    limit
}

fn ignored(name: &str, value: &str, reason: &'static str) -> IgnoredHeader {
    IgnoredHeader {
        name: name.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

fn report(headers: &[(&str, &str)], now: SystemTime) -> ProviderReport {
    ProviderReport::from_headers(headers.iter().copied(), now)
}

/// The report of a single header.
fn one(name: &str, value: &str) -> ProviderReport {
    report(&[(name, value)], anthropic_now())
}

// ---------------------------------------------------------------------------------------------
// Real header sets.
// ---------------------------------------------------------------------------------------------

/// A chat completion from OpenAI, every header as sent (the figures of OpenAI's rate-limit
/// guide).
const OPENAI_OK: &[(&str, &str)] = &[
    ("date", "Tue, 04 Jun 2024 18:31:15 GMT"),
    ("content-type", "application/json"),
    ("transfer-encoding", "chunked"),
    ("connection", "keep-alive"),
    ("access-control-expose-headers", "X-Request-ID"),
    ("openai-organization", "user-3kq0pwr7lzhx0ewnmc2mwmb9"),
    ("openai-processing-ms", "412"),
    ("openai-version", "2020-10-01"),
    ("strict-transport-security", "max-age=15552000; includeSubDomains; preload"),
    ("x-ratelimit-limit-requests", "60"),
    ("x-ratelimit-limit-tokens", "150000"),
    ("x-ratelimit-remaining-requests", "59"),
    ("x-ratelimit-remaining-tokens", "149984"),
    ("x-ratelimit-reset-requests", "1s"),
    ("x-ratelimit-reset-tokens", "6m0s"),
    ("x-request-id", "req_5c8b0d6f1e2a4b39a7c1d0e9f8a7b6c5"),
    ("cf-cache-status", "DYNAMIC"),
    (
        "set-cookie",
        "__cf_bm=Zx1.abc; path=/; expires=Tue, 04-Jun-24 19:01:15 GMT; domain=.api.openai.com; HttpOnly; Secure",
    ),
    ("x-content-type-options", "nosniff"),
    ("server", "cloudflare"),
    ("cf-ray", "88f0e1b2c3d4e5f6-SJC"),
    ("alt-svc", "h3=\":443\"; ma=86400"),
];

#[test]
fn openai_success_headers() {
    let got = report(OPENAI_OK, SystemTime::now());
    assert_eq!(
        got,
        ProviderReport {
            limits: vec![
                limit(Dimension::Requests, Some(60), Some(59), Some(secs(1))),
                limit(
                    Dimension::Tokens,
                    Some(150_000),
                    Some(149_984),
                    Some(secs(360))
                ),
            ],
            retry_after: None,
            ignored: vec![],
        }
    );
    assert_eq!(
        got.limit(&Dimension::Tokens).and_then(|l| l.remaining),
        Some(149_984)
    );
    assert_eq!(got.limit(&Dimension::InputTokens), None);
}

#[test]
fn openai_429_prefers_retry_after_ms() {
    let headers = [
        ("date", "Tue, 04 Jun 2024 18:31:15 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("x-ratelimit-limit-requests", "3"),
        ("x-ratelimit-limit-tokens", "40000"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-remaining-tokens", "39980"),
        ("x-ratelimit-reset-requests", "19.6s"),
        ("x-ratelimit-reset-tokens", "30ms"),
        ("retry-after", "20"),
        ("retry-after-ms", "19600"),
        ("x-should-retry", "true"),
        ("x-request-id", "req_2b1c9e8d7f6a5b4c3d2e1f0a9b8c7d6e"),
    ];
    let got = report(&headers, SystemTime::now());
    assert_eq!(
        got.limits,
        [
            limit(Dimension::Requests, Some(3), Some(0), Some(ms(19_600))),
            limit(Dimension::Tokens, Some(40_000), Some(39_980), Some(ms(30))),
        ]
    );
    assert_eq!(got.retry_after, Some(ms(19_600)));
    assert!(got.ignored.is_empty());

    // The order of the two retry headers does not matter.
    let mut reversed = headers;
    reversed.reverse();
    assert_eq!(
        report(&reversed, SystemTime::now()).retry_after,
        Some(ms(19_600))
    );
}

#[test]
fn groq_fractional_resets() {
    let headers = [
        ("content-type", "application/json"),
        ("retry-after", "2"),
        ("x-groq-region", "us-west-1"),
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-limit-tokens", "18000"),
        ("x-ratelimit-remaining-requests", "14370"),
        ("x-ratelimit-remaining-tokens", "17997"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-reset-tokens", "7.66s"),
        ("x-request-id", "req_01j0abcdefghjkmnpqrstvwxyz"),
    ];
    let got = report(&headers, SystemTime::now());
    assert_eq!(
        got.limits,
        [
            limit(
                Dimension::Requests,
                Some(14_400),
                Some(14_370),
                Some(ms(179_560))
            ),
            limit(
                Dimension::Tokens,
                Some(18_000),
                Some(17_997),
                Some(ms(7_660))
            ),
        ]
    );
    assert_eq!(got.retry_after, Some(secs(2)));
    assert!(got.ignored.is_empty());
}

#[test]
fn azure_openai_usage_based_headers_are_reported_as_unknown() {
    let headers = [
        ("x-ratelimit-remaining-requests", "99"),
        ("x-ratelimit-remaining-tokens", "119000"),
        ("x-ratelimit-limit-tokens_usage_based", "120000"),
        ("x-ratelimit-remaining-tokens_usage_based", "118560"),
        ("x-ratelimit-reset-tokens_usage_based", "60"),
        ("retry-after-ms", "8000"),
        ("retry-after", "8"),
        ("apim-request-id", "0e2b4f3c-6d7a-4e1b-9c8d-7f6e5d4c3b2a"),
        ("azureml-model-session", "d123-20240604"),
        ("x-ms-region", "East US"),
    ];
    let got = report(&headers, SystemTime::now());
    assert_eq!(
        got.limits,
        [
            limit(Dimension::Requests, None, Some(99), None),
            limit(Dimension::Tokens, None, Some(119_000), None),
        ]
    );
    assert_eq!(got.retry_after, Some(secs(8)));
    let unknown = "unknown rate-limit header";
    assert_eq!(
        got.ignored,
        [
            ignored("x-ratelimit-limit-tokens_usage_based", "120000", unknown),
            ignored(
                "x-ratelimit-remaining-tokens_usage_based",
                "118560",
                unknown
            ),
            ignored("x-ratelimit-reset-tokens_usage_based", "60", unknown),
        ]
    );
}

/// A message from Anthropic, every header as sent. Token remainders are rounded by Anthropic.
const ANTHROPIC_OK: &[(&str, &str)] = &[
    ("date", "Tue, 04 Jun 2024 18:31:15 GMT"),
    ("content-type", "application/json"),
    ("transfer-encoding", "chunked"),
    ("connection", "keep-alive"),
    ("anthropic-ratelimit-requests-limit", "50"),
    ("anthropic-ratelimit-requests-remaining", "49"),
    ("anthropic-ratelimit-requests-reset", "2024-06-04T18:31:16Z"),
    ("anthropic-ratelimit-input-tokens-limit", "40000"),
    ("anthropic-ratelimit-input-tokens-remaining", "39000"),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "2024-06-04T18:31:17Z",
    ),
    ("anthropic-ratelimit-output-tokens-limit", "8000"),
    ("anthropic-ratelimit-output-tokens-remaining", "8000"),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "2024-06-04T18:31:15Z",
    ),
    ("anthropic-ratelimit-tokens-limit", "48000"),
    ("anthropic-ratelimit-tokens-remaining", "47000"),
    ("anthropic-ratelimit-tokens-reset", "2024-06-04T18:31:17Z"),
    ("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG"),
    (
        "anthropic-organization-id",
        "2b5f6c1e-8d3a-4f7b-9e0c-1a2b3c4d5e6f",
    ),
    ("via", "1.1 google"),
    ("cf-cache-status", "DYNAMIC"),
    ("x-robots-tag", "none"),
    ("server", "cloudflare"),
    ("cf-ray", "88f0e1b2c3d4e5f7-SJC"),
];

#[test]
fn anthropic_success_headers() {
    let got = report(ANTHROPIC_OK, anthropic_now());
    assert_eq!(
        got,
        ProviderReport {
            limits: vec![
                limit(Dimension::Requests, Some(50), Some(49), Some(secs(1))),
                // Token figures are rounded to the nearest thousand: up to 500 more may be left.
                rounded(limit(
                    Dimension::InputTokens,
                    Some(40_000),
                    Some(39_000),
                    Some(secs(2))
                )),
                // Resets at the response's own instant: zero.
                rounded(limit(
                    Dimension::OutputTokens,
                    Some(8_000),
                    Some(8_000),
                    Some(Duration::ZERO)
                )),
                rounded(limit(
                    Dimension::Tokens,
                    Some(48_000),
                    Some(47_000),
                    Some(secs(2))
                )),
            ],
            retry_after: None,
            ignored: vec![],
        }
    );
}

#[test]
fn anthropic_429_headers() {
    let headers = [
        ("date", "Tue, 04 Jun 2024 18:31:15 GMT"),
        ("content-type", "application/json"),
        ("retry-after", "18"),
        ("x-should-retry", "true"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "50"),
        ("anthropic-ratelimit-requests-reset", "2024-06-04T18:31:15Z"),
        ("anthropic-ratelimit-input-tokens-limit", "40000"),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2024-06-04T18:31:32.482Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "8000"),
        ("anthropic-ratelimit-output-tokens-remaining", "8000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2024-06-04T18:31:14Z",
        ), // already past
        ("anthropic-ratelimit-tokens-limit", "48000"),
        ("anthropic-ratelimit-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-tokens-reset",
            "2024-06-04T18:31:32.482Z",
        ),
        ("request-id", "req_011CPd2y8mWq3v5XkL7jR9sT"),
    ];
    let got = report(&headers, anthropic_now());
    assert_eq!(got.retry_after, Some(secs(18)));
    assert_eq!(
        got.limit(&Dimension::InputTokens),
        Some(&rounded(limit(
            Dimension::InputTokens,
            Some(40_000),
            Some(0),
            Some(ms(17_482))
        )))
    );
    assert_eq!(
        got.limit(&Dimension::OutputTokens)
            .and_then(|l| l.reset_after),
        Some(Duration::ZERO)
    );
    assert_eq!(got.limits.len(), 4);
    assert!(got.ignored.is_empty());
}

#[test]
fn anthropic_resets_with_offsets_and_fractions() {
    let now = anthropic_now();
    let cases = [
        ("2024-06-04T18:31:45Z", secs(30)),
        ("2024-06-04T18:31:45.5Z", ms(30_500)),
        ("2024-06-04T18:31:45.000000001Z", Duration::new(30, 1)),
        ("2024-06-04T18:31:45+00:00", secs(30)),
        ("2024-06-04T20:31:45+02:00", secs(30)),
        ("2024-06-04T13:01:45-05:30", secs(30)),
        ("2024-06-04t18:31:45z", secs(30)),
        ("2024-06-04T18:31:15Z", Duration::ZERO),
        ("2024-06-04T18:31:14.999Z", Duration::ZERO),
        ("2020-01-01T00:00:00Z", Duration::ZERO),
        ("1970-01-01T00:00:00Z", Duration::ZERO),
    ];
    for (value, want) in cases {
        let got = report(&[("anthropic-ratelimit-requests-reset", value)], now);
        assert_eq!(got.ignored, [], "{value}");
        assert_eq!(
            got.limits,
            [limit(Dimension::Requests, None, None, Some(want))],
            "{value}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Names and values as they come.
// ---------------------------------------------------------------------------------------------

fn upper(s: &str) -> String {
    s.to_ascii_uppercase()
}

/// `x-ratelimit-limit-requests` -> `X-Ratelimit-Limit-Requests`.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        out.push(if start { c.to_ascii_uppercase() } else { c });
        start = c == '-';
    }
    out
}

#[test]
fn names_match_in_any_case() {
    for sample in [OPENAI_OK, ANTHROPIC_OK] {
        let want = report(sample, anthropic_now());
        for case in [upper, title] {
            let names: Vec<String> = sample.iter().map(|(name, _)| case(name)).collect();
            let headers = names
                .iter()
                .map(String::as_str)
                .zip(sample.iter().map(|(_, v)| *v));
            let got = ProviderReport::from_headers(headers, anthropic_now());
            assert_eq!(got, want);
        }
    }
    assert_eq!(one("RETRY-AFTER", "3").retry_after, Some(secs(3)));
    assert_eq!(one("Retry-After-Ms", "3").retry_after, Some(ms(3)));
    assert_eq!(
        one("X-RateLimit-Reset-Tokens", "1m").limits,
        [limit(Dimension::Tokens, None, None, Some(secs(60)))]
    );
}

#[test]
fn values_may_have_surrounding_whitespace() {
    let got = report(
        &[
            ("x-ratelimit-limit-requests", " 60"),
            ("x-ratelimit-remaining-requests", "59 \t"),
            ("x-ratelimit-reset-requests", "\t1s "),
            (
                "anthropic-ratelimit-tokens-reset",
                "  2024-06-04T18:31:45Z  ",
            ),
            ("retry-after", " Tue, 04 Jun 2024 18:31:25 GMT "),
        ],
        anthropic_now(),
    );
    assert_eq!(
        got.limits,
        [
            limit(Dimension::Requests, Some(60), Some(59), Some(secs(1))),
            limit(Dimension::Tokens, None, None, Some(secs(30))),
        ]
    );
    assert_eq!(got.retry_after, Some(secs(10)));
    assert!(got.ignored.is_empty());
}

#[test]
fn headers_as_strings_bytes_or_a_map() {
    let owned: Vec<(String, String)> = OPENAI_OK
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let want = report(OPENAI_OK, anthropic_now());
    assert_eq!(
        ProviderReport::from_headers(owned.clone(), anthropic_now()),
        want
    );
    let bytes = OPENAI_OK.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    assert_eq!(ProviderReport::from_headers(bytes, anthropic_now()), want);
    let map: HashMap<String, String> = owned.into_iter().collect();
    let mut from_map = ProviderReport::from_headers(&map, anthropic_now());
    from_map
        .limits
        .sort_by_key(|l| l.dimension.name().to_owned());
    let mut want_sorted = want;
    want_sorted
        .limits
        .sort_by_key(|l| l.dimension.name().to_owned());
    assert_eq!(from_map, want_sorted);
}

#[test]
fn values_that_are_not_utf8_are_ignored() {
    let got = ProviderReport::from_headers(
        [
            (&b"x-ratelimit-remaining-requests"[..], &b"5\xff"[..]),
            (&b"retry-after"[..], &b"\xc3\x28"[..]),
            (&b"x-\xffratelimit"[..], &b"\xff"[..]), // not one of ours: skipped
        ],
        anthropic_now(),
    );
    assert_eq!(got.limits, []);
    assert_eq!(got.retry_after, None);
    assert_eq!(
        got.ignored,
        [
            ignored("x-ratelimit-remaining-requests", "5\u{FFFD}", "not UTF-8"),
            ignored("retry-after", "\u{FFFD}(", "not UTF-8"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Retry-After.
// ---------------------------------------------------------------------------------------------

/// A header set as (name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn retry_after_in_every_format() {
    // Wed, 21 Oct 2015 07:27:30 GMT.
    let now = SystemTime::UNIX_EPOCH + secs(1_445_412_450);
    let cases: &[(Headers<'_>, Option<Duration>)] = &[
        (&[("retry-after", "120")], Some(secs(120))),
        (&[("retry-after", "0")], Some(Duration::ZERO)),
        (&[("retry-after", "1.5")], Some(ms(1_500))),
        (
            &[("retry-after", "0.000000001")],
            Some(Duration::from_nanos(1)),
        ),
        (
            &[("retry-after", "0.0000000001")],
            Some(Duration::from_nanos(1)),
        ), // rounds up
        (
            &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
            Some(secs(30)),
        ),
        (
            &[("retry-after", "Wednesday, 21-Oct-15 07:28:00 GMT")],
            Some(secs(30)),
        ),
        (
            &[("retry-after", "Wed Oct 21 07:28:00 2015")],
            Some(secs(30)),
        ),
        (
            &[("retry-after", "Wed, 21 Oct 2015 07:27:30 GMT")],
            Some(Duration::ZERO),
        ),
        (
            &[("retry-after", "Tue, 20 Oct 2015 07:28:00 GMT")],
            Some(Duration::ZERO),
        ), // past
        (&[("retry-after-ms", "250")], Some(ms(250))),
        (
            &[("retry-after-ms", "1234.5")],
            Some(Duration::from_micros(1_234_500)),
        ),
        (
            &[("retry-after-ms", "0.000001")],
            Some(Duration::from_nanos(1)),
        ),
        (
            &[("retry-after-ms", "250"), ("retry-after", "1")],
            Some(ms(250)),
        ),
        (
            &[("retry-after", "1"), ("retry-after-ms", "2500")],
            Some(ms(2_500)),
        ),
        // A malformed retry-after-ms falls back to retry-after.
        (
            &[("retry-after-ms", "soon"), ("retry-after", "3")],
            Some(secs(3)),
        ),
        (&[("retry-after-ms", "-1"), ("retry-after", "x")], None),
        // Repeated: the longest wait.
        (
            &[
                ("retry-after", "3"),
                ("retry-after", "5"),
                ("retry-after", "4"),
            ],
            Some(secs(5)),
        ),
    ];
    for &(headers, want) in cases {
        assert_eq!(report(headers, now).retry_after, want, "{headers:?}");
    }
}

#[test]
fn malformed_retry_after_values() {
    let now = SystemTime::UNIX_EPOCH + secs(1_445_412_450);
    let cases = [
        ("retry-after", "", "empty value"),
        ("retry-after", "   ", "empty value"),
        ("retry-after", "-5", "negative number"),
        ("retry-after", "-0.5", "negative number"),
        (
            "retry-after",
            "5s",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "1.",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            ".5",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "1e3",
            "neither delay-seconds nor an HTTP-date",
        ),
        ("retry-after", "18446744073709551616", "number too large"),
        (
            "retry-after",
            "soon",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "+5",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "Thu, 21 Oct 2015 07:28:00 GMT",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "neither delay-seconds nor an HTTP-date",
        ),
        (
            "retry-after",
            "2015-10-21T07:28:00Z",
            "neither delay-seconds nor an HTTP-date",
        ),
        ("retry-after-ms", "", "empty value"),
        ("retry-after-ms", "-1", "negative number"),
        ("retry-after-ms", "1_000", "not a number"),
        ("retry-after-ms", "NaN", "not a number"),
        ("retry-after-ms", "inf", "not a number"),
        (
            "retry-after-ms",
            "99999999999999999999999999",
            "number too large",
        ),
    ];
    for (name, value, reason) in cases {
        let got = report(&[(name, value)], now);
        assert_eq!(got.retry_after, None, "{name}: {value:?}");
        assert_eq!(
            got.ignored,
            [ignored(name, value, reason)],
            "{name}: {value:?}"
        );
    }
    // The largest delay a Duration holds is still a delay.
    let max_ms = format!("{}", u64::MAX as u128 * 1_000);
    assert_eq!(
        report(&[("retry-after-ms", &max_ms)], now).retry_after,
        Some(secs(u64::MAX))
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed limits.
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_counts_are_ignored_with_the_reason() {
    let cases = [
        ("", "empty value"),
        (" \t ", "empty value"),
        ("-1", "negative number"),
        ("-0", "negative number"),
        ("-2.5", "negative number"),
        ("1.5", "not an integer"),
        ("59.0", "not an integer"),
        ("5x", "not a number"),
        ("1h-2m", "not a number"),
        ("+5", "not a number"),
        ("1,000", "not a number"),
        ("1e3", "not a number"),
        ("0x1F", "not a number"),
        ("NaN", "not a number"),
        ("null", "not a number"),
        ("12 34", "not a number"),
        ("１２", "not a number"),      // full-width digits
        ("\u{FEFF}5", "not a number"), // byte-order mark
        ("5\u{A0}", "not a number"),   // no-break space is not HTTP whitespace
        ("\u{0}", "not a number"),
        ("5\u{0}", "not a number"),
        ("💥", "not a number"),
        ("\u{202E}95", "not a number"), // right-to-left override
        ("18446744073709551616", "number too large"), // u64::MAX + 1
        (
            "99999999999999999999999999999999999999999999",
            "number too large",
        ),
    ];
    for name in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
    ] {
        for (value, reason) in cases {
            let got = one(name, value);
            assert_eq!(got.limits, [], "{name}: {value:?}");
            assert_eq!(
                got.ignored,
                [ignored(name, value, reason)],
                "{name}: {value:?}"
            );
        }
    }
    // The edges that are fine.
    let max = u64::MAX.to_string();
    assert_eq!(
        one("x-ratelimit-limit-tokens", &max).limits,
        [limit(Dimension::Tokens, Some(u64::MAX), None, None)]
    );
    assert_eq!(
        one("x-ratelimit-remaining-tokens", "0").limits,
        [limit(Dimension::Tokens, None, Some(0), None)]
    );
    assert_eq!(
        one("x-ratelimit-remaining-tokens", "000123").limits,
        [limit(Dimension::Tokens, None, Some(123), None)]
    );
}

#[test]
fn malformed_go_duration_resets() {
    let cases = [
        ("", "empty value"),
        ("-1s", "negative number"),
        ("-0s", "negative number"),
        ("5x", "unknown unit in Go duration"),
        ("1h-2m", "unknown unit in Go duration"),
        ("1S", "unknown unit in Go duration"),
        ("1sec", "unknown unit in Go duration"),
        ("1d", "unknown unit in Go duration"),
        ("1 s", "unknown unit in Go duration"),
        ("10", "missing unit in Go duration"),
        ("1.5.5s", "missing unit in Go duration"),
        ("1h30", "missing unit in Go duration"),
        ("s", "invalid Go duration"),
        (".s", "invalid Go duration"),
        ("+", "invalid Go duration"),
        ("++1s", "invalid Go duration"),
        ("２s", "invalid Go duration"),
        ("2024-06-04T18:31:45Z", "unknown unit in Go duration"),
        ("18446744073709551616s", "number too large"), // Duration::MAX + 1 s
        ("5124095576030432h", "number too large"),     // over Duration::MAX
        (
            "99999999999999999999999999999999999999999999ns",
            "number too large",
        ), // over u128
    ];
    for (value, reason) in cases {
        let got = one("x-ratelimit-reset-requests", value);
        assert_eq!(got.limits, [], "{value:?}");
        assert_eq!(
            got.ignored,
            [ignored("x-ratelimit-reset-requests", value, reason)],
            "{value:?}"
        );
    }
    // The largest Go duration Go itself writes, and one far past Go's range.
    assert_eq!(
        parse_go_duration("2562047h47m16.854775807s"),
        Some(Duration::from_nanos(i64::MAX as u64))
    );
    assert_eq!(
        parse_go_duration("5124095576030431h"),
        Some(secs(5_124_095_576_030_431 * 3_600))
    );
}

#[test]
fn malformed_rfc3339_resets() {
    let cases = [
        ("", "RFC 3339 timestamp without a time zone"),
        (
            "2024-06-04T18:31:45",
            "RFC 3339 timestamp without a time zone",
        ),
        (
            "2024-06-04T18:31:45+0200",
            "RFC 3339 timestamp without a time zone",
        ),
        ("1717525905", "RFC 3339 timestamp without a time zone"),
        ("30s", "RFC 3339 timestamp without a time zone"),
        (
            "Tue, 04 Jun 2024 18:31:45 GMT",
            "RFC 3339 timestamp without a time zone",
        ),
        ("2024-06-04 18:31:45Z", "invalid RFC 3339 timestamp"),
        ("2024-06-04T18:31:45.Z", "invalid RFC 3339 timestamp"),
        ("2024-6-4T18:31:45Z", "invalid RFC 3339 timestamp"),
        ("24-06-04T18:31:45Z", "invalid RFC 3339 timestamp"),
        ("2024-06-04T18:31:45ZZ", "invalid RFC 3339 timestamp"),
        ("2024-06-04T18:31:45.5xZ", "invalid RFC 3339 timestamp"),
        ("２024-06-04T18:31:45Z", "invalid RFC 3339 timestamp"),
        ("Z", "invalid RFC 3339 timestamp"),
        ("2024-13-04T18:31:45Z", "RFC 3339 timestamp out of range"),
        ("2024-02-30T18:31:45Z", "RFC 3339 timestamp out of range"),
        ("2023-02-29T00:00:00Z", "RFC 3339 timestamp out of range"),
        ("2024-06-04T24:00:00Z", "RFC 3339 timestamp out of range"),
        ("2024-06-04T18:60:00Z", "RFC 3339 timestamp out of range"),
        (
            "2024-06-04T18:31:45+24:00",
            "RFC 3339 timestamp out of range",
        ),
        (
            "2024-06-04T18:31:45+01:60",
            "RFC 3339 timestamp out of range",
        ),
        ("1969-12-31T23:59:59Z", "RFC 3339 timestamp out of range"),
        ("10000-01-01T00:00:00Z", "invalid RFC 3339 timestamp"),
    ];
    for (value, reason) in cases {
        let got = one("anthropic-ratelimit-tokens-reset", value);
        assert_eq!(got.limits, [], "{value:?}");
        assert_eq!(
            got.ignored,
            [ignored("anthropic-ratelimit-tokens-reset", value, reason)],
            "{value:?}"
        );
    }
    // A leap second and the last instant humantime represents are fine.
    assert!(
        one("anthropic-ratelimit-tokens-reset", "2016-12-31T23:59:60Z")
            .ignored
            .is_empty()
    );
    assert!(
        one("anthropic-ratelimit-tokens-reset", "9999-12-31T23:59:59Z")
            .ignored
            .is_empty()
    );
}

#[test]
fn unknown_rate_limit_headers_are_reported_and_others_skipped() {
    let headers = [
        ("x-ratelimit-limit", "100"),
        ("X-RateLimit-Remaining", "99"),
        ("x-ratelimit-reset", "1717525905"),
        ("x-ratelimit-limit-images", "5"),
        ("x-ratelimit-requests-limit", "5"),
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-images-limit", "5"),
        ("anthropic-ratelimit-requests-used", "1"),
        ("anthropic-ratelimit-limit-requests", "5"),
        // Not rate-limit headers: skipped without a word.
        ("ratelimit-limit", "100"),
        ("ratelimit-policy", "100;w=60"),
        ("x-rate-limit-limit", "5"),
        ("anthropic-priority-input-tokens-limit", "1000"),
        ("retry-after-s", "5"),
        ("x-retry-after", "5"),
        ("openai-processing-ms", "35"),
        ("", ""),
    ];
    let got = report(&headers, anthropic_now());
    assert_eq!(got.limits, []);
    assert_eq!(got.retry_after, None);
    let reported: Vec<&str> = got.ignored.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        reported,
        headers[..9].iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    assert!(got
        .ignored
        .iter()
        .all(|i| i.reason == "unknown rate-limit header"));
}

#[test]
fn repeated_headers_keep_the_most_cautious_value() {
    let got = report(
        &[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-requests", "50"),
            ("x-ratelimit-remaining-requests", "10"),
            ("X-RateLimit-Remaining-Requests", "12"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-reset-requests", "5s"),
            ("x-ratelimit-reset-requests", "1s"),
            ("anthropic-ratelimit-requests-remaining", "7"), // same dimension, other provider
        ],
        anthropic_now(),
    );
    assert_eq!(
        got.limits,
        [limit(Dimension::Requests, Some(50), Some(7), Some(secs(5)))]
    );
}

#[test]
fn a_dimension_with_only_malformed_headers_is_not_reported() {
    let got = report(
        &[
            ("x-ratelimit-limit-tokens", "lots"),
            ("x-ratelimit-remaining-tokens", "-1"),
            ("x-ratelimit-reset-tokens", "soon"),
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "5x"),
        ],
        anthropic_now(),
    );
    assert_eq!(
        got.limits,
        [limit(Dimension::Requests, None, Some(3), None)]
    );
    assert_eq!(got.ignored.len(), 4);
    assert_eq!(got.limit(&Dimension::Tokens), None);
}

#[test]
fn ignored_headers_display_for_logs() {
    let got = one("x-ratelimit-reset-tokens", "5x");
    assert_eq!(
        got.ignored[0].to_string(),
        "ignored header x-ratelimit-reset-tokens: \"5x\": unknown unit in Go duration"
    );
    let junk = one("retry-after", "\u{1b}[31mred\n");
    assert_eq!(
        junk.ignored[0].to_string(),
        "ignored header retry-after: \"\\u{1b}[31mred\\n\": neither delay-seconds nor an HTTP-date"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

/// `value / unit` with up to `digits` decimals, trailing zeros dropped (Go's `fmtFrac`).
fn with_fraction(value: u64, unit: u64, digits: usize) -> String {
    let (int, rem) = (value / unit, value % unit);
    if rem == 0 {
        return int.to_string();
    }
    let text = format!("{int}.{rem:0digits$}");
    text.trim_end_matches('0').to_owned()
}

/// A duration written as Go's `time.Duration.String` writes it (`1h2m3.5s`, `1.5µs`, `0s`),
/// with the micro sign chosen by the caller; hours grow past Go's 2562047h.
fn format_go_duration(d: Duration, micro: &str) -> String {
    let (total_secs, nanos) = (d.as_secs(), u64::from(d.subsec_nanos()));
    if total_secs == 0 {
        return match nanos {
            0 => "0s".to_owned(),
            1..=999 => format!("{nanos}ns"),
            1_000..=999_999 => format!("{}{micro}", with_fraction(nanos, 1_000, 3)),
            _ => format!("{}ms", with_fraction(nanos, 1_000_000, 6)),
        };
    }
    let (hours, minutes, seconds) = (total_secs / 3_600, total_secs % 3_600 / 60, total_secs % 60);
    let seconds = with_fraction(seconds * 1_000_000_000 + nanos, 1_000_000_000, 9);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[test]
fn the_formatter_writes_what_go_writes() {
    // Outputs of Go's time.Duration.String for the same values.
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(1), "1ns"),
        (Duration::from_nanos(1_500), "1.5µs"),
        (Duration::from_micros(1_100), "1.1ms"),
        (secs(1), "1s"),
        (ms(179_560), "2m59.56s"),
        (secs(360), "6m0s"),
        (secs(5_400), "1h30m0s"),
        (Duration::new(3_723, 4), "1h2m3.000000004s"),
        (
            Duration::from_nanos(i64::MAX as u64),
            "2562047h47m16.854775807s",
        ),
    ];
    for (d, text) in cases {
        assert_eq!(format_go_duration(d, "µs"), text);
        assert_eq!(parse_go_duration(text), Some(d), "{text}");
    }
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..1_000_000_000).prop_map(Duration::from_nanos),
        (0u64..1_000).prop_map(Duration::from_nanos),
        (0u64..86_400_000).prop_map(Duration::from_millis),
        (0u64..100_000).prop_map(secs),
        Just(Duration::MAX),
        Just(Duration::ZERO),
    ]
}

const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const COUNT_NAMES: &[&str] = &[
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-limit",
];

/// One of `names` in random ASCII case.
fn random_case(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        prop::sample::select(names),
        prop::collection::vec(any::<bool>(), 64),
    )
        .prop_map(|(name, flips)| {
            name.chars()
                .zip(flips.into_iter().chain(std::iter::repeat(false)))
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect()
        })
}

/// A header name from the families read here, or near them, in random ASCII case.
fn header_name() -> impl Strategy<Value = String> {
    random_case(&[
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-limit-tokens_usage_based",
        "anthropic-ratelimit-unified-reset",
        "content-type",
    ])
}

/// Values near the formats read here, and anything at all.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t]?[+\\-]?[0-9]{0,25}(\\.[0-9]{0,12})?(ns|us|µs|μs|ms|s|m|h|x|)[0-9.hms]{0,6}[ \t]?",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?([Zz]|[+\\-][0-9]{2}:[0-9]{2})?",
        "(Mon|Wed|Sun|Xyz), [0-9]{2} (Jan|Oct|Foo) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|UTC)",
        "[\\PC]{0,12}",
    ]
}

/// Whether `name` is read (or reported) by the parser.
fn is_ours(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("x-ratelimit-")
        || lower.starts_with("anthropic-ratelimit-")
        || lower == "retry-after"
        || lower == "retry-after-ms"
}

proptest! {
    #![proptest_config(common::properties::config(256, "feedback_headers"))]

    #[test]
    fn go_durations_round_trip(d in any_duration(), micro in prop::sample::select(vec!["µs", "μs", "us"])) {
        let text = format_go_duration(d, micro);
        prop_assert_eq!(parse_go_duration(&text), Some(d), "{}", text);
        prop_assert_eq!(parse_go_duration(&format!("+{text}")), Some(d));
        prop_assert_eq!(parse_go_duration(&format!("-{text}")), None);
    }

    /// Segments in any units and order, with fractions, add up exactly (rounding up only
    /// below a nanosecond).
    #[test]
    fn go_duration_segments_add_up(
        segments in prop::collection::vec((0u64..1_000_000, 0u64..1_000, 0usize..UNITS.len()), 1..6)
    ) {
        let mut text = String::new();
        let mut nanos: u128 = 0;
        for (int, milli, unit) in segments {
            let (name, unit_nanos) = UNITS[unit];
            text.push_str(&format!("{int}.{milli:03}{name}"));
            let thousandths = u128::from(int) * 1_000 + u128::from(milli);
            nanos += (thousandths * u128::from(unit_nanos)).div_ceil(1_000);
        }
        let want = Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
        prop_assert_eq!(parse_go_duration(&text), Some(want), "{}", text);
    }

    #[test]
    fn no_string_panics_the_duration_parser(s in header_value()) {
        if let Some(d) = parse_go_duration(&s) {
            // Whatever is accepted is Go's grammar: no sign but `+`, no whitespace.
            prop_assert!(!s.starts_with('-') && !s.contains(char::is_whitespace), "{:?} -> {:?}", s, d);
        }
    }

    /// A single header is either read or ignored with a reason, never both, never neither
    /// (unless it is not a rate-limit header at all), and never panics.
    #[test]
    fn every_header_is_read_or_reported(name in header_name(), value in header_value()) {
        let got = ProviderReport::from_headers([(name.as_str(), value.as_str())], anthropic_now());
        let read = got.limits.len() + usize::from(got.retry_after.is_some());
        if is_ours(&name) {
            prop_assert_eq!(read + got.ignored.len(), 1, "{:?}", got);
            if let Some(ignored) = got.ignored.first() {
                prop_assert_eq!(&ignored.name, &name);
                prop_assert_eq!(&ignored.value, &value);
                prop_assert!(!ignored.reason.is_empty());
            }
        } else {
            prop_assert_eq!(got, ProviderReport::default());
        }
    }

    #[test]
    fn no_header_set_panics_the_reader(
        headers in prop::collection::vec((prop_oneof![header_name(), any::<String>()], header_value()), 0..24)
    ) {
        let got = ProviderReport::from_headers(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            anthropic_now(),
        );
        let ours = headers.iter().filter(|(n, _)| is_ours(n)).count();
        prop_assert!(got.ignored.len() <= ours);
        for ignored in &got.ignored {
            prop_assert!(headers.iter().any(|(n, v)| *n == ignored.name && *v == ignored.value));
        }
        for (i, a) in got.limits.iter().enumerate() {
            prop_assert!(got.limits[i + 1..].iter().all(|b| b.dimension != a.dimension));
        }
    }

    #[test]
    fn counts_read_back(
        n in any::<u64>(),
        name in random_case(COUNT_NAMES),
        pad in "[ \t]{0,3}",
        pad2 in "[ \t]{0,3}",
    ) {
        let value = format!("{pad}{n}{pad2}");
        let got = ProviderReport::from_headers([(name.as_str(), value.as_str())], anthropic_now());
        prop_assert_eq!(&got.ignored, &[]);
        prop_assert_eq!(got.limits.len(), 1);
        let read = if name.to_ascii_lowercase().contains("remaining") {
            got.limits[0].remaining
        } else {
            got.limits[0].limit
        };
        prop_assert_eq!(read, Some(n));
    }

    /// Instants written by humantime (RFC 3339, nanoseconds) come back as the delay from now.
    #[test]
    fn rfc3339_resets_are_delays_from_now(offset_ns in -10_000_000_000_000i64..10_000_000_000_000) {
        let now = anthropic_now();
        let magnitude = Duration::from_nanos(offset_ns.unsigned_abs());
        let at = if offset_ns >= 0 { now + magnitude } else { now - magnitude };
        let text = humantime::format_rfc3339_nanos(at).to_string();
        let got = ProviderReport::from_headers([("anthropic-ratelimit-tokens-reset", text.as_str())], now);
        let want = if offset_ns >= 0 { magnitude } else { Duration::ZERO };
        prop_assert_eq!(got.limits, [limit(Dimension::Tokens, None, None, Some(want))], "{}", text);
    }

    /// HTTP-dates written by httpdate come back as the delay from now, in whole seconds.
    #[test]
    fn http_date_retry_after_is_a_delay_from_now(offset in -10_000_000i64..10_000_000) {
        let now = anthropic_now();
        let magnitude = secs(offset.unsigned_abs());
        let at = if offset >= 0 { now + magnitude } else { now - magnitude };
        let text = httpdate::fmt_http_date(at);
        let got = ProviderReport::from_headers([("Retry-After", text.as_str())], now);
        let want = if offset >= 0 { magnitude } else { Duration::ZERO };
        prop_assert_eq!(got.retry_after, Some(want), "{}", text);
    }
}

//! The grammars of rate-limit header values, exact and without floating point: counts,
//! decimal numbers of a unit (`retry-after-ms`), Go durations (`6m0s`), RFC 3339 instants and
//! `Retry-After`'s delay-seconds or HTTP-date.

use std::time::{Duration, SystemTime};

// Reasons, one wording each.
const EMPTY: &str = "empty value";
const NEGATIVE: &str = "negative number";
const NOT_INTEGER: &str = "not an integer";
const NOT_NUMBER: &str = "not a number";
const TOO_LARGE: &str = "number too large";
const INVALID_DURATION: &str = "invalid Go duration";
const MISSING_UNIT: &str = "missing unit in Go duration";
const UNKNOWN_UNIT: &str = "unknown unit in Go duration";
const INVALID_TIMESTAMP: &str = "invalid RFC 3339 timestamp";
const TIMESTAMP_RANGE: &str = "RFC 3339 timestamp out of range";
const NO_TIME_ZONE: &str = "RFC 3339 timestamp without a time zone";
const INVALID_RETRY_AFTER: &str = "neither delay-seconds nor an HTTP-date";

const NANOS_PER_SEC: u64 = 1_000_000_000;
pub(super) const NANOS_PER_MILLI: u64 = 1_000_000;

/// The time from `now` until `at`; zero if `at` is past.
pub(super) fn delay(now: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `1*DIGIT [ "." 1*DIGIT ]`: the integer part and the fraction digits (empty if none).
fn split_decimal(s: &[u8]) -> Option<(&[u8], &[u8])> {
    match s.iter().position(|&c| c == b'.') {
        None => is_digits(s).then_some((s, &[][..])),
        Some(point) => {
            let (int, frac) = s.split_at(point);
            let frac = frac.get(1..)?;
            (is_digits(int) && is_digits(frac)).then_some((int, frac))
        }
    }
}

/// The bytes of a figure that must be a non-negative number: an empty one, or one with a
/// minus sign, is refused (a negative number as such, anything else after the sign as no
/// number).
fn unsigned(s: &str) -> Result<&[u8], &'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(EMPTY);
    }
    if let Some(magnitude) = b.strip_prefix(b"-") {
        return Err(if split_decimal(magnitude).is_some() {
            NEGATIVE
        } else {
            NOT_NUMBER
        });
    }
    Ok(b)
}

/// An unsigned integer written `1*DIGIT` (the caller trims whitespace).
pub(super) fn parse_count(s: &str) -> Result<u64, &'static str> {
    let b = unsigned(s)?;
    match split_decimal(b) {
        Some((int, [])) => int
            .iter()
            .try_fold(0u64, |n, &c| {
                n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
            })
            .ok_or(TOO_LARGE),
        Some(_) => Err(NOT_INTEGER),
        None => Err(NOT_NUMBER),
    }
}

/// Digits as an integer; `None` past `u128::MAX`.
fn digits_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &c| {
        n.checked_mul(10)?.checked_add(u128::from(c - b'0'))
    })
}

/// `unit * 0.<digits>` in nanoseconds, rounded up, exactly (for any number of digits).
///
/// Long division from the last digit: `carry = (unit * digit + carry) / 10` ends with the
/// integer part, and the product is exact iff no step leaves a remainder. `carry < unit`
/// throughout, so `unit * 10` bounds every intermediate value.
fn fraction_nanos(digits: &[u8], unit: u64) -> u128 {
    let unit = u128::from(unit);
    let mut carry = 0u128;
    let mut inexact = false;
    for &c in digits.iter().rev() {
        let step = unit * u128::from(c - b'0') + carry;
        inexact |= !step.is_multiple_of(10);
        carry = step / 10;
    }
    carry + u128::from(inexact)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / u128::from(NANOS_PER_SEC)).ok()?;
    let subsec = u32::try_from(nanos % u128::from(NANOS_PER_SEC)).ok()?;
    Some(Duration::new(secs, subsec))
}

/// A non-negative decimal number of `unit_nanos` units (`1*DIGIT [ "." 1*DIGIT ]`).
pub(super) fn parse_decimal(s: &str, unit_nanos: u64) -> Result<Duration, &'static str> {
    let b = unsigned(s)?;
    let (int, frac) = split_decimal(b).ok_or(NOT_NUMBER)?;
    digits_value(int)
        .and_then(|n| n.checked_mul(u128::from(unit_nanos)))
        .and_then(|n| n.checked_add(fraction_nanos(frac, unit_nanos)))
        .and_then(nanos_to_duration)
        .ok_or(TOO_LARGE)
}

/// `Retry-After`: delay-seconds (possibly fractional) or an HTTP-date.
pub(super) fn parse_retry_after(s: &str, now: SystemTime) -> Result<Duration, &'static str> {
    match parse_decimal(s, NANOS_PER_SEC) {
        Err(NOT_NUMBER) => httpdate::parse_http_date(s)
            .map(|at| delay(now, at))
            .map_err(|_| INVALID_RETRY_AFTER),
        seconds => seconds,
    }
}

/// An RFC 3339 timestamp with any offset, exact to the nanosecond.
///
/// `humantime` parses the date and time exactly but only in UTC (`Z` or `+00:00`, upper case),
/// so the offset is taken off here and applied to its result.
pub(super) fn parse_rfc3339(s: &str) -> Result<SystemTime, &'static str> {
    let b = s.as_bytes();
    let (local, offset_secs, ahead_of_utc) = match b.len().checked_sub(6).map(|i| b.split_at(i)) {
        Some((local, [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]))
            if is_digits(&[*h1, *h2, *m1, *m2]) =>
        {
            let hours = u64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = u64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return Err(TIMESTAMP_RANGE);
            }
            (local, hours * 3_600 + minutes * 60, *sign == b'+')
        }
        _ => match b.split_last() {
            Some((b'Z' | b'z', local)) => (local, 0, true),
            _ => return Err(NO_TIME_ZONE),
        },
    };
    // After the seconds only a fraction may follow, with at least one digit: humantime lets
    // `45.Z` and `45ZZ` through.
    if let Some(tail) = local.get(19..) {
        if !tail.is_empty() && !tail.strip_prefix(b".").is_some_and(is_digits) {
            return Err(INVALID_TIMESTAMP);
        }
    }
    let mut utc = local.to_ascii_uppercase();
    utc.push(b'Z');
    let utc = std::str::from_utf8(&utc).map_err(|_| INVALID_TIMESTAMP)?;
    let local_time = humantime::parse_rfc3339(utc).map_err(|e| match e {
        humantime::TimestampError::OutOfRange => TIMESTAMP_RANGE,
        _ => INVALID_TIMESTAMP,
    })?;
    let offset = Duration::from_secs(offset_secs);
    let at = if ahead_of_utc {
        local_time.checked_sub(offset)
    } else {
        local_time.checked_add(offset)
    };
    at.ok_or(TIMESTAMP_RANGE)
}

/// Parses a Go duration (`time.ParseDuration`): `1s`, `6m0s`, `2m59.56s`, `1h30m`, `12ms`,
/// `500us`, `500µs`, `7ns`, `0`.
///
/// The grammar is Go's: an optional `+`, then one or more decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`, `µs` or `μs`, `ms`, `s`, `m`, `h`), or `0` alone.
/// The arithmetic is exact integer arithmetic, with no floating point: a fraction finer than a
/// nanosecond rounds up (Go truncates), and any value up to [`Duration::MAX`] is accepted (Go
/// stops at 2⁶³−1 ns).
///
/// Returns `None` for an empty string, a negative duration (a leading `-`, even on zero), a
/// missing or unknown unit, surrounding whitespace, and a value above [`Duration::MAX`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::feedback::parse_go_duration;
///
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("2m59.56s"), Some(Duration::from_millis(179_560)));
/// assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5_400)));
/// assert_eq!(parse_go_duration("500µs"), Some(Duration::from_micros(500)));
/// assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
/// assert_eq!(parse_go_duration("0.5ns"), Some(Duration::from_nanos(1))); // rounds up
/// assert_eq!(parse_go_duration("-1s"), None);
/// assert_eq!(parse_go_duration("5x"), None);
/// assert_eq!(parse_go_duration("1h-2m"), None);
/// assert_eq!(parse_go_duration("10"), None);
/// ```
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    go_duration(s).ok()
}

/// [`parse_go_duration`] with the reason for a refusal.
pub(super) fn go_duration(s: &str) -> Result<Duration, &'static str> {
    let b = s.as_bytes();
    let mut rest = match b.split_first() {
        None => return Err(EMPTY),
        Some((b'-', _)) => return Err(NEGATIVE),
        Some((b'+', rest)) => rest,
        Some(_) => b,
    };
    if rest == b"0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(INVALID_DURATION);
    }
    let mut total = 0u128;
    while !rest.is_empty() {
        let (int, after) = rest.split_at(rest.iter().take_while(|c| c.is_ascii_digit()).count());
        let (frac, after) = match after.split_first() {
            Some((b'.', after)) => {
                after.split_at(after.iter().take_while(|c| c.is_ascii_digit()).count())
            }
            _ => (&[][..], after),
        };
        if int.is_empty() && frac.is_empty() {
            // Not a number (`s`, `.s`, `1h-2m`'s `-` is caught as a unit below).
            return Err(INVALID_DURATION);
        }
        let unit_len = after
            .iter()
            .take_while(|&&c| !c.is_ascii_digit() && c != b'.')
            .count();
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u64 = match unit {
            [] => return Err(MISSING_UNIT),
            b"ns" => 1,
            // `us`, `µs` (U+00B5 micro sign), `μs` (U+03BC Greek mu) in UTF-8.
            b"us" | b"\xC2\xB5s" | b"\xCE\xBCs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => NANOS_PER_SEC,
            b"m" => 60 * NANOS_PER_SEC,
            b"h" => 3_600 * NANOS_PER_SEC,
            _ => return Err(UNKNOWN_UNIT),
        };
        total = digits_value(int)
            .and_then(|n| n.checked_mul(u128::from(unit_nanos)))
            .and_then(|n| n.checked_add(fraction_nanos(frac, unit_nanos)))
            .and_then(|n| n.checked_add(total))
            .ok_or(TOO_LARGE)?;
        rest = after;
    }
    nanos_to_duration(total).ok_or(TOO_LARGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn go_durations_in_every_unit() {
        let cases: &[(&str, Duration)] = &[
            ("1s", secs(1)),
            ("6m0s", secs(360)),
            ("12ms", Duration::from_millis(12)),
            ("2m59.56s", Duration::from_millis(179_560)),
            ("1h30m", secs(5_400)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("+5s", secs(5)),
            ("500us", Duration::from_micros(500)),
            ("500µs", Duration::from_micros(500)),
            ("500μs", Duration::from_micros(500)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5h", secs(5_400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", secs(1)),
            ("1s1s", secs(2)),
            ("1s1h", secs(3_601)),
            ("7.66s", Duration::from_millis(7_660)),
            ("1h2m3.000000004s", Duration::new(3_723, 4)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("000000000000000000000000000000000000000001s", secs(1)),
            ("1.000000000000000000000000000000000000000s", secs(1)),
        ];
        for &(text, want) in cases {
            assert_eq!(go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn go_duration_fractions_round_up_only_when_inexact() {
        assert_eq!(go_duration("0.5ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(go_duration("1.0000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(go_duration("1.9999999999ns"), Ok(Duration::from_nanos(2)));
        assert_eq!(go_duration("0.1h"), Ok(secs(360)));
        // 1/3 of an hour written with many digits: 1,199,999,999,999.9... ns, rounds up.
        let third = format!("0.{}h", "3".repeat(40));
        assert_eq!(
            go_duration(&third),
            Ok(Duration::from_nanos(1_200_000_000_000))
        );
        // A 4 far after the point still moves the result past the integer.
        let just_over = format!("0.{}4ns", "0".repeat(60));
        assert_eq!(go_duration(&just_over), Ok(Duration::from_nanos(1)));
        assert_eq!(
            go_duration(&format!("0.{}ns", "0".repeat(60))),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn go_duration_refusals_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", EMPTY),
            ("+", INVALID_DURATION),
            ("-1s", NEGATIVE),
            ("-0", NEGATIVE),
            ("10", MISSING_UNIT),
            ("1h5", MISSING_UNIT),
            ("5x", UNKNOWN_UNIT),
            ("1h-2m", UNKNOWN_UNIT),
            ("1S", UNKNOWN_UNIT),
            ("1 s", UNKNOWN_UNIT),
            ("s", INVALID_DURATION),
            (".s", INVALID_DURATION),
            (".", INVALID_DURATION),
            (" 1s", INVALID_DURATION),
            ("1s ", UNKNOWN_UNIT),
            ("1..5s", MISSING_UNIT),
            ("++1s", INVALID_DURATION),
            ("１s", INVALID_DURATION),
            ("1e3s", UNKNOWN_UNIT),
        ];
        for &(text, why) in cases {
            assert_eq!(go_duration(text), Err(why), "{text:?}");
        }
    }

    #[test]
    fn go_duration_overflow_is_refused_at_the_edge_of_duration() {
        let max_secs = u64::MAX;
        let at_max = format!("{max_secs}.999999999s");
        assert_eq!(go_duration(&at_max), Ok(Duration::MAX));
        assert_eq!(
            go_duration(&format!("{max_secs}.9999999991s")),
            Err(TOO_LARGE)
        );
        assert_eq!(go_duration(&format!("{max_secs}s1s")), Err(TOO_LARGE));
        assert_eq!(go_duration(&format!("{}h", u64::MAX)), Err(TOO_LARGE));
        assert_eq!(
            go_duration(&format!("{}ns", "9".repeat(50))),
            Err(TOO_LARGE)
        );
        // Beyond Go's 2^63-1 ns, still a Duration.
        assert_eq!(go_duration("300y"), Err(UNKNOWN_UNIT));
        assert_eq!(go_duration("2700000h"), Ok(secs(2_700_000 * 3_600)));
    }

    #[test]
    fn counts_are_plain_integers() {
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("149984"), Ok(149_984));
        assert_eq!(parse_count("007"), Ok(7));
        assert_eq!(parse_count(&u64::MAX.to_string()), Ok(u64::MAX));
        assert_eq!(parse_count("18446744073709551616"), Err(TOO_LARGE));
        assert_eq!(parse_count(""), Err(EMPTY));
        assert_eq!(parse_count("-1"), Err(NEGATIVE));
        assert_eq!(parse_count("-1.5"), Err(NEGATIVE));
        assert_eq!(parse_count("1.5"), Err(NOT_INTEGER));
        assert_eq!(parse_count("1.0"), Err(NOT_INTEGER));
        for junk in [
            "+1", "1.", ".5", "-", "--1", "1e3", "1,000", "1_000", "0x10", "five", "1 2", "٣",
        ] {
            assert_eq!(parse_count(junk), Err(NOT_NUMBER), "{junk:?}");
        }
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(
            parse_decimal("1.5", NANOS_PER_SEC),
            Ok(Duration::from_millis(1_500))
        );
        assert_eq!(parse_decimal("20", NANOS_PER_SEC), Ok(secs(20)));
        assert_eq!(
            parse_decimal("1234.5", NANOS_PER_MILLI),
            Ok(Duration::from_micros(1_234_500))
        );
        assert_eq!(
            parse_decimal("0.0000001", NANOS_PER_MILLI),
            Ok(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_decimal("0.3333333333", NANOS_PER_SEC),
            Ok(Duration::from_nanos(333_333_334))
        );
        assert_eq!(parse_decimal("-2", NANOS_PER_SEC), Err(NEGATIVE));
        assert_eq!(parse_decimal("2.", NANOS_PER_SEC), Err(NOT_NUMBER));
        assert_eq!(parse_decimal("", NANOS_PER_SEC), Err(EMPTY));
        assert_eq!(
            parse_decimal(&format!("{}", u64::MAX), NANOS_PER_SEC),
            Ok(secs(u64::MAX))
        );
        assert_eq!(
            parse_decimal(&format!("{}0", u64::MAX), NANOS_PER_SEC),
            Err(TOO_LARGE)
        );
        assert_eq!(
            parse_decimal(&"9".repeat(60), NANOS_PER_MILLI),
            Err(TOO_LARGE)
        );
    }

    #[test]
    fn fraction_nanos_is_exact_long_division() {
        assert_eq!(fraction_nanos(b"", NANOS_PER_SEC), 0);
        assert_eq!(fraction_nanos(b"5", NANOS_PER_SEC), 500_000_000);
        assert_eq!(fraction_nanos(b"56", 60 * NANOS_PER_SEC), 33_600_000_000);
        assert_eq!(fraction_nanos(b"999999999", NANOS_PER_SEC), 999_999_999);
        assert_eq!(fraction_nanos(b"9999999999", NANOS_PER_SEC), 1_000_000_000);
        assert_eq!(fraction_nanos(b"25", 1), 1);
        assert_eq!(fraction_nanos(b"00", 1), 0);
    }

    #[test]
    fn rfc3339_in_utc_and_with_offsets() {
        let epoch = SystemTime::UNIX_EPOCH;
        let at = epoch + secs(1_717_525_905); // 2024-06-04T18:31:45Z
        assert_eq!(parse_rfc3339("2024-06-04T18:31:45Z"), Ok(at));
        assert_eq!(parse_rfc3339("2024-06-04t18:31:45z"), Ok(at));
        assert_eq!(parse_rfc3339("2024-06-04T18:31:45+00:00"), Ok(at));
        assert_eq!(parse_rfc3339("2024-06-04T18:31:45-00:00"), Ok(at));
        assert_eq!(parse_rfc3339("2024-06-04T20:01:45+01:30"), Ok(at));
        assert_eq!(parse_rfc3339("2024-06-04T13:31:45-05:00"), Ok(at));
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45.25Z"),
            Ok(at + Duration::from_millis(250))
        );
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45.000000001+00:00"),
            Ok(at + Duration::from_nanos(1))
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00+01:00"),
            Ok(epoch - secs(3_600))
        );
        assert_eq!(parse_rfc3339("2024-06-04T18:31:45"), Err(NO_TIME_ZONE));
        assert_eq!(parse_rfc3339("2024-06-04T18:31:45+0100"), Err(NO_TIME_ZONE));
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45+24:00"),
            Err(TIMESTAMP_RANGE)
        );
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45.Z"),
            Err(INVALID_TIMESTAMP)
        );
        assert_eq!(
            parse_rfc3339("2024-06-04 18:31:45Z"),
            Err(INVALID_TIMESTAMP)
        );
        assert_eq!(parse_rfc3339("2024-13-04T18:31:45Z"), Err(TIMESTAMP_RANGE));
        assert_eq!(parse_rfc3339("2024-02-30T18:31:45Z"), Err(TIMESTAMP_RANGE));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Err(TIMESTAMP_RANGE));
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:4５Z"),
            Err(INVALID_TIMESTAMP)
        );
        assert_eq!(parse_rfc3339("Z"), Err(INVALID_TIMESTAMP));
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45ZZ"),
            Err(INVALID_TIMESTAMP)
        );
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45.5.Z"),
            Err(INVALID_TIMESTAMP)
        );
        assert_eq!(
            parse_rfc3339("2024-06-04T18:31:45x+01:00"),
            Err(INVALID_TIMESTAMP)
        );
        assert_eq!(parse_rfc3339(""), Err(NO_TIME_ZONE));
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + secs(1_445_412_450); // Wed, 21 Oct 2015 07:27:30 GMT
        assert_eq!(parse_retry_after("120", now), Ok(secs(120)));
        assert_eq!(
            parse_retry_after("0.25", now),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Ok(secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            Ok(secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", now),
            Ok(secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Ok(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), Err(NEGATIVE));
        assert_eq!(parse_retry_after("5s", now), Err(INVALID_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Thu, 21 Oct 2015 07:28:00 GMT", now),
            Err(INVALID_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("soon", now), Err(INVALID_RETRY_AFTER));
        assert_eq!(parse_retry_after("", now), Err(EMPTY));
    }
}

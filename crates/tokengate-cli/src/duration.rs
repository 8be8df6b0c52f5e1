//! Durations in the command's inputs (the workload file's `duration`, `max_wait` and bursts,
//! and `--duration`), written as a limits file writes its periods: `90s`, `1m30s`, `500ms`,
//! `1h`, `1d`, `2d12h`, or `second`, `minute`, `hour`, `day`. One grammar for every file the
//! command reads.
//!
//! The library reads a limits file's periods with this grammar but does not export its parser,
//! so this is the same grammar over the library's public Go-duration parser
//! ([`tokengate::feedback::parse_go_duration`]), with whole days in front; a test holds it to
//! the library's reading of the same strings as `per = "..."`.

use std::time::Duration;

use tokengate::feedback::parse_go_duration;

/// What a duration looks like, for messages: "expected {EXPECTED}, found ...".
pub const EXPECTED: &str = "a duration such as \"90s\", \"10m\", \"1m30s\", \"1h\", \"1d\" or \"2d12h\" (units ns, us, ms, s, m, h, d)";

const DAY: u64 = 86_400;

/// Reads a duration (surrounding spaces ignored); `None` when `s` is not one.
///
/// ```
/// use std::time::Duration;
/// use tokengate_cli::duration::parse;
///
/// assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse("2d12h"), Some(Duration::from_secs(216_000)));
/// assert_eq!(parse("1d"), Some(Duration::from_secs(86_400)));
/// assert_eq!(parse("minute"), Some(Duration::from_secs(60)));
/// assert_eq!(parse("250us"), Some(Duration::from_micros(250)));
/// assert_eq!(parse("0s"), Some(Duration::ZERO));
/// assert_eq!(parse("an hour"), None);
/// assert_eq!(parse("10"), None);
/// ```
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    match s {
        "second" => return Some(Duration::from_secs(1)),
        "minute" => return Some(Duration::from_secs(60)),
        "hour" => return Some(Duration::from_secs(3_600)),
        "day" => return Some(Duration::from_secs(DAY)),
        _ => {}
    }
    // Go durations have no `d` unit, and no other unit holds a `d`: whole days come first.
    match s.split_once('d') {
        Some((days, rest)) => {
            if days.is_empty() || !days.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let days = Duration::from_secs(days.parse::<u64>().ok()?.checked_mul(DAY)?);
            if rest.is_empty() {
                Some(days)
            } else if rest.starts_with(['+', '-']) {
                None
            } else {
                days.checked_add(parse_go_duration(rest)?)
            }
        }
        None => parse_go_duration(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengate::config::Config;

    /// The period the library reads from `per = "s"` in a limits file, if it reads one (no
    /// margin: a margin must be shorter than the period).
    fn library(s: &str) -> Option<Duration> {
        let text = format!(
            "margin = \"0s\"\n[models.m]\nlimits = [{{ dimension = \"requests\", amount = 1, per = \"{s}\" }}]\n"
        );
        let config = Config::from_toml_str(&text, "limits.toml").ok()?;
        let (_, policy) = config.models().next()?;
        let (_, limit) = policy.limits().next()?;
        Some(limit.period())
    }

    #[test]
    fn reads_what_a_limits_file_reads() {
        for s in [
            "1s",
            "90s",
            "1m",
            "1m30s",
            "1h",
            "1h30m",
            "1.5h",
            "2m59.56s",
            "500ms",
            "250us",
            "250µs",
            "100ns",
            "1d",
            "2d12h",
            "1d30m",
            "7d",
            "second",
            "minute",
            "hour",
            "day",
            "3600s",
            "1d1h1m1s1ms",
        ] {
            assert_eq!(parse(s), library(s), "{s:?}");
            assert!(parse(s).is_some(), "{s:?}");
        }
        for s in [
            "", "an hour", "10", "1x", "-1s", "d", "1d-1h", "1d+1h", "1.5d", "d1", "1dd", "1 m",
            "1w", "1y", "Minute", "1D",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
            assert_eq!(library(s), None, "{s:?}");
        }
    }

    #[test]
    fn zero_and_spaces() {
        assert_eq!(parse("0s"), Some(Duration::ZERO));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(" 1d "), Some(Duration::from_secs(DAY)));
    }
}

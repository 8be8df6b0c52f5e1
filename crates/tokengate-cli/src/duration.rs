//! Durations in the command's inputs (the workload file's `duration`, `max_wait` and bursts,
//! and `--duration`), written as a limits file writes its periods: `90s`, `1m30s`, `500ms`,
//! `1h`, `1d`, `2d12h`, or `second`, `minute`, `hour`, `day`. One grammar for every file the
//! command reads: the library's ([`tokengate::config::parse_duration`]).

use std::time::Duration;

/// What a duration looks like, for messages: "expected {EXPECTED}, found ...".
pub const EXPECTED: &str = "a duration such as \"90s\", \"10m\", \"1m30s\", \"1h\", \"1d\" or \"2d12h\" (units ns, us, ms, s, m, h, d)";

/// Reads a duration (surrounding spaces ignored); `None` when `s` is not one.
///
/// ```
/// use std::time::Duration;
/// use tokengate_cli::duration::parse;
///
/// assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse(" 2d12h "), Some(Duration::from_secs(216_000)));
/// assert_eq!(parse("minute"), Some(Duration::from_secs(60)));
/// assert_eq!(parse("250us"), Some(Duration::from_micros(250)));
/// assert_eq!(parse("0s"), Some(Duration::ZERO));
/// assert_eq!(parse("an hour"), None);
/// assert_eq!(parse("10"), None);
/// ```
pub fn parse(s: &str) -> Option<Duration> {
    tokengate::config::parse_duration(s.trim())
}

//! The values of a policy table: whole numbers, bursts, durations (`per`, `margin`),
//! algorithms and dimensions, each read with an error that says what is expected.

use std::time::Duration;

use toml::de::DeValue;

use super::document::Doc;
use super::error::{ConfigError, ErrorKind};
use super::suggest::suggest;
use super::tree::{self, Node};
use crate::dimension::Dimension;
use crate::feedback::parse_go_duration;
use crate::limit::Algorithm;

pub(super) const SECOND: Duration = Duration::from_secs(1);
pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3_600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);

impl Doc<'_> {
    /// `burst = N`: the units a limit admits at once, a whole number of at least 1.
    pub(super) fn burst(&self, node: &Node<'_>, field: &str) -> Result<u64, ConfigError> {
        const WHAT: &str = "units (leave `burst` out for the default)";
        if tree::integer(node.get_ref()) == Some(0) {
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::InvalidValue,
                format!(
                    "expected a whole number of at least 1 ({WHAT}), found 0: a bucket must hold at least 1 unit"
                ),
            ));
        }
        self.whole(node, field, 1, WHAT)
    }

    /// A whole number in `min..=u64::MAX`.
    pub(super) fn whole(
        &self,
        node: &Node<'_>,
        field: &str,
        min: u64,
        what: &str,
    ) -> Result<u64, ConfigError> {
        self.whole_or(node, field, min, what, "")
    }

    /// [`whole`](Self::whole), with `alternative` appended to what is expected on a wrong type.
    pub(super) fn whole_or(
        &self,
        node: &Node<'_>,
        field: &str,
        min: u64,
        what: &str,
        alternative: &str,
    ) -> Result<u64, ConfigError> {
        let expected = format!("expected a whole number of at least {min} ({what})");
        let Some(n) = tree::integer(node.get_ref()) else {
            let mut message = format!(
                "{expected}{alternative}, found {}",
                tree::kind(node.get_ref())
            );
            if let DeValue::String(s) = node.get_ref() {
                if s.replace('_', "").parse::<u64>().is_ok() {
                    message.push_str(&format!(": write {s} without quotes"));
                }
            }
            return Err(self.error(node.span(), field, ErrorKind::WrongType, message));
        };
        if n < i128::from(min) {
            let hint = if n == 0 {
                ": a limit of 0 would admit nothing; to leave a dimension unlimited, leave its key out"
            } else {
                ""
            };
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::InvalidValue,
                format!("{expected}, found {n}{hint}"),
            ));
        }
        u64::try_from(n).map_err(|_| {
            self.error(
                node.span(),
                field,
                ErrorKind::InvalidValue,
                format!("{expected}, at most {}, found {n}", u64::MAX),
            )
        })
    }

    /// `per = "1m"`.
    pub(super) fn period(&self, node: &Node<'_>, field: &str) -> Result<Duration, ConfigError> {
        self.duration(node, field, false)
    }

    /// `margin = "50ms"`: the safety margin of the limits of a table
    /// ([`Limit::margin`](crate::Limit::margin)), or of the file's tables that set none; 0 is
    /// allowed.
    pub(super) fn margin(&self, node: &Node<'_>, field: &str) -> Result<Duration, ConfigError> {
        self.duration(node, field, true)
    }

    /// A duration written as a string; 0 only when `zero_ok`.
    fn duration(
        &self,
        node: &Node<'_>,
        field: &str,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        const EXPECTED: &str =
            "expected a duration such as \"1s\", \"1m\", \"1h\", \"1d\", \"90s\" or \"1m30s\" \
             (units ns, us, ms, s, m, h, d)";
        let DeValue::String(s) = node.get_ref() else {
            let hint = if matches!(node.get_ref(), DeValue::Integer(_)) {
                ": a number needs a unit and quotes, e.g. \"60s\""
            } else {
                ""
            };
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::WrongType,
                format!("{EXPECTED}, found {}{hint}", tree::kind(node.get_ref())),
            ));
        };
        match parse_period(s) {
            Some(d) if d.is_zero() && !zero_ok => Err(self.error(
                node.span(),
                field,
                ErrorKind::InvalidValue,
                format!("{EXPECTED}, found \"{s}\": the period must be longer than 0"),
            )),
            Some(d) => Ok(d),
            None => Err(self.error(
                node.span(),
                field,
                ErrorKind::InvalidValue,
                format!("{EXPECTED}, found \"{}\"", s.escape_debug()),
            )),
        }
    }

    /// `algorithm = "token_bucket"`.
    pub(super) fn algorithm(&self, node: &Node<'_>, field: &str) -> Result<Algorithm, ConfigError> {
        let names = Algorithm::ALL.map(Algorithm::name);
        let expected = format!("expected one of {}", names.join(", "));
        let DeValue::String(s) = node.get_ref() else {
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::WrongType,
                format!("{expected}, found {}", tree::kind(node.get_ref())),
            ));
        };
        if let Some(a) = Algorithm::from_name(s.as_ref()) {
            return Ok(a);
        }
        let mut message = format!("{expected}, found \"{}\"", s.escape_debug());
        let normal = s.to_lowercase().replace(['-', ' '], "_");
        let near = names
            .iter()
            .find(|n| **n == normal)
            .copied()
            .or_else(|| suggest(&normal, &names));
        if let Some(near) = near {
            message.push_str(&format!(" (did you mean \"{near}\"?)"));
        }
        Err(self.error(node.span(), field, ErrorKind::InvalidValue, message))
    }

    /// `dimension = "input_tokens"` (or a name of the user's own).
    pub(super) fn dimension(&self, node: &Node<'_>, field: &str) -> Result<Dimension, ConfigError> {
        const BUILTIN: [&str; 4] = ["requests", "input_tokens", "output_tokens", "tokens"];
        let DeValue::String(s) = node.get_ref() else {
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::WrongType,
                format!(
                    "expected a string: \"requests\", \"input_tokens\", \"output_tokens\", \"tokens\" or a name of your own, found {}",
                    tree::kind(node.get_ref())
                ),
            ));
        };
        let invalid =
            |message: String| self.error(node.span(), field, ErrorKind::InvalidValue, message);
        match s.as_ref() {
            "requests" => return Ok(Dimension::Requests),
            "input_tokens" => return Ok(Dimension::InputTokens),
            "output_tokens" => return Ok(Dimension::OutputTokens),
            "tokens" => return Ok(Dimension::Tokens),
            _ => {}
        }
        if s.trim().is_empty() || s.trim() != s.as_ref() {
            return Err(invalid(format!(
                "expected a dimension name without leading or trailing spaces, found \"{}\"",
                s.escape_debug()
            )));
        }
        let normal = s.to_lowercase().replace(['-', ' '], "_");
        if normal == "in_flight" || normal == "inflight" {
            return Err(invalid(
                "in_flight is not a rate: write max_in_flight = N in the policy table instead"
                    .into(),
            ));
        }
        let near = BUILTIN
            .iter()
            .find(|b| normal == **b || normal.trim_end_matches('s') == b.trim_end_matches('s'))
            .copied()
            .or_else(|| suggest(&normal, &BUILTIN));
        if let Some(near) = near {
            return Err(invalid(format!(
                "\"{}\" looks like the built-in dimension \"{near}\": write dimension = \"{near}\" \
                 (a name of your own must not resemble requests, input_tokens, output_tokens or tokens)",
                s.escape_debug()
            )));
        }
        Ok(Dimension::Custom(s.as_ref().into()))
    }
}

/// A duration as a limits file writes one (`per`, `margin`): `second`, `minute`, `hour`,
/// `day`, a Go duration (`90s`, `1m30s`, `500ms`, `250us`), or whole days in front of one
/// (`1d`, `2d12h`); `None` for anything else, or for a duration past `Duration::MAX`. For
/// tools that read durations beside a limits file, so that both accept the same.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::config::parse_duration;
///
/// assert_eq!(parse_duration("2d12h"), Some(Duration::from_secs(216_000)));
/// assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse_duration("minute"), Some(Duration::from_secs(60)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(s: &str) -> Option<Duration> {
    parse_period(s)
}

/// A period: `second`, `minute`, `hour`, `day`, a Go duration (`90s`, `1m30s`, `500ms`), or
/// whole days in front of one (`1d`, `2d12h`).
fn parse_period(s: &str) -> Option<Duration> {
    match s {
        "second" => return Some(SECOND),
        "minute" => return Some(MINUTE),
        "hour" => return Some(HOUR),
        "day" => return Some(DAY),
        _ => {}
    }
    match s.split_once('d') {
        // Go durations have no `d` unit; no other unit holds a `d`.
        Some((days, rest)) => {
            if days.is_empty() || !days.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let days: u64 = days.parse().ok()?;
            let days = Duration::from_secs(days.checked_mul(86_400)?);
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

    #[test]
    fn periods() {
        assert_eq!(parse_period("1m"), Some(MINUTE));
        assert_eq!(parse_period("minute"), Some(MINUTE));
        assert_eq!(parse_period("1d"), Some(DAY));
        assert_eq!(parse_period("2d12h"), Some(Duration::from_secs(216_000)));
        assert_eq!(parse_period("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_period("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_period("d"), None);
        assert_eq!(parse_period("1d-1h"), None);
        assert_eq!(parse_period("1dd"), None);
        assert_eq!(parse_period("99999999999999999999d"), None);
        assert_eq!(parse_period("60"), None);
        assert_eq!(parse_period("1x"), None);
    }
}

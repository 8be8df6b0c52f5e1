//! One policy table (`[models.NAME]`, `[families.NAME]`, `[tenants.NAME]`, `[defaults.*]`)
//! read into a [`Policy`], every limit validated on its own so that an error points at the
//! field that caused it.

use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::error::{child, index, ConfigError, ErrorKind};
use super::tree::{self, Key, Node, Span};
use super::Doc;
use crate::dimension::Dimension;
use crate::error::BuildError;
use crate::feedback::parse_go_duration;
use crate::limit::{Algorithm, Limit};
use crate::policy::{Policy, PolicyBuilder};

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// The shorthand keys: name, dimension, period.
const SHORTHANDS: [(&str, Builtin, Duration); 8] = [
    ("requests_per_minute", Builtin::Requests, MINUTE),
    ("requests_per_day", Builtin::Requests, DAY),
    ("input_tokens_per_minute", Builtin::Input, MINUTE),
    ("input_tokens_per_day", Builtin::Input, DAY),
    ("output_tokens_per_minute", Builtin::Output, MINUTE),
    ("output_tokens_per_day", Builtin::Output, DAY),
    ("tokens_per_minute", Builtin::Tokens, MINUTE),
    ("tokens_per_day", Builtin::Tokens, DAY),
];

/// Every key of a policy table but a family's `match`.
pub(super) const POLICY_FIELDS: [&str; 10] = [
    "requests_per_minute",
    "requests_per_day",
    "input_tokens_per_minute",
    "input_tokens_per_day",
    "output_tokens_per_minute",
    "output_tokens_per_day",
    "tokens_per_minute",
    "tokens_per_day",
    "max_in_flight",
    "limits",
];

/// The keys of one entry of `limits`.
const LIMIT_FIELDS: [&str; 7] = [
    "dimension",
    "amount",
    "per",
    "algorithm",
    "burst",
    "input_weight",
    "output_weight",
];

/// The keys of the table form of `tokens_per_minute` / `tokens_per_day`.
const WEIGHTED_FIELDS: [&str; 3] = ["amount", "input_weight", "output_weight"];

/// Abbreviations people write for the shorthand keys.
const ALIASES: [(&str, &str); 8] = [
    ("rpm", "requests_per_minute"),
    ("rpd", "requests_per_day"),
    ("itpm", "input_tokens_per_minute"),
    ("otpm", "output_tokens_per_minute"),
    ("tpm", "tokens_per_minute"),
    ("tpd", "tokens_per_day"),
    ("concurrency", "max_in_flight"),
    ("max_concurrency", "max_in_flight"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Requests,
    Input,
    Output,
    Tokens,
}

impl Builtin {
    fn dimension(self) -> Dimension {
        match self {
            Builtin::Requests => Dimension::Requests,
            Builtin::Input => Dimension::InputTokens,
            Builtin::Output => Dimension::OutputTokens,
            Builtin::Tokens => Dimension::Tokens,
        }
    }
}

/// Where a part of a limit (or a family's `match`) was written, for errors.
#[derive(Debug, Clone)]
pub(super) struct At {
    pub(super) field: String,
    pub(super) span: Span,
}

/// One limit as read, with where each of its parts was written.
#[derive(Debug)]
struct LimitSpec {
    dimension: Dimension,
    limit: Limit,
    /// `Some` for combined tokens: (input, output).
    weights: Option<(u64, u64)>,
    /// The whole limit (the shorthand key, or the `[[limits]]` entry).
    at: At,
    amount: At,
    per: At,
    burst: At,
    input_weight: At,
    output_weight: At,
}

impl LimitSpec {
    fn new(dimension: Dimension, limit: Limit, at: At) -> Self {
        Self {
            dimension,
            limit,
            weights: None,
            amount: at.clone(),
            per: at.clone(),
            burst: at.clone(),
            input_weight: at.clone(),
            output_weight: at.clone(),
            at,
        }
    }

    fn add_to(&self, builder: PolicyBuilder) -> PolicyBuilder {
        match self.weights {
            Some((i, o)) => builder.combined_tokens(self.limit.clone(), i, o),
            None => builder.limit(self.dimension.clone(), self.limit.clone()),
        }
    }
}

/// A family's `match`: where its key is, and its value.
pub(super) type Matched<'a, 'i> = Option<(At, &'a Node<'i>)>;

/// What a policy table is, for messages: `model`, `family`, `tenant`, ...
#[derive(Debug, Clone, Copy)]
pub(super) struct TableKind {
    /// How to name the table in a message: "the model", "the family", ...
    pub(super) what: &'static str,
    /// Whether `match` is allowed (families).
    pub(super) family: bool,
}

impl<'t> Doc<'t> {
    /// Reads a policy table. Returns the policy and, for a family, its `match` value.
    pub(super) fn policy_table<'a, 'i>(
        &self,
        key: &Key<'i>,
        node: &'a Node<'i>,
        path: &str,
        kind: TableKind,
    ) -> Result<(Policy, Matched<'a, 'i>), ConfigError> {
        let table = match node.get_ref() {
            DeValue::Table(t) => t,
            other => {
                return Err(self.error(
                    node.span(),
                    path,
                    ErrorKind::WrongType,
                    format!(
                    "expected a table of limits for {} (e.g. requests_per_minute = 500), found {}",
                    kind.what,
                    tree::kind(other)
                ),
                ))
            }
        };
        let mut specs: Vec<LimitSpec> = Vec::new();
        let mut max_in_flight: Option<(u64, At)> = None;
        let mut matched = None;
        for (k, v) in tree::entries(table) {
            let name: &str = k.get_ref();
            let field = child(path, name);
            if let Some(&(_, builtin, period)) = SHORTHANDS.iter().find(|(n, _, _)| *n == name) {
                specs.push(self.shorthand(k, v, &field, builtin, period)?);
            } else if name == "max_in_flight" {
                let n = self.whole(v, &field, 1, "requests in flight")?;
                max_in_flight = Some((
                    n,
                    At {
                        field,
                        span: v.span(),
                    },
                ));
            } else if name == "limits" {
                self.general_limits(v, &field, &mut specs)?;
            } else if name == "match" && kind.family {
                matched = Some((
                    At {
                        field,
                        span: k.span(),
                    },
                    v,
                ));
            } else {
                let mut allowed: Vec<&str> = POLICY_FIELDS.to_vec();
                if kind.family {
                    allowed.push("match");
                }
                let mut message = unknown_field_message(name, &allowed);
                if matches!(v.get_ref(), DeValue::Table(_)) && !kind.family {
                    message.push_str(
                        "; a name holding a dot must be quoted, e.g. [models.\"anthropic.claude-3-5-sonnet\"]",
                    );
                }
                return Err(self.error(k.span(), &field, ErrorKind::UnknownField, message));
            }
        }
        if kind.family && matched.is_none() {
            return Err(self.error(
                key.span(),
                &child(path, "match"),
                ErrorKind::Missing,
                "a family needs `match`: the model names that share its budget, exact or with a trailing `*`, \
                 e.g. match = [\"gpt-4o-mini\", \"gpt-4o-mini-*\"]",
            ));
        }
        if specs.is_empty() && max_in_flight.is_none() {
            return Err(self.error(
                key.span(),
                path,
                ErrorKind::Empty,
                format!(
                    "{} sets no limit: expected at least one of {}, or a [[...limits]] entry",
                    kind.what,
                    POLICY_FIELDS[..9].join(", ")
                ),
            ));
        }
        // The same dimension and period twice is a mistake of editing (the stricter would win).
        for (i, later) in specs.iter().enumerate() {
            if let Some(first) = specs[..i].iter().find(|s| {
                s.dimension == later.dimension && s.limit.period() == later.limit.period()
            }) {
                let (line, column) = self.line_column(first.at.span.start);
                return Err(self.error(
                    later.at.span.clone(),
                    &later.at.field,
                    ErrorKind::Duplicate,
                    format!(
                        "a second {} limit per {} (the first is `{}` at {line}:{column}): keep one, or give them different periods",
                        later.dimension,
                        crate::fmt::Period(later.limit.period()),
                        first.at.field,
                    ),
                ));
            }
        }
        // Each limit on its own, so that the library's error points at its field.
        for spec in &specs {
            if let Err(e) = spec.add_to(Policy::builder()).build() {
                return Err(self.build_error(spec, e));
            }
        }
        let mut builder = Policy::builder();
        for spec in &specs {
            builder = spec.add_to(builder);
        }
        if let Some((n, at)) = &max_in_flight {
            builder = builder.max_in_flight(*n);
            if let Err(e) = Policy::builder().max_in_flight(*n).build() {
                return Err(self.error(
                    at.span.clone(),
                    &at.field,
                    ErrorKind::Policy(Box::new(e.clone())),
                    e.to_string(),
                ));
            }
        }
        builder
            .build()
            .map(|policy| (policy, matched))
            .map_err(|e| {
                self.error(
                    key.span(),
                    path,
                    ErrorKind::Policy(Box::new(e.clone())),
                    e.to_string(),
                )
            })
    }

    /// `requests_per_minute = 500`, `tokens_per_minute = { amount = 2_000_000, output_weight = 5 }`.
    fn shorthand(
        &self,
        key: &Key<'_>,
        node: &Node<'_>,
        field: &str,
        builtin: Builtin,
        period: Duration,
    ) -> Result<LimitSpec, ConfigError> {
        let at = At {
            field: field.to_owned(),
            span: node.span(),
        };
        let units = match builtin {
            Builtin::Requests => "requests",
            _ => "tokens",
        };
        let per = crate::fmt::Period(period);
        match (builtin, node.get_ref()) {
            (Builtin::Tokens, DeValue::Table(table)) => {
                let mut spec = self.weighted(key, table, field, at, period)?;
                spec.dimension = Dimension::Tokens;
                Ok(spec)
            }
            _ => {
                let what = format!("{units} per {per}");
                let amount = if builtin == Builtin::Tokens {
                    self.whole_or(
                        node,
                        field,
                        1,
                        &what,
                        ", or { amount = N, input_weight = 1, output_weight = 5 }",
                    )?
                } else {
                    self.whole(node, field, 1, &what)?
                };
                Ok(LimitSpec::new(
                    builtin.dimension(),
                    Limit::new(amount, period),
                    at,
                ))
            }
        }
    }

    /// The table form of combined tokens: `{ amount, input_weight = 1, output_weight = 1 }`.
    fn weighted(
        &self,
        key: &Key<'_>,
        table: &DeTable<'_>,
        field: &str,
        at: At,
        period: Duration,
    ) -> Result<LimitSpec, ConfigError> {
        let mut amount = None;
        let mut input_weight = (1, at.clone());
        let mut output_weight = (1, at.clone());
        for (k, v) in tree::entries(table) {
            let name: &str = k.get_ref();
            let sub = child(field, name);
            let here = At {
                field: sub.clone(),
                span: v.span(),
            };
            match name {
                "amount" => amount = Some((self.whole(v, &sub, 1, "combined tokens per period")?, here)),
                "input_weight" => input_weight = (self.whole(v, &sub, 0, "input weight")?, here),
                "output_weight" => output_weight = (self.whole(v, &sub, 0, "output weight")?, here),
                _ => {
                    return Err(self.error(
                        k.span(),
                        &sub,
                        ErrorKind::UnknownField,
                        unknown_field_message(name, &WEIGHTED_FIELDS)
                            + " (for a burst or an algorithm, use a [[...limits]] entry with dimension = \"tokens\")",
                    ))
                }
            }
        }
        let Some((amount, amount_at)) = amount else {
            return Err(self.error(
                key.span(),
                &child(field, "amount"),
                ErrorKind::Missing,
                "is missing: expected the combined tokens per period, e.g. { amount = 2_000_000, output_weight = 5 }",
            ));
        };
        let mut spec = LimitSpec::new(Dimension::Tokens, Limit::new(amount, period), at);
        spec.weights = Some((input_weight.0, output_weight.0));
        spec.amount = amount_at;
        spec.input_weight = input_weight.1;
        spec.output_weight = output_weight.1;
        Ok(spec)
    }

    /// `[[models.NAME.limits]]` entries.
    fn general_limits(
        &self,
        node: &Node<'_>,
        field: &str,
        specs: &mut Vec<LimitSpec>,
    ) -> Result<(), ConfigError> {
        let DeValue::Array(items) = node.get_ref() else {
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::WrongType,
                format!(
                    "expected an array of tables, written [[...limits]] with dimension, amount and per, found {}",
                    tree::kind(node.get_ref())
                ),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            specs.push(self.general_limit(item, &index(field, i))?);
        }
        Ok(())
    }

    /// One `[[...limits]]` entry.
    fn general_limit(&self, node: &Node<'_>, field: &str) -> Result<LimitSpec, ConfigError> {
        let DeValue::Table(table) = node.get_ref() else {
            return Err(self.error(
                node.span(),
                field,
                ErrorKind::WrongType,
                format!(
                    "expected a table with dimension, amount and per, found {}",
                    tree::kind(node.get_ref())
                ),
            ));
        };
        let at = At {
            field: field.to_owned(),
            span: node.span(),
        };
        let mut dimension: Option<(Dimension, At)> = None;
        let mut amount: Option<(u64, At)> = None;
        let mut period: Option<(Duration, At)> = None;
        let mut algorithm: Option<(Algorithm, At)> = None;
        let mut burst: Option<(u64, At)> = None;
        let mut input_weight: Option<(u64, At)> = None;
        let mut output_weight: Option<(u64, At)> = None;
        for (k, v) in tree::entries(table) {
            let name: &str = k.get_ref();
            let sub = child(field, name);
            let here = At {
                field: sub.clone(),
                span: v.span(),
            };
            match name {
                "dimension" => dimension = Some((self.dimension(v, &sub)?, here)),
                "amount" => amount = Some((self.whole(v, &sub, 1, "units per period")?, here)),
                "per" => period = Some((self.period(v, &sub)?, here)),
                "algorithm" => algorithm = Some((self.algorithm(v, &sub)?, here)),
                "burst" => {
                    burst = Some((
                        self.whole(v, &sub, 1, "units (leave `burst` out for the default)")?,
                        here,
                    ))
                }
                "input_weight" => {
                    input_weight = Some((self.whole(v, &sub, 0, "input weight")?, here))
                }
                "output_weight" => {
                    output_weight = Some((self.whole(v, &sub, 0, "output weight")?, here))
                }
                _ => {
                    return Err(self.error(
                        k.span(),
                        &sub,
                        ErrorKind::UnknownField,
                        unknown_field_message(name, &LIMIT_FIELDS),
                    ))
                }
            }
        }
        let missing = |name: &str, example: &str| {
            self.error(
                node.span(),
                &child(field, name),
                ErrorKind::Missing,
                format!("is missing: expected {example}"),
            )
        };
        let (dimension, _) = dimension.ok_or_else(|| {
            missing(
                "dimension",
                "what the limit counts: dimension = \"requests\", \"input_tokens\", \"output_tokens\", \"tokens\" or a name of your own",
            )
        })?;
        let (amount, amount_at) = amount.ok_or_else(|| {
            missing(
                "amount",
                "the units admitted per period, e.g. amount = 30_000",
            )
        })?;
        let (period, per_at) = period.ok_or_else(|| {
            missing(
                "per",
                "the period, e.g. per = \"1m\" (1s, 1m, 1h, 1d, or a duration such as \"90s\")",
            )
        })?;
        if dimension != Dimension::Tokens {
            if let Some((_, w)) = input_weight.as_ref().or(output_weight.as_ref()) {
                return Err(self.error(
                    w.span.clone(),
                    &w.field,
                    ErrorKind::InvalidValue,
                    format!(
                        "weights apply to dimension = \"tokens\" only, and this limit counts `{dimension}`: remove the weight, or count combined tokens"
                    ),
                ));
            }
        }
        let mut limit = Limit::new(amount, period);
        if let Some((algorithm, _)) = &algorithm {
            limit = limit.algorithm(*algorithm);
        }
        if let Some((b, b_at)) = &burst {
            let algorithm = algorithm.as_ref().map_or(Algorithm::default(), |a| a.0);
            if !matches!(algorithm, Algorithm::SmoothWindow | Algorithm::TokenBucket) {
                return Err(self.error(
                    b_at.span.clone(),
                    &b_at.field,
                    ErrorKind::InvalidValue,
                    format!(
                        "the {} algorithm has no burst: remove `burst`, or use algorithm = \"token_bucket\" or \"smooth_window\"",
                        algorithm.name()
                    ),
                ));
            }
            limit = limit.burst(*b);
        }
        let mut spec = LimitSpec::new(dimension, limit, at);
        spec.amount = amount_at;
        spec.per = per_at;
        if let Some((_, b_at)) = burst {
            spec.burst = b_at;
        }
        if spec.dimension == Dimension::Tokens
            && (input_weight.is_some() || output_weight.is_some())
        {
            let (i, i_at) = input_weight.unwrap_or((1, spec.at.clone()));
            let (o, o_at) = output_weight.unwrap_or((1, spec.at.clone()));
            spec.weights = Some((i, o));
            spec.input_weight = i_at;
            spec.output_weight = o_at;
        }
        Ok(spec)
    }

    /// A whole number in `min..=u64::MAX`.
    fn whole(
        &self,
        node: &Node<'_>,
        field: &str,
        min: u64,
        what: &str,
    ) -> Result<u64, ConfigError> {
        self.whole_or(node, field, min, what, "")
    }

    /// [`whole`](Self::whole), with `alternative` appended to what is expected on a wrong type.
    fn whole_or(
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
    fn period(&self, node: &Node<'_>, field: &str) -> Result<Duration, ConfigError> {
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
            Some(d) if d.is_zero() => Err(self.error(
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
    fn algorithm(&self, node: &Node<'_>, field: &str) -> Result<Algorithm, ConfigError> {
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
    fn dimension(&self, node: &Node<'_>, field: &str) -> Result<Dimension, ConfigError> {
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

    /// A [`BuildError`] of one limit, pointed at the field that caused it.
    fn build_error(&self, spec: &LimitSpec, e: BuildError) -> ConfigError {
        let (at, message) = match &e {
            BuildError::InLimit {
                dimension,
                limit,
                source,
            } => {
                let (at, reason) = match source.as_ref() {
                    BuildError::ZeroAmount => (&spec.amount, None),
                    BuildError::ZeroPeriod | BuildError::PeriodTooLong { .. } => (&spec.per, None),
                    BuildError::BurstAboveAmount { burst, amount } => (
                        &spec.burst,
                        Some(format!(
                            "the burst {burst} is above the amount {amount}: the smooth window never admits more than \
                             the amount per period; lower `burst`, or use algorithm = \"token_bucket\""
                        )),
                    ),
                    BuildError::BurstNotApplicable { algorithm } => (
                        &spec.burst,
                        Some(format!(
                            "the {} algorithm has no burst: remove `burst`, or use algorithm = \"token_bucket\" or \"smooth_window\"",
                            algorithm.name()
                        )),
                    ),
                    BuildError::ZeroBurst | BuildError::BurstTooLarge { .. } => (&spec.burst, None),
                    _ => (&spec.at, None),
                };
                let message = match reason {
                    Some(reason) => format!("{dimension} limit {limit}: {reason}"),
                    None => e.to_string(),
                };
                (at, message)
            }
            BuildError::BadWeight { which: "input", .. } => (&spec.input_weight, e.to_string()),
            BuildError::BadWeight { .. } => (&spec.output_weight, e.to_string()),
            _ => (&spec.at, e.to_string()),
        };
        self.error(
            at.span.clone(),
            &at.field,
            ErrorKind::Policy(Box::new(e)),
            message,
        )
    }
}

/// A period: `second`, `minute`, `hour`, `day`, a Go duration (`90s`, `1m30s`, `500ms`), or
/// whole days in front of one (`1d`, `2d12h`).
pub(super) fn parse_period(s: &str) -> Option<Duration> {
    match s {
        "second" => return Some(Duration::from_secs(1)),
        "minute" => return Some(MINUTE),
        "hour" => return Some(Duration::from_secs(3_600)),
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

/// "unknown field `x`: expected one of a, b, c (did you mean `b`?)".
pub(super) fn unknown_field_message(name: &str, allowed: &[&str]) -> String {
    let mut message = format!(
        "unknown field `{}`: expected one of {}",
        name.escape_debug(),
        allowed.join(", ")
    );
    let lower = name.to_lowercase();
    let near = ALIASES
        .iter()
        .find(|(alias, full)| *alias == lower && allowed.contains(full))
        .map(|(_, full)| *full)
        .or_else(|| suggest(&lower, allowed));
    if let Some(near) = near {
        message.push_str(&format!(" (did you mean `{near}`?)"));
    }
    message
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub(super) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if word.chars().count() > 64 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 6))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
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

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggest("requests_per_minit", &POLICY_FIELDS),
            Some("requests_per_minute")
        );
        assert_eq!(suggest("zzz", &POLICY_FIELDS), None);
        assert!(unknown_field_message("rpm", &POLICY_FIELDS)
            .ends_with("(did you mean `requests_per_minute`?)"));
    }
}

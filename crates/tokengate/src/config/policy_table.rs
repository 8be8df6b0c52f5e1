//! One policy table (`[models.NAME]`, `[families.NAME]`, `[tenants.NAME]`, `[defaults.*]`)
//! read into a [`Policy`], every limit validated on its own so that an error points at the
//! field that caused it. Its values are read by `values`; an unknown key is answered with the
//! closest allowed one by `suggest`.

use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::document::Doc;
use super::error::{child, index, ConfigError, ErrorKind};
use super::suggest::{near_field, unknown_field_message};
use super::tree::{self, Key, Node, Span};
use super::values::{DAY, HOUR, MINUTE, SECOND};
use crate::dimension::Dimension;
use crate::error::BuildError;
use crate::limit::{Algorithm, Limit};
use crate::policy::{Policy, PolicyBuilder};

/// A shorthand key of a policy table: `requests_per_minute = 500`, or its table form
/// `requests_per_minute = { amount = 500, burst = 500 }`.
#[derive(Debug, Clone, Copy)]
struct Shorthand {
    name: &'static str,
    builtin: Builtin,
    period: Duration,
}

impl Shorthand {
    const fn new(name: &'static str, builtin: Builtin, period: Duration) -> Self {
        Self {
            name,
            builtin,
            period,
        }
    }
}

/// The shorthand keys: every built-in dimension per second, minute, hour and day.
const SHORTHANDS: [Shorthand; 16] = [
    Shorthand::new("requests_per_second", Builtin::Requests, SECOND),
    Shorthand::new("requests_per_minute", Builtin::Requests, MINUTE),
    Shorthand::new("requests_per_hour", Builtin::Requests, HOUR),
    Shorthand::new("requests_per_day", Builtin::Requests, DAY),
    Shorthand::new("input_tokens_per_second", Builtin::Input, SECOND),
    Shorthand::new("input_tokens_per_minute", Builtin::Input, MINUTE),
    Shorthand::new("input_tokens_per_hour", Builtin::Input, HOUR),
    Shorthand::new("input_tokens_per_day", Builtin::Input, DAY),
    Shorthand::new("output_tokens_per_second", Builtin::Output, SECOND),
    Shorthand::new("output_tokens_per_minute", Builtin::Output, MINUTE),
    Shorthand::new("output_tokens_per_hour", Builtin::Output, HOUR),
    Shorthand::new("output_tokens_per_day", Builtin::Output, DAY),
    Shorthand::new("tokens_per_second", Builtin::Tokens, SECOND),
    Shorthand::new("tokens_per_minute", Builtin::Tokens, MINUTE),
    Shorthand::new("tokens_per_hour", Builtin::Tokens, HOUR),
    Shorthand::new("tokens_per_day", Builtin::Tokens, DAY),
];

/// The keys that set a limit on their own line: every shorthand, and `max_in_flight`.
const LIMIT_KEYS: [&str; SHORTHANDS.len() + 1] = shorthands_and(["max_in_flight"]);

/// Every key of a policy table but a family's `match`.
pub(super) const POLICY_FIELDS: [&str; SHORTHANDS.len() + 3] =
    shorthands_and(["max_in_flight", "margin", "limits"]);

/// The names of [`SHORTHANDS`], in order, followed by `extra` (`E` = `N - SHORTHANDS.len()`,
/// checked when the constant is evaluated, at compile time).
const fn shorthands_and<const N: usize, const E: usize>(
    extra: [&'static str; E],
) -> [&'static str; N] {
    assert!(N == SHORTHANDS.len() + E, "N must be SHORTHANDS.len() + E");
    let mut names = [""; N];
    let mut i = 0;
    while i < SHORTHANDS.len() {
        names[i] = SHORTHANDS[i].name;
        i += 1;
    }
    let mut j = 0;
    while j < E {
        names[i + j] = extra[j];
        j += 1;
    }
    names
}

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

/// The keys of the table form of a shorthand of requests, input or output tokens.
pub(super) const SHORTHAND_TABLE_FIELDS: [&str; 2] = ["amount", "burst"];

/// The keys of the table form of a shorthand of combined tokens (`tokens_per_*`).
const WEIGHTED_TABLE_FIELDS: [&str; 4] = ["amount", "burst", "input_weight", "output_weight"];

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

    /// What an amount of this dimension counts, for messages.
    fn units(self) -> &'static str {
        match self {
            Builtin::Requests => "requests",
            _ => "tokens",
        }
    }
}

impl Shorthand {
    /// What its amount counts, for messages: `requests per minute`.
    fn what(&self) -> String {
        format!(
            "{} per {}",
            self.builtin.units(),
            crate::fmt::Period(self.period)
        )
    }
}

/// How a limit was written, for the advice of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A shorthand key (`requests_per_minute = ...`): always the default algorithm.
    Shorthand,
    /// A `[[...limits]]` entry, which may choose its algorithm.
    Entry,
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
    form: Form,
    /// The whole limit (the shorthand key, or the `[[limits]]` entry).
    at: At,
    amount: At,
    per: At,
    burst: At,
    input_weight: At,
    output_weight: At,
}

impl LimitSpec {
    fn new(dimension: Dimension, limit: Limit, form: Form, at: At) -> Self {
        Self {
            dimension,
            limit,
            weights: None,
            form,
            amount: at.clone(),
            per: at.clone(),
            burst: at.clone(),
            input_weight: at.clone(),
            output_weight: at.clone(),
            at,
        }
    }

    /// Counts combined tokens with the weights given (1 for a weight left out), pointing a
    /// weight's errors at it; without either weight, the limit stays unweighted.
    fn set_weights(&mut self, input: Option<(u64, At)>, output: Option<(u64, At)>) {
        if input.is_none() && output.is_none() {
            return;
        }
        let (i, i_at) = input.unwrap_or_else(|| (1, self.at.clone()));
        let (o, o_at) = output.unwrap_or_else(|| (1, self.at.clone()));
        self.weights = Some((i, o));
        self.input_weight = i_at;
        self.output_weight = o_at;
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
        let mut margin: Option<Duration> = None;
        let mut matched = None;
        for (k, v) in tree::entries(table) {
            let name: &str = k.get_ref();
            let field = child(path, name);
            if let Some(shorthand) = SHORTHANDS.iter().find(|s| s.name == name) {
                specs.push(self.shorthand(k, v, &field, shorthand)?);
            } else if name == "margin" {
                margin = Some(self.margin(v, &field)?);
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
                // A table under a name that is no typo of a key: a model name cut at a dot.
                if matches!(v.get_ref(), DeValue::Table(_))
                    && !kind.family
                    && near_field(name, &allowed).is_none()
                {
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
                    LIMIT_KEYS.join(", ")
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
        // The table's margin, else the file's, else the library's default.
        let margined = |builder: PolicyBuilder| match margin.or(self.margin) {
            Some(m) => builder.margin(m),
            None => builder,
        };
        // Each limit on its own, so that the library's error points at its field.
        for spec in &specs {
            if let Err(e) = spec.add_to(margined(Policy::builder())).build() {
                return Err(self.build_error(spec, e));
            }
        }
        let mut builder = margined(Policy::builder());
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

    /// A shorthand key: `requests_per_minute = 500`, or its table form (see
    /// [`shorthand_table`](Self::shorthand_table)).
    fn shorthand(
        &self,
        key: &Key<'_>,
        node: &Node<'_>,
        field: &str,
        shorthand: &Shorthand,
    ) -> Result<LimitSpec, ConfigError> {
        let at = At {
            field: field.to_owned(),
            span: node.span(),
        };
        if let DeValue::Table(table) = node.get_ref() {
            return self.shorthand_table(key, table, field, at, shorthand);
        }
        let what = shorthand.what();
        let amount = if shorthand.builtin == Builtin::Tokens {
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
            shorthand.builtin.dimension(),
            Limit::new(amount, shorthand.period),
            Form::Shorthand,
            at,
        ))
    }

    /// The table form of a shorthand: `{ amount = 600, burst = 600 }`; for combined tokens
    /// also `input_weight` and `output_weight` (1 each when left out), e.g.
    /// `{ amount = 2_000_000, output_weight = 5 }`. `burst` is optional.
    fn shorthand_table(
        &self,
        key: &Key<'_>,
        table: &DeTable<'_>,
        field: &str,
        at: At,
        shorthand: &Shorthand,
    ) -> Result<LimitSpec, ConfigError> {
        let weighted = shorthand.builtin == Builtin::Tokens;
        let what = shorthand.what();
        let mut amount: Option<(u64, At)> = None;
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
                "amount" => amount = Some((self.whole(v, &sub, 1, &what)?, here)),
                "burst" => burst = Some((self.burst(v, &sub)?, here)),
                "input_weight" if weighted => {
                    input_weight = Some((self.whole(v, &sub, 0, "input weight")?, here))
                }
                "output_weight" if weighted => {
                    output_weight = Some((self.whole(v, &sub, 0, "output weight")?, here))
                }
                _ => {
                    return Err(self.error(
                        k.span(),
                        &sub,
                        ErrorKind::UnknownField,
                        unknown_shorthand_key_message(name, weighted),
                    ))
                }
            }
        }
        let Some((amount, amount_at)) = amount else {
            let example = if weighted {
                "{ amount = 2_000_000, output_weight = 5 }"
            } else {
                "{ amount = 600, burst = 600 }"
            };
            return Err(self.error(
                key.span(),
                &child(field, "amount"),
                ErrorKind::Missing,
                format!("is missing: expected the {what}, e.g. {example}"),
            ));
        };
        let mut limit = Limit::new(amount, shorthand.period);
        if let Some((b, _)) = &burst {
            limit = limit.burst(*b);
        }
        let mut spec = LimitSpec::new(shorthand.builtin.dimension(), limit, Form::Shorthand, at);
        spec.amount = amount_at;
        if let Some((_, b_at)) = burst {
            spec.burst = b_at;
        }
        spec.set_weights(input_weight, output_weight);
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
                "burst" => burst = Some((self.burst(v, &sub)?, here)),
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
        let mut spec = LimitSpec::new(dimension, limit, Form::Entry, at);
        spec.amount = amount_at;
        spec.per = per_at;
        if let Some((_, b_at)) = burst {
            spec.burst = b_at;
        }
        if spec.dimension == Dimension::Tokens {
            spec.set_weights(input_weight, output_weight);
        }
        Ok(spec)
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
                    BuildError::BurstAboveAmount { burst, amount } => {
                        let token_bucket = match spec.form {
                            Form::Entry => "use algorithm = \"token_bucket\"",
                            Form::Shorthand => {
                                "use a [[...limits]] entry with algorithm = \"token_bucket\""
                            }
                        };
                        (
                            &spec.burst,
                            Some(format!(
                                "the burst {burst} is above the amount {amount}: the smooth window never admits more than \
                                 the amount per period; lower `burst`, or {token_bucket}"
                            )),
                        )
                    }
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

/// "unknown field `x`" in the table form of a shorthand: the keys allowed there (the weights
/// for combined tokens only), and where the rest of a limit's options are.
fn unknown_shorthand_key_message(name: &str, weighted: bool) -> String {
    let allowed: &[&str] = if weighted {
        &WEIGHTED_TABLE_FIELDS
    } else {
        &SHORTHAND_TABLE_FIELDS
    };
    let mut message = unknown_field_message(name, allowed);
    if !weighted && matches!(name, "input_weight" | "output_weight") {
        message.push_str(
            "; weights apply to combined tokens only, e.g. tokens_per_minute = { amount = 2_000_000, output_weight = 5 }",
        );
    } else if near_field(name, allowed).is_none() {
        // Not a typo of an allowed key: an option the table form does not have.
        message.push_str(
            "; for another algorithm or period, use a [[...limits]] entry instead of the shorthand",
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shorthand_is_named_after_its_dimension_and_period() {
        for s in SHORTHANDS {
            let expected = format!(
                "{}_per_{}",
                s.builtin.dimension(),
                crate::fmt::Period(s.period)
            );
            assert_eq!(s.name, expected);
        }
        let periods = [SECOND, MINUTE, HOUR, DAY];
        for builtin in [
            Builtin::Requests,
            Builtin::Input,
            Builtin::Output,
            Builtin::Tokens,
        ] {
            for period in periods {
                assert!(
                    SHORTHANDS
                        .iter()
                        .any(|s| s.builtin == builtin && s.period == period),
                    "{builtin:?} per {period:?}"
                );
            }
        }
    }

    #[test]
    fn policy_fields_are_the_shorthands_then_max_in_flight_margin_and_limits() {
        let names: Vec<&str> = SHORTHANDS.iter().map(|s| s.name).collect();
        assert_eq!(LIMIT_KEYS[..SHORTHANDS.len()], names[..]);
        assert_eq!(POLICY_FIELDS[..SHORTHANDS.len()], names[..]);
        assert_eq!(LIMIT_KEYS[SHORTHANDS.len()..], ["max_in_flight"]);
        assert_eq!(
            POLICY_FIELDS[SHORTHANDS.len()..],
            ["max_in_flight", "margin", "limits"]
        );
    }
}

//! The simulated provider: it enforces its own limits, with its own algorithm, the way a
//! provider does, and answers 429 with `retry-after` (and rate-limit headers) when a request
//! would exceed them.
//!
//! Its file is a limits file (the same form as `--limits`, read by
//! [`tokengate::config::Config`]) with an optional `[provider]` table:
//!
//! ```toml
//! [provider]
//! algorithm = "smooth_window" # how it enforces every limit below that names no algorithm of its own:
//!                             # smooth_window (both readings of "N per minute": at most N in any
//!                             # 60 s and N/60 at once, as a provider that enforces a per-minute
//!                             # limit over shorter periods does), token_bucket (a bucket holding
//!                             # one period's amount), leaky_bucket, sliding_window_log,
//!                             # sliding_window_counter, fixed_window. Default: smooth_window.
//! output_tokens = "usage"     # "usage": max_tokens is counted while the call runs, then the tokens
//!                             # produced (Anthropic); "max_tokens": max_tokens is counted and never
//!                             # given back (OpenAI). Default: usage.
//!
//! [models."gpt-4o"]
//! requests_per_minute = 500
//! tokens_per_minute = 30_000
//! ```
//!
//! Each limit is a [`LimitRule`] of the library's pure core, decided all or nothing over a
//! request's limits with [`decide_all`] and [`commit_all`], settled with [`settle_all`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tokengate::config::Config;
use tokengate::core::{
    commit_all, decide_all, settle_all, CombinedDecision, LimitRule, LimitState, Receipt,
};
use tokengate::{Algorithm, Dimension, Limit, OutputCount};

use crate::error::{self, Error};
use crate::gate::{key_limits, Weights};

/// What the provider enforces and how.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    /// Its limits per model, family and tenant (tenants are ignored: a provider limits the
    /// account).
    pub config: Config,
    /// The algorithm of every limit that names none.
    pub algorithm: Algorithm,
    /// How it counts output tokens.
    pub output: OutputCount,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    provider: Option<Settings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    algorithm: Option<toml::Spanned<String>>,
    output_tokens: Option<toml::Spanned<String>>,
}

/// Whether a line opens a table (`[x]`, `[[x]]`), and whether that table is `[provider]`.
fn header(line: &str) -> Option<bool> {
    let t = line.trim_start();
    if !t.starts_with('[') {
        return None;
    }
    let name = t.trim_start_matches('[');
    let name = name.split(']').next().unwrap_or("").trim();
    Some(name == "provider")
}

impl ProviderSpec {
    /// Reads a provider file.
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid limits file with an optional `[provider]`
    /// table: the message names the file, line, column and field.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let file = path.display().to_string();
        let text = crate::input::read_text(path, "provider file")?;
        Self::from_toml_str(&text, &file)
    }

    /// Reads a provider file's text; `file` names it in errors.
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, Error> {
        // Split the [provider] table from the limits, keeping every line where it was so that
        // both readers report the file's own line numbers.
        let (mut limits, mut section) = (String::new(), String::new());
        let mut in_provider = false;
        for line in text.split_inclusive('\n') {
            if let Some(is_provider) = header(line) {
                in_provider = is_provider;
            }
            let (mine, other) = if in_provider {
                (&mut section, &mut limits)
            } else {
                (&mut limits, &mut section)
            };
            mine.push_str(line);
            other.push_str(if line.ends_with('\n') { "\n" } else { "" });
        }
        let settings: Section =
            toml::from_str(&section).map_err(|e| error::from_toml(file, &section, &e))?;
        let config = Config::from_toml_str(&limits, file)?;
        let mut spec = Self::enforcing(config);
        let at = |s: &toml::Spanned<String>, field: &str, message: String| {
            let (line, column) = error::line_column(&section, s.span().start);
            Error::new(format!(
                "{file}:{line}:{column}: field `provider.{field}`: {message}"
            ))
        };
        if let Some(p) = settings.provider {
            if let Some(a) = &p.algorithm {
                spec.algorithm = Algorithm::from_name(a.get_ref()).ok_or_else(|| {
                    let names = Algorithm::ALL.map(Algorithm::name);
                    at(
                        a,
                        "algorithm",
                        format!(
                            "expected one of {}, found {:?}",
                            names.join(", "),
                            a.get_ref()
                        ),
                    )
                })?;
            }
            if let Some(o) = &p.output_tokens {
                spec.output = match o.get_ref().as_str() {
                    "usage" => OutputCount::Produced,
                    "max_tokens" => OutputCount::Reserved,
                    other => {
                        return Err(at(
                            o,
                            "output_tokens",
                            format!("expected \"usage\" or \"max_tokens\", found {other:?}"),
                        ))
                    }
                }
            }
        }
        Ok(spec)
    }

    /// A provider enforcing `config`'s limits both ways a provider may read them (the smooth
    /// window: the exact window, and a sixtieth of a per-minute limit at once), counting output
    /// as produced.
    pub fn enforcing(config: Config) -> Self {
        Self {
            config,
            algorithm: Algorithm::SmoothWindow,
            output: OutputCount::Produced,
        }
    }
}

/// A request the provider accepted: what it holds until the call ends.
#[derive(Debug, Clone)]
pub struct Ticket {
    budget: usize,
    input: u64,
    max_tokens: u64,
    receipts: Vec<Receipt>,
}

/// The provider's answer when a request arrives.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Accepted: the call runs; end it with [`Provider::finish`].
    Accepted(Ticket),
    /// 429 Too Many Requests, with its headers (`retry-after-ms`, `retry-after`, rate-limit
    /// headers).
    Throttled(Vec<(String, String)>),
}

/// One limit as the provider enforces it, and what it counted.
#[derive(Debug, Clone)]
pub struct ProviderLimit {
    /// The dimension.
    pub dimension: Dimension,
    /// The limit, with the algorithm the provider applies.
    pub limit: Limit,
    /// The rule deciding it.
    pub rule: LimitRule,
    /// What one request counts on it.
    pub weights: Weights,
    /// Units counted, all told (reservations and charges).
    pub charged: u64,
    /// Units given back when calls ended below `max_tokens`.
    pub refunded: u64,
}

/// One budget of the provider: a model, or a family of models sharing limits.
#[derive(Debug, Clone)]
pub struct ProviderBudget {
    /// The model's or family's name.
    pub name: String,
    /// Its limits.
    pub limits: Vec<ProviderLimit>,
    states: Vec<LimitState>,
    /// Calls it runs at once at most, if capped.
    pub max_in_flight: Option<u64>,
    in_flight: u64,
    /// Requests accepted.
    pub accepted: u64,
    /// 429s answered.
    pub throttled: u64,
}

/// The simulated provider.
#[derive(Debug)]
pub struct Provider {
    spec: ProviderSpec,
    budgets: Vec<ProviderBudget>,
    by_name: BTreeMap<String, usize>,
}

/// The effective limit the provider applies for `limit` on `dimension`.
fn effective(dimension: &Dimension, limit: &Limit, algorithm: Algorithm) -> Result<Limit, String> {
    let rule = LimitRule::new(limit).map_err(|e| e.to_string())?;
    // `Limit` has no getter for the burst given in the file: a burst is explicit when setting
    // the rule's burst again leaves the limit unchanged.
    let explicit = rule.burst().filter(|&b| limit.clone().burst(b) == *limit);
    let target = if rule.algorithm() == Algorithm::SmoothWindow {
        algorithm
    } else {
        rule.algorithm()
    };
    // The provider counts what arrives, exactly: no margin of a client's.
    let mut out = Limit::new(limit.amount(), limit.period())
        .algorithm(target)
        .margin(std::time::Duration::ZERO);
    match explicit {
        Some(b) if matches!(target, Algorithm::SmoothWindow | Algorithm::TokenBucket) => {
            out = out.burst(b);
        }
        Some(b) => {
            return Err(format!(
                "the {dimension} limit {limit} has a burst ({b}), which {target} does not have: remove the burst or name the limit's algorithm"
            ))
        }
        None => {}
    }
    Ok(out)
}

impl Provider {
    /// A provider with no budget in use yet.
    pub fn new(spec: ProviderSpec) -> Self {
        Self {
            spec,
            budgets: Vec::new(),
            by_name: BTreeMap::new(),
        }
    }

    /// The budget that limits `model`, made on first use; returns its index.
    ///
    /// # Errors
    /// When the provider's file has no limits for the model.
    pub fn budget_of(&mut self, model: &str) -> Result<usize, Error> {
        let config = &self.spec.config;
        let Some((budget, policy)) = config.model_policy(model) else {
            return Err(Error::new(format!(
                "{}: the provider has no limits for model {model:?}: add [models.{model:?}], a family whose `match` covers it, or [defaults.model] to the provider file",
                config.source_name()
            )));
        };
        let name = budget.name().to_owned();
        if let Some(&i) = self.by_name.get(&name) {
            return Ok(i);
        }
        let mut limits = Vec::new();
        for kl in key_limits(policy) {
            let limit = effective(&kl.dimension, &kl.limit, self.spec.algorithm)
                .map_err(|m| Error::new(format!("{}: {budget}: {m}", config.source_name())))?;
            let rule = LimitRule::new(&limit)
                .map_err(|e| Error::new(format!("{}: {budget}: {e}", config.source_name())))?;
            limits.push(ProviderLimit {
                dimension: kl.dimension,
                limit,
                rule,
                weights: kl.weights,
                charged: 0,
                refunded: 0,
            });
        }
        let states = limits.iter().map(|l| l.rule.new_state()).collect();
        self.budgets.push(ProviderBudget {
            name: name.clone(),
            limits,
            states,
            max_in_flight: policy.max_in_flight(),
            in_flight: 0,
            accepted: 0,
            throttled: 0,
        });
        self.by_name.insert(name, self.budgets.len() - 1);
        Ok(self.budgets.len() - 1)
    }

    /// The budgets in use.
    pub fn budgets(&self) -> &[ProviderBudget] {
        &self.budgets
    }

    /// How it counts output tokens.
    pub fn output_count(&self) -> OutputCount {
        self.spec.output
    }

    /// The first limit of budget `b` that can never accept a request of `input` tokens and
    /// `max_tokens`, as a message.
    pub fn impossible(&self, b: usize, input: u64, max_tokens: u64) -> Option<String> {
        let budget = &self.budgets[b];
        budget.limits.iter().find_map(|l| {
            let amount = l.weights.amount(input, max_tokens);
            (amount > l.rule.capacity()).then(|| {
                format!(
                    "{} {} ({}): a request can count {amount}, above its capacity of {}",
                    l.dimension,
                    l.limit,
                    l.limit_algorithm(),
                    l.rule.capacity()
                )
            })
        })
    }

    /// A request arrives at `now` (ns): accepted, or 429.
    pub fn call(&mut self, b: usize, input: u64, max_tokens: u64, now: u64) -> Answer {
        let budget = &mut self.budgets[b];
        if budget.max_in_flight.is_some_and(|m| budget.in_flight >= m) {
            budget.throttled += 1;
            // The provider cannot know when a call ends: "try again in a second".
            let mut headers = budget.headers(now);
            headers.push(("retry-after".to_owned(), "1".to_owned()));
            return Answer::Throttled(headers);
        }
        let amounts: Vec<u64> = budget
            .limits
            .iter()
            .map(|l| l.weights.amount(input, max_tokens))
            .collect();
        let decision = decide_all(
            budget
                .limits
                .iter()
                .zip(&budget.states)
                .zip(&amounts)
                .map(|((l, s), &a)| (&l.rule, s, a)),
            now,
        );
        match decision {
            CombinedDecision::Admit => {
                let mut receipts = Vec::with_capacity(amounts.len());
                commit_all(
                    budget
                        .limits
                        .iter()
                        .zip(budget.states.iter_mut())
                        .zip(&amounts)
                        .map(|((l, s), &a)| (&l.rule, s, a)),
                    now,
                    |r| receipts.push(r),
                );
                for (l, a) in budget.limits.iter_mut().zip(&amounts) {
                    l.charged += a;
                }
                budget.in_flight += 1;
                budget.accepted += 1;
                Answer::Accepted(Ticket {
                    budget: b,
                    input,
                    max_tokens,
                    receipts,
                })
            }
            CombinedDecision::NotUntil { at, .. } => {
                budget.throttled += 1;
                let wait = at - now;
                let mut headers = budget.headers(now);
                headers.push((
                    "retry-after-ms".to_owned(),
                    wait.div_ceil(1_000_000).to_string(),
                ));
                headers.push((
                    "retry-after".to_owned(),
                    wait.div_ceil(1_000_000_000).to_string(),
                ));
                Answer::Throttled(headers)
            }
            CombinedDecision::Impossible { .. } => {
                // Refused up front by the simulation; answered like a 429 all the same.
                budget.throttled += 1;
                let mut headers = budget.headers(now);
                headers.push(("retry-after".to_owned(), "60".to_owned()));
                Answer::Throttled(headers)
            }
        }
    }

    /// The call of `ticket` ends at `now` having produced `output` tokens; returns the
    /// response's rate-limit headers.
    pub fn finish(&mut self, ticket: Ticket, output: u64, now: u64) -> Vec<(String, String)> {
        let charge = self.spec.output;
        let budget = &mut self.budgets[ticket.budget];
        if charge == OutputCount::Produced {
            let mut settles = Vec::with_capacity(budget.limits.len());
            for (l, r) in budget.limits.iter_mut().zip(&ticket.receipts) {
                let reserved = l.weights.amount(ticket.input, ticket.max_tokens);
                let used = l.weights.amount(ticket.input, output);
                l.refunded += reserved.saturating_sub(used);
                l.charged += used.saturating_sub(reserved);
                settles.push((reserved, used, *r));
            }
            settle_all(
                budget
                    .limits
                    .iter()
                    .zip(budget.states.iter_mut())
                    .zip(settles)
                    .map(|((l, s), (reserved, used, r))| (&l.rule, s, reserved, used, r)),
                now,
            );
        }
        budget.in_flight = budget.in_flight.saturating_sub(1);
        budget.headers(now)
    }
}

impl ProviderLimit {
    fn limit_algorithm(&self) -> Algorithm {
        self.rule.algorithm()
    }
}

impl ProviderBudget {
    /// Rate-limit headers for every dimension it limits (its shortest-period limit on each):
    /// OpenAI's `x-ratelimit-*` for requests and combined tokens, Anthropic's for input and
    /// output tokens. `remaining` is the limit less what is counted against it.
    fn headers(&self, now: u64) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        let mut seen: Vec<&Dimension> = Vec::new();
        let mut order: Vec<usize> = (0..self.limits.len()).collect();
        order.sort_by_key(|&i| self.limits[i].rule.period());
        for i in order {
            let l = &self.limits[i];
            if seen.contains(&&l.dimension) {
                continue;
            }
            seen.push(&l.dimension);
            let snap = l.rule.snapshot(&self.states[i], now);
            let amount = l.rule.amount();
            let remaining = amount.saturating_sub(snap.used);
            let reset = snap.reset_at.map_or(0, |t| t.saturating_sub(now));
            let (prefix, suffix) = match &l.dimension {
                Dimension::Requests => ("x-ratelimit-", "-requests"),
                Dimension::Tokens => ("x-ratelimit-", "-tokens"),
                Dimension::InputTokens => ("anthropic-ratelimit-input-tokens-", ""),
                Dimension::OutputTokens => ("anthropic-ratelimit-output-tokens-", ""),
                _ => continue,
            };
            headers.push((format!("{prefix}limit{suffix}"), amount.to_string()));
            headers.push((format!("{prefix}remaining{suffix}"), remaining.to_string()));
            if prefix.starts_with("x-") {
                // A Go duration, as OpenAI sends it.
                headers.push((
                    format!("{prefix}reset{suffix}"),
                    format!("{}ms", reset.div_ceil(1_000_000)),
                ));
            }
        }
        headers
    }
}

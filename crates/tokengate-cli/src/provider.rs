//! The simulated provider: it enforces its own limits, with its own algorithm, the way a
//! provider does, and answers 429 with `retry-after` (and rate-limit headers) when a request
//! would exceed them.
//!
//! Its file is a limits file (the same form as `--limits`, read by
//! [`tokengate::config::Config`]) with an optional `[provider]` table (`algorithm`,
//! `output_tokens`): the crate's README (*The provider file*) has a complete commented example,
//! which `tests/readme.rs` reads as written there.
//!
//! An `[account]` table is an organisation-wide budget: every request is charged to it and to
//! its model's budget together, all or nothing. A provider limits its account and its
//! models, not a client's tenants: `[tenants]` and `[defaults.tenant]` are refused.
//!
//! Each limit is a [`LimitRule`] of the library's pure core, decided all or nothing over a
//! request's limits with [`decide_all`] and [`commit_all`], settled with [`settle_all`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tokengate::config::{Config, ConfigError, ErrorKind};
use tokengate::core::{
    commit_all, decide_all, settle_all, CombinedDecision, LimitRule, LimitState, Receipt,
};
use tokengate::{Algorithm, Dimension, Limit, OutputCount, Policy};

use crate::error::{self, Error};
use crate::gate::{key_limits, Weights};
use crate::schema::{self, Field, Kind};

/// What the provider enforces and how.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    /// Its limits per model and family, and its `[account]` (never tenants: a provider limits
    /// the account and its models).
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

/// Where a limits file sets tenants, which a provider file must not.
#[derive(Deserialize)]
struct TenantTables {
    tenants: Option<toml::Spanned<toml::Value>>,
    defaults: Option<DefaultTenant>,
}

#[derive(Deserialize)]
struct DefaultTenant {
    tenant: Option<toml::Spanned<toml::Value>>,
}

/// Refuses tenant budgets in a provider's limits (`text`, with the file's own line numbers).
fn refuse_tenants(file: &str, text: &str) -> Result<(), Error> {
    let Ok(found) = toml::from_str::<TenantTables>(text) else {
        return Ok(()); // the limits reader reports bad TOML
    };
    let places = [
        ("tenants", found.tenants),
        ("defaults.tenant", found.defaults.and_then(|d| d.tenant)),
    ];
    for (field, value) in places {
        if let Some(value) = value {
            let (line, column) = error::line_column(text, value.span().start);
            return Err(Error::new(format!(
                "{file}:{line}:{column}: field `{field}`: a provider limits its account and its models, not a client's tenants: remove it from the provider file (tenant budgets belong in --limits; an organisation-wide limit is [account])"
            )));
        }
    }
    Ok(())
}

/// The shape of the `[provider]` table, checked first (the rest is a limits file's).
const FIELDS: &[Field] = &[Field::optional("provider", Kind::Table(SETTINGS))];
const SETTINGS: &[Field] = &[
    Field::optional("algorithm", Kind::String),
    Field::optional("output_tokens", Kind::String),
];

/// A limits file's error about the provider file: an unknown key at the top also lists
/// `provider`, which the limits reader does not know, and suggests it (`[provder]`).
fn with_provider_table(e: ConfigError) -> Error {
    let root = !e.field.is_empty() && !e.field.contains(['.', '[']);
    if e.kind != ErrorKind::UnknownField || !root {
        return e.into();
    }
    // "unknown field `x`: expected one of a, b, c (did you mean `b`?)"
    let listed = e
        .message
        .split_once("expected one of ")
        .map(|(_, rest)| rest[..rest.find([';', '(']).unwrap_or(rest.len())].trim_end());
    let message = match listed {
        Some(list) => {
            let mut allowed: Vec<&str> = list.split(", ").collect();
            allowed.push("provider");
            schema::unknown_field_among(&e.field, &allowed)
        }
        None => format!("{}; a provider file also takes [provider]", e.message),
    };
    Error::new(format!(
        "{}:{}:{}: field `{}`: {message}",
        e.file, e.line, e.column, e.field
    ))
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
        schema::check(&section, file, FIELDS)?;
        let settings: Section =
            toml::from_str(&section).map_err(|e| schema::syntax(file, &section, &e))?;
        let config = Config::from_toml_str(&limits, file).map_err(with_provider_table)?;
        refuse_tenants(file, &limits)?;
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

    /// A provider enforcing `config`'s limits (its models' and its account's; tenants are a
    /// client's, not enforced) both ways a provider may read them (the smooth window: the
    /// exact window, and a sixtieth of a per-minute limit at once), counting output as
    /// produced.
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
    /// The model budget's receipts, then the account's.
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
    /// The `[account]` budget, charged with every request's model budget.
    account: Option<ProviderBudget>,
}

/// The name of the account's budget in reports.
pub const ACCOUNT: &str = "account";

/// The effective limit the provider applies for `limit` on `dimension`, enforcing with
/// `algorithm` a limit that names none.
pub(crate) fn effective(
    dimension: &Dimension,
    limit: &Limit,
    algorithm: Algorithm,
) -> Result<Limit, String> {
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
    /// A provider with no model budget in use yet.
    ///
    /// # Errors
    /// When an `[account]` limit cannot be enforced with the provider's algorithm.
    pub fn new(spec: ProviderSpec) -> Result<Self, Error> {
        let account = match spec.config.account() {
            Some(policy) => Some(
                ProviderBudget::new(ACCOUNT, policy, spec.algorithm).map_err(|m| {
                    Error::new(format!("{}: [account]: {m}", spec.config.source_name()))
                })?,
            ),
            None => None,
        };
        Ok(Self {
            spec,
            budgets: Vec::new(),
            by_name: BTreeMap::new(),
            account,
        })
    }

    /// The budget that limits `model`, made on first use; returns its index.
    ///
    /// # Errors
    /// When the provider's file refuses the model: no limits cover it, and unlisted models are
    /// an error.
    pub fn budget_of(&mut self, model: &str) -> Result<usize, Error> {
        let config = &self.spec.config;
        let found = config.model_policy(model);
        if found.is_none() && config.refuses_model(model) {
            return Err(Error::new(format!(
                "{}: the provider has no limits for model {model:?}: add [models.{model:?}], a family whose `match` covers it, or [defaults.model] to the provider file (or unlisted_models = \"pass\" to limit it by the [account] only)",
                config.source_name()
            )));
        }
        let name = found.map_or(model, |(budget, _)| budget.name()).to_owned();
        if let Some(&i) = self.by_name.get(&name) {
            return Ok(i);
        }
        let made = match found {
            Some((budget, policy)) => ProviderBudget::new(&name, policy, self.spec.algorithm)
                .map_err(|m| Error::new(format!("{}: {budget}: {m}", config.source_name())))?,
            // A model the file passes: limited by the account only.
            None => ProviderBudget::unlimited(&name),
        };
        self.budgets.push(made);
        self.by_name.insert(name, self.budgets.len() - 1);
        Ok(self.budgets.len() - 1)
    }

    /// The model budgets in use.
    pub fn budgets(&self) -> &[ProviderBudget] {
        &self.budgets
    }

    /// The `[account]` budget, if the provider has one.
    pub fn account(&self) -> Option<&ProviderBudget> {
        self.account.as_ref()
    }

    /// How it counts output tokens.
    pub fn output_count(&self) -> OutputCount {
        self.spec.output
    }

    /// The first limit of budget `b` that can never accept a request of `input` tokens and
    /// `max_tokens`, as a message.
    pub fn impossible(&self, b: usize, input: u64, max_tokens: u64) -> Option<String> {
        let budget = &self.budgets[b];
        let account = self.account.iter().flat_map(|a| &a.limits);
        budget.limits.iter().chain(account).find_map(|l| {
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

    /// A request arrives at `now` (ns): accepted, or 429. It is charged to its model's budget
    /// and the account's together, all or nothing.
    pub fn call(&mut self, b: usize, input: u64, max_tokens: u64, now: u64) -> Answer {
        let budget = &mut self.budgets[b];
        let mut account = self.account.as_mut();
        let full = |x: &ProviderBudget| x.max_in_flight.is_some_and(|m| x.in_flight >= m);
        if full(budget) || account.as_deref().is_some_and(full) {
            budget.throttled += 1;
            if let Some(a) = account.as_deref_mut().filter(|a| full(a)) {
                a.throttled += 1;
            }
            // The provider cannot know when a call ends: "try again in a second".
            let mut headers = budget.headers(now);
            headers.push(("retry-after".to_owned(), "1".to_owned()));
            return Answer::Throttled(headers);
        }
        let shared = account.as_deref().map_or(&[][..], |a| &a.limits[..]);
        let amounts: Vec<u64> = budget
            .limits
            .iter()
            .chain(shared)
            .map(|l| l.weights.amount(input, max_tokens))
            .collect();
        let shared_states = account.as_deref().map_or(&[][..], |a| &a.states[..]);
        let decision = decide_all(
            budget
                .limits
                .iter()
                .chain(shared)
                .zip(budget.states.iter().chain(shared_states))
                .zip(&amounts)
                .map(|((l, s), &a)| (&l.rule, s, a)),
            now,
        );
        match decision {
            CombinedDecision::Admit => {
                let mut receipts = Vec::with_capacity(amounts.len());
                let (mine, theirs) = amounts.split_at(budget.limits.len());
                budget.commit(mine, now, &mut receipts);
                if let Some(a) = account.as_deref_mut() {
                    a.commit(theirs, now, &mut receipts);
                }
                Answer::Accepted(Ticket {
                    budget: b,
                    input,
                    max_tokens,
                    receipts,
                })
            }
            CombinedDecision::NotUntil { at, limit, .. } => {
                budget.throttled += 1;
                if let Some(a) = account.filter(|_| limit >= budget.limits.len()) {
                    a.throttled += 1;
                }
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
        let produced = self.spec.output == OutputCount::Produced;
        let budget = &mut self.budgets[ticket.budget];
        let (mine, theirs) = ticket
            .receipts
            .split_at(budget.limits.len().min(ticket.receipts.len()));
        budget.finish(&ticket, mine, produced.then_some(output), now);
        if let Some(a) = self.account.as_mut() {
            a.finish(&ticket, theirs, produced.then_some(output), now);
        }
        budget.headers(now)
    }
}

impl ProviderLimit {
    fn limit_algorithm(&self) -> Algorithm {
        self.rule.algorithm()
    }
}

impl ProviderBudget {
    /// A budget named `name` enforcing `policy`'s limits, with `algorithm` for every limit
    /// that names none.
    fn new(name: &str, policy: &Policy, algorithm: Algorithm) -> Result<Self, String> {
        let mut limits = Vec::new();
        for kl in key_limits(policy) {
            let limit = effective(&kl.dimension, &kl.limit, algorithm)?;
            let rule = LimitRule::new(&limit).map_err(|e| e.to_string())?;
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
        Ok(Self {
            name: name.to_owned(),
            limits,
            states,
            max_in_flight: policy.max_in_flight(),
            in_flight: 0,
            accepted: 0,
            throttled: 0,
        })
    }

    /// A budget with no limits of its own, for a model the file passes
    /// (`unlisted_models = "pass"`).
    fn unlimited(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            limits: Vec::new(),
            states: Vec::new(),
            max_in_flight: None,
            in_flight: 0,
            accepted: 0,
            throttled: 0,
        }
    }

    /// Counts an accepted request's `amounts` (one per limit), keeping the receipts.
    fn commit(&mut self, amounts: &[u64], now: u64, receipts: &mut Vec<Receipt>) {
        commit_all(
            self.limits
                .iter()
                .zip(self.states.iter_mut())
                .zip(amounts)
                .map(|((l, s), &a)| (&l.rule, s, a)),
            now,
            |r| receipts.push(r),
        );
        for (l, a) in self.limits.iter_mut().zip(amounts) {
            l.charged += a;
        }
        self.in_flight += 1;
        self.accepted += 1;
    }

    /// Ends a call of `ticket` (`receipts`: this budget's): settles it with the `output`
    /// produced when the provider counts usage (`None`: `max_tokens` stays counted).
    fn finish(&mut self, ticket: &Ticket, receipts: &[Receipt], output: Option<u64>, now: u64) {
        if let Some(output) = output {
            let mut settles = Vec::with_capacity(self.limits.len());
            for (l, r) in self.limits.iter_mut().zip(receipts) {
                let reserved = l.weights.amount(ticket.input, ticket.max_tokens);
                let used = l.weights.amount(ticket.input, output);
                l.refunded += reserved.saturating_sub(used);
                l.charged += used.saturating_sub(reserved);
                settles.push((reserved, used, *r));
            }
            settle_all(
                self.limits
                    .iter()
                    .zip(self.states.iter_mut())
                    .zip(settles)
                    .map(|((l, s), (reserved, used, r))| (&l.rule, s, reserved, used, r)),
                now,
            );
        }
        self.in_flight = self.in_flight.saturating_sub(1);
    }

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

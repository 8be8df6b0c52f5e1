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
//! Each budget (a model's or family's, and the `[account]`) is a [`Policy`] of its limits as
//! the provider enforces them (its algorithm for a limit that names none, no margin; a
//! combined-tokens limit keeps its weights) and its in-flight cap, with its state as plain
//! data. The library's pure core makes every decision, by the whole-request rules the
//! client's limiter and every store apply, held to the same vectors
//! (`tokengate/tests/vectors/requests.json`, replayed here by `tests/provider_vectors.rs`):
//! [`decide_request`] over the model's budget and the account's, all or nothing;
//! [`commit_budget`] on each when accepted; [`settle_budget`] on each with its own receipts
//! when the call ends (a provider counting `max_tokens` settles nothing: the reservation stays
//! counted); the call's in-flight slots are freed apart.
//!
//! So, as the core decides: a budget's limits are checked before its in-flight cap, and the
//! budget that holds a request back longest answers for it. A limit's wait wins over an
//! in-flight cap (a request over a limit and at a cap is told the limit's wait: a 429 with
//! `retry-after-ms` and `retry-after`, the wait rounded up to the millisecond and to the
//! second); a cap answers only when no limit of either budget makes it wait (a 429 with
//! `retry-after: 1`: a provider cannot know when a call ends). A 429 counts on the model's
//! budget, and on the account's too when the account is the budget named: the one with the
//! later wait, the model's on a tie, and the model's when both are at their in-flight cap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::Path;

use serde::Deserialize;
use tokengate::config::{Config, ConfigError, ErrorKind};
use tokengate::core::{
    commit_budget, decide_request, settle_budget, BudgetDecision, BudgetView, LimitRule,
    LimitState, Receipt,
};
use tokengate::{AcquireError, Algorithm, Cost, Dimension, Limit, OutputCount, Policy};

use crate::error::{self, Error};
use crate::gate::{key_limits, probe_weights, Weights};
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
        crate::input::refuse_store(&config, file)?;
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

/// What an accepted request holds in one budget until its call ends.
#[derive(Debug, Clone, Default)]
struct Hold {
    /// One receipt per limit of the budget's policy, in its order.
    receipts: Vec<Receipt>,
    /// Whether it took one of the budget's in-flight slots.
    slot: bool,
}

/// A request the provider accepted: what it holds until the call ends.
#[derive(Debug, Clone)]
pub struct Ticket {
    budget: usize,
    input: u64,
    max_tokens: u64,
    /// What it holds in its model's budget.
    model: Hold,
    /// What it holds in the account's budget, if the provider has one.
    account: Option<Hold>,
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
    /// The rule of `limit`: its algorithm, burst and capacity, and its level for the
    /// rate-limit headers (the budget's [`Policy`] decides).
    pub rule: LimitRule,
    /// What one request counts on it ([`Policy::measure`]).
    pub weights: Weights,
    /// Units counted, all told (reservations and charges).
    pub charged: u64,
    /// Units given back when calls ended below `max_tokens`.
    pub refunded: u64,
}

/// One budget of the provider: a model, or a family of models sharing limits, or the
/// account.
#[derive(Debug, Clone)]
pub struct ProviderBudget {
    /// The model's or family's name, or [`ACCOUNT`].
    pub name: String,
    /// Its limits, in the order of its policy.
    pub limits: Vec<ProviderLimit>,
    /// Its limits and in-flight cap as the core decides them; `None` for a budget that has
    /// neither (a model the file passes).
    policy: Option<Policy>,
    /// One state per limit of `policy`.
    states: Vec<LimitState>,
    /// Calls running that hold one of its slots.
    in_flight: u64,
    /// Requests accepted.
    pub accepted: u64,
    /// 429s answered.
    pub throttled: u64,
}

/// The simulated provider.
#[derive(Debug, Clone)]
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

    /// The first limit that can never accept a request to budget `b` of `input` tokens and
    /// `max_tokens`, the model's and then the account's (the core's answer on fresh states), as
    /// a message.
    pub fn impossible(&self, b: usize, input: u64, max_tokens: u64) -> Option<String> {
        let cost = Cost::request().input(input).output(max_tokens);
        let fresh: Vec<(&Policy, Vec<LimitState>)> = [self.budgets.get(b), self.account.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|budget| budget.policy.as_ref())
            .map(|policy| (policy, policy.new_states()))
            .collect();
        let views = fresh.iter().map(|(policy, limits)| BudgetView {
            policy,
            limits,
            in_flight: 0,
            paused_until: 0,
        });
        match decide_request(views, 0, &cost) {
            Ok(_) => None,
            Err(AcquireError::Exceeds {
                dimension,
                cost,
                capacity,
                limit,
                algorithm,
            }) => {
                // A limit shows its algorithm unless it is the default: name it once.
                let named = format!("({algorithm})");
                let limit = if limit.ends_with(&named) {
                    limit
                } else {
                    format!("{limit} {named}")
                };
                Some(format!(
                    "{dimension} {limit}: a request can count {cost}, above its capacity of {capacity}"
                ))
            }
            Err(e) => Some(e.to_string()),
        }
    }

    /// A request arrives at `now` (ns): accepted, or 429. It is decided on its model's budget
    /// and the account's together, all or nothing ([`decide_request`]), and recorded on each
    /// ([`commit_budget`]).
    pub fn call(&mut self, b: usize, input: u64, max_tokens: u64, now: u64) -> Answer {
        let cost = Cost::request().input(input).output(max_tokens);
        let budget = &mut self.budgets[b];
        let account = self.account.as_mut();
        // The request's budgets, the model's then the account's, those with a limit or a cap;
        // and which of the two the decision names.
        let (decision, by_account) = {
            let views: Vec<(bool, BudgetView<'_>)> =
                [(false, Some(&*budget)), (true, account.as_deref())]
                    .into_iter()
                    .filter_map(|(is_account, side)| Some((is_account, side?.view()?)))
                    .collect();
            match decide_request(views.iter().map(|&(_, v)| v), now, &cost) {
                Ok(d) => (
                    Ok(d.decision),
                    views
                        .get(d.budget)
                        .is_some_and(|&(is_account, _)| is_account),
                ),
                Err(e) => (Err(e), false),
            }
        };
        let held = match decision {
            Ok(BudgetDecision::Admit) => {
                let model = budget.commit(now, &cost);
                let account = account.map(|a| a.commit(now, &cost));
                return Answer::Accepted(Ticket {
                    budget: b,
                    input,
                    max_tokens,
                    model,
                    account,
                });
            }
            Ok(held) => held,
            Err(_) => {
                // Refused up front by the simulation; answered like a 429 all the same.
                budget.throttled += 1;
                let mut headers = budget.headers(now);
                headers.push(("retry-after".to_owned(), "60".to_owned()));
                return Answer::Throttled(headers);
            }
        };
        budget.throttled += 1;
        if let Some(a) = account.filter(|_| by_account) {
            a.throttled += 1;
        }
        let mut headers = budget.headers(now);
        match held.until() {
            Some(until) => {
                let wait = until.saturating_sub(now);
                headers.push((
                    "retry-after-ms".to_owned(),
                    wait.div_ceil(1_000_000).to_string(),
                ));
                headers.push((
                    "retry-after".to_owned(),
                    wait.div_ceil(1_000_000_000).to_string(),
                ));
            }
            // An in-flight cap: the provider cannot know when a call ends, "try again in a
            // second".
            None => headers.push(("retry-after".to_owned(), "1".to_owned())),
        }
        Answer::Throttled(headers)
    }

    /// The call of `ticket` ends at `now` having produced `output` tokens; returns the
    /// response's rate-limit headers. A provider counting usage settles each budget with the
    /// output produced ([`settle_budget`]); one counting `max_tokens` keeps the reservation.
    /// Either way the call's in-flight slots are freed.
    pub fn finish(&mut self, ticket: Ticket, output: u64, now: u64) -> Vec<(String, String)> {
        let reserved = Cost::request()
            .input(ticket.input)
            .output(ticket.max_tokens);
        let used = (self.spec.output == OutputCount::Produced)
            .then(|| Cost::request().input(ticket.input).output(output));
        let budget = &mut self.budgets[ticket.budget];
        budget.finish(&ticket.model, &reserved, used.as_ref(), now);
        if let (Some(a), Some(hold)) = (self.account.as_mut(), &ticket.account) {
            a.finish(hold, &reserved, used.as_ref(), now);
        }
        budget.headers(now)
    }
}

impl ProviderBudget {
    /// A budget named `name` enforcing `policy`'s limits as the provider does ([`effective`]:
    /// `algorithm` for every limit that names none, no margin; a combined-tokens limit keeps
    /// its weights), and its in-flight cap.
    fn new(name: &str, policy: &Policy, algorithm: Algorithm) -> Result<Self, String> {
        let mut builder = Policy::builder();
        for kl in key_limits(policy) {
            let limit = effective(&kl.dimension, &kl.limit, algorithm)?;
            builder = match kl.dimension {
                Dimension::Tokens => {
                    builder.combined_tokens(limit, kl.weights.input, kl.weights.output)
                }
                dimension => builder.limit(dimension, limit),
            };
        }
        if let Some(n) = policy.max_in_flight() {
            builder = builder.max_in_flight(n);
        }
        let enforced = builder.build().map_err(|e| e.to_string())?;
        let mut limits = Vec::new();
        for ((dimension, limit), weights) in enforced.limits().zip(probe_weights(&enforced)) {
            limits.push(ProviderLimit {
                dimension: dimension.clone(),
                limit: limit.clone(),
                rule: LimitRule::new(limit).map_err(|e| e.to_string())?,
                weights,
                charged: 0,
                refunded: 0,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            limits,
            states: enforced.new_states(),
            policy: Some(enforced),
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
            policy: None,
            states: Vec::new(),
            in_flight: 0,
            accepted: 0,
            throttled: 0,
        }
    }

    /// Calls it runs at once at most, if capped.
    pub fn max_in_flight(&self) -> Option<u64> {
        self.policy.as_ref().and_then(Policy::max_in_flight)
    }

    /// The budget as the core's decision reads it; `None` when it limits nothing.
    fn view(&self) -> Option<BudgetView<'_>> {
        self.policy.as_ref().map(|policy| BudgetView {
            policy,
            limits: &self.states,
            in_flight: self.in_flight,
            paused_until: 0,
        })
    }

    /// Records an accepted request of `cost` ([`commit_budget`]); returns what it holds.
    fn commit(&mut self, now: u64, cost: &Cost) -> Hold {
        self.accepted += 1;
        let Some(policy) = &self.policy else {
            return Hold::default();
        };
        let mut receipts = Vec::with_capacity(self.limits.len());
        let slot = commit_budget(
            policy,
            &mut self.states,
            &mut self.in_flight,
            now,
            cost,
            |r| receipts.push(r),
        );
        for (l, amount) in self.limits.iter_mut().zip(policy.measure(cost)) {
            l.charged = l.charged.saturating_add(amount.unwrap_or(u64::MAX));
        }
        Hold { receipts, slot }
    }

    /// Ends a call that holds `hold` here and reserved `reserved`: settles it with what it
    /// `used` ([`settle_budget`]; `None`: the reservation stays counted), and frees its slot.
    fn finish(&mut self, hold: &Hold, reserved: &Cost, used: Option<&Cost>, now: u64) {
        if let (Some(policy), Some(used)) = (&self.policy, used) {
            let counted = policy.measure(reserved).zip(policy.measure(used));
            for (l, (reserved, used)) in self.limits.iter_mut().zip(counted) {
                // As the core reads them: an overflowing use counts as the most there is.
                let (reserved, used) = (reserved.unwrap_or(0), used.unwrap_or(u64::MAX));
                l.refunded = l.refunded.saturating_add(reserved.saturating_sub(used));
                l.charged = l.charged.saturating_add(used.saturating_sub(reserved));
            }
            let receipt = |i: usize| hold.receipts.get(i).copied().unwrap_or_default();
            settle_budget(
                policy,
                &mut self.states,
                now,
                reserved,
                used,
                receipt,
                |_| false,
            );
        }
        if hold.slot {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
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

/// One call as the provider receives it: what [`Provider::replay`] replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The provider's budget of its model ([`Provider::budget_of`]).
    pub budget: usize,
    /// When it arrives, ns.
    pub at: u64,
    /// When it ends, ns; `None` for a call still running when the run stopped (it never
    /// ends, as the live provider never ended it).
    pub end: Option<u64>,
    /// Its input tokens.
    pub input: u64,
    /// Its `max_tokens`.
    pub max_tokens: u64,
    /// The output tokens it produces, counted when it ends.
    pub output: u64,
}

impl Provider {
    /// Replays `calls` through the provider, in time order: each arrives at its `at` and is
    /// decided as [`call`](Self::call) decides it; an accepted one ends at its `end`, as
    /// [`finish`](Self::finish) ends it (a call ending at the instant another arrives ends
    /// first). Calls arriving at one instant are decided in the order given. Returns whether
    /// each call was accepted, in the order given.
    ///
    /// So the provider's answers are a plain function of the arrival sequence: the live run
    /// asks [`call`](Self::call) and [`finish`](Self::finish) as calls come; a run split over
    /// several processes, which cannot share one provider, logs its calls and replays their
    /// merged log here afterwards, with the same rules.
    pub fn replay(&mut self, calls: &[Call]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..calls.len()).collect();
        order.sort_by_key(|&i| calls[i].at);
        let mut accepted = vec![false; calls.len()];
        // The accepted calls still running, by end: (end, index) and its ticket.
        let mut running = Running::default();
        for i in order {
            let c = calls[i];
            running.end_until(self, calls, c.at);
            if let Answer::Accepted(ticket) = self.call(c.budget, c.input, c.max_tokens, c.at) {
                accepted[i] = true;
                if let Some(end) = c.end {
                    running.by_end.push(Reverse((end.max(c.at), i)));
                    running.tickets.insert(i, ticket);
                }
            }
        }
        running.end_until(self, calls, u64::MAX);
        accepted
    }
}

/// The calls of a replay still running: by end (end, index), with their tickets.
#[derive(Default)]
struct Running {
    by_end: BinaryHeap<Reverse<(u64, usize)>>,
    tickets: BTreeMap<usize, Ticket>,
}

impl Running {
    /// Ends, in order, every call that ends at `until` or before.
    fn end_until(&mut self, provider: &mut Provider, calls: &[Call], until: u64) {
        while let Some(&Reverse((end, j))) = self.by_end.peek() {
            if end > until {
                break;
            }
            self.by_end.pop();
            if let Some(ticket) = self.tickets.remove(&j) {
                provider.finish(ticket, calls[j].output, end);
            }
        }
    }
}

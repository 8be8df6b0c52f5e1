//! A limits file explained (and a provider file's limits, as its provider enforces them): the
//! effective limits of every model, family and tenant, each limit's algorithm, and its worst
//! case.

use std::fmt::Write as _;

use tokengate::config::{Config, UnlistedModels};
use tokengate::{Algorithm, BudgetKind, Dimension, Limit, Policy};

use crate::error::Error;
use crate::gate::{key_limits, Weights};
use crate::provider::{self, ProviderSpec};
use crate::report::{algorithm_and_burst, per_period, thousands};

/// The most one limit lets through: at one instant, and in any window of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorstCase {
    /// Units admitted at one instant by costs of one unit.
    pub instant: u64,
    /// Units admitted in any window of one period, at most.
    pub period: u64,
    /// How the figures come about.
    pub why: &'static str,
}

/// The worst case of a limit of `amount` with `algorithm` and `burst`, from the algorithm
/// table of the library's docs.
pub fn worst_case(amount: u64, algorithm: Algorithm, burst: Option<u64>) -> WorstCase {
    let b = burst.unwrap_or(amount);
    match algorithm {
        Algorithm::SmoothWindow => WorstCase {
            instant: b,
            period: amount,
            why: "exact sliding window; the bucket paces the rest (one cost up to the amount passes when the bucket is full)",
        },
        Algorithm::TokenBucket => WorstCase {
            instant: b,
            period: b.saturating_add(amount),
            why: "a full bucket, then the refill over the period",
        },
        Algorithm::LeakyBucket => WorstCase {
            instant: 1,
            period: amount.saturating_mul(2),
            why: "evenly spaced, then one cost of the whole amount when the bucket is full",
        },
        Algorithm::SlidingWindowLog => WorstCase {
            instant: amount,
            period: amount,
            why: "exact sliding window; the whole amount may pass at once",
        },
        Algorithm::SlidingWindowCounter => WorstCase {
            instant: amount,
            period: amount.saturating_mul(2),
            why: "approximate: a burst just before a window boundary, then another after it",
        },
        _ => WorstCase {
            instant: amount,
            period: amount.saturating_mul(2),
            why: "a full window just before a boundary, then another just after it",
        },
    }
}

/// How the limits of a file are applied: as a client's limiter applies them, or as a
/// provider enforces them (its algorithm for every limit that names none).
#[derive(Debug, Clone, Copy)]
enum Enforced {
    Client,
    Provider(Algorithm),
}

/// The lines of one budget's policy (`name` names it in errors).
fn policy_lines(
    out: &mut String,
    policy: &Policy,
    enforced: Enforced,
    name: &str,
) -> Result<(), String> {
    let _ = writeln!(
        out,
        "    {:<14} {:<22} {:<22} {:>10} {:>16} {:>18}",
        "dimension", "limit", "algorithm", "burst", "at one instant", "in any one period"
    );
    for kl in key_limits(policy) {
        let limit = match enforced {
            Enforced::Client => kl.limit.clone(),
            Enforced::Provider(algorithm) => {
                provider::effective(&kl.dimension, &kl.limit, algorithm)
                    .map_err(|m| format!("{name}: {m}"))?
            }
        };
        line(out, &kl.dimension, &limit);
        if let Some(weighted) = weights(&kl.dimension, kl.weights) {
            let _ = writeln!(out, "    {:<14} {weighted}", "");
        }
    }
    if let Some(n) = policy.max_in_flight() {
        let _ = writeln!(out, "    {:<14} at most {n} requests at once", "in flight");
    }
    Ok(())
}

/// How a combined-tokens limit counts, when its weights are not 1 and 1:
/// `counted as input x 1 + output x 5 (input_weight = 1, output_weight = 5)`.
fn weights(dimension: &Dimension, w: Weights) -> Option<String> {
    if *dimension != Dimension::Tokens || (w.input, w.output) == (1, 1) {
        return None;
    }
    Some(format!(
        "counted as input x {} + output x {} (input_weight = {}, output_weight = {})",
        w.input, w.output, w.input, w.output
    ))
}

fn line(out: &mut String, dimension: &Dimension, limit: &Limit) {
    let (algorithm, burst) = algorithm_and_burst(limit);
    let w = worst_case(limit.amount(), algorithm, burst);
    let _ = writeln!(
        out,
        "    {:<14} {:<22} {:<22} {:>10} {:>16} {:>18}   {}",
        dimension.name(),
        per_period(limit.amount(), limit.period()),
        algorithm.to_string(),
        burst.map_or("-".to_owned(), thousands),
        thousands(w.instant),
        thousands(w.period),
        w.why
    );
}

/// What a request for a model the file does not cover gets, as the limiter applies the file
/// ([`Config::unlisted_models`], [`Config::refuses_model`]).
fn unlisted_models(config: &Config) -> &'static str {
    if config.default_model().is_some() {
        return "get [defaults.model], a budget of their own each";
    }
    if config.models().next().is_none() && config.families().next().is_none() {
        return "pass: the file limits no model, so every request is charged to the account and tenant budgets only";
    }
    match config.unlisted_models() {
        UnlistedModels::Pass => {
            "pass (unlisted_models = \"pass\"): charged to the account and tenant budgets only, under no model limit"
        }
        _ => {
            "are refused (unlisted_models = \"error\", the default): a request for one is an error naming the closest listed name"
        }
    }
}

/// The explanation of a valid limits file; `unset` names the environment variables it reads
/// that were not set (read as stand-ins).
pub fn explain(config: &Config, unset: &[String]) -> String {
    let mut out = String::new();
    let models = config.models().count();
    let families = config.families().count();
    let tenants = config.tenants().count();
    let _ = writeln!(
        out,
        "{}: valid: {models} model(s), {families} famil{} and {tenants} tenant(s); unlisted models {}; unlisted tenants {}.",
        config.source_name(),
        if families == 1 { "y" } else { "ies" },
        unlisted_models(config),
        if config.default_tenant().is_some() {
            "get [defaults.tenant], a budget of their own each"
        } else {
            "have no budget of their own"
        },
    );
    store(&mut out, config, unset);
    // A client's limits always apply as written.
    let _ = budgets(&mut out, config, Enforced::Client);
    out
}

/// The file's `[store]`, if it has one: where the limits are shared, and what happens when
/// Redis fails.
fn store(out: &mut String, config: &Config, unset: &[String]) {
    let Some(store) = config.store() else {
        return;
    };
    let url = match store.url_env() {
        Some(var) if unset.iter().any(|u| u == var) => format!(
            "the URL in environment variable {var}, which is not set here (set it where the \
             file is used)"
        ),
        Some(var) => format!("{} (from environment variable {var})", store.url()),
        None => store.url().to_owned(),
    };
    let on_error = match store.on_error() {
        tokengate::OnStoreError::FailClosed => "refuse every request (fail closed)".to_owned(),
        tokengate::OnStoreError::FailOpen => {
            "admit without limits (fail open: the provider's own limits are all that holds)"
                .to_owned()
        }
        tokengate::OnStoreError::LocalShare(share) => format!(
            "decide in each process on {}% of every limit (local share)",
            share * 100.0
        ),
        _ => format!("{:?}", store.on_error()),
    };
    let _ = writeln!(
        out,
        "store: every process using this file shares its limits in Redis at {url}, namespace \
         {:?}, keys under {:?}; a call waits at most {:?} for Redis, a slot is leased {:?}; \
         while Redis fails: {on_error}.",
        store.namespace(),
        store.prefix(),
        store.timeout(),
        store.lease(),
    );
    for var in unset.iter().filter(|u| store.url_env() != Some(u.as_str())) {
        let _ = writeln!(
            out,
            "note: environment variable {var}, which the file reads, is not set here (set it \
             where the file is used)."
        );
    }
}

/// The explanation of a valid provider file: its settings, then its limits as it enforces them.
///
/// # Errors
/// A limit its algorithm cannot enforce (a burst on an algorithm without one), naming the
/// budget.
pub fn explain_provider(spec: &ProviderSpec) -> Result<String, Error> {
    let config = &spec.config;
    let mut out = String::new();
    let families = config.families().count();
    let _ = writeln!(
        out,
        "{}: valid provider file (for tokengate simulate --provider): {} model(s), {families} famil{}{}; every limit that names no algorithm is enforced as {}; output tokens are counted as {}; a model it does not cover makes a simulation fail.",
        config.source_name(),
        config.models().count(),
        if families == 1 { "y" } else { "ies" },
        if config.account().is_some() {
            " and an [account]"
        } else {
            ""
        },
        spec.algorithm,
        match spec.output {
            tokengate::OutputCount::Reserved => {
                "max_tokens, never given back (output_tokens = \"max_tokens\", as OpenAI counts)"
            }
            _ => {
                "the tokens produced, max_tokens only while a call runs (output_tokens = \"usage\", as Anthropic counts)"
            }
        },
    );
    budgets(&mut out, config, Enforced::Provider(spec.algorithm))
        .map_err(|m| Error::new(format!("{}: {m}", config.source_name())))?;
    Ok(out)
}

/// Every budget of `config`, with its limits as `enforced`.
fn budgets(out: &mut String, config: &Config, enforced: Enforced) -> Result<(), String> {
    let _ = writeln!(
        out,
        "(burst: a bucket's capacity; at one instant: the most admitted at once by requests of one unit; in any one period: the most admitted in any window of the limit's period)"
    );
    if let Some(policy) = config.account() {
        let _ = writeln!(
            out,
            "\naccount (every request, whatever its model and tenant, charged together with them)"
        );
        policy_lines(out, policy, enforced, "[account]")?;
    }
    for (name, policy) in config.models() {
        let budget = BudgetKind::Model(name.to_owned()).to_string();
        let _ = writeln!(out, "\n{budget} (a budget of its own)");
        policy_lines(out, policy, enforced, &budget)?;
    }
    for family in config.families() {
        let patterns: Vec<String> = family.patterns().iter().map(|p| format!("{p:?}")).collect();
        let budget = BudgetKind::Family(family.name().to_owned()).to_string();
        let _ = writeln!(
            out,
            "\n{budget} (one budget shared by every model matching {})",
            patterns.join(", ")
        );
        policy_lines(out, family.policy(), enforced, &budget)?;
    }
    if let Some(policy) = config.default_model() {
        let _ = writeln!(
            out,
            "\ndefault model (each model not listed, a budget of its own)"
        );
        policy_lines(out, policy, enforced, "[defaults.model]")?;
    }
    for (name, policy) in config.tenants() {
        let budget = BudgetKind::Tenant(name.to_owned()).to_string();
        let _ = writeln!(
            out,
            "\n{budget} (its own budget, charged together with the model's)"
        );
        policy_lines(out, policy, enforced, &budget)?;
    }
    if let Some(policy) = config.default_tenant() {
        let _ = writeln!(
            out,
            "\ndefault tenant (each tenant not listed, a budget of its own)"
        );
        policy_lines(out, policy, enforced, "[defaults.tenant]")?;
    }
    Ok(())
}

//! Limits for models, families and tenants from a TOML file.
//!
//! A provider sets limits per model (OpenAI, Anthropic, AWS Bedrock all do), sometimes shared
//! by several model names, and a service adds budgets of its own per tenant. A [`Config`]
//! reads them from a file written by hand; every mistake is a [`ConfigError`] that names the
//! file, line, column and field and says what is expected:
//!
//! ```text
//! limits.toml:7:24: field `models.gpt-4o.requests_per_minute`: expected a whole number of at least 1 (requests per minute), found a string: write 500 without quotes
//! ```
//!
//! # The file
//! ```toml
//! margin = "50ms"                # the safety margin of every limit (optional; see below)
//! unlisted_models = "error"      # a model the file does not cover: "error" (default) or "pass"
//!
//! [account]                      # limits on every request, whatever its model (optional)
//! requests_per_minute = 10_000
//! [defaults.model]               # the policy of a model not listed (optional)
//! requests_per_minute = 500
//! input_tokens_per_minute = 30_000
//! output_tokens_per_minute = 8_000
//! max_in_flight = 10
//!
//! [models."gpt-4o"]              # one model
//! requests_per_minute = 5_000
//! tokens_per_minute = 800_000    # combined input + output
//! requests_per_day = 100_000
//!
//! [families.gpt-4o-mini]         # several model names sharing ONE budget
//! match = ["gpt-4o-mini", "gpt-4o-mini-*"]   # exact names, or a prefix and a trailing *
//! requests_per_minute = 10_000
//!
//! [models."anthropic.claude-3-5-sonnet"]     # Bedrock: output tokens count 5 times
//! requests_per_minute = 250
//! tokens_per_minute = { amount = 2_000_000, output_weight = 5 }
//!
//! [models.o3]                    # per second and per hour too
//! requests_per_second = 20
//! requests_per_hour = 50_000
//! # A burst of the whole minute, only for a provider documented to accept it (see below):
//! input_tokens_per_minute = { amount = 60_000, burst = 60_000 }
//!
//! [tenants.acme]                 # a tenant's own budget, charged together with the model's
//! requests_per_minute = 100
//! [defaults.tenant]              # the budget of a tenant not listed (optional)
//! requests_per_minute = 20
//!
//! # The general form, for what the shorthands do not cover (any number of entries):
//! [[models."gpt-4o".limits]]
//! dimension = "input_tokens"     # requests | input_tokens | output_tokens | tokens | a name of your own
//! amount = 30_000
//! per = "1m"                     # 1s, 1m, 1h, 1d, or a duration such as "90s", "1m30s", "2d12h"
//! algorithm = "token_bucket"     # smooth_window (default) | token_bucket | leaky_bucket |
//!                                # sliding_window_log | sliding_window_counter | fixed_window
//! burst = 5_000                  # optional (smooth_window and token_bucket only)
//! ```
//!
//! A policy table (`[account]`, `[models.NAME]`, `[families.NAME]`, `[tenants.NAME]`,
//! `[defaults.model]`, `[defaults.tenant]`) holds any of:
//!
//! | key | value | limit |
//! |---|---|---|
//! | `requests_per_second`, `requests_per_minute`, `requests_per_hour`, `requests_per_day` | integer, or `{ amount, burst }` | [`Dimension::Requests`](crate::Dimension::Requests) |
//! | `input_tokens_per_second`, `input_tokens_per_minute`, `input_tokens_per_hour`, `input_tokens_per_day` | integer, or `{ amount, burst }` | [`Dimension::InputTokens`](crate::Dimension::InputTokens) |
//! | `output_tokens_per_second`, `output_tokens_per_minute`, `output_tokens_per_hour`, `output_tokens_per_day` | integer, or `{ amount, burst }` | [`Dimension::OutputTokens`](crate::Dimension::OutputTokens) |
//! | `tokens_per_second`, `tokens_per_minute`, `tokens_per_hour`, `tokens_per_day` | integer, or `{ amount, burst, input_weight = 1, output_weight = 1 }` | [`Dimension::Tokens`](crate::Dimension::Tokens), counted `input * input_weight + output * output_weight` |
//! | `max_in_flight` | integer | [`PolicyBuilder::max_in_flight`](crate::PolicyBuilder::max_in_flight) |
//! | `margin` | a duration (`"50ms"`, `"0s"`) | the safety margin of the table's limits ([`PolicyBuilder::margin`](crate::PolicyBuilder::margin)), over the file's |
//! | `limits` | array of tables: `dimension`, `amount`, `per`, and optional `algorithm`, `burst`, `input_weight` and `output_weight` (weights with `dimension = "tokens"` only) | any [`Limit`](crate::Limit) |
//!
//! and a family also holds `match`: a model name or pattern, or an array of them. Each table
//! is built with [`Policy::builder`], so defaults (bursts, algorithm) are the library's.
//!
//! The shorthands (`*_per_second`, `*_per_minute`, `*_per_hour`, `*_per_day`) are limits over
//! 1 s, 60 s, 3,600 s and 86,400 s with the default algorithm,
//! [`Algorithm::SmoothWindow`](crate::Algorithm::SmoothWindow). Written as an integer, a
//! shorthand is the amount, with the default burst: a sixtieth of the amount at once (rounded
//! down, at least 1) for a limit per second or per minute, the whole amount for a limit per
//! hour or per day. Written as a table, it also takes `burst`, the units admitted at once: a
//! whole number from 1 up to `amount` ([`Limit::burst`](crate::Limit::burst)). A burst of the
//! whole minute, `tokens_per_minute = { amount = 60_000, burst = 60_000 }`, lets a minute's
//! units go at once: choose it only for a provider documented to accept that (none of
//! OpenAI, Anthropic and AWS Bedrock says so). For another algorithm or period, write a
//! `[[...limits]]` entry.
//!
//! `margin` (at the top of the file, or in a policy table for its limits alone) is the safety
//! margin against the jitter between an admission and the provider's count of it
//! ([`Limit::margin`](crate::Limit::margin); [`Limit::DEFAULT_MARGIN`](crate::Limit::DEFAULT_MARGIN)
//! when the file says nothing).
//!
//! # `[store]`: limits shared through Redis
//! With the feature `redis`, a `[store]` table puts a limiter built from the file
//! ([`Limiter::from_config`](crate::Limiter::from_config),
//! [`from_config_file`](crate::Limiter::from_config_file)) on a Redis shared by every process
//! that uses the file ([`StoreConfig`]; see [`Limiter::with_store`](crate::Limiter::with_store)):
//! ```toml
//! [store]
//! url = "redis://127.0.0.1:6379/0"   # or rediss://, unix:///path; or { env = "REDIS_URL" }
//! password = { env = "REDIS_PASSWORD" }   # optional: a password the URL does not hold
//! namespace = "prod"                 # optional, default "default": stores apart share nothing
//! prefix = "tokengate"               # optional: what every key starts with
//! timeout = "2s"                     # optional: the deadline of each call to Redis
//! lease = "60s"                      # optional: how long an in-flight slot lives unrenewed
//! on_error = "fail_closed"           # or "fail_open", or { local_share = 0.25 }
//! ```
//!
//! | key | value | what |
//! |---|---|---|
//! | `url` (required) | a string, or `{ env = "NAME" }` | the Redis: `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS (with a build that has it), `unix:///path/to/redis.sock` |
//! | `password` | a string, or `{ env = "NAME" }` | a password the URL does not hold (not both) |
//! | `namespace`, `prefix` | strings, not empty | [`RedisStore::namespace`](crate::redis::RedisStore::namespace) |
//! | `timeout`, `lease` | durations above 0 (`timeout` at most a day) | [`RedisStore::timeout`](crate::redis::RedisStore::timeout); [`RedisStore::lease`](crate::redis::RedisStore::lease) and [`Limiter::with_store_lease`](crate::Limiter::with_store_lease) together |
//! | `on_error` | `"fail_closed"`, `"fail_open"`, `{ local_share = F }` with F in (0, 1] | [`OnStoreError`](crate::OnStoreError) |
//!
//! - **Secrets**: `{ env = "NAME" }` is read when the file is read; a variable that is not set
//!   is an error naming it. No error, `Debug` or [`StoreConfig::url`] shows a password.
//! - **Connecting**: nothing connects when the file is read or the limiter built, and no
//!   runtime is needed then. The first acquisition connects, on its tokio runtime; a Redis that
//!   does not answer is a failing store from then on, met by `on_error`, and each later call
//!   tries again ([`RedisStore::lazy`](crate::redis::RedisStore::lazy)). To fail at start-up
//!   instead, connect yourself ([`RedisStore::connect`](crate::redis::RedisStore::connect) and
//!   [`Limiter::with_store`](crate::Limiter::with_store)) with the section's values.
//! - **Fixed at build**: a limiter's store never changes.
//!   [`reload`](crate::Limiter::reload) changes limits and keeps the store;
//!   [`try_reload`](crate::Limiter::try_reload) refuses a file whose `[store]` differs
//!   ([`ErrorKind::StoreChanged`]): restart the process to change stores.
//! - **Without the feature**, a `[store]` is an error ([`ErrorKind::Unsupported`]), never
//!   ignored: N processes each keeping the limits in memory would admit N times them.
//!
//! # Rules
//! - **Resolution** ([`Config::model_policy`]): a model listed in `[models]` uses its own
//!   policy; else a family whose `match` covers it; else `[defaults.model]`; else `None`. A
//!   `[models]` entry thus carves one model out of a family's prefix pattern
//!   (`[models."gpt-4o-mini-2024-07-18"]` beside `match = ["gpt-4o-mini-*"]`).
//! - **A model the file does not cover** is refused when the file lists models or families:
//!   a limiter's acquisitions for it fail with
//!   [`AcquireError::UnknownModel`](crate::AcquireError::UnknownModel), which names the
//!   model, the closest listed name and what to add; `unlisted_models = "pass"` charges it to
//!   the account's and tenant's budgets only ([`UnlistedModels`]).
//! - **Budgets**: a model listed, or a model under the default, has its own budget; all the
//!   models of a family share one. [`Budget`] says which, to key the limiters by.
//! - **Model names and patterns ignore ASCII case**: `GPT-4o` finds `[models.gpt-4o]`;
//!   two entries that differ only in case are an error ([`ErrorKind::Duplicate`]). Providers'
//!   model IDs are lower case, and a name whose case was mistyped would otherwise silently get
//!   the default limits. Tenant names are your own identifiers and are compared exactly.
//! - **Patterns** are an exact name or a prefix followed by one `*` at the end
//!   (`"gpt-4o-mini-*"`); a bare `"*"` is refused: use `[defaults.model]`.
//! - **No model belongs to two budgets**: two families whose patterns can match the same name
//!   are refused, and so is a name listed both in `[models]` and as an exact name in a family
//!   ([`ErrorKind::Overlap`]). A prefix pattern covering a `[models]` entry is allowed (the
//!   model wins, as above).
//! - **Every value is checked**: unknown keys (with the keys allowed, and a suggestion for a
//!   typo), wrong types, amounts below 1, periods that are not durations or are 0, unknown
//!   algorithms, a burst below 1, a burst above the amount of the default algorithm, a burst
//!   on an algorithm without one, the same dimension and period twice in
//!   one table, a policy table with no limit, a file with no limit at all; and every
//!   [`BuildError`](crate::BuildError) of the library, pointed at the field it comes from.
//!
//! # Examples
//! ```
//! use tokengate::config::{Budget, Config};
//! use tokengate::{Cost, Limiter};
//!
//! let config = Config::from_toml_str(
//!     r#"
//!     [defaults.model]
//!     requests_per_minute = 500
//!
//!     [families.gpt-4o-mini]
//!     match = ["gpt-4o-mini", "gpt-4o-mini-*"]
//!     requests_per_minute = 10_000
//!     tokens_per_minute = 2_000_000
//!
//!     [tenants.acme]
//!     requests_per_minute = 100
//!     "#,
//!     "limits.toml",
//! )?;
//!
//! let (budget, policy) = config.model_policy("gpt-4o-mini-2024-07-18").expect("covered by the family");
//! assert_eq!(budget, Budget::Family("gpt-4o-mini"));
//! assert_eq!(policy.limits().count(), 2);
//! assert_eq!(config.model_policy("o3").map(|(b, _)| b), Some(Budget::Default("o3")));
//!
//! // One limiter for the whole file: a request on a key is admitted by its model's (here,
//! // its family's) budget and its tenant's together, all or none.
//! let limiter = Limiter::from_config(config);
//! let permit = limiter
//!     .key("acme", "gpt-4o-mini-2024-07-18")
//!     .try_acquire(Cost::request().input(1_000).output(500))?;
//! let charged: Vec<String> = limiter.key("acme", "gpt-4o-mini").stats().into_iter().map(|s| s.budget).collect();
//! assert_eq!(charged, ["limiter", "family gpt-4o-mini", "tenant acme"]);
//! # drop(permit);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A burst of the whole minute, in the table form of a shorthand:
//! ```
//! use tokengate::config::Config;
//! use tokengate::{Cost, Limiter, ManualClock};
//!
//! let config = Config::from_toml_str(
//!     r#"
//!     margin = "0s"                  # exact instants, for the counts below
//!
//!     [models.chat]
//!     requests_per_minute = 600      # the default burst: 10 at once, then 1 every 100 ms
//!
//!     [models.batch]                 # a provider documented to accept a minute at once
//!     requests_per_minute = { amount = 600, burst = 600 }
//!     "#,
//!     "limits.toml",
//! )?;
//! let limiter = Limiter::from_config_with_clock(config, ManualClock::new());
//! let admitted_at_once = |model: &str| {
//!     let key = limiter.model(model);
//!     let permits: Vec<_> = std::iter::from_fn(|| key.try_acquire(Cost::request()).ok())
//!         .take(1_000)
//!         .collect();
//!     permits.len()
//! };
//! assert_eq!(admitted_at_once("chat"), 10);
//! assert_eq!(admitted_at_once("batch"), 600);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod document;
mod error;
mod file;
mod pattern;
mod policy_table;
mod store;
mod suggest;
mod tree;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub use error::{ConfigError, ErrorKind};
pub use file::MAX_FILE_BYTES;
#[cfg(feature = "redis")]
pub(crate) use store::store_change;
#[cfg(feature = "redis")]
pub use store::StoreConfig;
pub use suggest::suggest;
pub use values::parse_duration;

use crate::limiter::BudgetName;
use crate::policy::Policy;

/// Limits for models, families of models and tenants, read from a TOML file. See the
/// [module docs](self) for the file's form and rules.
#[derive(Debug, Clone)]
pub struct Config {
    file: String,
    account: Option<Policy>,
    default_model: Option<Policy>,
    default_tenant: Option<Policy>,
    models: Vec<(String, Policy)>,
    /// Lower-case name → index in `models`.
    model_index: HashMap<String, usize>,
    families: Vec<Family>,
    /// Lower-case exact name → index in `families`.
    family_names: HashMap<String, usize>,
    /// Lower-case prefix → index in `families`. Prefixes of different families never overlap.
    family_prefixes: Vec<(String, usize)>,
    tenants: Vec<(String, Policy)>,
    tenant_index: HashMap<String, usize>,
    unlisted_models: UnlistedModels,
    /// `[store]`, if given.
    #[cfg(feature = "redis")]
    store: Option<StoreConfig>,
}

/// What a request for a model the file does not cover (not in `[models]`, no family's `match`,
/// no `[defaults.model]`) gets: the file's `unlisted_models = "error"` (the default) or
/// `"pass"`.
///
/// A file that lists models or families limits each model the provider limits; a name it does
/// not cover is a typo (`gpt4o`) or a model added since, and admitting it under no model limit
/// at all is how a 429 storm starts. So such a request is an error
/// ([`AcquireError::UnknownModel`](crate::AcquireError::UnknownModel), naming the model, the
/// listed ones and the closest), unless the file says `"pass"`: then it is charged to the
/// account's and the tenant's budgets only. A file that lists no model and no family (only
/// `[account]` or tenants) limits no model, and passes every model.
///
/// # Examples
/// ```
/// use tokengate::config::{Config, UnlistedModels};
///
/// let strict = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 500", "limits.toml")?;
/// assert_eq!(strict.unlisted_models(), UnlistedModels::Error);
/// let open = Config::from_toml_str(
///     "unlisted_models = \"pass\"\n[account]\nrequests_per_minute = 5000\n[models.gpt-4o]\nrequests_per_minute = 500",
///     "limits.toml",
/// )?;
/// assert_eq!(open.unlisted_models(), UnlistedModels::Pass);
/// # Ok::<(), tokengate::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UnlistedModels {
    /// A request for a model the file does not cover is an error (when it lists models or
    /// families at all).
    #[default]
    Error,
    /// It is charged to the account's and the tenant's budgets only.
    Pass,
}

impl UnlistedModels {
    /// The value as written in a file: `"error"` or `"pass"`.
    pub fn name(self) -> &'static str {
        match self {
            UnlistedModels::Error => "error",
            UnlistedModels::Pass => "pass",
        }
    }
}

/// A family: model names that share one budget.
#[derive(Debug, Clone)]
pub struct Family {
    name: String,
    patterns: Vec<String>,
    policy: Policy,
}

impl Family {
    /// The family's name (its key under `[families]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `match` patterns, as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Its policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Which budget a model's requests are charged to: key limiters by it (it is `Hash + Eq`, and
/// its [`Display`](fmt::Display) is a distinct string per budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget<'a> {
    /// The model's own entry in `[models]` (the name as written there).
    Model(&'a str),
    /// A family's shared budget (the family's name).
    Family(&'a str),
    /// A model not listed, under `[defaults.model]`: a budget of its own (the name as asked
    /// for).
    Default(&'a str),
}

impl<'a> Budget<'a> {
    /// The name of the model or family.
    pub fn name(&self) -> &'a str {
        match self {
            Budget::Model(n) | Budget::Family(n) | Budget::Default(n) => n,
        }
    }
}

impl fmt::Display for Budget<'_> {
    /// `model gpt-4o`, `family gpt-4o-mini`; a model under the default is `model NAME` too
    /// (it never shares a name with a listed model). The same name as the budget's
    /// [`Stats::budget`](crate::Stats::budget) on a limiter built from the config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Budget::Model(n) | Budget::Default(n) => BudgetName::Model(n),
            Budget::Family(n) => BudgetName::Family(n),
        };
        fmt::Display::fmt(&name, f)
    }
}

impl Config {
    /// Reads a configuration from TOML text; `source_name` names it in errors (a path, or
    /// something like `<env TOKENGATE_LIMITS>`).
    ///
    /// # Errors
    /// The first mistake in the text, as a [`ConfigError`]. Never panics.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        document::read(text, source_name, &|var| std::env::var(var))
    }

    /// Reads a configuration as [`from_toml_str`](Self::from_toml_str) does, with the values
    /// of the environment variables it names (`url = { env = "REDIS_URL" }` in `[store]`)
    /// from `env` rather than from the process's environment: for checking a file away from
    /// where it runs (`tokengate check` gives a stand-in for a variable that is not set, and
    /// says so), or for tests.
    ///
    /// # Errors
    /// As `from_toml_str`; `env`'s error for a variable is the error of the field that names
    /// it.
    ///
    /// # Examples
    /// ```
    /// use std::env::VarError;
    /// use tokengate::config::Config;
    ///
    /// # #[cfg(feature = "redis")] {
    /// let text = "[store]\nurl = { env = \"REDIS_URL\" }\n[account]\nrequests_per_minute = 600";
    /// let env = |var: &str| match var {
    ///     "REDIS_URL" => Ok("redis://10.0.0.5:6379/0".to_owned()),
    ///     _ => Err(VarError::NotPresent),
    /// };
    /// let config = Config::from_toml_str_with_env(text, "limits.toml", &env)?;
    /// let store = config.store().expect("a [store]");
    /// assert_eq!(store.url(), "redis://10.0.0.5:6379/0");
    /// assert_eq!(store.url_env(), Some("REDIS_URL"));
    ///
    /// let unset = Config::from_toml_str_with_env(text, "limits.toml", &|_| Err(VarError::NotPresent));
    /// assert!(unset.unwrap_err().to_string().contains("`REDIS_URL` is not set"));
    /// # }
    /// # Ok::<(), tokengate::config::ConfigError>(())
    /// ```
    pub fn from_toml_str_with_env(
        text: &str,
        source_name: &str,
        env: &dyn Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Config, ConfigError> {
        document::read(text, source_name, env)
    }

    /// Reads a configuration from a file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] naming the path when the file cannot be read, is not a regular file
    /// (a directory, a FIFO, `/dev/zero`), is larger than [`MAX_FILE_BYTES`] or is not UTF-8;
    /// otherwise as [`from_toml_str`](Self::from_toml_str), naming the path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        match file::read_bounded(path) {
            Ok(text) => Self::from_toml_str(&text, &file),
            Err((kind, message)) => Err(ConfigError {
                message,
                kind: ErrorKind::Io(kind),
                file,
                line: 0,
                column: 0,
                field: String::new(),
            }),
        }
    }

    /// The name given for the source (a path for [`from_file`](Self::from_file)).
    pub fn source_name(&self) -> &str {
        &self.file
    }

    /// The policy that governs `model`, and the budget it is charged to: the model's own entry
    /// in `[models]`, else the family whose `match` covers it, else `[defaults.model]`, else
    /// `None`. Names are compared ignoring ASCII case.
    pub fn model_policy<'a>(&'a self, model: &'a str) -> Option<(Budget<'a>, &'a Policy)> {
        let lower = model.to_ascii_lowercase();
        if let Some(&i) = self.model_index.get(&lower) {
            let (name, policy) = &self.models[i];
            return Some((Budget::Model(name), policy));
        }
        let family = self.family_names.get(&lower).copied().or_else(|| {
            self.family_prefixes
                .iter()
                .find(|(prefix, _)| lower.starts_with(prefix.as_str()))
                .map(|&(_, i)| i)
        });
        if let Some(i) = family {
            let family = &self.families[i];
            return Some((Budget::Family(&family.name), &family.policy));
        }
        self.default_model
            .as_ref()
            .map(|policy| (Budget::Default(model), policy))
    }

    /// The policy of `tenant` and the name of its budget: its entry in `[tenants]` (compared
    /// exactly), else `[defaults.tenant]` (a budget of its own, named as asked for), else
    /// `None`.
    pub fn tenant_policy<'a>(&'a self, tenant: &'a str) -> Option<(&'a str, &'a Policy)> {
        match self.tenant_index.get(tenant) {
            Some(&i) => {
                let (name, policy) = &self.tenants[i];
                Some((name, policy))
            }
            None => self.default_tenant.as_ref().map(|policy| (tenant, policy)),
        }
    }

    /// What a request for a model the file does not cover gets (see [`UnlistedModels`]).
    pub fn unlisted_models(&self) -> UnlistedModels {
        self.unlisted_models
    }

    /// Whether a request for `model` is refused: the file lists models or families, none
    /// covers `model`, there is no `[defaults.model]`, and unlisted models are an error.
    pub fn refuses_model(&self, model: &str) -> bool {
        self.unlisted_models == UnlistedModels::Error
            && (!self.models.is_empty() || !self.families.is_empty())
            && self.model_policy(model).is_none()
    }

    /// The error of a request for `model`, when the file refuses it
    /// ([`refuses_model`](Self::refuses_model)): the model, the closest name listed, the names
    /// listed.
    pub(crate) fn refusal(&self, model: &str) -> Option<crate::AcquireError> {
        if !self.refuses_model(model) {
            return None;
        }
        // Names to suggest: models and families, not patterns (`gpt-4o-mini-*` is no name).
        let mut names: Vec<&str> = self.models.iter().map(|(n, _)| n.as_str()).collect();
        for family in &self.families {
            names.push(&family.name);
            names.extend(
                family
                    .patterns
                    .iter()
                    .map(String::as_str)
                    .filter(|p| !p.ends_with('*')),
            );
        }
        let lower = model.to_ascii_lowercase();
        let lowered: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let candidates: Vec<&str> = lowered.iter().map(String::as_str).collect();
        let suggestion = suggest::suggest(&lower, &candidates)
            .and_then(|near| candidates.iter().position(|c| *c == near))
            .map(|i| names[i].to_owned());
        let mut listed: Vec<String> = self.models.iter().map(|(n, _)| n.clone()).collect();
        listed.extend(self.families.iter().map(|f| format!("family {}", f.name)));
        listed.truncate(20);
        Some(crate::AcquireError::UnknownModel {
            model: model.chars().take(200).collect(),
            suggestion,
            listed,
            file: self.file.clone(),
        })
    }

    /// The models listed, in the file's order.
    pub fn models(&self) -> impl Iterator<Item = (&str, &Policy)> + '_ {
        self.models.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// The families, in the file's order.
    pub fn families(&self) -> impl Iterator<Item = &Family> + '_ {
        self.families.iter()
    }

    /// The tenants listed, in the file's order.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Policy)> + '_ {
        self.tenants.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// `[account]`, if given: limits on every request, whatever its model and tenant (an
    /// organisation-wide limit). A limiter built from the config makes it its own policy.
    pub fn account(&self) -> Option<&Policy> {
        self.account.as_ref()
    }

    /// `[defaults.model]`, if given.
    pub fn default_model(&self) -> Option<&Policy> {
        self.default_model.as_ref()
    }

    /// `[defaults.tenant]`, if given.
    pub fn default_tenant(&self) -> Option<&Policy> {
        self.default_tenant.as_ref()
    }

    /// `[store]`, if given (feature `redis`): the Redis a limiter built from the config keeps
    /// its state in ([`Limiter::from_config`](crate::Limiter::from_config) puts it there).
    ///
    /// # Examples
    /// ```
    /// use tokengate::config::Config;
    ///
    /// let text = "[store]\nurl = \"redis://127.0.0.1:6379/0\"\n[account]\nrequests_per_minute = 600";
    /// let config = Config::from_toml_str(text, "limits.toml")?;
    /// assert_eq!(config.store().map(|s| s.url()), Some("redis://127.0.0.1:6379/0"));
    /// # Ok::<(), tokengate::config::ConfigError>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn store(&self) -> Option<&StoreConfig> {
        self.store.as_ref()
    }

    /// The same config with `[store]` replaced by `store` (a reload keeps the limiter's).
    #[cfg(feature = "redis")]
    pub(crate) fn set_store(&mut self, store: Option<StoreConfig>) {
        self.store = store;
    }

    /// The same file with every policy cut to `share` of its limits ([`Policy`]'s `scaled`):
    /// the local limits of one process of several when the store they share fails.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn scaled(&self, share: f64) -> Config {
        let mut config = self.clone();
        let policies = config
            .account
            .iter_mut()
            .chain(config.default_model.iter_mut())
            .chain(config.default_tenant.iter_mut())
            .chain(config.models.iter_mut().map(|(_, p)| p))
            .chain(config.families.iter_mut().map(|f| &mut f.policy))
            .chain(config.tenants.iter_mut().map(|(_, p)| p));
        for policy in policies {
            *policy = policy.scaled(share);
        }
        // The local limits of a failing store decide in this process alone.
        #[cfg(feature = "redis")]
        {
            config.store = None;
        }
        config
    }
}

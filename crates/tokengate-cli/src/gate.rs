//! Every interaction of the simulation with the client-side limiter, in one place: building
//! it from a [`Config`], acquiring for a (tenant, model), settling, telling it about the
//! provider's answers, and reading its stats.
//!
//! A [`Gate`] holds one keyed [`Limiter`] built from the config
//! ([`Limiter::from_config_with_clock`]): a request on (tenant, model) is charged to the
//! model's budget (or its family's) and the tenant's together, all or nothing
//! ([`Limiter::key`]), and to the config's `[account]`. Keys in logs are model budgets,
//! named as [`Budget::name`] names them: the provider enforces per model. Reports list every
//! budget charged ([`Scope`]): the models', the account's, the tenants'.
//!
//! With a store ([`Gate::use_store`]: the Redis of `simulate --redis`) the limiter keeps its
//! state there ([`Limiter::with_store`]), shared with every process using the same store and
//! namespace.
//!
//! [`Budget::name`]: tokengate::config::Budget::name

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokengate::config::Config;
use tokengate::feedback::ProviderReport;
use tokengate::store::Store;
use tokengate::{
    AcquireError, BudgetKind, Cost, Denied, Dimension, Limit, Limiter, ManualClock, OutputCount,
    Permit, Policy, Stats, StoreStats, TokioClock, Usage,
};

use crate::error::Error;

/// The shortest a store-backed acquisition that asked again for an in-flight slot takes: the
/// library's first wait before asking again (10 ms, the upper half of it drawn at random).
/// One that fails sooner was refused by the store's first answer.
pub const POLLED: Duration = Duration::from_millis(5);

/// The client's limiter for every (tenant, model) a workload uses.
#[derive(Debug)]
pub struct Gate {
    /// Made from the config at the first route (and made again by [`start`](Self::start)
    /// and [`use_store`](Self::use_store)).
    limiter: Option<Limiter<TokioClock>>,
    /// The config of the first route, which the limiter is made from.
    config: Option<Config>,
    /// The store the limiter keeps its state in, if any.
    store: Option<Arc<dyn Store>>,
    /// The policy of each model budget routed to, by key.
    models: BTreeMap<String, Policy>,
    /// The `[account]`'s policy, if the config has one.
    account: Option<Policy>,
    /// The policy of each tenant budget routed to, by tenant.
    tenants: BTreeMap<String, Policy>,
    clock: TokioClock,
}

/// Where a (tenant, model) is charged: resolved once, used for every request.
#[derive(Debug, Clone)]
pub struct Route {
    /// The model budget's name: the model's, or its family's. Names the key in logs and
    /// reports.
    pub key: String,
    /// The model asked for.
    pub model: String,
    /// The tenant asking.
    pub tenant: String,
    /// The policies charged: the model's, the tenant's and the account's, those the config
    /// has.
    policies: Vec<Policy>,
}

/// Why [`Gate::acquire`] did not admit a request.
#[derive(Debug, Clone)]
pub enum NotAdmitted {
    /// Refused at once, without waiting in the limiter's queue: a cost that can never fit, a
    /// wait known at once to outlast the timeout.
    AtOnce(AcquireError),
    /// Not admitted within the timeout, after waiting.
    AfterWaiting(AcquireError),
}

/// An admission: settle it with the real usage when the call ends.
#[derive(Debug)]
pub struct GatePermit {
    permit: Permit<'static, TokioClock>,
}

impl GatePermit {
    /// When it was admitted, in ns of the gate's clock.
    pub fn admitted_at(&self) -> u64 {
        self.permit.admitted_at()
    }

    /// Settles with what the call used, its output counted as the provider counts it (the
    /// reply's format says how: [`OutputCount`]), and frees the slot.
    pub fn settle(self, input_tokens: u64, output_tokens: u64, count: OutputCount) {
        self.permit.settle(
            Usage::new()
                .input(input_tokens)
                .output_counted(output_tokens, count),
        );
    }
}

/// One rate limit of a key, with what a log line's amounts count on it.
#[derive(Debug, Clone)]
pub struct KeyLimit {
    /// The dimension.
    pub dimension: Dimension,
    /// The limit.
    pub limit: Limit,
    /// Units counted per request, per input token and per output token.
    pub weights: Weights,
}

/// What one request counts on a limit: `requests * r + input * i + output * o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Weights {
    /// Per request.
    pub requests: u64,
    /// Per input token.
    pub input: u64,
    /// Per output token.
    pub output: u64,
}

impl Weights {
    /// The amount a request of `input` and `output` tokens counts.
    pub fn amount(&self, input: u64, output: u64) -> u64 {
        self.requests
            .saturating_add(self.input.saturating_mul(input))
            .saturating_add(self.output.saturating_mul(output))
    }
}

impl Gate {
    /// A gate reading time from `clock`; the limiter is made at the first route.
    pub fn new(clock: TokioClock) -> Self {
        Self {
            limiter: None,
            config: None,
            store: None,
            models: BTreeMap::new(),
            account: None,
            tenants: BTreeMap::new(),
            clock,
        }
    }

    /// Resolves (tenant, model) to its budgets.
    ///
    /// # Errors
    /// When `config` refuses the model: no policy covers it, and unlisted models are an error.
    pub fn route(&mut self, config: &Config, tenant: &str, model: &str) -> Result<Route, Error> {
        let model_budget = config.model_policy(model);
        if model_budget.is_none() && config.refuses_model(model) {
            return Err(Error::new(format!(
                "{}: no limits for model {model:?}: add [models.{model:?}], a family whose `match` covers it, or [defaults.model] (or unlisted_models = \"pass\" to charge it to the account and tenant budgets only)",
                config.source_name()
            )));
        }
        if self.config.is_none() {
            self.config = Some(config.clone());
            self.make_limiter();
        }
        let mut policies = Vec::new();
        // A model the file passes (unlisted_models = "pass") has no budget of its own: its
        // requests are charged to the account and the tenant only, and logged by its name.
        let key = match model_budget {
            Some((budget, policy)) => {
                let key = budget.name().to_owned();
                self.models
                    .entry(key.clone())
                    .or_insert_with(|| policy.clone());
                policies.push(policy.clone());
                key
            }
            None => model.to_owned(),
        };
        if let Some((name, tenant_policy)) = config.tenant_policy(tenant) {
            policies.push(tenant_policy.clone());
            self.tenants
                .entry(name.to_owned())
                .or_insert_with(|| tenant_policy.clone());
        }
        if let Some(account) = config.account() {
            policies.push(account.clone());
            self.account.get_or_insert_with(|| account.clone());
        }
        Ok(Route {
            key,
            model: model.to_owned(),
            tenant: tenant.to_owned(),
            policies,
        })
    }

    /// Keeps the limiter's state in `store` from now on ([`Limiter::with_store`]): every
    /// process whose limiter uses the same store (and namespace) shares one set of limits.
    /// Call it before any acquisition.
    pub fn use_store(&mut self, store: Arc<dyn Store>) {
        self.store = Some(store);
        self.make_limiter();
    }

    /// Reads time from `clock` from now on: the limiter is made afresh on it (so call it
    /// before any acquisition), which puts the gate's origin at `clock`'s.
    pub fn start(&mut self, clock: TokioClock) {
        self.clock = clock;
        self.make_limiter();
    }

    /// Whether the limiter keeps its state in a store.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// How the limiter has used its store, if it has one.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.store.as_ref()?;
        Some(
            self.limiter
                .as_ref()
                .map(Limiter::store_stats)
                .unwrap_or_default(),
        )
    }

    /// (Re)makes the limiter from the config, on the gate's clock and store.
    fn make_limiter(&mut self) {
        let Some(config) = &self.config else {
            return;
        };
        let limiter = Limiter::from_config_with_clock(config.clone(), self.clock);
        self.limiter = Some(match &self.store {
            Some(store) => limiter.with_store(Arc::clone(store)),
            None => limiter,
        });
    }

    fn limiter(&self) -> Result<&Limiter<TokioClock>, AcquireError> {
        // Every route is made through `route`, which makes the limiter first.
        self.limiter.as_ref().ok_or(AcquireError::QueueTimeout {
            waiters_ahead: 0,
            timeout: Duration::ZERO,
        })
    }

    /// Why `cost` can never be admitted on `route`, if it cannot (a cost above a limit's
    /// capacity, the model's or the tenant's). Charges nothing.
    pub fn impossible(&self, route: &Route, cost: &Cost) -> Option<AcquireError> {
        // Scratch limiters with the same policies: asking the live one would charge it.
        route.policies.iter().find_map(|policy| {
            let scratch = Limiter::with_clock(policy.clone(), ManualClock::new());
            let outcome = scratch.try_acquire(cost.clone()).err();
            match outcome {
                Some(Denied::Never(e)) => Some(e),
                _ => None,
            }
        })
    }

    /// Waits (FIFO, exactly as long as the limits require) for admission of `cost` on the
    /// model's and the tenant's budgets together, or fails at once when the wait is known to
    /// exceed `timeout`.
    ///
    /// With a store, every acquisition waits for the store's answer, so whether it waited is
    /// told by the time it took instead: the store reserves a request at once or refuses it at
    /// once (its wait known to exceed `timeout`), and only an acquisition that found the
    /// in-flight cap full asks again, after [`POLLED`] at least.
    ///
    /// # Errors
    /// As [`Limiter::acquire_timeout`], told apart by whether the request waited at all.
    pub async fn acquire(
        &self,
        route: &Route,
        cost: Cost,
        timeout: Duration,
    ) -> Result<GatePermit, NotAdmitted> {
        let key = self
            .limiter()
            .map_err(NotAdmitted::AtOnce)?
            .key(&route.tenant, &route.model);
        let mut acquire = std::pin::pin!(key.acquire_timeout(cost, timeout));
        // The first poll decides what can be decided at once: an error there never waited.
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        let permit = match first {
            Poll::Ready(result) => result.map_err(NotAdmitted::AtOnce)?,
            Poll::Pending if self.store.is_some() => {
                let asked = tokio::time::Instant::now();
                acquire.await.map_err(|e| {
                    if asked.elapsed() >= POLLED {
                        NotAdmitted::AfterWaiting(e)
                    } else {
                        NotAdmitted::AtOnce(e)
                    }
                })?
            }
            Poll::Pending => acquire.await.map_err(NotAdmitted::AfterWaiting)?,
        };
        Ok(GatePermit {
            permit: permit.into_owned(),
        })
    }

    /// Tells the limiter what a response's headers said (it lowers the model's budget when the
    /// provider has counted more).
    pub fn observe(&self, route: &Route, report: &ProviderReport) {
        if let Ok(limiter) = self.limiter() {
            let _ = limiter.key(&route.tenant, &route.model).observe(report);
        }
    }

    /// Tells the limiter about a 429: the model's budget pauses for the retry-after.
    pub fn observe_throttled(&self, route: &Route, report: &ProviderReport) {
        if let Ok(limiter) = self.limiter() {
            let _ = limiter
                .key(&route.tenant, &route.model)
                .observe_throttled(report);
        }
    }

    /// Requests waiting for admission, over every key.
    pub fn waiters(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.stats().waiters)
    }

    /// Every budget charged, with its policy: the models' (by key), the account's, the
    /// tenants' (by tenant).
    fn budgets(&self) -> impl Iterator<Item = (Scope, &Policy)> + '_ {
        let models = self
            .models
            .iter()
            .map(|(k, p)| (Scope::Model(k.clone()), p));
        let account = self.account.iter().map(|p| (Scope::Account, p));
        let tenants = self
            .tenants
            .iter()
            .map(|(t, p)| (Scope::Tenant(t.clone()), p));
        models.chain(account).chain(tenants)
    }

    /// Each budget's stats, in the order of [`limits`](Self::limits).
    pub fn stats(&self) -> Vec<(Scope, Stats)> {
        let Some(limiter) = &self.limiter else {
            return Vec::new();
        };
        let all = limiter.all_stats();
        self.budgets()
            .map(|(scope, policy)| {
                let found = all.iter().find(|s| scope.is_named(&s.kind));
                // A budget dropped while idle counts nothing: report it fresh.
                let stats = found.cloned().unwrap_or_else(|| {
                    Limiter::with_clock(policy.clone(), ManualClock::new()).stats()
                });
                (scope, stats)
            })
            .collect()
    }

    /// Each budget's rate limits, with what a request counts on each: the models', the
    /// account's, the tenants'.
    pub fn limits(&self) -> Vec<(Scope, Vec<KeyLimit>)> {
        self.budgets()
            .map(|(scope, policy)| (scope, key_limits(policy)))
            .collect()
    }
}

/// A budget of the client's limiter, and which requests count on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A model's (or family's) budget, by key: the requests charged to that key.
    Model(String),
    /// The `[account]`: every request.
    Account,
    /// A tenant's budget, by tenant: that tenant's requests.
    Tenant(String),
}

impl Scope {
    /// Its name in reports and charts: the model's key, `account`, `tenant NAME`.
    pub fn name(&self) -> String {
        match self {
            Scope::Model(key) => key.clone(),
            Scope::Account => "account".to_owned(),
            Scope::Tenant(t) => BudgetKind::Tenant(t.clone()).to_string(),
        }
    }

    /// Whether a request on model budget `key` from `tenant` counts on it.
    pub fn counts(&self, key: &str, tenant: &str) -> bool {
        match self {
            Scope::Model(k) => k == key,
            Scope::Account => true,
            Scope::Tenant(t) => t == tenant,
        }
    }

    /// Whether the library's stats of budget `kind` are this budget's.
    fn is_named(&self, kind: &BudgetKind) -> bool {
        match (self, kind) {
            (Scope::Model(key), BudgetKind::Model(name) | BudgetKind::Family(name)) => name == key,
            // The limiter's own policy is the account's.
            (Scope::Account, BudgetKind::Limiter) => true,
            (Scope::Tenant(t), BudgetKind::Tenant(name)) => name == t,
            _ => false,
        }
    }
}

/// A policy's rate limits with their weights.
pub fn key_limits(policy: &Policy) -> Vec<KeyLimit> {
    let weights = probe_weights(policy);
    policy
        .limits()
        .zip(weights)
        .map(|((dimension, limit), weights)| KeyLimit {
            dimension: dimension.clone(),
            limit: limit.clone(),
            weights,
        })
        .collect()
}

/// What one request, one input token and one output token count on each limit of `policy`,
/// as the limiter counts them ([`Policy::measure`]: a combined-tokens limit's weights
/// included; a dimension of one's own counts none of them).
pub fn probe_weights(policy: &Policy) -> Vec<Weights> {
    let per = |cost: Cost| -> Vec<u64> {
        policy
            .measure(&cost)
            .map(|amount| amount.unwrap_or(0))
            .collect()
    };
    let requests = per(Cost::request());
    let input = per(Cost::zero().input(1));
    let output = per(Cost::zero().output(1));
    (0..requests.len())
        .map(|i| Weights {
            requests: requests[i],
            input: input[i],
            output: output[i],
        })
        .collect()
}

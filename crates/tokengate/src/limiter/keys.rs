//! Keys: the budgets of models, families and tenants, made on first use from a config, charged
//! together, and dropped again when idle.
//!
//! # Memory
//! A budget whose every limit is back to a fresh state, with nothing in flight, queued or
//! outstanding, equals a budget made anew: it is dropped without loss. Sweeps run as budgets
//! are made (each time their number has doubled since the last sweep, so the cost per new
//! key stays constant) and on [`Limiter::evict_idle`].
//!
//! Budgets for names the config does not list (tenants and models under its defaults) are
//! capped ([`Limiter::set_max_keys`], 100,000 by default). At the cap, a new name shares one
//! *overflow* budget with the other new names of its kind, under the same default policy:
//! together they get what one such key gets. That is the safe side on both counts: never
//! unlimited, and never everyone denied (names that already have a budget keep it, and the
//! overflow budget admits at the default rate). Listed names always get a budget of their own
//! (the config bounds them). At the cap, a sweep runs once an eighth of the cap's worth of new
//! names has gone to the overflow budget (so a full cap costs no scan per request), or on
//! [`Limiter::evict_idle`]; idle budgets dropped then make room again. A name that then gets
//! a budget of its own starts it fresh: what it used in the overflow budget stays counted
//! there, so for one period it may get up to its own limit again.

// Without the `config` feature no directory is ever made: keys all route to the limiter's own
// budget, and the machinery for the others is unused.
#![cfg_attr(not(feature = "config"), allow(dead_code))]

use std::collections::HashMap;
#[cfg(feature = "config")]
use std::path::Path;
use std::sync::Arc;

use super::budget::{Budget, BudgetName};
use super::engine::State;
use super::route::{BudgetId, Route, ROOT};
use super::{Limiter, Permit};
use crate::clock::Clock;
#[cfg(feature = "config")]
use crate::clock::SystemClock;
#[cfg(feature = "config")]
use crate::config::{Budget as ConfigBudget, Config, ConfigError};
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::Denied;
use crate::feedback::ProviderReport;
use crate::policy::Policy;
use crate::stats::Stats;

/// The default cap on budgets for names a config does not list.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// Sweeps wait for at least this many new budgets.
const MIN_SWEEP: usize = 1_024;

/// The names a request is charged under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyNames {
    tenant: Option<Box<str>>,
    model: Option<Box<str>>,
}

/// The policies of a limiter built from a config, shared by every budget of one kind.
#[derive(Debug)]
pub(crate) struct Directory {
    #[cfg(feature = "config")]
    config: Config,
    /// Listed models, families and tenants by name as written, and the defaults.
    models: HashMap<Box<str>, Arc<Policy>>,
    families: HashMap<Box<str>, Arc<Policy>>,
    tenants: HashMap<Box<str>, Arc<Policy>>,
    default_model: Option<Arc<Policy>>,
    default_tenant: Option<Arc<Policy>>,
}

#[cfg(feature = "config")]
impl Directory {
    fn new(config: Config) -> Self {
        let arc = |p: &Policy| Arc::new(p.clone());
        Self {
            models: config.models().map(|(n, p)| (n.into(), arc(p))).collect(),
            families: config
                .families()
                .map(|f| (f.name().into(), arc(f.policy())))
                .collect(),
            tenants: config.tenants().map(|(n, p)| (n.into(), arc(p))).collect(),
            default_model: config.default_model().map(arc),
            default_tenant: config.default_tenant().map(arc),
            config,
        }
    }
}

/// Which budget a name falls under, before it is looked up.
enum Slot<'a> {
    Listed(Kind, &'a str, &'a Arc<Policy>),
    Default(Kind, String, &'a Arc<Policy>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Family,
    Tenant,
}

impl Directory {
    /// The error of a request for `model` when the config refuses it (a model it does not
    /// cover, where it lists models: see [`UnlistedModels`](crate::config::UnlistedModels)).
    fn refusal(&self, model: &str) -> Option<crate::AcquireError> {
        #[cfg(feature = "config")]
        {
            self.config.refusal(model)
        }
        #[cfg(not(feature = "config"))]
        {
            let _ = model;
            None
        }
    }

    fn model_slot<'a>(&'a self, model: &str) -> Option<Slot<'a>> {
        #[cfg(feature = "config")]
        {
            let (budget, _) = self.config.model_policy(model)?;
            match budget {
                ConfigBudget::Model(name) => {
                    let (name, policy) = self.models.get_key_value(name)?;
                    Some(Slot::Listed(Kind::Model, name, policy))
                }
                ConfigBudget::Family(name) => {
                    let (name, policy) = self.families.get_key_value(name)?;
                    Some(Slot::Listed(Kind::Family, name, policy))
                }
                ConfigBudget::Default(name) => Some(Slot::Default(
                    Kind::Model,
                    name.to_ascii_lowercase(),
                    self.default_model.as_ref()?,
                )),
            }
        }
        #[cfg(not(feature = "config"))]
        {
            let _ = model;
            None
        }
    }

    fn tenant_slot<'a>(&'a self, tenant: &str) -> Option<Slot<'a>> {
        match self.tenants.get_key_value(tenant) {
            Some((name, policy)) => Some(Slot::Listed(Kind::Tenant, name, policy)),
            None => Some(Slot::Default(
                Kind::Tenant,
                tenant.to_owned(),
                self.default_tenant.as_ref()?,
            )),
        }
    }
}

/// Budget ids by name, for one kind of name.
type NameMap = HashMap<Box<str>, BudgetId>;

/// Budget ids by name, and the bookkeeping of the cap.
#[derive(Debug)]
pub(crate) struct Names {
    next_id: BudgetId,
    /// Listed names by kind (bounded by the config).
    listed: [HashMap<Box<str>, BudgetId>; 3],
    /// Names under the defaults by kind (capped).
    dynamic: [HashMap<Box<str>, BudgetId>; 3],
    /// Model names (as asked for) of a family's budget (as many as the cap).
    aliases: HashMap<Box<str>, BudgetId>,
    model_overflow: Option<BudgetId>,
    tenant_overflow: Option<BudgetId>,
    pub(crate) max_keys: usize,
    /// Sweep when `dynamic` reaches this many.
    sweep_at: usize,
    /// New names sent to an overflow budget since the last sweep.
    overflowed: usize,
}

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
}

impl Names {
    /// The budget filed under `name` as written, without asking the config: the names are
    /// filed as the config resolves them (listed names as written, names under the defaults
    /// as looked up), and filed afresh on a reload, so a name found here is where the config
    /// would send it. A name in another spelling falls through to the config.
    #[inline]
    fn known(&self, kind: Kind, name: &str) -> Option<BudgetId> {
        let k = kind.index();
        let found = self.listed[k]
            .get(name)
            .or_else(|| self.dynamic[k].get(name));
        match kind {
            Kind::Model => found.or_else(|| self.aliases.get(name)).copied(),
            _ => found.copied(),
        }
    }

    /// Budgets held for names under the defaults.
    fn dynamic_len(&self) -> usize {
        self.dynamic.iter().map(HashMap::len).sum()
    }
}

impl Default for Names {
    fn default() -> Self {
        Self {
            next_id: 1,
            listed: Default::default(),
            dynamic: Default::default(),
            aliases: HashMap::new(),
            model_overflow: None,
            tenant_overflow: None,
            max_keys: DEFAULT_MAX_KEYS,
            sweep_at: MIN_SWEEP,
            overflowed: 0,
        }
    }
}

impl State {
    /// The route of a request on `key`: the limiter's own budget, then the model's (or its
    /// family's), then the tenant's; budgets are made when missing.
    ///
    /// # Errors
    /// [`AcquireError::UnknownModel`](crate::AcquireError::UnknownModel) for a model the
    /// config refuses.
    pub(crate) fn resolve(
        &mut self,
        directory: &Directory,
        key: &KeyNames,
        now: Nanos,
    ) -> Result<Route, crate::AcquireError> {
        // Sweep first, never between the lookups below: a budget found for this route must
        // not be dropped before the route is pinned.
        let n = &self.names;
        if n.dynamic_len() >= n.sweep_at || n.overflowed >= n.max_keys.max(MIN_SWEEP) / 8 {
            self.sweep(now);
        }
        let mut route = Route::ROOT;
        if let Some(model) = key.model.as_deref() {
            let known = self.names.known(Kind::Model, model);
            match known.or_else(|| self.model_budget(directory, model)) {
                Some(id) => route.push(id),
                None => {
                    if let Some(refused) = directory.refusal(model) {
                        return Err(refused);
                    }
                }
            }
        }
        if let Some(tenant) = key.tenant.as_deref() {
            let known = self.names.known(Kind::Tenant, tenant);
            if let Some(id) = known.or_else(|| self.tenant_budget(directory, tenant)) {
                route.push(id);
            }
        }
        Ok(route)
    }

    /// The budget of `model` as the config resolves it (made if missing); a model of a family
    /// is remembered by name, so the next request finds it at once.
    fn model_budget(&mut self, directory: &Directory, model: &str) -> Option<BudgetId> {
        let slot = directory.model_slot(model)?;
        let family = matches!(slot, Slot::Listed(Kind::Family, ..));
        let id = self.budget_for(slot);
        if family && self.names.aliases.len() < self.names.max_keys {
            self.names.aliases.insert(model.into(), id);
        }
        Some(id)
    }

    fn tenant_budget(&mut self, directory: &Directory, tenant: &str) -> Option<BudgetId> {
        let slot = directory.tenant_slot(tenant)?;
        Some(self.budget_for(slot))
    }

    /// The budget of `slot`, made if missing.
    fn budget_for(&mut self, slot: Slot<'_>) -> BudgetId {
        match slot {
            Slot::Listed(kind, name, policy) => {
                if let Some(&id) = self.names.listed[kind.index()].get(name) {
                    return id;
                }
                let id = self.make_budget(kind, name.into(), policy);
                self.names.listed[kind.index()].insert(name.into(), id);
                id
            }
            Slot::Default(kind, name, policy) => {
                if let Some(&id) = self.names.dynamic[kind.index()].get(name.as_str()) {
                    return id;
                }
                if self.names.dynamic_len() >= self.names.max_keys {
                    self.names.overflowed += 1;
                    return self.overflow(kind, policy);
                }
                let name = name.into_boxed_str();
                let id = self.make_budget(kind, name.clone(), policy);
                self.names.dynamic[kind.index()].insert(name, id);
                id
            }
        }
    }

    fn make_budget(&mut self, kind: Kind, name: Box<str>, policy: &Arc<Policy>) -> BudgetId {
        let name = match kind {
            Kind::Model => BudgetName::Model(name),
            Kind::Family => BudgetName::Family(name),
            Kind::Tenant => BudgetName::Tenant(name),
        };
        self.insert_budget(name, policy)
    }

    /// A new budget under a free id.
    fn insert_budget(&mut self, name: BudgetName, policy: &Arc<Policy>) -> BudgetId {
        let id = self.free_id();
        self.budgets
            .insert(id, Budget::new(name, Arc::clone(policy)));
        id
    }

    /// An id no budget holds: the next in order, skipping the limiter's own (0) and, once the
    /// ids have wrapped, those still in use (there are fewer budgets than ids: memory bounds
    /// them long before 2^32).
    fn free_id(&mut self) -> BudgetId {
        loop {
            let id = self.names.next_id;
            self.names.next_id = id.wrapping_add(1);
            if id != ROOT && !self.budgets.contains_key(&id) {
                return id;
            }
        }
    }

    /// The overflow budget of `kind`, made if missing.
    fn overflow(&mut self, kind: Kind, policy: &Arc<Policy>) -> BudgetId {
        let existing = match kind {
            Kind::Tenant => self.names.tenant_overflow,
            _ => self.names.model_overflow,
        };
        if let Some(id) = existing.filter(|id| self.budgets.contains_key(id)) {
            return id;
        }
        let name = match kind {
            Kind::Tenant => BudgetName::TenantOverflow,
            _ => BudgetName::ModelOverflow,
        };
        let id = self.insert_budget(name, policy);
        match kind {
            Kind::Tenant => self.names.tenant_overflow = Some(id),
            _ => self.names.model_overflow = Some(id),
        }
        id
    }

    /// Puts `directory`'s policies in force on every budget, keeping what is counted, and
    /// files every budget's name again as `directory` resolves it, so that requests find the
    /// budget that holds their state: a tenant newly listed, a model now under the defaults
    /// or listed in another spelling (model names ignore case; the budget takes the config's
    /// spelling). A budget whose name now resolves elsewhere (a model moved into a family), or
    /// to no policy, gets no limits and is dropped once idle.
    #[cfg(feature = "config")]
    fn refile(&mut self, directory: &Directory, now: Nanos) {
        let maps = self.names.listed.iter_mut().chain(&mut self.names.dynamic);
        for map in maps.chain([&mut self.names.aliases]) {
            map.clear();
        }
        let Names {
            listed,
            dynamic,
            model_overflow,
            tenant_overflow,
            ..
        } = &mut self.names;
        for (&id, budget) in &mut self.budgets {
            // (where to file it, its name there, its policy)
            let filed: Option<(&mut NameMap, Box<str>, Arc<Policy>)> = match &budget.name {
                BudgetName::Model(name) => match directory.model_slot(name) {
                    Some(Slot::Listed(Kind::Model, n, p)) if n.eq_ignore_ascii_case(name) => {
                        Some((&mut listed[Kind::Model.index()], n.into(), Arc::clone(p)))
                    }
                    Some(Slot::Default(Kind::Model, n, p)) if n.eq_ignore_ascii_case(name) => {
                        Some((&mut dynamic[Kind::Model.index()], n.into(), Arc::clone(p)))
                    }
                    _ => None,
                },
                BudgetName::Family(name) => directory
                    .families
                    .get_key_value(&**name)
                    .map(|(n, p)| (&mut listed[Kind::Family.index()], n.clone(), Arc::clone(p))),
                BudgetName::Tenant(name) => match directory.tenant_slot(name) {
                    Some(Slot::Listed(Kind::Tenant, n, p)) if n == &**name => {
                        Some((&mut listed[Kind::Tenant.index()], n.into(), Arc::clone(p)))
                    }
                    Some(Slot::Default(Kind::Tenant, n, p)) if n == **name => {
                        Some((&mut dynamic[Kind::Tenant.index()], n.into(), Arc::clone(p)))
                    }
                    _ => None,
                },
                BudgetName::ModelOverflow | BudgetName::TenantOverflow => {
                    let (policy, slot) = match budget.name {
                        BudgetName::ModelOverflow => {
                            (&directory.default_model, &mut *model_overflow)
                        }
                        _ => (&directory.default_tenant, &mut *tenant_overflow),
                    };
                    if policy.is_none() {
                        *slot = None;
                    }
                    let policy = policy.clone().unwrap_or_else(|| Arc::new(Policy::empty()));
                    budget.replace_policy(policy, now);
                    continue;
                }
                BudgetName::Limiter => continue,
            };
            match filed {
                Some((map, name, policy)) => {
                    budget.replace_policy(policy, now);
                    budget.name = match budget.name {
                        BudgetName::Model(_) => BudgetName::Model(name.clone()),
                        BudgetName::Family(_) => BudgetName::Family(name.clone()),
                        _ => BudgetName::Tenant(name.clone()),
                    };
                    map.insert(name, id);
                }
                // No new request is routed here: no limits, and dropped once idle.
                None => budget.replace_policy(Arc::new(Policy::empty()), now),
            }
        }
    }

    /// Drops every idle budget (see the [module docs](self)); returns how many.
    pub(crate) fn sweep(&mut self, now: Nanos) -> usize {
        let before = self.budgets.len();
        self.budgets.retain(|_, b| !b.is_idle(now));
        let budgets = &self.budgets;
        let maps = self.names.listed.iter_mut().chain(&mut self.names.dynamic);
        for map in maps.chain([&mut self.names.aliases]) {
            map.retain(|_, id| budgets.contains_key(id));
            shrink(map);
        }
        for slot in [
            &mut self.names.model_overflow,
            &mut self.names.tenant_overflow,
        ] {
            if slot.is_some_and(|id| !budgets.contains_key(&id)) {
                *slot = None;
            }
        }
        shrink(&mut self.budgets);
        let n = &mut self.names;
        n.sweep_at = (2 * n.dynamic_len()).max(MIN_SWEEP);
        n.overflowed = 0;
        before - self.budgets.len()
    }
}

/// Gives back a map's memory once it is mostly empty.
fn shrink<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > 4 * map.len() + 64 {
        map.shrink_to_fit();
    }
}

#[cfg(feature = "config")]
impl Limiter<SystemClock> {
    /// A limiter for the models, families and tenants of `config`, on the system clock; its own
    /// policy is the config's `[account]` (none when absent). Use [`key`](Limiter::key) to
    /// charge a request to its tenant and model together.
    ///
    /// # Examples
    /// ```
    /// use tokengate::config::Config;
    /// use tokengate::{Cost, Limiter};
    ///
    /// let config = Config::from_toml_str(r#"
    ///     [models.gpt-4o]
    ///     requests_per_minute = 500
    ///     tokens_per_minute = 30_000
    ///
    ///     [defaults.tenant]
    ///     requests_per_minute = 100
    /// "#, "limits.toml")?;
    /// let limiter = Limiter::from_config(config);
    /// let permit = limiter.key("acme", "gpt-4o").try_acquire(Cost::request().input(1_000).output(500))?;
    /// # drop(permit);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_config(config: Config) -> Self {
        Self::from_config_with_clock(config, SystemClock::new())
    }

    /// Reads a config file ([`Config::from_file`]) and builds a limiter for it.
    ///
    /// # Errors
    /// The file's first mistake, naming the file, line and field.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Ok(Self::from_config(Config::from_file(path)?))
    }
}

impl<C: Clock> Limiter<C> {
    /// [`from_config`](Limiter::from_config) on `clock`.
    #[cfg(feature = "config")]
    pub fn from_config_with_clock(config: Config, clock: C) -> Self {
        let root = Arc::new(config.account().cloned().unwrap_or_else(Policy::empty));
        let limiter = Self::from_parts(root, Some(Directory::new(config)), clock);
        limiter.lock().root_from_config = true;
        limiter
    }

    /// The key of `tenant` asking for `model`: a request on it is charged to the model's
    /// budget (or its family's) and the tenant's together, all or nothing, and to the
    /// limiter's own policy. Names the config does not cover add no budget; on a limiter
    /// built from one [`Policy`], every key is the limiter itself.
    ///
    /// Cheap: budgets are found (or made) when a request is made on the key.
    ///
    /// # Examples
    /// ```
    /// use tokengate::config::Config;
    /// use tokengate::{Cost, Denied, Limiter, ManualClock};
    ///
    /// let config = Config::from_toml_str(r#"
    ///     [models.gpt-4o]
    ///     requests_per_minute = 600
    ///     [tenants.acme]
    ///     requests_per_minute = 60
    /// "#, "limits.toml")?;
    /// let limiter = Limiter::from_config_with_clock(config, ManualClock::new());
    /// let acme = limiter.key("acme", "gpt-4o");
    /// let _first = acme.try_acquire(Cost::request())?;
    /// // acme may send one a second; the model takes ten a second.
    /// assert!(matches!(acme.try_acquire(Cost::request()), Err(Denied::RateLimited { .. })));
    /// let _other = limiter.key("globex", "gpt-4o").try_acquire(Cost::request())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self, tenant: &str, model: &str) -> Key<'_, C> {
        self.key_of(Some(tenant), Some(model))
    }

    /// The key of `model` alone: charged to the model's budget (or its family's) and the
    /// limiter's own policy, with no tenant's.
    pub fn model(&self, model: &str) -> Key<'_, C> {
        self.key_of(None, Some(model))
    }

    /// The key of `tenant` alone: charged to the tenant's budget and the limiter's own policy,
    /// with no model's.
    pub fn tenant(&self, tenant: &str) -> Key<'_, C> {
        self.key_of(Some(tenant), None)
    }

    /// The key of `tenant` and `model`, either of which may be missing (neither: the limiter's
    /// own policy only).
    pub fn key_of(&self, tenant: Option<&str>, model: Option<&str>) -> Key<'_, C> {
        Key {
            limiter: self,
            names: Arc::new(KeyNames {
                tenant: tenant.map(Into::into),
                model: model.map(Into::into),
            }),
        }
    }

    /// Puts the limits of `config` in force from now on (its `[account]` too), keeping what is
    /// counted: budgets
    /// whose model, family or tenant keeps a policy carry their state over (an unchanged
    /// limit exactly; a limit with a new amount on the same dimension and period with the
    /// units counted now; see [`Stats`] for the result), in-flight requests and waiters stay,
    /// and budgets whose name lost its policy are dropped once idle. Permits admitted
    /// before settle on the safe side: extra usage is charged, nothing is refunded. A
    /// provider's pause in force is kept (the provider asked for it, and
    /// [`max_pause`](Limiter::max_pause) bounds it): [`Key::resume`] or
    /// [`resume`](Limiter::resume) lifts it.
    ///
    /// # Examples
    /// ```
    /// use tokengate::config::Config;
    /// use tokengate::{Cost, Limiter, ManualClock};
    ///
    /// let v1 = Config::from_toml_str("[models.gpt-4o]\ntokens_per_minute = 10_000", "v1")?;
    /// let limiter = Limiter::from_config_with_clock(v1, ManualClock::new());
    /// let gpt = limiter.model("gpt-4o");
    /// let _permit = gpt.try_acquire(Cost::request().input(6_000))?;
    /// // The tier went up: 20,000 a minute, and the 6,000 already counted still count.
    /// let v2 = Config::from_toml_str("[models.gpt-4o]\ntokens_per_minute = 20_000", "v2")?;
    /// limiter.reload(v2);
    /// let tokens = &gpt.stats()[1].limits[0];
    /// assert_eq!((tokens.amount, tokens.used), (20_000, 6_000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "config")]
    pub fn reload(&self, config: Config) {
        let now = self.shared.clock.now();
        let account = config.account().cloned();
        let directory = Arc::new(Directory::new(config));
        let mut st = self.lock();
        // The limiter's own policy follows `[account]` when it came from a config (or the new
        // one has it); a limiter built from a policy keeps that policy otherwise.
        if st.root_from_config || account.is_some() {
            st.root_from_config = true;
            let policy = Arc::new(account.unwrap_or_else(Policy::empty));
            st.root.replace_policy(policy, now);
        }
        st.refile(&directory, now);
        st.directory = Some(directory);
        st.serve_all(now);
    }

    /// Sets the cap on budgets for names the config does not list (100,000 by default). At it,
    /// a new name shares one overflow budget with the other new names of its kind (tenants, or
    /// models), under the same default policy: together they get what one such key gets. Never
    /// unlimited, never everyone denied: names that have a budget keep it, and the overflow
    /// budget admits at the default rate. Listed names always get a budget of their own. Idle
    /// budgets make room again at the next sweep: once an eighth of the cap's worth of names
    /// has gone to the overflow budget, or at [`evict_idle`](Self::evict_idle).
    pub fn set_max_keys(&self, max_keys: usize) {
        self.lock().names.max_keys = max_keys;
    }

    /// Drops every budget that is idle now (all its limits fresh, nothing in flight, queued or
    /// outstanding): such a budget equals one made anew, so nothing is lost. Returns how many
    /// were dropped. Sweeps also run on their own as keys are made; call this to give memory
    /// back at once (after a burst of one-off keys, say).
    pub fn evict_idle(&self) -> usize {
        let now = self.shared.clock.now();
        self.lock().sweep(now)
    }

    /// Budgets held now, the limiter's own included.
    pub fn budgets(&self) -> usize {
        self.lock().budgets.len() + 1
    }

    /// A snapshot of every budget held now: the limiter's own first (its counters count every
    /// request), then the others by name.
    pub fn all_stats(&self) -> Vec<Stats> {
        let now = self.shared.clock.now();
        let st = self.lock();
        let root = st.root_stats(now);
        let mut others: Vec<Stats> = st.budgets.values().map(|b| b.stats(now)).collect();
        drop(st);
        others.sort_by(|a, b| a.budget.cmp(&b.budget));
        others.insert(0, root);
        others
    }
}

/// A tenant and model (or a model alone) on a [`Limiter`]: each request on it is charged to
/// every budget it falls under at once, all or none. Made by [`Limiter::key`] and
/// [`Limiter::model`]; it has the limiter's methods for one key.
///
/// Waiters that share a budget are admitted in arrival order where that budget holds them
/// back; a waiter held back by one budget (a tenant over its own limit) does not hold up
/// waiters of another budget it merely passes through (the model).
#[derive(Debug, Clone)]
pub struct Key<'a, C: Clock> {
    limiter: &'a Limiter<C>,
    names: Arc<KeyNames>,
}

impl<'a, C: Clock> Key<'a, C> {
    /// [`Limiter::try_acquire`] on this key's budgets.
    ///
    /// # Errors
    /// As [`Limiter::try_acquire`]; the dimension named is that of the budget that denies.
    pub fn try_acquire(&self, cost: Cost) -> Result<Permit<'a, C>, Denied> {
        let now = self.limiter.shared.clock.now();
        self.limiter.try_acquire_on(Some(&self.names), cost, now)
    }

    /// [`Limiter::try_admit`] on this key's budgets: admitted and over at once, without a
    /// permit.
    ///
    /// # Errors
    /// As [`Limiter::try_acquire`]; the dimension named is that of the budget that denies.
    ///
    /// # Examples
    /// ```
    /// use tokengate::config::Config;
    /// use tokengate::{Cost, Limiter, ManualClock};
    ///
    /// let config = Config::from_toml_str(
    ///     "[models.gpt-4o]\nrequests_per_minute = 60\n",
    ///     "tokengate.toml",
    /// )?;
    /// let limiter = Limiter::from_config_with_clock(config, ManualClock::new());
    /// let key = limiter.model("gpt-4o");
    /// assert!(key.try_admit(Cost::request()).is_ok());
    /// assert!(key.try_admit(Cost::request()).is_err()); // one a second, burst 1
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_admit(&self, cost: Cost) -> Result<(), Denied> {
        let now = self.limiter.shared.clock.now();
        self.limiter.try_admit_on(Some(&self.names), &cost, now)
    }

    /// [`Limiter::acquire`] on this key's budgets.
    #[cfg(feature = "tokio")]
    pub fn acquire(&self, cost: Cost) -> super::Acquire<'a, C> {
        self.limiter
            .acquire_on(Some(self.names_owned()), cost, None)
    }

    /// [`Limiter::acquire_owned`] on this key's budgets: a permit that can move into a
    /// spawned task.
    ///
    /// # Errors
    /// As [`Limiter::acquire`].
    #[cfg(feature = "tokio")]
    pub async fn acquire_owned(
        &self,
        cost: Cost,
    ) -> Result<Permit<'static, C>, crate::AcquireError> {
        Ok(self.acquire(cost).await?.into_owned())
    }

    /// [`Limiter::acquire_timeout`] on this key's budgets.
    #[cfg(feature = "tokio")]
    pub fn acquire_timeout(
        &self,
        cost: Cost,
        timeout: std::time::Duration,
    ) -> super::Acquire<'a, C> {
        self.limiter
            .acquire_on(Some(self.names_owned()), cost, Some(timeout))
    }

    /// [`Limiter::acquire_blocking`] on this key's budgets.
    ///
    /// # Errors
    /// As [`Limiter::acquire_blocking`].
    pub fn acquire_blocking(&self, cost: Cost) -> Result<Permit<'a, C>, crate::AcquireError> {
        self.limiter
            .acquire_blocking_on(Some(self.names_owned()), cost, None)
    }

    /// [`Limiter::acquire_blocking_timeout`] on this key's budgets.
    ///
    /// # Errors
    /// As [`Limiter::acquire_blocking_timeout`].
    pub fn acquire_blocking_timeout(
        &self,
        cost: Cost,
        timeout: std::time::Duration,
    ) -> Result<Permit<'a, C>, crate::AcquireError> {
        self.limiter
            .acquire_blocking_on(Some(self.names_owned()), cost, Some(timeout))
    }

    /// [`Limiter::observe`] for this key: the provider's figures correct the budget that
    /// mirrors the provider (the model's, or its family's; the limiter's own without one).
    pub fn observe(&self, report: &ProviderReport) -> u64 {
        self.limiter.observe_on(Some(&self.names), report)
    }

    /// [`Limiter::observe_throttled`] for this key: a 429 pauses the model's budget (or its
    /// family's), so other models go on.
    pub fn observe_throttled(&self, report: &ProviderReport) -> u64 {
        self.limiter.observe_throttled_on(Some(&self.names), report)
    }

    /// [`Limiter::pause`] for this key's model (see [`observe_throttled`](Self::observe_throttled)):
    /// replaces its pause with `wait` from now (at most [`Limiter::max_pause`]);
    /// `Duration::ZERO` lifts it.
    pub fn pause(&self, wait: std::time::Duration) {
        self.limiter
            .pause_for(Some(&self.names), wait, super::provider::PauseKind::Set);
    }

    /// Lifts the pause of this key's model (or the limiter's own budget, for a key without a
    /// model budget), if one is in force.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::config::Config;
    /// use tokengate::{Cost, Limiter, ManualClock};
    ///
    /// let config = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 500", "limits.toml")?;
    /// let limiter = Limiter::from_config_with_clock(config, ManualClock::new());
    /// let key = limiter.model("gpt-4o");
    /// key.pause(Duration::from_secs(30));
    /// assert!(key.try_acquire(Cost::request()).is_err());
    /// key.resume();
    /// assert!(key.try_acquire(Cost::request()).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume(&self) {
        self.limiter.pause_for(
            Some(&self.names),
            std::time::Duration::ZERO,
            super::provider::PauseKind::Set,
        );
    }

    /// A snapshot of each budget this key is charged to: the limiter's own, the model's (or
    /// family's), the tenant's.
    pub fn stats(&self) -> Vec<Stats> {
        let limiter = self.limiter;
        let now = limiter.shared.clock.now();
        let mut st = limiter.lock();
        // A model the config refuses has no budget of its own: the limiter's own only.
        let route = limiter
            .route(&mut st, Some(&self.names), now)
            .unwrap_or(Route::ROOT);
        route
            .ids()
            .iter()
            .filter_map(|&id| st.budget(id))
            .map(|b| b.stats(now))
            .collect()
    }

    /// Estimates `request` with the limiter's [estimator](Limiter::estimator), waits for its
    /// admission on this key's budgets, runs `call`, and settles the permit with the usage its
    /// reply reports (a reply without usage, or a failed call, keeps the reservation: what a
    /// provider counts for a call nobody can account for). The in-flight slot is held exactly
    /// while `call` runs. With an estimator that learns output sizes, the reply's output is
    /// fed to it.
    ///
    /// A reply the provider refused for its rate limits ([`ModelReply::throttled`]: an
    /// `http::Response` with status 429, a rate-limit error body) is settled as the limiter's
    /// [`Retry`](crate::call::Retry) says ([`Limiter::set_retry`]; by default the request stays
    /// counted and its tokens come back), told to the limiter
    /// ([`observe_throttled`](Self::observe_throttled): the model pauses for the
    /// `retry-after`, and the limits it overran are lowered for a while), and `call` runs again
    /// after that wait (with up to a tenth more) and a new admission, up to the retries
    /// configured (2 by default); the last reply is returned, refused or not. So `call` sends
    /// once and leaves retrying a 429 to `run`: an SDK's own retries inside it would skip the
    /// limiter (set its retries to 0, or [`Retry::none`](crate::call::Retry::none) here).
    ///
    /// `call` gets the request as borrowed for the whole run, so the future it returns may
    /// borrow it: `key.run(&request, |request| client.chat(request))` works as written.
    ///
    /// # Errors
    /// The [`AcquireError`](crate::AcquireError) of the acquisition; the call's own result,
    /// error or not, is `Ok`.
    ///
    /// # Cancel safety
    /// Dropping the future while it waits charges nothing; while `call` runs, it frees the
    /// slot and keeps the reservation.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tokengate::config::Config;
    /// use tokengate::Limiter;
    ///
    /// let config = Config::from_toml_str(r#"
    ///     [models.gpt-4o]
    ///     requests_per_minute = 500
    ///     tokens_per_minute = 30_000
    ///     [defaults.tenant]
    ///     tokens_per_minute = 10_000
    /// "#, "limits.toml")?;
    /// let limiter = Limiter::from_config(config);
    /// let request = json!({"model": "gpt-4o", "max_tokens": 800,
    ///     "messages": [{"role": "user", "content": "Say hello."}]});
    /// // A client that answers with the provider's JSON (here, a canned reply).
    /// struct Client;
    /// impl Client {
    ///     async fn chat(&self, _request: &serde_json::Value) -> std::io::Result<serde_json::Value> {
    ///         Ok(json!({"object": "chat.completion", "usage": {"prompt_tokens": 11, "completion_tokens": 4}}))
    ///     }
    /// }
    /// let client = Client;
    /// let reply = limiter.key("acme", "gpt-4o").run(&request, |request| client.chat(request)).await??;
    /// assert_eq!(reply["usage"]["completion_tokens"], 4);
    /// // Both budgets were charged as OpenAI counts: the prompt's 11 tokens, and the 800
    /// // reserved for output, which it keeps counted.
    /// let stats = limiter.key("acme", "gpt-4o").stats();
    /// assert_eq!((stats[1].limits[1].used, stats[2].limits[0].used), (811, 811));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A 429 and its retry, with the status and headers kept in an `http::Response`
    /// (feature `reqwest`):
    /// ```
    /// # #[cfg(feature = "reqwest")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::{json, Value};
    /// use tokengate::{Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).tokens_per_minute(30_000).build()?);
    /// let request = json!({"model": "gpt-4o", "max_tokens": 100,
    ///     "messages": [{"role": "user", "content": "Say hello."}]});
    /// let mut attempts = 0;
    /// let reply = limiter.model("gpt-4o").run(&request, |_| {
    ///     attempts += 1;
    ///     // The first attempt is refused; the second answers.
    ///     let reply = if attempts == 1 {
    ///         http::Response::builder().status(429).header("retry-after-ms", "20").body(Value::Null)
    ///     } else {
    ///         http::Response::builder().body(json!({"usage": {"prompt_tokens": 9, "completion_tokens": 3}}))
    ///     };
    ///     async move { reply }
    /// }).await??;
    /// assert_eq!((reply.status().as_u16(), attempts), (200, 2));
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "reqwest"))]
    /// # fn main() {}
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn run<'r, Req, R, F, Fut>(
        &self,
        request: &'r Req,
        call: F,
    ) -> Result<R, crate::AcquireError>
    where
        Req: crate::call::ModelRequest + ?Sized,
        R: crate::call::ModelReply,
        F: FnMut(&'r Req) -> Fut,
        Fut: std::future::Future<Output = R>,
    {
        self.run_within(request, None, call).await
    }

    /// [`run`](Self::run) with an overall deadline on waiting: the admissions and the waits
    /// before retries together take at most `timeout` (the calls themselves are not timed:
    /// wrap the future in `tokio::time::timeout` for that). A retry whose wait would pass the
    /// deadline is not made: the refused reply is returned.
    ///
    /// # Errors
    /// [`AcquireError::Timeout`](crate::AcquireError::Timeout) (or `QueueTimeout`, `Paused`)
    /// when an admission cannot come within what is left of `timeout`, at once when that is
    /// known; otherwise as [`run`](Self::run).
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use serde_json::json;
    /// use tokengate::{AcquireError, Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).build()?);
    /// // The provider asked to wait 30 s: a call that may wait 5 s fails at once.
    /// limiter.model("gpt-4o").pause(Duration::from_secs(30));
    /// let request = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi."}]});
    /// let answer = limiter
    ///     .model("gpt-4o")
    ///     .run_timeout(&request, Duration::from_secs(5), |_| async { json!({}) })
    ///     .await;
    /// assert!(matches!(answer, Err(AcquireError::Paused { .. })));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn run_timeout<'r, Req, R, F, Fut>(
        &self,
        request: &'r Req,
        timeout: std::time::Duration,
        call: F,
    ) -> Result<R, crate::AcquireError>
    where
        Req: crate::call::ModelRequest + ?Sized,
        R: crate::call::ModelReply,
        F: FnMut(&'r Req) -> Fut,
        Fut: std::future::Future<Output = R>,
    {
        self.run_within(request, Some(timeout), call).await
    }

    #[cfg(feature = "tokio")]
    async fn run_within<'r, Req, R, F, Fut>(
        &self,
        request: &'r Req,
        timeout: Option<std::time::Duration>,
        mut call: F,
    ) -> Result<R, crate::AcquireError>
    where
        Req: crate::call::ModelRequest + ?Sized,
        R: crate::call::ModelReply,
        F: FnMut(&'r Req) -> Fut,
        Fut: std::future::Future<Output = R>,
    {
        let clock = &self.limiter.shared.clock;
        let started = clock.now();
        // What is left of the timeout, if there is one.
        let left = || {
            timeout.map(|t| {
                t.saturating_sub(std::time::Duration::from_nanos(
                    clock.now().saturating_sub(started),
                ))
            })
        };
        let estimator = self.limiter.estimator();
        let retry = self.limiter.retry();
        let model = self.names.model.as_deref().unwrap_or("");
        let cost = request.cost(&estimator, model);
        let mut retried = 0;
        loop {
            let permit = match left() {
                Some(left) => self.acquire_timeout(cost.clone(), left).await?,
                None => self.acquire(cost.clone()).await?,
            };
            let reply = call(request).await;
            if let Some(report) = reply.throttled() {
                // Settled first: the limits the 429 lowers take nothing back from it.
                match retry.refused().usage() {
                    Some(usage) => permit.settle(usage),
                    None => drop(permit),
                }
                self.observe_throttled(&report);
                let nth = self.limiter.shared.retried.next();
                let wait = retry
                    .wait(retried, &report, nth)
                    .filter(|&wait| left().is_none_or(|left| wait <= left));
                match wait {
                    Some(wait) => {
                        retried += 1;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None => return Ok(reply),
                }
            }
            match reply.usage() {
                Some(usage) => {
                    if let Some(output) = usage.output_tokens().filter(|_| !model.is_empty()) {
                        estimator.observe_output(model, output);
                    }
                    permit.settle(usage);
                }
                None => drop(permit),
            }
            return Ok(reply);
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &'a Limiter<C> {
        self.limiter
    }

    fn names_owned(&self) -> Arc<KeyNames> {
        Arc::clone(&self.names)
    }
}

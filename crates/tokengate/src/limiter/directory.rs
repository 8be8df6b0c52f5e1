//! Which budget a key's names are charged to: the config's policies by name
//! ([`Directory`]), the budgets made for names on first use ([`Names`]), and their upkeep
//! (resolving a key's route, refiling on a reload, sweeping idle budgets, capping names under
//! the defaults with overflow budgets).
//!
//! # Memory
//! A budget whose every limit is back to a fresh state, with nothing in flight, queued or
//! outstanding, equals a budget made anew: it is dropped without loss. Sweeps run as budgets
//! are made (each time their number has doubled since the last sweep, so the cost per new
//! key stays constant) and on [`Limiter::evict_idle`](super::Limiter::evict_idle).
//!
//! Budgets for names the config does not list (tenants and models under its defaults) are
//! capped ([`Limiter::set_max_keys`](super::Limiter::set_max_keys), 100,000 by default). At
//! the cap, a new name shares one *overflow* budget with the other new names of its kind,
//! under the same default policy: together they get what one such key gets. That is the safe
//! side on both counts: never unlimited, and never everyone denied (names that already have
//! a budget keep it, and the overflow budget admits at the default rate). Listed names always
//! get a budget of their own (the config bounds them). At the cap, a sweep runs once an
//! eighth of the cap's worth of new names has gone to the overflow budget (so a full cap
//! costs no scan per request), or on [`Limiter::evict_idle`](super::Limiter::evict_idle);
//! idle budgets dropped then make room again. A name that then gets a budget of its own
//! starts it fresh: what it used in the overflow budget stays counted there, so for one
//! period it may get up to its own limit again.

// Without the `config` feature no directory is ever made: keys all route to the limiter's own
// budget, and the machinery for the others is unused.
#![cfg_attr(not(feature = "config"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::Arc;

use super::budget::{Budget, BudgetName};
use super::engine::State;
use super::keys::KeyNames;
use super::route::{BudgetId, Route, ROOT};
#[cfg(feature = "config")]
use crate::config::{Budget as ConfigBudget, Config};
use crate::core::Nanos;
use crate::policy::Policy;

/// The default cap on budgets for names a config does not list.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// Sweeps wait for at least this many new budgets.
const MIN_SWEEP: usize = 1_024;

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
    pub(super) fn new(config: Config) -> Self {
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

/// A budget by name, for a store: its name as the limiter's stats spell it, and its policy.
#[cfg(feature = "tokio")]
pub(super) type NamedPolicy = (BudgetName, Arc<Policy>);

#[cfg(feature = "tokio")]
impl Directory {
    /// The config itself.
    #[cfg(feature = "config")]
    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    /// The budget `model`'s requests are charged to, as the in-memory budgets name it (a model
    /// under the defaults by its name in lower case: one budget whatever the spelling), or
    /// `None` when the config gives models no budget; never an overflow budget.
    ///
    /// # Errors
    /// [`AcquireError::UnknownModel`](crate::AcquireError::UnknownModel) for a model the
    /// config refuses.
    pub(super) fn model_budget_of(
        &self,
        model: &str,
    ) -> Result<Option<NamedPolicy>, crate::AcquireError> {
        match self.model_slot(model) {
            Some(slot) => Ok(Some(slot.named())),
            None => match self.refusal(model) {
                Some(refused) => Err(refused),
                None => Ok(None),
            },
        }
    }

    /// The budget of `tenant`'s requests, if the config gives tenants one.
    pub(super) fn tenant_budget_of(&self, tenant: &str) -> Option<NamedPolicy> {
        self.tenant_slot(tenant).map(Slot::named)
    }
}

#[cfg(feature = "tokio")]
impl Slot<'_> {
    fn named(self) -> NamedPolicy {
        let (kind, name, policy): (Kind, Box<str>, &Arc<Policy>) = match self {
            Slot::Listed(kind, name, policy) => (kind, name.into(), policy),
            Slot::Default(kind, name, policy) => (kind, name.into_boxed_str(), policy),
        };
        (kind.budget_name(name), Arc::clone(policy))
    }
}

impl Kind {
    fn budget_name(self, name: Box<str>) -> BudgetName {
        match self {
            Kind::Model => BudgetName::Model(name),
            Kind::Family => BudgetName::Family(name),
            Kind::Tenant => BudgetName::Tenant(name),
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
        self.insert_budget(kind.budget_name(name), policy)
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
    pub(super) fn refile(&mut self, directory: &Directory, now: Nanos) {
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

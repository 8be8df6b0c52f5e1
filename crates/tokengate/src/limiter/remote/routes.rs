//! The store budgets a key's requests fall under: the account's, the model's (or its
//! family's), the tenant's, each a [`StoreBudget`] with a stable name. Built once per key
//! name and cached, so a hot key does not rebuild them; a reload empties the cache.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::directory::Directory;
use super::super::keys::KeyNames;
use crate::error::AcquireError;
use crate::policy::Policy;
use crate::store::StoreBudget;

/// The store's name of the limiter's own budget.
const ACCOUNT: &str = "account";

/// Keys whose budgets are cached; past it the cache starts afresh (an unbounded number of
/// tenants must not grow it for good).
const MAX_CACHED: usize = 10_000;

/// The budgets a request on one key falls under, in order.
#[derive(Debug, Clone)]
pub(super) struct StoreRoute {
    pub(super) budgets: Arc<[StoreBudget]>,
    /// The one that mirrors the provider (a pause lands on it): the model's, else the
    /// account's.
    provider: Option<usize>,
}

impl StoreRoute {
    /// The budget that mirrors the provider, if the route has one.
    pub(super) fn provider(&self) -> Option<&StoreBudget> {
        self.budgets.get(self.provider?)
    }
}

/// Every key's budgets, from the limiter's own policy and its config.
#[derive(Debug)]
pub(super) struct Routes {
    account: Option<StoreBudget>,
    directory: Option<Arc<Directory>>,
    /// The route of a request on no key, or on any key without a config.
    own: StoreRoute,
    keys: HashMap<Arc<KeyNames>, Result<StoreRoute, AcquireError>>,
}

impl Routes {
    /// The routes of a limiter whose own policy is `account` (none without limits), with the
    /// budgets of `directory` if it has a config.
    pub(super) fn new(account: Option<Arc<Policy>>, directory: Option<Arc<Directory>>) -> Self {
        let account = account.map(|policy| StoreBudget::new(ACCOUNT, policy));
        Self {
            own: own_route(account.as_ref()),
            account,
            directory,
            keys: HashMap::new(),
        }
    }

    /// The route of a request on `key` (the limiter's own for `None`).
    ///
    /// # Errors
    /// [`AcquireError::UnknownModel`] for a model the config refuses.
    pub(super) fn of(&mut self, key: Option<&KeyNames>) -> Result<StoreRoute, AcquireError> {
        let (Some(key), Some(directory)) = (key, &self.directory) else {
            return Ok(self.own.clone());
        };
        if let Some(route) = self.keys.get(key) {
            return route.clone();
        }
        let route = key_route(self.account.as_ref(), directory, key);
        if self.keys.len() >= MAX_CACHED {
            self.keys.clear();
        }
        self.keys.insert(Arc::new(key.clone()), route.clone());
        route
    }

    /// The limiter's own policy is `account` from now on.
    #[cfg(feature = "config")]
    pub(super) fn set_account(&mut self, account: Option<Arc<Policy>>) {
        self.account = account.map(|policy| StoreBudget::new(ACCOUNT, policy));
        self.own = own_route(self.account.as_ref());
        self.keys.clear();
    }

    /// The config's budgets are `directory`'s from now on.
    #[cfg(feature = "config")]
    pub(super) fn set_directory(&mut self, directory: Arc<Directory>) {
        self.directory = Some(directory);
        self.keys.clear();
    }

    /// The config, for a limiter built from one.
    #[cfg(feature = "config")]
    pub(super) fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// The limiter's own policy, if it has limits.
    pub(super) fn account(&self) -> Option<&StoreBudget> {
        self.account.as_ref()
    }
}

fn own_route(account: Option<&StoreBudget>) -> StoreRoute {
    StoreRoute {
        budgets: account.cloned().into_iter().collect(),
        provider: account.map(|_| 0),
    }
}

/// The budgets of `key` under `directory`'s config, after the account's.
fn key_route(
    account: Option<&StoreBudget>,
    directory: &Directory,
    key: &KeyNames,
) -> Result<StoreRoute, AcquireError> {
    let mut budgets: Vec<StoreBudget> = account.cloned().into_iter().collect();
    let mut provider = account.map(|_| 0);
    if let Some(model) = key.model.as_deref() {
        if let Some((name, policy)) = directory.model_budget_of(model)? {
            provider = Some(budgets.len());
            budgets.push(StoreBudget::new(name.label(), policy));
        }
    }
    if let Some(tenant) = key.tenant.as_deref() {
        if let Some((name, policy)) = directory.tenant_budget_of(tenant) {
            budgets.push(StoreBudget::new(name.label(), policy));
        }
    }
    Ok(StoreRoute {
        budgets: budgets.into(),
        provider,
    })
}

//! What the store holds for a key's budgets, read without charging anything: the shared
//! counterpart of [`Limiter::stats`], which reads this process's in-memory state.

use super::super::keys::KeyNames;
use super::super::Limiter;
use crate::clock::Clock;
use crate::error::AcquireError;
use crate::policy::Policy;
use crate::store::BudgetSnapshot;

/// One budget as its store holds it now.
#[derive(Debug, Clone)]
pub struct SharedBudget {
    /// The budget's name on the store: `account` (the limiter's own policy), `model NAME`,
    /// `family NAME`, `tenant NAME`.
    pub name: String,
    /// Its limits ([`Policy::limits`]), in the order of the snapshot's.
    pub policy: Policy,
    /// What remains of each of its limits, its requests in flight and its pause.
    pub snapshot: BudgetSnapshot,
}

impl<C: Clock> Limiter<C> {
    /// What the store holds now for the limiter's own budget (the one a request on no key
    /// falls under), read without charging anything: every limit's use and what remains of
    /// it ([`Snapshot`](crate::core::Snapshot)), the requests in flight and the pause, as every
    /// process sharing the store sees them. One store call per budget.
    ///
    /// # Errors
    /// [`AcquireError::Store`] when the limiter has no store (read [`stats`](Self::stats)
    /// then) or the store fails.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use tokengate::store::MemoryStore;
    /// use tokengate::{Cost, Limiter, Policy};
    ///
    /// let policy = Policy::builder().requests_per_minute(600).build()?;
    /// let store = Arc::new(MemoryStore::new());
    /// let a = Limiter::new(policy.clone()).with_store(Arc::clone(&store));
    /// let b = Limiter::new(policy).with_store(store);
    /// let _permit = a.acquire(Cost::request()).await?;
    /// // Another process's view of the shared budget.
    /// let shared = b.shared_state().await?;
    /// assert_eq!(shared[0].name, "account");
    /// assert_eq!(shared[0].snapshot.limits[0].used, 1);
    /// // What it would admit at once: the smooth window's second's worth (10), less the one.
    /// assert_eq!(shared[0].snapshot.limits[0].remaining, 9);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shared_state(&self) -> Result<Vec<SharedBudget>, AcquireError> {
        self.shared_state_on(None).await
    }

    /// [`shared_state`](Self::shared_state) of the budgets a request on `key` falls under.
    pub(in crate::limiter) async fn shared_state_on(
        &self,
        key: Option<&KeyNames>,
    ) -> Result<Vec<SharedBudget>, AcquireError> {
        let Some(link) = self.shared.remote.get() else {
            return Err(AcquireError::Store {
                message: "this limiter has no store: its state is this process's, read it with \
                          `stats()`"
                    .to_owned(),
            });
        };
        let (store, route) = link.route(key)?;
        let mut budgets = Vec::with_capacity(route.budgets.len());
        for budget in route.budgets.iter() {
            link.counters.call();
            let snapshot = store.snapshot(budget).await.map_err(|e| {
                link.counters.failed("snapshot", &e, None);
                AcquireError::Store {
                    message: e.to_string(),
                }
            })?;
            budgets.push(SharedBudget {
                name: budget.name().to_owned(),
                policy: budget.policy().clone(),
                snapshot,
            });
        }
        Ok(budgets)
    }
}

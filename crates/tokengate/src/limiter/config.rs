//! A limiter of many budgets: built from a [`Config`](crate::config::Config), the keys that
//! charge a tenant and a model together, reloading the config, and the budgets it holds.

#[cfg(feature = "config")]
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "config")]
use super::directory::Directory;
use super::keys::{Key, KeyNames};
use super::Limiter;
use crate::clock::Clock;
#[cfg(feature = "config")]
use crate::clock::SystemClock;
#[cfg(feature = "config")]
use crate::config::{Config, ConfigError};
#[cfg(feature = "config")]
use crate::policy::Policy;
use crate::stats::Stats;

#[cfg(feature = "config")]
impl Limiter<SystemClock> {
    /// A limiter for the models, families and tenants of `config`, on the system clock; its own
    /// policy is the config's `[account]` (none when absent). Use [`key`](Limiter::key) to
    /// charge a request to its tenant and model together.
    ///
    /// With a `[store]` (feature `redis`), the limiter keeps its state in that Redis
    /// ([`with_store`](Limiter::with_store)), with the section's `on_error` and `lease`: see
    /// [`StoreConfig`](crate::config::StoreConfig). Nothing connects here (no runtime is
    /// needed, nothing waits): the first acquisition connects, on its tokio runtime, and a
    /// Redis that does not answer is a failing store from then on, met by `on_error`.
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

    /// Reads a config file ([`Config::from_file`]) and builds a limiter for it
    /// ([`from_config`](Limiter::from_config): on the file's `[store]`, if it has one).
    ///
    /// # Errors
    /// The file's first mistake, naming the file, line and field (a `[store]` in a build
    /// without the `redis` feature is one).
    ///
    /// # Examples
    /// ```
    /// use tokengate::Limiter;
    ///
    /// let path = std::env::temp_dir().join(format!("tokengate-doc-{}.toml", std::process::id()));
    /// std::fs::write(&path, "[models.gpt-4o]\nrequests_per_minute = 500\n")?;
    /// let limiter = Limiter::from_config_file(&path)?;
    /// # #[cfg(feature = "tokio")]
    /// assert!(limiter.store().is_none()); // no [store]: limits in this process
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Ok(Self::from_config(Config::from_file(path)?))
    }
}

impl<C: Clock> Limiter<C> {
    /// [`from_config`](Limiter::from_config) on `clock`.
    #[cfg(feature = "config")]
    pub fn from_config_with_clock(config: Config, clock: C) -> Self {
        #[cfg(feature = "redis")]
        let store = config.store().cloned();
        let root = Arc::new(config.account().cloned().unwrap_or_else(Policy::empty));
        let limiter = Self::from_parts(root, Some(Directory::new(config)), clock);
        limiter.lock().root_from_config = true;
        #[cfg(feature = "redis")]
        if let Some(store) = store {
            return store.attach(limiter);
        }
        limiter
    }

    /// The key of `tenant` asking for `model`: a request on it is charged to the model's
    /// budget (or its family's) and the tenant's together, all or nothing, and to the
    /// limiter's own policy. Names the config does not cover add no budget; on a limiter
    /// built from one [`Policy`](crate::Policy), every key is the limiter itself.
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
        let names = KeyNames {
            tenant: tenant.map(Into::into),
            model: model.map(Into::into),
        };
        Key::new(self, Arc::new(names))
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
    /// On a store-backed limiter ([`with_store`](Limiter::with_store)) the new limits are the
    /// ones asked for from now on. A store holds one set of limits per budget, shared by every
    /// process: a budget whose limits changed is refused
    /// ([`AcquireError::Store`](crate::AcquireError::Store), naming the budget) until every
    /// process sharing the store has the new limits and the budget is reset
    /// ([`Store::reset`](crate::store::Store::reset)); its state then starts afresh.
    ///
    /// A limiter's store is fixed when it is built: a config's `[store]` counts at
    /// [`from_config`](Limiter::from_config) only, and a reload changes limits, never the
    /// store (the limiter keeps its own; [`try_reload`](Limiter::try_reload) refuses a config
    /// whose `[store]` differs from it).
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
        #[cfg(feature = "redis")]
        let config = {
            let mut config = config;
            config.set_store(self.config_store());
            config
        };
        let now = self.shared.clock.now();
        let account = config.account().cloned();
        let directory = Arc::new(Directory::new(config));
        let (mut st, now) = self.lock_at(now);
        // The limiter's own policy follows `[account]` when it came from a config (or the new
        // one has it); a limiter built from a policy keeps that policy otherwise.
        let mut replaced = None;
        if st.root_from_config || account.is_some() {
            st.root_from_config = true;
            let policy = Arc::new(account.unwrap_or_else(Policy::empty));
            replaced = Some(Arc::clone(&policy));
            st.root.replace_policy(policy, now);
        }
        st.refile(&directory, now);
        st.directory = Some(Arc::clone(&directory));
        st.serve_all(now);
        drop(st);
        #[cfg(feature = "tokio")]
        self.reload_store(replaced, directory);
        #[cfg(not(feature = "tokio"))]
        let _ = replaced;
    }

    /// [`reload`](Limiter::reload), refused when `config`'s `[store]` is not the one the
    /// limiter was built with (feature `redis`): a different URL, password, namespace,
    /// prefix, deadline, lease or failure policy, a `[store]` added to a file that had none,
    /// or one removed. A limiter's store is fixed when it is built (its state is counted
    /// there; moving it would start every count afresh while other processes go on with the
    /// old ones): restart the process to change stores. Without a `[store]` on either side,
    /// the same as `reload` (a store given in code with [`with_store`](Limiter::with_store)
    /// stays).
    ///
    /// # Errors
    /// [`ErrorKind::StoreChanged`](crate::config::ErrorKind::StoreChanged), naming the new
    /// file and its `[store]` and the key that differs; nothing changes then.
    ///
    /// # Examples
    /// ```
    /// use tokengate::config::{Config, ErrorKind};
    /// use tokengate::Limiter;
    ///
    /// let v1 = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 500", "v1.toml")?;
    /// let limiter = Limiter::from_config(v1);
    /// let v2 = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 800", "v2.toml")?;
    /// limiter.try_reload(v2)?;
    /// # #[cfg(feature = "redis")] {
    /// let shared = Config::from_toml_str(
    ///     "[store]\nurl = \"redis://127.0.0.1:6379/0\"\n[models.gpt-4o]\nrequests_per_minute = 800",
    ///     "v3.toml",
    /// )?;
    /// let refused = limiter.try_reload(shared).unwrap_err();
    /// assert_eq!(refused.kind, ErrorKind::StoreChanged);
    /// assert_eq!((refused.line, refused.field.as_str()), (1, "store"));
    /// # }
    /// # Ok::<(), tokengate::config::ConfigError>(())
    /// ```
    #[cfg(feature = "config")]
    pub fn try_reload(&self, config: Config) -> Result<(), ConfigError> {
        #[cfg(feature = "redis")]
        if let Some(error) = crate::config::store_change(self.config_store().as_ref(), &config) {
            return Err(error);
        }
        self.reload(config);
        Ok(())
    }

    /// The `[store]` of the config the limiter was built from (a reload keeps it).
    #[cfg(feature = "redis")]
    fn config_store(&self) -> Option<crate::config::StoreConfig> {
        let st = self.lock();
        st.directory
            .as_ref()
            .and_then(|d| d.config().store().cloned())
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
        let (mut st, now) = self.lock_at(now);
        st.sweep(now)
    }

    /// Budgets held now, the limiter's own included.
    pub fn budgets(&self) -> usize {
        self.lock().budgets.len() + 1
    }

    /// A snapshot of every budget held now: the limiter's own first (its counters count every
    /// request), then the others by name.
    pub fn all_stats(&self) -> Vec<Stats> {
        let now = self.shared.clock.now();
        let (st, now) = self.lock_at(now);
        let root = st.root_stats(now);
        let mut others: Vec<Stats> = st.budgets.values().map(|b| b.stats(now)).collect();
        drop(st);
        others.sort_by(|a, b| a.budget.cmp(&b.budget));
        others.insert(0, root);
        others
    }
}

//! Keys: a tenant and a model on a limiter, whose requests are charged to every budget they
//! fall under at once (see `directory` for which budgets those are, and how they are made and
//! dropped).

use std::sync::Arc;

use super::route::Route;
use super::{Limiter, Permit};
use crate::clock::Clock;
use crate::cost::Cost;
use crate::error::Denied;
use crate::feedback::ProviderReport;
use crate::stats::Stats;

/// The names a request is charged under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KeyNames {
    pub(super) tenant: Option<Box<str>>,
    pub(super) model: Option<Box<str>>,
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
    /// The key of `names` on `limiter`.
    pub(super) fn new(limiter: &'a Limiter<C>, names: Arc<KeyNames>) -> Self {
        Self { limiter, names }
    }

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

    /// [`Limiter::shared_state`] of the budgets a request on this key falls under, in the
    /// order they are charged: the account's, the model's (or its family's), the tenant's.
    ///
    /// # Errors
    /// As `shared_state`, and [`AcquireError::UnknownModel`](crate::AcquireError::UnknownModel)
    /// for a model the limits file refuses.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokengate::config::Config;
    /// use tokengate::store::MemoryStore;
    /// use tokengate::{Cost, Limiter};
    ///
    /// let config = Config::from_toml_str(
    ///     "[models.gpt-4o]\nrequests_per_minute = 500\n[defaults.tenant]\nrequests_per_minute = 50",
    ///     "limits.toml",
    /// )?;
    /// let limiter = Limiter::from_config(config).with_store(MemoryStore::new());
    /// let _permit = limiter.key("acme", "gpt-4o").acquire(Cost::request()).await?;
    /// let shared = limiter.key("acme", "gpt-4o").shared_state().await?;
    /// let used: Vec<(&str, u64)> = shared
    ///     .iter()
    ///     .map(|b| (b.name.as_str(), b.snapshot.limits[0].used))
    ///     .collect();
    /// assert_eq!(used, [("model gpt-4o", 1), ("tenant acme", 1)]);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn shared_state(&self) -> Result<Vec<crate::SharedBudget>, crate::AcquireError> {
        self.limiter.shared_state_on(Some(&self.names)).await
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
    /// model budget), if one is in force. Like `pause`, `observe` and `observe_throttled`, it
    /// does nothing for a model the limits file refuses
    /// ([`UnlistedModels`](crate::config::UnlistedModels)): that key has no budget of its own,
    /// and the account's must not stand in for it.
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
        let (mut st, now) = limiter.lock_at(now);
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
    /// A reply the provider refused for its rate limits
    /// ([`ModelReply::throttled`](crate::call::ModelReply::throttled): an `http::Response` with
    /// status 429, a rate-limit error body) is settled as the limiter's
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
    /// deadline is not made: the refused reply is returned. The deadline is kept on the
    /// limiter's clock and retries sleep on tokio's: give the limiter a
    /// [`TokioClock`](crate::TokioClock) when tests pause tokio's time.
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
        let deadline = crate::call::Deadline::new(&self.limiter.shared.clock, timeout);
        let estimator = self.limiter.estimator();
        let retry = self.limiter.retry();
        let model = self.names.model.as_deref().unwrap_or("");
        let cost = request.cost(&estimator, model);
        let mut retried = 0;
        loop {
            let permit = match deadline.left() {
                Some(left) => self.acquire_timeout(cost.clone(), left).await?,
                None => self.acquire(cost.clone()).await?,
            };
            let reply = call(request).await;
            if let Some(report) = reply.throttled() {
                // Settled first: the limits the 429 lowers take nothing back from it.
                retry.refused().settle(permit);
                self.observe_throttled(&report);
                let nth = self.limiter.shared.retried.next();
                let wait = retry
                    .wait(retried, &report, nth)
                    .filter(|&wait| deadline.allows(wait));
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
                    if !model.is_empty() {
                        if let Some(output) = usage.output_tokens() {
                            estimator.observe_output(model, output);
                        }
                        if let (Some(heuristic), Some(counted)) = (
                            request.heuristic_input(&estimator, model),
                            reply.counted_input(),
                        ) {
                            estimator.observe_input(model, heuristic, counted);
                        }
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

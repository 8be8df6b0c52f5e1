//! The service that admits each request through a [`Limiter`] before calling the inner one.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::{ResponseFuture, TokenGateConfig, TokenGateError};
use crate::clock::{Clock, SystemClock};
use crate::cost::{Cost, Usage};
use crate::limiter::Limiter;

/// Admits each request through a [`Limiter`] before calling the inner service, and settles
/// the permit with the usage its response reports. Made by [`TokenGateLayer`](super::TokenGateLayer)
/// or [`TokenGate::new`]; see the [module docs](super) for the whole path of a request.
///
/// # Readiness: why `poll_ready` does not wait for the limiter
/// tower's `RateLimit` waits for the rate in `poll_ready`, which works because every request
/// costs the same (one). Here the cost depends on the request (its prompt and `max_tokens`),
/// and `poll_ready` does not see the request. So `poll_ready` reports the inner service's
/// readiness only, and the wait for admission happens in the [`ResponseFuture`], once `call`
/// has computed the cost. A `TokenGate` is ready whenever its inner service is; the limiter
/// holds requests back by making their response futures take longer (or fail, with a
/// [timeout](TokenGateConfig::with_timeout)).
///
/// Two consequences:
/// - `call` defers the inner call until admission: it takes the service that `poll_ready` made
///   ready into the response future and leaves a clone in its place (the way tower's docs
///   advise), hence `S: Clone`. Whatever that readiness reserved in the inner service (a
///   `ConcurrencyLimit` permit, a `Buffer` slot) is held while the request waits for admission:
///   put such layers outside the `TokenGate`, or cap concurrency with the policy's
///   [`max_in_flight`](crate::PolicyBuilder::max_in_flight), which is taken only at admission.
/// - Admission is FIFO in the order response futures are first polled (futures are lazy),
///   which is call order when each future is awaited or spawned as soon as it is made.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tokengate::tower::TokenGate;
/// use tokengate::{Cost, Limiter, Policy, Usage};
/// use tower::{service_fn, ServiceExt};
///
/// let limiter = Limiter::new(Policy::builder().output_tokens_per_minute(8_000).build()?);
/// // A model that always answers in 40 output tokens.
/// let model = service_fn(|max_tokens: u64| async move { Ok::<u64, std::io::Error>(40.min(max_tokens)) });
/// let client = TokenGate::new(
///     model,
///     limiter.clone(),
///     |max_tokens: &u64| Cost::request().output(*max_tokens),
///     |r: &Result<u64, std::io::Error>| r.as_ref().ok().map(|&used| Usage::new().output(used)),
/// );
///
/// assert_eq!(client.oneshot(1_000).await?, 40);
/// let output = &limiter.stats().limits[0];
/// assert_eq!((output.used, output.refunded), (40, 960));
/// # Ok(())
/// # }
/// ```
pub struct TokenGate<S, CostFn, UsageFn, C: Clock = SystemClock> {
    inner: S,
    limiter: Limiter<C>,
    cost_of: Arc<CostFn>,
    usage_of: Arc<UsageFn>,
    config: TokenGateConfig,
}

impl<S, CostFn, UsageFn, C: Clock> TokenGate<S, CostFn, UsageFn, C> {
    /// Wraps `inner`: each request reserves `cost_of(&request)` on `limiter` and is settled with
    /// `usage_of(&result)`; waits without a timeout.
    pub fn new(inner: S, limiter: Limiter<C>, cost_of: CostFn, usage_of: UsageFn) -> Self {
        Self::from_parts(
            inner,
            limiter,
            Arc::new(cost_of),
            Arc::new(usage_of),
            TokenGateConfig::default(),
        )
    }

    pub(super) fn from_parts(
        inner: S,
        limiter: Limiter<C>,
        cost_of: Arc<CostFn>,
        usage_of: Arc<UsageFn>,
        config: TokenGateConfig,
    ) -> Self {
        Self {
            inner,
            limiter,
            cost_of,
            usage_of,
            config,
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: TokenGateConfig) -> Self {
        self.config = config;
        self
    }

    /// Gives up on admission after `timeout`; see [`TokenGateConfig::with_timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.with_timeout(timeout);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TokenGateConfig {
        &self.config
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter<C> {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Request, CostFn, UsageFn, C> Service<Request> for TokenGate<S, CostFn, UsageFn, C>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: 'static,
    Request: Send + 'static,
    CostFn: Fn(&Request) -> Cost,
    UsageFn: Fn(&Result<S::Response, S::Error>) -> Option<Usage> + Send + Sync + 'static,
    C: Clock,
{
    type Response = S::Response;
    type Error = TokenGateError<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    /// The inner service's readiness; see [Readiness](TokenGate#readiness-why-poll_ready-does-not-wait-for-the-limiter).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(TokenGateError::Inner)
    }

    /// Computes the request's cost and returns the future that acquires it, calls the inner
    /// service and settles.
    fn call(&mut self, request: Request) -> Self::Future {
        let cost = (self.cost_of)(&request);
        // The ready service goes into the future; a fresh clone stays for the next poll_ready.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let limiter = self.limiter.clone();
        let usage_of = Arc::clone(&self.usage_of);
        let timeout = self.config.timeout();
        ResponseFuture::new(async move {
            limiter
                .run(
                    cost,
                    timeout,
                    || inner.call(request),
                    |result| usage_of(result),
                )
                .await
                .map_err(TokenGateError::Limit)?
                .map_err(TokenGateError::Inner)
        })
    }
}

impl<S: Clone, CostFn, UsageFn, C: Clock> Clone for TokenGate<S, CostFn, UsageFn, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            cost_of: Arc::clone(&self.cost_of),
            usage_of: Arc::clone(&self.usage_of),
            config: self.config,
        }
    }
}

impl<S: fmt::Debug, CostFn, UsageFn, C: Clock + fmt::Debug> fmt::Debug
    for TokenGate<S, CostFn, UsageFn, C>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGate")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

//! The layer that wraps services in a [`TokenGate`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{TokenGate, TokenGateConfig};
use crate::clock::{Clock, SystemClock};
use crate::limiter::Limiter;

/// Wraps services in a [`TokenGate`] that admits each request through one shared [`Limiter`].
///
/// `cost_of: Fn(&Request) -> Cost` says what a request reserves; `usage_of:
/// Fn(&Result<Response, Error>) -> Option<Usage>` reads what it used from the inner service's
/// result (`None` keeps the whole reservation: see the [module docs](super)). Every service the
/// layer wraps shares the limiter (clones of a [`Limiter`] share one state) and the two
/// functions.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tokengate::tower::TokenGateLayer;
/// use tokengate::{Cost, Limiter, Policy, Usage};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// let limiter = Limiter::new(Policy::builder().requests_per_minute(60).build()?);
/// let layer = TokenGateLayer::new(
///     limiter,
///     |_: &String| Cost::request(),
///     |_: &Result<usize, std::convert::Infallible>| Some(Usage::new()),
/// )
/// .with_timeout(Duration::from_secs(10));
///
/// let count = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|text: String| async move { Ok(text.len()) }));
/// assert_eq!(count.oneshot("four".to_string()).await?, 4);
/// # Ok(())
/// # }
/// ```
pub struct TokenGateLayer<CostFn, UsageFn, C: Clock = SystemClock> {
    limiter: Limiter<C>,
    cost_of: Arc<CostFn>,
    usage_of: Arc<UsageFn>,
    config: TokenGateConfig,
}

impl<CostFn, UsageFn, C: Clock> TokenGateLayer<CostFn, UsageFn, C> {
    /// A layer admitting requests through `limiter`, each reserving `cost_of(&request)` and
    /// settled with `usage_of(&result)`; waits without a timeout.
    ///
    /// Annotate the closures' argument types (`|p: &Prompt| ...`): the layer learns the
    /// request and response types only when it wraps a service.
    pub fn new(limiter: Limiter<C>, cost_of: CostFn, usage_of: UsageFn) -> Self {
        Self {
            limiter,
            cost_of: Arc::new(cost_of),
            usage_of: Arc::new(usage_of),
            config: TokenGateConfig::default(),
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
}

impl<S, CostFn, UsageFn, C: Clock> Layer<S> for TokenGateLayer<CostFn, UsageFn, C> {
    type Service = TokenGate<S, CostFn, UsageFn, C>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenGate::from_parts(
            inner,
            self.limiter.clone(),
            Arc::clone(&self.cost_of),
            Arc::clone(&self.usage_of),
            self.config,
        )
    }
}

impl<CostFn, UsageFn, C: Clock> Clone for TokenGateLayer<CostFn, UsageFn, C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            cost_of: Arc::clone(&self.cost_of),
            usage_of: Arc::clone(&self.usage_of),
            config: self.config,
        }
    }
}

impl<CostFn, UsageFn, C: Clock + fmt::Debug> fmt::Debug for TokenGateLayer<CostFn, UsageFn, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGateLayer")
            .field("limiter", &self.limiter)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

//! A tower retry policy for calls the provider refused for its rate limits.

use std::fmt;
use std::sync::Arc;

use crate::call::{Retry, RetryCount};
use crate::clock::{Clock, SystemClock};
use crate::feedback::ProviderReport;
use crate::limiter::Limiter;

/// A [`tower::retry::Policy`] that retries a request the provider refused with a 429, as a
/// [`Retry`] says: after the provider's `retry-after` (with up to a tenth more at random), a
/// bounded number of times, each 429 told to the limiter
/// ([`Limiter::observe_throttled`]: a pause, and the limits it overran lowered for a while).
///
/// Put tower's `RetryLayer` with this policy **outside** the [`TokenGateLayer`](super::TokenGateLayer),
/// so that every retry is admitted by the limiter again, behind the calls already waiting;
/// retries inside it would skip the limiter and land in the instants its pacing left for
/// others. `throttled` tells a refused call from the others (and reads its headers) in what
/// the gate returns (its errors are [`TokenGateError`](super::TokenGateError)s); the gate's
/// `usage_of` settles it, as [`Refused::usage`](crate::call::Refused::usage) says the
/// provider counts it.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tokengate::call::{Refused, Retry};
/// use tokengate::feedback::ProviderReport;
/// use tokengate::tower::{RetryThrottled, TokenGateError, TokenGateLayer};
/// use tokengate::{Cost, Limiter, Policy, Usage};
/// use tower::retry::RetryLayer;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// // A reply: its status, and what the provider said about retrying.
/// #[derive(Debug)]
/// struct Reply { status: u16, retry_after: Option<Duration>, output: u64 }
///
/// // A model that refuses the first call.
/// let calls = Arc::new(AtomicU32::new(0));
/// let seen = Arc::clone(&calls);
/// let model = service_fn(move |max_tokens: u64| {
///     let first = seen.fetch_add(1, Ordering::Relaxed) == 0;
///     async move {
///         Ok::<_, std::io::Error>(match first {
///             true => Reply { status: 429, retry_after: Some(Duration::from_millis(20)), output: 0 },
///             false => Reply { status: 200, retry_after: None, output: max_tokens / 2 },
///         })
///     }
/// });
/// // Behind the gate, the error is the gate's.
/// let throttled = |r: &Result<Reply, TokenGateError<std::io::Error>>| {
///     let reply = r.as_ref().ok().filter(|reply| reply.status == 429)?;
///     Some(ProviderReport { retry_after: reply.retry_after, ..Default::default() })
/// };
///
/// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).output_tokens_per_minute(60_000).build()?);
/// let retry = Retry::new();
/// let client = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryThrottled::new(limiter.clone(), retry, throttled)))
///     .layer(TokenGateLayer::new(
///         limiter.clone(),
///         |max_tokens: &u64| Cost::request().output(*max_tokens),
///         move |r: &Result<Reply, std::io::Error>| match r.as_ref().ok()? {
///             reply if reply.status == 429 => retry.refused().usage(),
///             reply => Some(Usage::new().output(reply.output)),
///         },
///     ))
///     .service(model);
///
/// let reply = client.oneshot(400).await?;
/// assert_eq!((reply.status, calls.load(Ordering::Relaxed)), (200, 2));
/// // Two requests counted (OpenAI counts refused ones), the output of one.
/// let stats = limiter.stats();
/// assert_eq!((stats.limits[0].used, stats.limits[1].used), (2, 200));
/// # Ok(())
/// # }
/// ```
pub struct RetryThrottled<F, C: Clock = SystemClock> {
    limiter: Limiter<C>,
    retry: Retry,
    throttled: Arc<F>,
    /// Retries of this request so far (tower's `Retry` clones the policy for each request).
    retried: u32,
    /// Retries of every request, for the jitter.
    count: RetryCount,
}

impl<F, C: Clock> RetryThrottled<F, C> {
    /// Retries the requests whose result `throttled` says the provider refused (with what it
    /// said: [`ProviderReport::from_headers`] of the reply), as `retry` says, telling
    /// `limiter` of each.
    pub fn new(limiter: Limiter<C>, retry: Retry, throttled: F) -> Self {
        Self {
            limiter,
            retry,
            throttled: Arc::new(throttled),
            retried: 0,
            count: RetryCount::default(),
        }
    }

    /// How a 429 is retried.
    pub fn retry_config(&self) -> Retry {
        self.retry
    }
}

impl<Req, Res, E, F, C> tower::retry::Policy<Req, Res, E> for RetryThrottled<F, C>
where
    Req: Clone,
    F: Fn(&Result<Res, E>) -> Option<ProviderReport>,
    C: Clock,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _request: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let report = (self.throttled)(result)?;
        self.limiter.observe_throttled(&report);
        let wait = self.retry.wait(self.retried, &report, self.count.next())?;
        self.retried += 1;
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

impl<F, C: Clock> Clone for RetryThrottled<F, C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            retry: self.retry,
            throttled: Arc::clone(&self.throttled),
            retried: self.retried,
            count: self.count.clone(),
        }
    }
}

impl<F, C: Clock + fmt::Debug> fmt::Debug for RetryThrottled<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryThrottled")
            .field("limiter", &self.limiter)
            .field("retry", &self.retry)
            .field("retried", &self.retried)
            .finish_non_exhaustive()
    }
}

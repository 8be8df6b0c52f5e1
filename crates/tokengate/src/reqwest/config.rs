//! How a [`TokenGateMiddleware`](super::TokenGateMiddleware) waits, settles and keys.

use std::time::Duration;

use http::HeaderName;

use crate::call::Retry;
use crate::cost::Cost;
use crate::feedback::usage::CachedInput;

/// How a [`TokenGateMiddleware`](super::TokenGateMiddleware) waits for admission, settles,
/// and treats requests that are not model calls.
///
/// | setting | default |
/// |---|---|
/// | [`with_timeout`](Self::with_timeout) | none: a call waits as long as the limits require |
/// | [`with_cached_input`](Self::with_cached_input) | [`CachedInput::ProviderDefault`]: cache reads counted for OpenAI replies, not for Anthropic's |
/// | [`with_default_cost`](Self::with_default_cost) | none: requests that are not model calls pass through, not limited |
/// | [`with_tenant_header`](Self::with_tenant_header) | none: the tenant comes from a [`Tenant`](super::Tenant) extension only |
/// | [`with_feedback`](Self::with_feedback) | on: every reply's rate-limit headers correct the limiter, a 429 pauses it |
/// | [`with_retry`](Self::with_retry) | [`Retry::default`]: a 429 is retried twice, through the limiter, after its `retry-after`; the refused request stays counted, its tokens come back |
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::feedback::usage::CachedInput;
/// use tokengate::reqwest::GateConfig;
/// use tokengate::Cost;
///
/// let config = GateConfig::new()
///     .with_timeout(Duration::from_secs(30))
///     .with_cached_input(CachedInput::Count)
///     .with_default_cost(Cost::request())
///     .with_tenant_header(http::HeaderName::from_static("x-tenant"))
///     .with_feedback(false);
/// assert_eq!(config.timeout(), Some(Duration::from_secs(30)));
/// assert!(!config.feedback());
/// assert_eq!(config.default_cost(), Some(&Cost::request()));
/// assert_eq!(GateConfig::default().timeout(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    timeout: Option<Duration>,
    cached_input: CachedInput,
    default_cost: Option<Cost>,
    tenant_header: Option<HeaderName>,
    feedback: bool,
    retry: Retry,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            timeout: None,
            cached_input: CachedInput::default(),
            default_cost: None,
            tenant_header: None,
            feedback: true,
            retry: Retry::default(),
        }
    }
}

impl GateConfig {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the provider's replies correct the limiter: with it on (the default), every
    /// reply's rate-limit headers go to [`Key::observe`](crate::Key::observe) and a 429's to
    /// [`Key::observe_throttled`](crate::Key::observe_throttled); off, the limiter runs on its
    /// own count alone (a 429 still settles the call as one the provider did not run).
    pub fn with_feedback(mut self, on: bool) -> Self {
        self.feedback = on;
        self
    }

    /// Gives up on admission after `timeout`, one deadline for the whole call: its admission,
    /// and the waits and admissions of its retries after a 429. The call fails with
    /// [`reqwest_middleware::Error::Middleware`] holding the
    /// [`AcquireError`](crate::AcquireError), at once when the wait is known to exceed what is
    /// left; a retry whose wait would pass the deadline is not made (the 429 is returned).
    /// The provider's own time to answer is not counted: set reqwest's timeout for that.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether input tokens read from the provider's prompt cache are charged when a call
    /// settles (see [`CachedInput`]).
    pub fn with_cached_input(mut self, cached: CachedInput) -> Self {
        self.cached_input = cached;
        self
    }

    /// Charges `cost` for every request that is not a model call (another path, a body that
    /// is not JSON or cannot be read); by default they pass through, not limited. `Cost::request()`
    /// counts them against the request limits, as providers whose request limit covers every
    /// endpoint do. Such a permit is held until the response headers arrive and never settled.
    pub fn with_default_cost(mut self, cost: Cost) -> Self {
        self.default_cost = Some(cost);
        self
    }

    /// Reads the tenant from this request header when the request carries no
    /// [`Tenant`](super::Tenant) extension. The header is removed before the request is sent:
    /// it is for the limiter, not the provider.
    pub fn with_tenant_header(mut self, name: HeaderName) -> Self {
        self.tenant_header = Some(name);
        self
    }

    /// The longest a call waits for admission, if bounded.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How cached input tokens are charged.
    pub fn cached_input(&self) -> CachedInput {
        self.cached_input
    }

    /// The cost of a request that is not a model call, if charged.
    pub fn default_cost(&self) -> Option<&Cost> {
        self.default_cost.as_ref()
    }

    /// The header the tenant is read from, if any.
    pub fn tenant_header(&self) -> Option<&HeaderName> {
        self.tenant_header.as_ref()
    }

    /// Whether the provider's replies correct the limiter.
    pub fn feedback(&self) -> bool {
        self.feedback
    }

    /// Settles and retries a call the provider answered 429 as `retry` says: the permit of
    /// the refused attempt is settled as the provider counts it
    /// ([`Refused`](crate::call::Refused); by default the request stays counted and its tokens
    /// come back: OpenAI says refused requests count against the request limit), and each
    /// retry waits for the 429's `retry-after`
    /// ([`ProviderReport::wait_after_429`](crate::feedback::ProviderReport::wait_after_429)),
    /// with up to a tenth more at random, then for admission again, so that retries never
    /// crowd out the limiter's pacing. A call whose body cannot be copied (a stream) is not
    /// retried: the 429 is returned. Set [`Retry::none`] when your own retry layer sits
    /// outside this middleware.
    ///
    /// # Examples
    /// ```
    /// use tokengate::call::{Refused, Retry};
    /// use tokengate::reqwest::GateConfig;
    ///
    /// let config = GateConfig::new().with_retry(Retry::new().with_retries(4).with_refused(Refused::Nothing));
    /// assert_eq!(config.retry().retries(), 4);
    /// assert_eq!(GateConfig::new().retry().refused(), Refused::Request);
    /// ```
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Retries a 429 up to `retries` times (0 returns the first 429); the rest as
    /// [`with_retry`](Self::with_retry).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retry = self.retry.with_retries(retries);
        self
    }

    /// How a 429 is settled and retried.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// How many times a 429 is retried.
    pub fn retries(&self) -> u32 {
        self.retry.retries()
    }
}

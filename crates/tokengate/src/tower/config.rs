//! How a [`TokenGate`](super::TokenGate) waits.

use std::time::Duration;

/// How a [`TokenGate`](super::TokenGate) waits for admission.
///
/// By default a request waits as long as the limits require. With a timeout, a request that
/// cannot be admitted within it fails with [`TokenGateError::Limit`](super::TokenGateError::Limit)
/// ([`AcquireError::Timeout`](crate::AcquireError::Timeout) or
/// [`AcquireError::QueueTimeout`](crate::AcquireError::QueueTimeout)) without calling the inner
/// service; when the wait is known to exceed the timeout, it fails at once rather than after
/// sleeping.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::tower::TokenGateConfig;
///
/// let config = TokenGateConfig::new().with_timeout(Duration::from_secs(30));
/// assert_eq!(config.timeout(), Some(Duration::from_secs(30)));
/// assert_eq!(TokenGateConfig::default().timeout(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenGateConfig {
    timeout: Option<Duration>,
}

impl TokenGateConfig {
    /// Waits as long as the limits require.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up on admission after `timeout` (measured from the first poll of the response
    /// future, when the acquisition starts).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The longest a request waits for admission, if bounded.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

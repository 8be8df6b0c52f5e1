//! The error of a [`TokenGate`](super::TokenGate): the limiter's, or the inner service's.

use std::error::Error;
use std::fmt;

use crate::error::AcquireError;

/// Why a request through a [`TokenGate`](super::TokenGate) failed: the limiter did not admit it,
/// or the inner service failed.
///
/// Displays as the wrapped error, whose message says what went wrong; `source` is the wrapped
/// error's source. Converts into tower's `BoxError` when `E` is `Send + Sync + 'static`.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tokengate::tower::{TokenGateError, TokenGateLayer};
/// use tokengate::{AcquireError, Cost, Limiter, Policy, Usage};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let limiter = Limiter::new(Policy::builder().input_tokens_per_minute(1_000).build()?);
/// let echo = service_fn(|prompt: String| async move { Ok::<_, std::io::Error>(prompt) });
/// let client = TokenGateLayer::new(
///     limiter,
///     |prompt: &String| Cost::request().input(prompt.len() as u64),
///     |_: &Result<String, std::io::Error>| None::<Usage>,
/// )
/// .layer(echo);
///
/// // 5,000 input tokens can never fit under 1,000 a minute: an error at once, not a wait.
/// match client.oneshot("x".repeat(5_000)).await {
///     Err(TokenGateError::Limit(AcquireError::Exceeds { cost, capacity, .. })) => {
///         assert_eq!((cost, capacity), (5_000, 1_000));
///     }
///     other => panic!("expected Exceeds, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenGateError<E> {
    /// The limiter did not admit the request, and the inner service was not called: its cost
    /// is above a limit's capacity ([`AcquireError::Exceeds`]), or it could not be admitted
    /// within the [timeout](super::TokenGateConfig::with_timeout)
    /// ([`AcquireError::Timeout`], [`AcquireError::QueueTimeout`], [`AcquireError::Paused`]).
    Limit(AcquireError),
    /// The inner service failed, in `poll_ready` or in its response.
    Inner(E),
}

impl<E> TokenGateError<E> {
    /// The limiter's error, if the limiter refused the request.
    pub fn limit(&self) -> Option<&AcquireError> {
        match self {
            Self::Limit(e) => Some(e),
            Self::Inner(_) => None,
        }
    }

    /// The inner service's error, if it failed.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Limit(_) => None,
        }
    }

    /// The inner service's error, if it failed; otherwise `None`.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Limit(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for TokenGateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limit(e) => fmt::Display::fmt(e, f),
            Self::Inner(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: Error + 'static> Error for TokenGateError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Limit(e) => e.source(),
            Self::Inner(e) => e.source(),
        }
    }
}

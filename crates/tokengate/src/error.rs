//! Errors: invalid limits at build time, and acquisitions that cannot succeed.

use std::time::Duration;

use crate::dimension::Dimension;
use crate::limit::Algorithm;

/// A limit or policy that cannot be built. Every message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The amount per period is zero.
    #[error("the amount is 0: a limit must admit at least 1 unit per period (to block a dimension entirely, do not call it)")]
    ZeroAmount,
    /// The period is zero.
    #[error("the period is 0: give a period of at least 1 ns, e.g. Limit::per_minute(n)")]
    ZeroPeriod,
    /// The period does not fit in 64-bit nanoseconds.
    #[error("the period {period:?} is longer than 584 years: use a shorter period")]
    PeriodTooLong {
        /// The period given.
        period: Duration,
    },
    /// The burst is zero.
    #[error("the burst is 0: a bucket must hold at least 1 unit (leave the burst unset for the default)")]
    ZeroBurst,
    /// The burst takes longer than 584 years to refill.
    #[error("the burst {burst} takes more than 584 years to refill at {amount} per {period:?}: lower the burst, or raise the amount or shorten the period")]
    BurstTooLarge {
        /// The burst given.
        burst: u64,
        /// The limit's amount.
        amount: u64,
        /// The limit's period.
        period: Duration,
    },
    /// The default algorithm's burst is above its amount.
    #[error("the burst {burst} is above the amount {amount}: the smooth window never admits more than the amount per period; lower the burst, or use Algorithm::TokenBucket")]
    BurstAboveAmount {
        /// The burst given.
        burst: u64,
        /// The limit's amount.
        amount: u64,
    },
    /// The safety margin is not shorter than the period.
    #[error("the margin {margin:?} is not shorter than the period {period:?}: a margin covers the jitter of the way to the provider, milliseconds; lower it")]
    MarginTooLong {
        /// The margin given.
        margin: Duration,
        /// The limit's period.
        period: Duration,
    },
    /// A burst was given to an algorithm that has none.
    #[error("the {algorithm} algorithm has no burst: remove .burst(..), or use Algorithm::TokenBucket or Algorithm::SmoothWindow")]
    BurstNotApplicable {
        /// The algorithm chosen.
        algorithm: Algorithm,
    },
    /// A floating-point figure is NaN, infinite, zero, negative or out of range.
    #[error("the {what} {value} is invalid: expected {expected}")]
    BadNumber {
        /// Which figure.
        what: &'static str,
        /// The value given.
        value: f64,
        /// What is accepted.
        expected: &'static str,
    },
    /// `max_in_flight(0)`.
    #[error("max_in_flight is 0: no request could ever run; give at least 1")]
    ZeroInFlight,
    /// A weight of combined tokens is out of range.
    #[error("the {which} weight of combined tokens is {weight}: give weights of at least 1 for output (Bedrock: 5) and 0 or more for input, not both 0")]
    BadWeight {
        /// `input` or `output`.
        which: &'static str,
        /// The weight given.
        weight: u64,
    },
    /// A policy with no limit at all.
    #[error("the policy has no limit: add at least one, e.g. .requests_per_minute(500)")]
    Empty,
    /// An error in one limit of a policy.
    #[error("{dimension} limit {limit}: {source}")]
    InLimit {
        /// The dimension of the limit.
        dimension: Dimension,
        /// The limit as written.
        limit: String,
        /// What is wrong with it.
        source: Box<BuildError>,
    },
}

/// Why an acquisition failed without admitting anything.
///
/// # Examples
/// ```
/// use tokengate::{AcquireError, Algorithm, Cost, Dimension, Limit, Limiter, Policy};
///
/// let limiter = Limiter::new(Policy::builder().input_tokens_per_minute(30_000).build()?);
/// let err = limiter.acquire_blocking(Cost::request().input(40_000)).unwrap_err();
/// assert!(matches!(err, AcquireError::Exceeds { cost: 40_000, capacity: 30_000, .. }));
/// assert_eq!(
///     err.to_string(),
///     "40000 input_tokens can never be admitted: the 30000 per minute limit admits at most 30000 at once; \
///      split the request or raise the limit"
/// );
///
/// // A token bucket admits at most its burst at once; the default algorithm admits a larger
/// // request when its bucket is full, into debt, as providers do.
/// let bucket = Limit::per_minute(30_000).algorithm(Algorithm::TokenBucket).burst(1_000);
/// let limiter = Limiter::new(Policy::builder().limit(Dimension::InputTokens, bucket).build()?);
/// let err = limiter.acquire_blocking(Cost::request().input(2_000)).unwrap_err();
/// assert!(err.to_string().ends_with(
///     "split the request, raise the burst, or use the smooth window (the default algorithm), \
///      which admits a request above its burst once its bucket is full, as providers do"
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The cost is above the largest cost a limit can ever admit: waiting would never help.
    #[error("{cost} {dimension} can never be admitted: the {limit} limit admits at most {capacity} at once; {}", if *algorithm == Algorithm::TokenBucket {
        "split the request, raise the burst, or use the smooth window (the default algorithm), which admits a request above its burst once its bucket is full, as providers do"
    } else {
        "split the request or raise the limit"
    })]
    Exceeds {
        /// The dimension whose limit is too small.
        dimension: Dimension,
        /// The cost on that dimension.
        cost: u64,
        /// The largest cost the limit admits at once.
        capacity: u64,
        /// The limit, as written.
        limit: String,
        /// The limit's algorithm: the capacity of a token bucket is its burst; of every other
        /// algorithm, the amount per period.
        algorithm: Algorithm,
    },
    /// A weighted amount does not fit in 64 bits.
    #[error("the {dimension} amount of this cost overflows 64 bits: the figures are far beyond any real request")]
    Overflow {
        /// The dimension.
        dimension: Dimension,
    },
    /// The request could not be admitted within the caller's timeout. Returned at once when
    /// the wait is known to exceed it.
    #[error("{cost} {dimension} cannot be admitted within {timeout:?}{}", match wait { Some(w) if *w == Duration::MAX => format!(": admitted {}", crate::fmt::NEVER), Some(w) => format!(": it needs {w:?} more"), None => String::from(": the limiter is busy") })]
    Timeout {
        /// The dimension that holds the request back (`in_flight`, or the limit with the
        /// longest wait).
        dimension: Dimension,
        /// The cost on that dimension.
        cost: u64,
        /// The wait it would need, when known: [`Duration::MAX`] for never (the limit's state
        /// would pass the end of the clock).
        wait: Option<Duration>,
        /// The timeout given.
        timeout: Duration,
    },
    /// The provider asked for a pause (it answered 429 with a retry-after) that outlasts the
    /// timeout. Returned at once.
    #[error("the provider asked to pause for {wait:?} more (a 429's retry-after), beyond the timeout of {timeout:?}")]
    Paused {
        /// How long the pause still lasts.
        wait: Duration,
        /// The timeout given.
        timeout: Duration,
    },
    /// The timeout passed while other requests were still queued ahead (FIFO).
    #[error("not admitted within {timeout:?}: {waiters_ahead} requests are still queued ahead")]
    QueueTimeout {
        /// Waiters still ahead when the timeout passed.
        waiters_ahead: usize,
        /// The timeout given.
        timeout: Duration,
    },
    /// The request names a model its limits file does not cover (not in `[models]`, no
    /// family's `match`, no `[defaults.model]`): admitting it would skip every model limit.
    /// See [`UnlistedModels`](crate::config::UnlistedModels).
    #[error("model \"{model}\" is not in {file}{}: add [models.\"{model}\"] (or a family whose `match` covers it, or [defaults.model]), or set `unlisted_models = \"pass\"` to charge it to the account and tenant budgets only{}", match suggestion { Some(s) => format!(" (did you mean \"{s}\"?)"), None => String::new() }, if listed.is_empty() { String::new() } else { format!("; listed: {}", listed.join(", ")) })]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The closest model or family name the file lists, if one is close.
        suggestion: Option<String>,
        /// The models and families the file lists (the first 20).
        listed: Vec<String>,
        /// The limits file.
        file: String,
    },
    /// A limiter whose state lives in a store ([`Limiter::with_store`](crate::Limiter::with_store))
    /// could not decide: the store failed (under
    /// [`OnStoreError::FailClosed`](crate::OnStoreError::FailClosed), the default), holds other
    /// limits for a budget than this process, or cannot hold them; or the call cannot reach
    /// the store from where it was made (a synchronous call such as `try_acquire`, a blocking
    /// one inside a tokio runtime). The message says which, and what to do.
    #[error("{message}")]
    Store {
        /// What happened and what to do.
        message: String,
    },
}

/// Why [`Limiter::try_acquire`](crate::Limiter::try_acquire) did not admit now. Not an
/// error: a denial with the exact time it would take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// A rate limit is reached; the request would be admitted after `wait`, if nothing else is
    /// admitted first.
    #[error("{cost} {dimension} would exceed the {limit} limit: {}", crate::fmt::Retry(*wait))]
    RateLimited {
        /// The dimension with the longest wait.
        dimension: Dimension,
        /// The cost on that dimension.
        cost: u64,
        /// The limit, as written.
        limit: String,
        /// How long until admission: [`Duration::MAX`] for never, by time alone (the limit's
        /// state would pass the end of the clock, 584 years from its origin).
        wait: Duration,
    },
    /// Every in-flight slot is held; one frees when a permit drops.
    #[error("all {max} in-flight slots are held: retry when a request finishes")]
    InFlightFull {
        /// The in-flight cap.
        max: u64,
    },
    /// The provider asked for a pause (a 429 with a retry-after); admissions resume after `wait`.
    #[error("the provider answered 429: paused, retry in {wait:?}")]
    Paused {
        /// How long the pause still lasts.
        wait: Duration,
    },
    /// Others are waiting; FIFO order admits them first.
    #[error("{waiters} requests are queued ahead: acquire (and wait) to keep FIFO order")]
    WaitersAhead {
        /// How many are queued.
        waiters: usize,
    },
    /// The request can never be admitted.
    #[error(transparent)]
    Never(AcquireError),
}

impl Denied {
    /// The time to wait before retrying, when known.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Denied::RateLimited { wait, .. } | Denied::Paused { wait } => Some(*wait),
            _ => None,
        }
    }
}

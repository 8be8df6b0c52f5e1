//! What happens to a call the provider refused for its rate limits (an HTTP 429): how its
//! reservation is settled, and whether, when and how often it is tried again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
#[cfg(feature = "tokio")]
use crate::core::Nanos;
use crate::cost::Usage;
use crate::feedback::ProviderReport;
use crate::limiter::Permit;

/// How a call the provider refused with a 429 is settled and retried: by
/// [`Key::run`](crate::Key::run) (set with [`Limiter::set_retry`](crate::Limiter::set_retry)),
/// the reqwest middleware (`reqwest::GateConfig::with_retry`, feature `reqwest`) and tower's
/// retry layer (`tower::RetryThrottled`, feature `tower`).
///
/// Every retry goes through the limiter again: it waits for the provider's `retry-after`
/// (`retry-after-ms` where given; see [`ProviderReport::wait_after_429`]) with up to a tenth
/// more at random, so that calls refused together do not come back together, and then for
/// admission, behind the calls already waiting. Retries that skip the limiter (as an SDK's own
/// retries do) land in the instants the limiter's pacing left for others and make the next
/// call's 429; retries that pass it keep the pacing.
///
/// | setting | default |
/// |---|---|
/// | [`with_retries`](Self::with_retries) | 2 retries (3 attempts in all) |
/// | [`with_max_wait`](Self::with_max_wait) | 60 s: a longer `retry-after` (a per-day limit spent) returns the 429 to the caller |
/// | [`with_refused`](Self::with_refused) | [`Refused::Request`]: the refused request stays counted, its tokens come back |
///
/// Set [`Retry::none`] where your own retry layer sits outside (the OpenAI SDK's
/// `max_retries`, say): the 429 is settled and returned at once.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::call::{Refused, Retry};
/// use tokengate::feedback::ProviderReport;
///
/// let retry = Retry::new().with_retries(4).with_max_wait(Duration::from_secs(20));
/// let report = ProviderReport { retry_after: Some(Duration::from_millis(250)), ..Default::default() };
/// // The first retry waits the 250 ms asked for, and up to 25 ms more.
/// let wait = retry.wait(0, &report, 7).unwrap();
/// assert!(wait >= Duration::from_millis(250) && wait <= Duration::from_millis(275));
/// // After the fourth, the 429 is the caller's.
/// assert_eq!(retry.wait(4, &report, 7), None);
/// // A day's limit spent: not retried.
/// let spent = ProviderReport { retry_after: Some(Duration::from_secs(3_600)), ..Default::default() };
/// assert_eq!(retry.wait(0, &spent, 7), None);
/// assert_eq!(Retry::default().refused(), Refused::Request);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    retries: u32,
    max_wait: Duration,
    refused: Refused,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            retries: 2,
            max_wait: Duration::from_secs(60),
            refused: Refused::default(),
        }
    }
}

impl Retry {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// No retries: a 429 is settled (as [`refused`](Self::refused) says) and returned.
    pub fn none() -> Self {
        Self::default().with_retries(0)
    }

    /// Retries a 429 up to `retries` times (0: never).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Retries only after a wait up to `max_wait`; a 429 asking for longer is returned.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How a refused call's reservation is settled (see [`Refused`]).
    pub fn with_refused(mut self, refused: Refused) -> Self {
        self.refused = refused;
        self
    }

    /// How many times a 429 is retried.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The longest `retry-after` still retried.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// How a refused call's reservation is settled.
    pub fn refused(&self) -> Refused {
        self.refused
    }

    /// How long to wait before retrying a call refused with `report` after `retried` retries,
    /// or `None` when it is not retried (no retry left, or a wait above
    /// [`max_wait`](Self::max_wait)). `nth` spreads the jitter: the same `nth` waits the same,
    /// so a test on a virtual clock repeats exactly; pass a count of retries so far.
    pub fn wait(&self, retried: u32, report: &ProviderReport, nth: u64) -> Option<Duration> {
        let wait = report.wait_after_429();
        (retried < self.retries && wait <= self.max_wait).then(|| jittered(wait, nth))
    }
}

/// How a provider counts a request it refused with a 429, and so how the limiter settles the
/// reservation of a refused attempt. Counting less than the provider does leaves the limiter
/// believing in room the provider does not give (the next call's 429); counting more only
/// leaves a little quota unused while 429s are rare, which they are under the limiter.
///
/// | provider | what it documents | default |
/// |---|---|---|
/// | OpenAI | "unsuccessful requests contribute to your per-minute limit" (<https://platform.openai.com/docs/guides/rate-limits>, error mitigation) | [`Request`](Self::Request) |
/// | Anthropic | nothing on refused requests (<https://docs.anthropic.com/en/api/rate-limits>) | [`Request`](Self::Request), the safe side for requests; the tokens of a request it did not process come back |
///
/// # Examples
/// ```
/// use tokengate::call::Refused;
/// use tokengate::{Cost, Limiter, ManualClock, Policy};
///
/// let policy = Policy::builder().requests_per_minute(100).tokens_per_minute(10_000).build()?;
/// let limiter = Limiter::with_clock(policy, ManualClock::new());
/// let permit = limiter.try_acquire(Cost::request().input(900).output(100))?;
/// // Answered 429: the request stays counted, its 1,000 tokens come back.
/// Refused::Request.settle(permit);
/// let stats = limiter.stats();
/// assert_eq!((stats.limits[0].used, stats.limits[1].used), (1, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Refused {
    /// The provider counts nothing of a refused request: request and tokens come back.
    /// (A dimension of your own, `Cost::with`, stays charged as reserved under every
    /// variant: the limiter cannot know how a provider counts it.)
    Nothing,
    /// The request counts against the request limits; its tokens, never processed, come back.
    #[default]
    Request,
    /// The provider counts a refused request as if it had run with its whole reservation.
    Everything,
}

impl Refused {
    /// What to settle a refused attempt's permit with; `None` keeps the whole reservation
    /// (drop the permit unsettled).
    pub fn usage(self) -> Option<Usage> {
        match self {
            Refused::Nothing => Some(Usage::new().requests(0).input(0).output(0)),
            Refused::Request => Some(Usage::new().input(0).output(0)),
            Refused::Everything => None,
        }
    }

    /// Settles the permit of a refused attempt as [`usage`](Self::usage) says (dropping it
    /// unsettled for [`Everything`](Self::Everything)).
    pub fn settle<C: Clock>(self, permit: Permit<'_, C>) {
        match self.usage() {
            Some(usage) => permit.settle(usage),
            None => drop(permit),
        }
    }
}

/// One deadline over everything a call waits for (its admissions and the waits before its
/// retries), kept on the limiter's clock from when the call asked.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct Deadline<'c, C: Clock> {
    clock: &'c C,
    started: Nanos,
    timeout: Option<Duration>,
}

#[cfg(feature = "tokio")]
impl<'c, C: Clock> Deadline<'c, C> {
    /// From now on `clock`, `timeout` long (none: no deadline).
    pub(crate) fn new(clock: &'c C, timeout: Option<Duration>) -> Self {
        Self {
            clock,
            started: clock.now(),
            timeout,
        }
    }

    /// When the call asked.
    #[cfg(feature = "reqwest")]
    pub(crate) fn started(&self) -> Nanos {
        self.started
    }

    /// What is left of the timeout, if there is one.
    pub(crate) fn left(&self) -> Option<Duration> {
        let waited = Duration::from_nanos(self.clock.now().saturating_sub(self.started));
        self.timeout.map(|t| t.saturating_sub(waited))
    }

    /// Whether a wait of `wait` ends within the deadline.
    pub(crate) fn allows(&self, wait: Duration) -> bool {
        self.left().is_none_or(|left| wait <= left)
    }
}

/// A count of the retries made so far, shared by clones of whatever retries (a middleware, a
/// limiter): the jitter of each retry's wait is drawn from it. (Only the async front ends
/// retry: without `tokio` nothing counts.)
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct RetryCount(Arc<AtomicU64>);

#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
impl RetryCount {
    /// The number of this retry, counting from 0.
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// `wait` and up to a tenth more, spread by the retry's number `nth` (a SplitMix64 step of
/// it), so that callers refused together do not retry together.
fn jittered(wait: Duration, nth: u64) -> Duration {
    let mut z = nth.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let tenths_of_a_percent = ((z ^ (z >> 31)) % 100) as u32;
    wait.saturating_add((wait / 1_000).saturating_mul(tenths_of_a_percent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth_and_spreads() {
        let wait = Duration::from_millis(1_000);
        let waits: Vec<_> = (0..200).map(|n| jittered(wait, n)).collect();
        assert!(waits.iter().all(|w| *w >= wait && *w <= wait + wait / 10));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 50, "{} distinct waits", distinct.len());
        // No overflow at the end of the range.
        assert_eq!(jittered(Duration::MAX, 3), Duration::MAX);
    }

    #[test]
    fn a_refused_attempt_settles_as_the_provider_counts_it() {
        let (nothing, request) = (Refused::Nothing.usage(), Refused::Request.usage());
        let nothing = nothing.unwrap();
        assert_eq!(nothing.requests, Some(0));
        assert_eq!(
            (nothing.input_tokens(), nothing.output_tokens()),
            (Some(0), Some(0))
        );
        assert_eq!(request.unwrap().requests, None);
        assert_eq!(Refused::Everything.usage(), None);
    }

    #[test]
    fn no_retry_beyond_the_count_or_the_longest_wait() {
        let report = ProviderReport {
            retry_after: Some(Duration::from_secs(61)),
            ..Default::default()
        };
        assert_eq!(Retry::new().wait(0, &report, 0), None);
        let longer = Retry::new().with_max_wait(Duration::from_secs(120));
        assert!(longer.wait(1, &report, 0).is_some());
        assert_eq!(longer.wait(2, &report, 0), None);
        assert_eq!(Retry::none().wait(0, &ProviderReport::default(), 0), None);
    }
}

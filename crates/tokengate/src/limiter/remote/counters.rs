//! What a limiter counts of its store ([`StoreStats`]), and the same through `tracing` and
//! `metrics` (see the crate docs' Observability section).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreError;

/// How a limiter has used its store ([`Limiter::store_stats`](crate::Limiter::store_stats)).
///
/// # Examples
/// ```
/// use tokengate::{Limiter, Policy, StoreStats};
///
/// // A limiter without a store has used none.
/// let limiter = Limiter::new(Policy::builder().requests_per_minute(600).build()?);
/// assert_eq!(limiter.store_stats(), StoreStats::default());
/// # Ok::<(), tokengate::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreStats {
    /// Calls made to the store: acquisitions (each ask of a poll too), settlements,
    /// renewals, pauses.
    pub calls: u64,
    /// Calls that failed, whatever the failure.
    pub errors: u64,
    /// Acquisitions admitted without limits because the store failed
    /// ([`OnStoreError::FailOpen`](crate::OnStoreError::FailOpen)).
    pub fail_open: u64,
    /// Acquisitions decided on the local share because the store failed
    /// ([`OnStoreError::LocalShare`](crate::OnStoreError::LocalShare)).
    pub local_share: u64,
    /// Times an acquisition found every in-flight slot held and asked again after a backoff.
    pub in_flight_polls: u64,
}

/// The counters behind [`StoreStats`], shared with the tasks that settle and renew.
#[derive(Debug, Default)]
pub(super) struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    fail_open: AtomicU64,
    local_share: AtomicU64,
    in_flight_polls: AtomicU64,
}

impl Counters {
    pub(super) fn stats(&self) -> StoreStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            calls: read(&self.calls),
            errors: read(&self.errors),
            fail_open: read(&self.fail_open),
            local_share: read(&self.local_share),
            in_flight_polls: read(&self.in_flight_polls),
        }
    }

    /// A call to the store is made.
    pub(super) fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_store_calls_total").increment(1);
    }

    /// A call (`what`: `acquire`, `settle`, `renew`, `pause`) failed with `error`; for an
    /// acquisition, `policy` names what the failure led to.
    pub(super) fn failed(&self, what: &'static str, error: &StoreError, policy: Option<&str>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_store_errors_total", "call" => what).increment(1);
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "tokengate::limiter",
            call = what,
            error = %error,
            on_store_error = policy.unwrap_or(""),
            "store call failed"
        );
        #[cfg(not(any(feature = "metrics", feature = "tracing")))]
        let _ = (what, error, policy);
        #[cfg(all(feature = "metrics", not(feature = "tracing")))]
        let _ = (error, policy);
    }

    /// The store failed and the acquisition was admitted without limits.
    pub(super) fn failed_open(&self) {
        self.fail_open.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_store_fail_open_total").increment(1);
    }

    /// The store failed and the acquisition was decided on the local share.
    pub(super) fn shared_locally(&self) {
        self.local_share.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_store_local_share_total").increment(1);
    }

    /// An acquisition found every in-flight slot held and will ask again; returns how many
    /// polls came before it (to spread the jitter).
    pub(super) fn polled(&self) -> u64 {
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_store_in_flight_polls_total").increment(1);
        self.in_flight_polls.fetch_add(1, Ordering::Relaxed)
    }
}

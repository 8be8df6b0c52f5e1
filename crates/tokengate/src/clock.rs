//! Where time comes from.
//!
//! The core never reads a clock: the limiter reads one [`Clock`] and passes the instant in.
//! Instants are integer nanoseconds since the clock's own origin ([`Nanos`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
#[cfg(not(feature = "quanta"))]
use std::time::Instant;

use crate::core::Nanos;

/// A monotonic source of instants.
///
/// Waiting front ends sleep for `instant - now()` of real (or, with [`TokioClock`], tokio)
/// time, so a clock must advance with the time that sleeping takes: the system clock does,
/// [`TokioClock`] does under tokio's paused (virtual) time, and [`ManualClock`] does only when
/// the test advances it (use it with `try_acquire`, or advance it from the test).
pub trait Clock: Clone + Send + Sync + 'static {
    /// Nanoseconds since this clock's origin. Should never decrease. Where a reading is
    /// earlier than one the limiter has already used (a clock that steps back a little, as
    /// time-stamp counters do on some virtual machines; a thread that read the clock and then
    /// waited for the limiter's lock while others went first), it may wait longer, never
    /// admit more: under its lock the limiter decides at the later instant, and a bucket
    /// decided without the lock (the lane) admits no more for an earlier instant.
    fn now(&self) -> Nanos;
}

/// The system's monotonic clock, counted from the clock's creation.
///
/// With the `quanta` feature (on by default) it reads the CPU's time-stamp counter, calibrated
/// against the OS's monotonic clock (falling back to that clock where the counter is not
/// reliable), which is several times cheaper to read than `std::time::Instant`; without it,
/// `std::time::Instant`.
#[derive(Debug, Clone)]
pub struct SystemClock {
    #[cfg(feature = "quanta")]
    clock: quanta::Clock,
    #[cfg(feature = "quanta")]
    origin: u64,
    #[cfg(not(feature = "quanta"))]
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        #[cfg(feature = "quanta")]
        {
            let clock = quanta::Clock::new();
            let origin = clock.raw();
            Self { clock, origin }
        }
        #[cfg(not(feature = "quanta"))]
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Nanos {
        #[cfg(feature = "quanta")]
        {
            self.clock.delta_as_nanos(self.origin, self.clock.raw())
        }
        // 584 years of uptime before this saturates.
        #[cfg(not(feature = "quanta"))]
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to: for deterministic tests.
///
/// Clones share one time.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let view = clock.clone();
/// clock.advance(Duration::from_millis(1_500));
/// assert_eq!(view.now(), 1_500_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at instant 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Sets the time to `instant` nanoseconds, if that is not in the past.
    pub fn set(&self, instant: Nanos) {
        self.now.fetch_max(instant, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Nanos {
        self.now.load(Ordering::Acquire)
    }
}

/// Tokio's clock: real time normally, virtual time under `tokio::time::pause()` (or
/// `#[tokio::test(start_paused = true)]`), where the runtime jumps to the next timer as soon
/// as every task is waiting. A simulated hour of waiting then takes milliseconds.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tokengate::{Cost, Limiter, Policy, TokioClock};
///
/// let policy = Policy::builder().requests_per_minute(60).build()?;
/// let limiter = Limiter::with_clock(policy, TokioClock::new());
/// let started = tokio::time::Instant::now();
/// for _ in 0..120 {
///     limiter.acquire(Cost::request()).await?;
/// }
/// // Two minutes of virtual time passed; the test did not wait for them.
/// assert!(started.elapsed() >= Duration::from_secs(60));
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// A clock whose origin is tokio's now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Nanos {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

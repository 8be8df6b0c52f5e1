//! One rule on one dimension: an amount per period, a burst and an algorithm.

use std::fmt;
use std::time::Duration;

use crate::error::BuildError;

/// How a limit counts. See the crate docs' [algorithm table](crate#algorithms) for the
/// trade-offs, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// The default: an exact sliding window (at most `amount` in any window of `period`), with
    /// a token bucket refilling at `amount / period` that caps bursts at `burst` units.
    ///
    /// It stays within both readings providers give "N per minute", on every dimension
    /// (requests, input, output and combined tokens, user-named ones): at most N in any 60 s
    /// window, and a smooth rate over shorter periods, as OpenAI and Anthropic both say a
    /// per-minute limit may be enforced ("60,000 a minute as 1,000 a second"). Default
    /// burst: a sixtieth of the amount, rounded down and at least one unit, for periods of a
    /// minute or less (a provider holding N/60 at once refuses a unit more); the whole
    /// amount for longer periods (a daily cap is a budget, not a pace).
    ///
    /// A single cost above the burst (a long prompt) is admitted once the bucket is full,
    /// leaving it in debt, as such a provider admits it. Steady-state utilisation is 100% of
    /// N; the price is memory that grows with the admissions in one window (one entry per
    /// distinct admission instant).
    ///
    /// A burst of the whole amount ([`Limit::burst`]`(amount)`, `burst = N` in a limits file)
    /// keeps only the exact window: a minute's amount may go at once. Choose it only for a
    /// provider that documents accepting that; none of OpenAI, Anthropic and AWS Bedrock does.
    #[default]
    SmoothWindow,
    /// Token bucket (GCRA): capacity `burst` (default: `amount`), refilling at
    /// `amount / period`. The leaky bucket *as a meter* is the same mathematics. Three
    /// integers of state (its exact full-again instant and the time refunds gave back). In any
    /// window of `period` it admits up to `burst + amount`.
    TokenBucket,
    /// Leaky bucket *as a shaper*: GCRA with a burst of one unit, so admissions are spaced
    /// evenly at `amount / period`. Three integers of state, as the token bucket. A cost above
    /// one unit waits for the bucket to be full and is then admitted whole, so a window can
    /// hold the paced stream plus that one cost: up to 2N when the cost is N.
    LeakyBucket,
    /// Sliding window log: exactly at most `amount` in any window of `period`; bursts of the
    /// whole amount are allowed. Memory grows with the admissions in one window.
    SlidingWindowLog,
    /// Sliding window counter: two fixed windows, the previous one weighted by its overlap.
    /// Three integers of state; approximate: it assumes the previous window's admissions were
    /// spread evenly, so after a burst at the end of one window it admits up to about 2N in an
    /// exact window that starts just before the boundary.
    SlidingWindowCounter,
    /// Fixed window: at most `amount` per window aligned to the clock's origin. Two integers
    /// of state; up to twice the amount can pass across a window boundary.
    FixedWindow,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::SmoothWindow,
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::SlidingWindowCounter,
        Algorithm::FixedWindow,
    ];

    /// The algorithm's name in a limits file (`algorithm = "token_bucket"`).
    ///
    /// # Examples
    /// ```
    /// use tokengate::Algorithm;
    /// assert_eq!(Algorithm::TokenBucket.name(), "token_bucket");
    /// assert_eq!(Algorithm::from_name("token_bucket"), Some(Algorithm::TokenBucket));
    /// assert_eq!(Algorithm::from_name("token bucket"), None);
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::SmoothWindow => "smooth_window",
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::LeakyBucket => "leaky_bucket",
            Algorithm::SlidingWindowLog => "sliding_window_log",
            Algorithm::SlidingWindowCounter => "sliding_window_counter",
            Algorithm::FixedWindow => "fixed_window",
        }
    }

    /// The algorithm whose [`name`](Self::name) is `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::SmoothWindow => "smooth window",
            Algorithm::TokenBucket => "token bucket",
            Algorithm::LeakyBucket => "leaky bucket",
            Algorithm::SlidingWindowLog => "sliding window log",
            Algorithm::SlidingWindowCounter => "sliding window counter",
            Algorithm::FixedWindow => "fixed window",
        })
    }
}

/// 2^64: the first whole float above `u64::MAX` (which itself rounds to 2^64 as a float).
const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;

/// A limit: at most `amount` units per `period`, counted by an [`Algorithm`].
///
/// Building a `Limit` never fails; it is validated when a [`Policy`](crate::Policy) is built.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tokengate::{Algorithm, Limit};
///
/// let rpm = Limit::per_minute(500);
/// let tokens = Limit::new(90_000, Duration::from_secs(60)).algorithm(Algorithm::TokenBucket).burst(10_000);
/// assert_eq!(tokens.amount(), 90_000);
/// assert_eq!(rpm.period(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub(crate) amount: u64,
    pub(crate) period: Duration,
    pub(crate) burst: Option<u64>,
    pub(crate) algorithm: Algorithm,
    pub(crate) margin: Option<Duration>,
}

impl Limit {
    /// The safety margin of a limit that sets none ([`Limit::margin`]).
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(50);

    /// At most `amount` units per `period`, with the default algorithm.
    pub fn new(amount: u64, period: Duration) -> Self {
        Self {
            amount,
            period,
            burst: None,
            algorithm: Algorithm::default(),
            margin: None,
        }
    }

    /// `amount` per second.
    pub fn per_second(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(1))
    }

    /// `amount` per minute.
    pub fn per_minute(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(60))
    }

    /// `amount` per hour.
    pub fn per_hour(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(3_600))
    }

    /// `amount` per day (86,400 s).
    pub fn per_day(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(86_400))
    }

    /// A limit from floating-point figures, as a configuration file gives them: `amount`
    /// units per `period_secs` seconds.
    ///
    /// # Errors
    /// [`BuildError::BadNumber`] when either figure is NaN, infinite, zero or negative, the
    /// amount is not a whole number, or the period is not representable in nanoseconds.
    ///
    /// # Examples
    /// ```
    /// use tokengate::Limit;
    /// assert!(Limit::try_from_f64(500.0, 60.0).is_ok());
    /// assert!(Limit::try_from_f64(f64::NAN, 60.0).is_err());
    /// assert!(Limit::try_from_f64(500.0, -1.0).is_err());
    /// ```
    pub fn try_from_f64(amount: f64, period_secs: f64) -> Result<Self, BuildError> {
        let bad = |what: &'static str, value: f64, expected: &'static str| BuildError::BadNumber {
            what,
            value,
            expected,
        };
        if !amount.is_finite() || amount <= 0.0 || amount.fract() != 0.0 || amount >= TWO_TO_THE_64
        {
            return Err(bad("amount", amount, "a whole number from 1 up"));
        }
        if !period_secs.is_finite() || period_secs <= 0.0 || period_secs > 18_446_744_073.0 {
            return Err(bad(
                "period",
                period_secs,
                "a positive number of seconds below 584 years",
            ));
        }
        let period = Duration::try_from_secs_f64(period_secs)
            .map_err(|_| bad("period", period_secs, "a positive number of seconds"))?;
        if period.is_zero() {
            return Err(bad("period", period_secs, "at least one nanosecond"));
        }
        Ok(Self::new(amount as u64, period))
    }

    /// Sets the burst: the bucket capacity of [`Algorithm::TokenBucket`] and
    /// [`Algorithm::SmoothWindow`]. Other algorithms have none; giving one is a build error.
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Chooses the algorithm.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the safety margin against the jitter between an admission and the provider's
    /// count of it (default [`Limit::DEFAULT_MARGIN`]).
    ///
    /// A request reaches the provider some time after the limiter admits it, and not always
    /// the same time: two requests admitted a bucket's worth apart can arrive closer, and a
    /// provider that counts them on arrival refuses the second when the limiter admitted it at
    /// the very instant its own bucket allowed. With a margin `m`, every admission is decided
    /// as of `m` ago (and counted now): a bucket admits only what it would have admitted `m`
    /// earlier (a request above its burst once it has been full for `m`), and a window counts
    /// each admission for its period plus `m`. What it costs: nothing while requests leave
    /// room in the bucket; a request that needs the whole bucket (or more) waits `m` longer
    /// each time, so a queue of such requests runs at `cost / (cost + m x rate)` of the rate
    /// (50 requests a minute, a burst of one: 48 a minute); a window admits `m / period` less
    /// (0.08% of a minute at 50 ms). The matrix of `tests/strict_provider.rs` lost a little of the
    /// binding limit to it (0.3-0.4%). The sliding window counter and the fixed window, approximate by
    /// design, take no margin.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::core::{Decision, LimitRule};
    /// use tokengate::{Algorithm, Limit};
    ///
    /// // One a second; a request at 0, the next a second later, plus the margin.
    /// let limit = Limit::per_second(1).algorithm(Algorithm::TokenBucket).margin(Duration::from_millis(20));
    /// let rule = LimitRule::new(&limit)?;
    /// let mut state = rule.new_state();
    /// assert_eq!(rule.decide(&state, 0, 1), Decision::Admit);
    /// let _ = rule.commit(&mut state, 0, 1);
    /// assert_eq!(rule.decide(&state, 0, 1), Decision::NotUntil(1_020_000_000));
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Units per period.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {}", self.amount, crate::fmt::Period(self.period))?;
        if self.algorithm != Algorithm::default() {
            write!(f, " ({})", self.algorithm)?;
        }
        Ok(())
    }
}

//! The set of limits that governs one key.

use std::sync::Arc;

use crate::core::LimitRule;
use crate::cost::Cost;
use crate::dimension::Dimension;
use crate::error::{AcquireError, BuildError};
use crate::limit::Limit;

/// How a limit reads its amount from a [`Cost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Measure {
    Requests,
    Input,
    Output,
    Weighted { input: u64, output: u64 },
    Custom(Arc<str>),
}

impl Measure {
    /// The measure as plain integers `(kind, input weight, output weight)`, for the built-in
    /// dimensions (not a custom one): what the in-memory limiter's lock-free lane keeps.
    pub(crate) fn code(&self) -> Option<(u32, u64, u64)> {
        match self {
            Measure::Requests => Some((0, 0, 0)),
            Measure::Input => Some((1, 0, 0)),
            Measure::Output => Some((2, 0, 0)),
            Measure::Weighted { input, output } => Some((3, *input, *output)),
            Measure::Custom(_) => None,
        }
    }

    /// [`amount`](Self::amount) of the measure whose [`code`](Self::code) has kind `kind`;
    /// `weights` gives the input and output weights, read only for a weighted measure.
    #[inline(always)]
    pub(crate) fn coded_amount(
        kind: u32,
        weights: impl FnOnce() -> (u64, u64),
        cost: &Cost,
    ) -> Option<u64> {
        match kind {
            0 => Some(cost.requests),
            1 => Some(cost.input),
            2 => Some(cost.output),
            _ => {
                let (input, output) = weights();
                Self::weighted(input, output, cost)
            }
        }
    }

    /// The amount of `cost` a weighted measure counts: `input` per input token plus `output`
    /// per output token (`None` when it overflows).
    #[inline(always)]
    fn weighted(input: u64, output: u64, cost: &Cost) -> Option<u64> {
        let i = cost.input.checked_mul(input)?;
        i.checked_add(cost.output.checked_mul(output)?)
    }

    #[inline]
    pub(crate) fn amount(&self, cost: &Cost) -> Option<u64> {
        match self {
            Measure::Requests => Some(cost.requests),
            Measure::Input => Some(cost.input),
            Measure::Output => Some(cost.output),
            Measure::Weighted { input, output } => Self::weighted(*input, *output, cost),
            Measure::Custom(name) => Some(cost.custom(name)),
        }
    }
}

/// One validated limit of a policy.
#[derive(Debug, Clone)]
pub(crate) struct PolicyLimit {
    pub(crate) dimension: Dimension,
    pub(crate) measure: Measure,
    pub(crate) rule: LimitRule,
    pub(crate) limit: Limit,
}

impl PolicyLimit {
    /// Whether this limit can never admit `cost`. An amount that overflows 64 bits counts as
    /// `u64::MAX`: above every capacity but that of a limit of `u64::MAX`, which it may as well
    /// pass (the same reading the decision makes).
    #[inline]
    pub(crate) fn never_admits(&self, cost: &Cost) -> bool {
        self.measure.amount(cost).unwrap_or(u64::MAX) > self.rule.capacity()
    }

    /// The error for a cost this limit can never admit.
    pub(crate) fn impossible(&self, cost: &Cost) -> AcquireError {
        match self.measure.amount(cost) {
            None => AcquireError::Overflow {
                dimension: self.dimension.clone(),
            },
            Some(amount) => AcquireError::Exceeds {
                dimension: self.dimension.clone(),
                cost: amount,
                capacity: self.rule.capacity(),
                limit: self.limit.to_string(),
                algorithm: self.rule.algorithm(),
            },
        }
    }
}

/// The limits that govern one key: any number of rate limits on any dimensions, and an
/// optional cap on requests in flight. Built with [`Policy::builder`]; always valid.
///
/// # Examples
/// ```
/// use tokengate::Policy;
///
/// let policy = Policy::builder()
///     .requests_per_minute(500)
///     .input_tokens_per_minute(30_000)
///     .output_tokens_per_minute(8_000)
///     .requests_per_day(10_000)
///     .max_in_flight(10)
///     .build()?;
/// assert_eq!(policy.max_in_flight(), Some(10));
/// assert_eq!(policy.limits().count(), 4);
///
/// // Invalid limits are an error when building, never a panic later:
/// let err = Policy::builder().requests_per_minute(0).build().unwrap_err();
/// assert!(err.to_string().starts_with("requests limit 0 per minute: the amount is 0"));
/// # Ok::<(), tokengate::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) limits: Vec<PolicyLimit>,
    pub(crate) max_in_flight: Option<u64>,
}

impl Policy {
    /// Starts a policy.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The rate limits, with their dimensions.
    pub fn limits(&self) -> impl Iterator<Item = (&Dimension, &Limit)> + '_ {
        self.limits.iter().map(|l| (&l.dimension, &l.limit))
    }

    /// The cap on requests in flight, if any.
    pub fn max_in_flight(&self) -> Option<u64> {
        self.max_in_flight
    }

    /// What each limit counts of `cost`, in the order of [`limits`](Self::limits): its
    /// dimension's amount, weighted for a combined-tokens limit (`None` when a weighted amount
    /// overflows 64 bits). The one rule every store applies, for a simulator or a store of
    /// your own to charge exactly what the limiter charges.
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limit, Policy};
    ///
    /// // AWS Bedrock: output tokens count five times.
    /// let policy = Policy::builder()
    ///     .requests_per_minute(250)
    ///     .combined_tokens(Limit::per_minute(2_000_000), 1, 5)
    ///     .build()?;
    /// let counted: Vec<_> = policy.measure(&Cost::request().input(1_000).output(200)).collect();
    /// assert_eq!(counted, [Some(1), Some(2_000)]);
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn measure<'a>(&'a self, cost: &'a Cost) -> impl Iterator<Item = Option<u64>> + 'a {
        self.limits.iter().map(move |l| l.measure.amount(cost))
    }

    /// How long limit `limit` takes to earn what `cost` counts on it, at its rate (rounded up;
    /// `u64::MAX` when that overflows): the room a request takes in line when that limit is
    /// the one that holds it back (see [`store`](crate::store), "Reserving ahead").
    pub(crate) fn earn_time(&self, limit: usize, cost: &Cost) -> crate::core::Nanos {
        let Some(l) = self.limits.get(limit) else {
            return 0;
        };
        let Some(units) = l.measure.amount(cost) else {
            return u64::MAX;
        };
        crate::core::Rate::new(l.rule.amount(), l.rule.period()).time_for(units)
    }

    /// The limit a provider's report on `dimension` speaks of: the one whose amount equals
    /// `reported`, else the one with the shortest period (providers report their per-minute
    /// window). `None` when no limit is on that dimension.
    pub(crate) fn reported_limit(
        &self,
        dimension: &Dimension,
        reported: Option<u64>,
    ) -> Option<usize> {
        let on_dimension = || {
            self.limits
                .iter()
                .enumerate()
                .filter(move |(_, l)| &l.dimension == dimension)
        };
        on_dimension()
            .find(|(_, l)| Some(l.rule.amount()) == reported)
            .or_else(|| on_dimension().min_by_key(|(_, l)| l.rule.period()))
            .map(|(i, _)| i)
    }

    /// How far a place in line for `cost` moves the budget's line (see
    /// [`store`](crate::store), "Reserving ahead"): the [`earn_time`](Self::earn_time) of the
    /// limit that holds the request back (`held_by`), or when none does (the request waits
    /// behind the line or a reservation) of the limit that held back the latest place taken
    /// with one (`last`), or else of the limit that earns it soonest. An estimate of when the
    /// next request can go: too long, and the budget idles while its line says it is busy; too
    /// short, and a waiter asks once more. So the last resort is the shortest (a limit with a
    /// long period and a large burst, a daily one, holds nothing back but earns slowly).
    pub(crate) fn room_in_line(
        &self,
        held_by: Option<usize>,
        last: Option<usize>,
        cost: &Cost,
    ) -> crate::core::Nanos {
        match held_by.or(last).filter(|&l| l < self.limits.len()) {
            Some(l) => self.earn_time(l, cost),
            None => (0..self.limits.len())
                .map(|i| self.earn_time(i, cost))
                .min()
                .unwrap_or(0),
        }
    }

    /// No limits at all: the limiter's own policy when a config gives the limits.
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn empty() -> Self {
        Self::EMPTY
    }

    /// No limit, no cap.
    pub(crate) const EMPTY: Policy = Policy {
        limits: Vec::new(),
        max_in_flight: None,
    };

    /// A fresh state for each limit, in order: a budget under this policy that has admitted
    /// nothing (what [`core::BudgetView`](crate::core::BudgetView) reads).
    pub fn new_states(&self) -> Vec<crate::core::LimitState> {
        self.limits.iter().map(|l| l.rule.new_state()).collect()
    }

    /// Whether `other` has the same limits, in the same order, and the same in-flight cap.
    pub(crate) fn same_as(&self, other: &Policy) -> bool {
        self.max_in_flight == other.max_in_flight
            && self.limits.len() == other.limits.len()
            && self.limits.iter().zip(&other.limits).all(|(a, b)| {
                a.dimension == b.dimension && a.measure == b.measure && a.limit == b.limit
            })
    }

    /// Whether `limits` (one state per limit, in order) are all back to a fresh state at `now`:
    /// forgetting them changes no future decision.
    pub(crate) fn is_fresh(
        &self,
        limits: &[crate::core::LimitState],
        now: crate::core::Nanos,
    ) -> bool {
        self.limits
            .iter()
            .zip(limits)
            .all(|(l, s)| l.rule.is_fresh(s, now))
    }

    /// The limits in words, for messages: `requests 600 per minute (smooth window), ...`.
    pub(crate) fn describe(&self) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        for l in &self.limits {
            let sep = if text.is_empty() { "" } else { ", " };
            let limit = &l.limit;
            let _ = write!(
                text,
                "{sep}{} {} per {} ({}",
                l.dimension,
                limit.amount,
                crate::fmt::Period(limit.period),
                limit.algorithm
            );
            if let Some(burst) = limit.burst {
                let _ = write!(text, ", burst {burst}");
            }
            if let Some(margin) = limit.margin {
                let _ = write!(text, ", margin {margin:?}");
            }
            text.push(')');
        }
        if let Some(n) = self.max_in_flight {
            let sep = if text.is_empty() { "" } else { ", " };
            let _ = write!(text, "{sep}{n} in flight");
        }
        if text.is_empty() {
            text.push_str("no limits");
        }
        text
    }

    /// This policy with the amount of limit `index` set to `amount`; see
    /// [`with_amounts`](Self::with_amounts).
    pub(crate) fn with_amount(&self, index: usize, amount: u64) -> Result<Policy, BuildError> {
        self.with_amounts(&[(index, amount)])
    }

    /// This policy with the amounts of some limits changed, `(index, amount)`: what was left
    /// to the defaults (a burst) is derived afresh from the new amount, and a burst given
    /// explicitly is scaled with it (at least one unit).
    pub(crate) fn with_amounts(&self, changes: &[(usize, u64)]) -> Result<Policy, BuildError> {
        let mut builder = PolicyBuilder {
            limits: self
                .limits
                .iter()
                .map(|l| (l.dimension.clone(), l.measure.clone(), l.limit.clone()))
                .collect(),
            max_in_flight: self.max_in_flight,
            ..PolicyBuilder::default()
        };
        for &(index, amount) in changes {
            if let Some((_, _, limit)) = builder.limits.get_mut(index) {
                if let Some(burst) = limit.burst {
                    let scaled =
                        u128::from(burst) * u128::from(amount) / u128::from(limit.amount.max(1));
                    limit.burst = Some(u64::try_from(scaled).unwrap_or(u64::MAX).max(1));
                }
                limit.amount = amount;
            }
        }
        builder.build()
    }

    /// Whether it has no limit and no in-flight cap: it admits everything.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.max_in_flight.is_none()
    }

    /// This policy with every limit's amount, and the in-flight cap, cut to `share` of it
    /// (rounded down, at least 1): what one process of several may use on its own.
    /// `share` is in (0, 1].
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn scaled(&self, share: f64) -> Policy {
        let scale = |n: u64| {
            // Saturating float-to-int conversion; never above `n`, never below 1.
            ((n as f64 * share).floor() as u64).clamp(1, n.max(1))
        };
        let changes: Vec<(usize, u64)> = self
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| (i, scale(l.limit.amount)))
            .collect();
        // The same limits with smaller amounts, bursts scaled with them (at least 1, never
        // above the amount): as valid as before. Should it fail all the same, the limits stay.
        let mut policy = self.with_amounts(&changes).unwrap_or_else(|_| self.clone());
        policy.max_in_flight = self.max_in_flight.map(scale);
        policy
    }

    /// Checks that `cost` can ever be admitted, and returns the first limit that it exceeds
    /// otherwise.
    pub(crate) fn check_possible(&self, cost: &Cost) -> Result<(), AcquireError> {
        match self.limits.iter().find(|l| l.never_admits(cost)) {
            Some(l) => Err(l.impossible(cost)),
            None => Ok(()),
        }
    }
}

/// Builds a [`Policy`]. Each method adds one limit; a dimension may carry several (per minute
/// and per day at once).
#[derive(Debug, Clone, Default)]
pub struct PolicyBuilder {
    limits: Vec<(Dimension, Measure, Limit)>,
    max_in_flight: Option<u64>,
    margin: Option<std::time::Duration>,
    weight_error: Option<BuildError>,
}

impl PolicyBuilder {
    /// Adds a limit on one dimension. Combined [`Dimension::Tokens`] count input and output
    /// at weight 1 here (see [`combined_tokens`](Self::combined_tokens) for weights).
    /// [`Dimension::InFlight`] is not a rate: use [`max_in_flight`](Self::max_in_flight).
    pub fn limit(mut self, dimension: Dimension, limit: Limit) -> Self {
        let measure = match &dimension {
            Dimension::Requests => Measure::Requests,
            Dimension::InputTokens => Measure::Input,
            Dimension::OutputTokens => Measure::Output,
            Dimension::Tokens => Measure::Weighted {
                input: 1,
                output: 1,
            },
            Dimension::Custom(name) => Measure::Custom(name.clone()),
            Dimension::InFlight => {
                return self.max_in_flight(limit.amount);
            }
        };
        self.limits.push((dimension, measure, limit));
        self
    }

    /// Requests per minute (RPM).
    pub fn requests_per_minute(self, n: u64) -> Self {
        self.limit(Dimension::Requests, Limit::per_minute(n))
    }

    /// Requests per day (RPD).
    pub fn requests_per_day(self, n: u64) -> Self {
        self.limit(Dimension::Requests, Limit::per_day(n))
    }

    /// Input tokens per minute (ITPM).
    pub fn input_tokens_per_minute(self, n: u64) -> Self {
        self.limit(Dimension::InputTokens, Limit::per_minute(n))
    }

    /// Input tokens per day.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Dimension, Policy};
    ///
    /// let policy = Policy::builder()
    ///     .input_tokens_per_minute(30_000)
    ///     .input_tokens_per_day(1_000_000)
    ///     .output_tokens_per_day(200_000)
    ///     .build()?;
    /// let day: Vec<_> = policy.limits().filter(|(_, l)| l.period() == Duration::from_secs(86_400)).map(|(d, l)| (d.clone(), l.amount())).collect();
    /// assert_eq!(day, [(Dimension::InputTokens, 1_000_000), (Dimension::OutputTokens, 200_000)]);
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn input_tokens_per_day(self, n: u64) -> Self {
        self.limit(Dimension::InputTokens, Limit::per_day(n))
    }

    /// Output tokens per minute (OTPM).
    pub fn output_tokens_per_minute(self, n: u64) -> Self {
        self.limit(Dimension::OutputTokens, Limit::per_minute(n))
    }

    /// Output tokens per day.
    pub fn output_tokens_per_day(self, n: u64) -> Self {
        self.limit(Dimension::OutputTokens, Limit::per_day(n))
    }

    /// Combined tokens (input + output) per minute (TPM).
    pub fn tokens_per_minute(self, n: u64) -> Self {
        self.limit(Dimension::Tokens, Limit::per_minute(n))
    }

    /// Combined tokens per day (TPD).
    pub fn tokens_per_day(self, n: u64) -> Self {
        self.limit(Dimension::Tokens, Limit::per_day(n))
    }

    /// Combined tokens counted as `input * input_weight + output * output_weight`: AWS
    /// Bedrock burns output tokens at 5x, so `combined_tokens(Limit::per_minute(n), 1, 5)`.
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Denied, Limit, Limiter, ManualClock, Policy};
    ///
    /// let policy = Policy::builder().combined_tokens(Limit::per_minute(10_000), 1, 5).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// // 1,000 in + 1,000 out counts 6,000; a second such request would make 12,000.
    /// let _first = limiter.try_acquire(Cost::request().input(1_000).output(1_000))?;
    /// assert!(matches!(limiter.try_acquire(Cost::request().input(1_000).output(1_000)), Err(Denied::RateLimited { cost: 6_000, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn combined_tokens(mut self, limit: Limit, input_weight: u64, output_weight: u64) -> Self {
        if output_weight == 0 {
            self.weight_error.get_or_insert(BuildError::BadWeight {
                which: "output",
                weight: 0,
            });
        }
        self.limits.push((
            Dimension::Tokens,
            Measure::Weighted {
                input: input_weight,
                output: output_weight,
            },
            limit,
        ));
        self
    }

    /// A limit on a dimension the user names; costs carry it with [`Cost::with`].
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limit, Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().custom("images", Limit::per_minute(50)).build()?);
    /// let permit = limiter.try_acquire(Cost::request().with("images", 4))?;
    /// assert_eq!(limiter.stats().limits[0].used, 4);
    /// # drop(permit);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn custom(self, name: impl Into<Arc<str>>, limit: Limit) -> Self {
        self.limit(Dimension::Custom(name.into()), limit)
    }

    /// At most `n` requests in flight: a permit holds a slot until it is dropped or settled.
    pub fn max_in_flight(mut self, n: u64) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// The safety margin of every limit that sets none of its own ([`Limit::margin`]; by
    /// default [`Limit::DEFAULT_MARGIN`]): the jitter of the way to the provider, which
    /// admissions keep clear of.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::Policy;
    ///
    /// let policy = Policy::builder()
    ///     .requests_per_minute(600)
    ///     .margin(Duration::from_millis(50))
    ///     .build()?;
    /// # let _ = policy;
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn margin(mut self, margin: std::time::Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Validates every limit.
    ///
    /// # Errors
    /// [`BuildError::InLimit`] naming the dimension and limit that is invalid, with the reason;
    /// [`BuildError::ZeroInFlight`], [`BuildError::BadWeight`], [`BuildError::Empty`].
    pub fn build(self) -> Result<Policy, BuildError> {
        if let Some(e) = self.weight_error {
            return Err(e);
        }
        if self.max_in_flight == Some(0) {
            return Err(BuildError::ZeroInFlight);
        }
        if self.limits.is_empty() && self.max_in_flight.is_none() {
            return Err(BuildError::Empty);
        }
        let margin = self.margin;
        let limits = self
            .limits
            .into_iter()
            .map(|(dimension, measure, mut limit)| {
                limit.margin = limit.margin.or(margin);
                (dimension, measure, limit)
            })
            .map(|(dimension, measure, limit)| match LimitRule::new(&limit) {
                Ok(rule) => Ok(PolicyLimit {
                    dimension,
                    measure,
                    rule,
                    limit,
                }),
                Err(e) => Err(BuildError::InLimit {
                    dimension,
                    limit: limit.to_string(),
                    source: Box::new(e),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            limits,
            max_in_flight: self.max_in_flight,
        })
    }
}

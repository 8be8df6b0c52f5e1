//! What one request needs ([`Cost`]) and what it used ([`Usage`]).

use std::sync::Arc;

/// What one request needs on each dimension, reserved at admission.
///
/// # Examples
/// ```
/// use tokengate::Cost;
/// let cost = Cost::request().input(1_200).output(800);
/// assert_eq!((cost.requests(), cost.input_tokens(), cost.output_tokens()), (1, 1_200, 800));
/// let peek = Cost::zero(); // admitted whenever no limit is in debt; charges nothing
/// assert!(peek.is_zero());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cost {
    pub(crate) requests: u64,
    pub(crate) input: u64,
    pub(crate) output: u64,
    /// User-named dimensions: shared, so a cost without them stays five words, cloning one is
    /// a reference count, and dropping one without them is a test (no call).
    pub(crate) custom: Option<Arc<[Named]>>,
}

/// An amount on a user-named dimension.
pub(crate) type Named = (Arc<str>, u64);

/// Sets `name` to `amount` in a list of named amounts.
fn set_named(list: &mut Vec<Named>, name: Arc<str>, amount: u64) {
    match list.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = amount,
        None => list.push((name, amount)),
    }
}

impl Cost {
    /// One request, no tokens yet.
    #[inline]
    pub fn request() -> Self {
        Self {
            requests: 1,
            ..Self::default()
        }
    }

    /// Nothing at all: acquiring it asks whether the limiter could admit now, without
    /// charging or holding anything.
    #[inline]
    pub fn zero() -> Self {
        Self::default()
    }

    /// The number of requests.
    #[inline]
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Sets the request count (default 1 with [`Cost::request`]).
    #[inline]
    pub fn with_requests(mut self, n: u64) -> Self {
        self.requests = n;
        self
    }

    /// Sets the input (prompt) tokens.
    #[inline]
    pub fn input(mut self, tokens: u64) -> Self {
        self.input = tokens;
        self
    }

    /// Sets the output tokens to reserve (usually `max_tokens` or an estimate).
    #[inline]
    pub fn output(mut self, tokens: u64) -> Self {
        self.output = tokens;
        self
    }

    /// Sets the amount of a user-named dimension.
    pub fn with(mut self, dimension: impl Into<Arc<str>>, amount: u64) -> Self {
        let mut list = self.custom.take().map(|c| c.to_vec()).unwrap_or_default();
        set_named(&mut list, dimension.into(), amount);
        self.custom = Some(list.into());
        self
    }

    /// Input tokens.
    #[inline]
    pub fn input_tokens(&self) -> u64 {
        self.input
    }

    /// Output tokens reserved.
    #[inline]
    pub fn output_tokens(&self) -> u64 {
        self.output
    }

    /// The amount of a user-named dimension (0 when not set).
    pub fn custom(&self, dimension: &str) -> u64 {
        self.custom
            .iter()
            .flat_map(|c| c.iter())
            .find(|(n, _)| &**n == dimension)
            .map_or(0, |e| e.1)
    }

    /// Whether every amount is zero.
    pub fn is_zero(&self) -> bool {
        self.requests == 0
            && self.input == 0
            && self.output == 0
            && self.custom.iter().flat_map(|c| c.iter()).all(|e| e.1 == 0)
    }
}

/// What a request really used, reported after the call to [`Permit::settle`](crate::Permit::settle).
///
/// Dimensions not set here are taken as used exactly as reserved (requests too, unless a
/// refused call sets [`requests`](Self::requests)).
///
/// # Examples
/// ```
/// use tokengate::Usage;
/// let used = Usage::new().input(1_180).output(312);
/// assert_eq!(used.output_tokens(), Some(312));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub(crate) requests: Option<u64>,
    pub(crate) input: Option<u64>,
    pub(crate) output: Option<u64>,
    pub(crate) output_count: OutputCount,
    pub(crate) custom: Vec<Named>,
}

/// How a provider's limits count a call's output tokens, which settling must follow: a limiter
/// that gives back what the provider keeps believes it has room the provider does not give.
///
/// Both providers charge `max_tokens` (the output reservation) when a call is admitted; they
/// differ at its end. [`ReplyFormat::output_count`](crate::feedback::usage::ReplyFormat::output_count)
/// says which each API does, and settling from a
/// [`ReplyUsage`](crate::feedback::usage::ReplyUsage) follows it.
///
/// # Examples
/// ```
/// use tokengate::{Cost, Limiter, ManualClock, OutputCount, Policy, Usage};
///
/// let limiter = Limiter::with_clock(Policy::builder().output_tokens_per_minute(120_000).build()?, ManualClock::new());
/// let permit = limiter.try_acquire(Cost::request().output(800))?;
/// // The provider keeps max_tokens counted: so does the limiter.
/// permit.settle(Usage::new().output_counted(312, OutputCount::Reserved));
/// assert_eq!(limiter.stats().limits[0].used, 800);
///
/// let permit = limiter.try_acquire(Cost::request().output(800))?;
/// // The provider counts what was produced: 488 come back.
/// permit.settle(Usage::new().output_counted(312, OutputCount::Produced));
/// assert_eq!(limiter.stats().limits[0].used, 800 + 312);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OutputCount {
    /// The reservation while the call runs, then the tokens produced: what it did not use
    /// comes back when it settles. Anthropic counts output tokens so: estimated from
    /// `max_tokens` when a request starts and adjusted at its end to the tokens produced
    /// (<https://docs.anthropic.com/en/api/rate-limits>). What [`Usage::output`] settles.
    #[default]
    Produced,
    /// The reservation, kept whatever the call produced (more, if it produced more). OpenAI
    /// counts a request against its token limit as the larger of `max_tokens` and its estimate
    /// of the prompt when the request arrives
    /// (<https://platform.openai.com/docs/guides/rate-limits>), and documents no adjustment
    /// at its end.
    Reserved,
}

impl Usage {
    /// No figures yet: everything as reserved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the provider counted, where that is not the reservation: 0 for a call it
    /// refused and does not count (see [`Refused`](crate::call::Refused)).
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limiter, ManualClock, Policy, Usage};
    ///
    /// let limiter = Limiter::with_clock(Policy::builder().requests_per_minute(60).build()?, ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request())?;
    /// permit.settle(Usage::new().requests(0));
    /// assert_eq!(limiter.stats().limits[0].used, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn requests(mut self, requests: u64) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Input tokens really counted by the provider.
    pub fn input(mut self, tokens: u64) -> Self {
        self.input = Some(tokens);
        self
    }

    /// Output tokens really produced, counted as produced: the unused reservation comes back
    /// ([`OutputCount::Produced`]).
    pub fn output(self, tokens: u64) -> Self {
        self.output_counted(tokens, OutputCount::Produced)
    }

    /// Output tokens really produced, counted as the provider counts them ([`OutputCount`]).
    pub fn output_counted(mut self, tokens: u64, count: OutputCount) -> Self {
        self.output = Some(tokens);
        self.output_count = count;
        self
    }

    /// The real amount of a user-named dimension.
    pub fn with(mut self, dimension: impl Into<Arc<str>>, amount: u64) -> Self {
        set_named(&mut self.custom, dimension.into(), amount);
        self
    }

    /// Input tokens reported, if any.
    pub fn input_tokens(&self) -> Option<u64> {
        self.input
    }

    /// Output tokens reported, if any.
    pub fn output_tokens(&self) -> Option<u64> {
        self.output
    }

    /// Nothing at all used of `reserved`, on every figure it names: what cancels a
    /// reservation whose call never started ([`Permit::cancel`](crate::Permit::cancel)).
    pub(crate) fn nothing_of(reserved: &Cost) -> Self {
        let custom = reserved
            .custom
            .iter()
            .flat_map(|c| c.iter())
            .map(|(name, _)| (Arc::clone(name), 0))
            .collect();
        Self {
            requests: Some(0),
            input: Some(0),
            output: Some(0),
            output_count: OutputCount::Produced,
            custom,
        }
    }

    /// The cost this usage amounts to, given what was reserved.
    pub(crate) fn as_cost(&self, reserved: &Cost) -> Cost {
        let custom = if self.custom.is_empty() {
            reserved.custom.clone()
        } else {
            let mut list = reserved
                .custom
                .as_deref()
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            for (name, amount) in &self.custom {
                set_named(&mut list, name.clone(), *amount);
            }
            Some(list.into())
        };
        Cost {
            requests: self.requests.unwrap_or(reserved.requests),
            input: self.input.unwrap_or(reserved.input),
            output: match (self.output, self.output_count) {
                (Some(used), OutputCount::Produced) => used,
                (Some(used), OutputCount::Reserved) => used.max(reserved.output),
                (None, _) => reserved.output,
            },
            custom,
        }
    }
}

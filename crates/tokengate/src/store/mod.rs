//! Where the state of the limits lives, and the seam every store fits: [`Store`].
//!
//! A store applies the core's whole-request decision ([`core::decide_request`],
//! [`core::commit_budget`], [`core::settle_budget`]) atomically to the budgets it keeps. Two
//! stores implement it: [`MemoryStore`], in this process, and the Redis store
//! (`redis::RedisStore`, feature `redis`), shared by every process and machine that uses the
//! same Redis. Both are held to the same answers: the test vectors in `tests/vectors/` and
//! one body of tests run against each (`tests/common/store_cases.rs`).
//!
//! [`Limiter`](crate::Limiter) keeps its own in-memory state with a FIFO queue of waiters and
//! a lock-free fast path (its decisions take tens of nanoseconds); a store is the same decision
//! behind an async, fallible call, for state that lives elsewhere.
//!
//! # Waiting across processes
//! A store answers a request in one call, waiting included: when the request does not fit now
//! but does within `max_wait`, the store *reserves* it at the earliest instant every limit of
//! every budget admits it, and answers how long the caller sleeps before it goes
//! ([`Reservation::wait`]). Reservations are first come, first served on each budget: nothing
//! is admitted on a budget before its latest reservation (the budget's *floor*), so a request
//! never overtakes one that asked before it, and no caller polls. A caller that gives up
//! before its instant cancels the reservation ([`Store::settle`] with zero usage), which
//! gives back what the limits still hold of it; one that crashes leaves it spent, the safe
//! side.
//!
//! # Reserving ahead
//! A reservation charges every limit of every budget at its instant, and takes its in-flight
//! slots when it is made. Made far ahead, it costs what it does not use: a slot held idle
//! while its caller sleeps, and the room of a budget that does not hold the request back (a
//! tenant's budget, charged half a minute ahead by a request waiting for its model's tokens,
//! stops the tenant's requests to every other model until then: a bucket's state cannot
//! hold a gap before a future charge). So an ask may set a *horizon* ([`Ask::horizon`]): a
//! request admissible further ahead than that is not reserved; the store answers
//! [`Refusal::Ahead`] with its instant and records only its *place in line* on the budget
//! that holds it back (that budget's *line* moves past it by the time the limit holding it
//! back takes to earn the request; behind the line, by the time of the limit that held back
//! the latest place; else of the limit that earns it soonest). Later asks go after the line on that budget (a request without a place is
//! admitted there no earlier than the line's end), and the request asks again shortly
//! before its instant ([`Ask::placed`]: the line behind it does not hold it back), when it is
//! reserved at its instant, or told a later one. So waiting stays first come, first served
//! per budget, each waiter asks about twice, and nothing is held early by more than the
//! horizon. The line is an estimate: a waiter that does not come back leaves its place
//! unused (at most the time its limit takes to earn it), one that comes back to a budget
//! busier than its place said waits longer.
//!
//! # In-flight slots
//! A budget with an in-flight cap lends each admitted request a slot as a *lease*: it ends
//! when the request is settled or released, or when its lease runs out (a crashed process
//! frees its slots within the lease time). A long call renews its lease
//! ([`Store::renew`]). A request that finds every slot held has no instant to wait for: its
//! caller waits until the store says a slot may have come back ([`Store::release_mark`],
//! [`Store::released`]: the in-memory store when one of its settlements frees one, the Redis
//! store when it hears one freed in any process), or its backoff ends.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use tokengate::store::{Ask, MemoryStore, Store, StoreBudget};
//! use tokengate::{Cost, ManualClock, Policy};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = ManualClock::new();
//! let store = MemoryStore::with_clock(clock.clone());
//! let policy = Policy::builder().requests_per_minute(60).margin(Duration::ZERO).build()?;
//! let budgets = [StoreBudget::new("account", policy)];
//! let one = Cost::request();
//! // The smooth window holds one request at once: the second is reserved a second later.
//! let first = store.acquire(Ask::new(&budgets, &one)).await?.reserved().unwrap();
//! let ask = Ask::new(&budgets, &one).max_wait(Duration::from_secs(5));
//! let second = store.acquire(ask).await?.reserved().unwrap();
//! assert_eq!((first.wait(), second.wait()), (Duration::ZERO, Duration::from_secs(1)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! [`core::decide_request`]: crate::core::decide_request
//! [`core::commit_budget`]: crate::core::commit_budget
//! [`core::settle_budget`]: crate::core::settle_budget

#[cfg(feature = "tokio")]
pub(crate) mod background;
mod error;
#[cfg(feature = "tokio")]
pub(crate) mod freed;
mod memory;
mod reservation;
mod shared;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use error::StoreError;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub(crate) use memory::DEFAULT_LEASE;
pub use reservation::{Answer, Place, Refusal, Reservation};

use crate::core::{LimitState, Nanos, Snapshot};
use crate::cost::{Cost, Usage};
use crate::policy::Policy;

/// What a store's calls return: a boxed future, so that [`Store`] can be used as
/// `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A budget as a store keeps it: a name unique within the store, and the policy its state
/// follows. Every process sharing a store must give one name the same policy: a store refuses
/// a policy other than the one its state was made under ([`StoreError::Mismatch`]).
///
/// # Examples
/// ```
/// use tokengate::store::StoreBudget;
/// use tokengate::Policy;
///
/// let budget = StoreBudget::new("model:gpt-4o", Policy::builder().requests_per_minute(500).build()?);
/// assert_eq!(budget.name(), "model:gpt-4o");
/// # Ok::<(), tokengate::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreBudget {
    name: Arc<str>,
    policy: Arc<Policy>,
}

impl StoreBudget {
    /// The budget `name`, under `policy`.
    pub fn new(name: impl Into<Arc<str>>, policy: impl Into<Arc<Policy>>) -> Self {
        Self {
            name: name.into(),
            policy: policy.into(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// A request put to a store: its cost on every budget it falls under (all or none), how long
/// it may wait, and how far ahead it may be reserved.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    budgets: &'a [StoreBudget],
    cost: &'a Cost,
    max_wait: Duration,
    horizon: Duration,
    /// The places in line the request holds, by budget index.
    placed: &'a [(usize, Place)],
}

impl<'a> Ask<'a> {
    /// `cost` on every one of `budgets`, decided now: reserved in the future only with
    /// [`max_wait`](Self::max_wait).
    pub fn new(budgets: &'a [StoreBudget], cost: &'a Cost) -> Self {
        Self {
            budgets,
            cost,
            max_wait: Duration::ZERO,
            horizon: Duration::MAX,
            placed: &[],
        }
    }

    /// Reserve the request at its earliest instant when that is at most `max_wait` from now.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Reserve it only when its instant is at most `horizon` from now (no limit unless set);
    /// further ahead (and within [`max_wait`](Self::max_wait)), the store records nothing but
    /// the request's place in line and answers [`Refusal::Ahead`]: ask again, with
    /// [`placed`](Self::placed) on that budget, shortly before then. See the module docs,
    /// "Reserving ahead".
    ///
    /// A reservation charges every limit of every budget at its instant, and takes its
    /// in-flight slots from the moment it is made: made far ahead, it holds slots idle and
    /// stops other requests of a budget that does not hold it back (a tenant's, behind a
    /// request waiting for its model's tokens).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::store::{Ask, MemoryStore, Refusal, Store, StoreBudget};
    /// use tokengate::{Cost, ManualClock, Policy};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let clock = ManualClock::new();
    /// let store = MemoryStore::with_clock(clock.clone());
    /// let policy = Policy::builder().requests_per_minute(60).margin(Duration::ZERO).build()?;
    /// let budgets = [StoreBudget::new("model", policy)];
    /// let one = Cost::request();
    /// let ask = || Ask::new(&budgets, &one).max_wait(Duration::from_secs(10));
    /// store.acquire(ask()).await?.reserved().unwrap(); // the smooth window holds one
    /// let far = store.acquire(ask().horizon(Duration::from_millis(200))).await?;
    /// let Some(Refusal::Ahead { wait, budget, place }) = far.refusal() else { panic!() };
    /// assert_eq!((wait, budget), (Duration::from_secs(1), 0));
    /// // Shortly before its instant, it asks again, and is reserved.
    /// clock.advance(Duration::from_millis(900));
    /// let held = [(budget, place)];
    /// let again = ask().horizon(Duration::from_millis(200)).placed(&held);
    /// let near = store.acquire(again).await?;
    /// assert_eq!(near.reserved().unwrap().wait(), Duration::from_millis(100));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// The request holds these places in line (each on a budget, an index into the budgets,
    /// from an earlier [`Refusal::Ahead`]): the places taken there after it do not hold it
    /// back, and when it is reserved, a place still last in line is given back (the line
    /// ends where it did before it: the request no longer waits in it).
    pub fn placed(mut self, places: &'a [(usize, Place)]) -> Self {
        self.placed = places;
        self
    }

    /// The longest wait that is reserved rather than answered with a place in line.
    pub fn horizon_limit(&self) -> Duration {
        self.horizon
    }

    /// The request's place on `budget`, if it holds one (the last given for it).
    pub fn place_on(&self, budget: usize) -> Option<Place> {
        self.placed
            .iter()
            .rev()
            .find(|(b, _)| *b == budget)
            .map(|&(_, p)| p)
    }

    /// The budgets.
    pub fn budgets(&self) -> &'a [StoreBudget] {
        self.budgets
    }

    /// The cost.
    pub fn cost(&self) -> &'a Cost {
        self.cost
    }

    /// The longest wait that is reserved rather than refused.
    pub fn wait_limit(&self) -> Duration {
        self.max_wait
    }
}

/// What a budget looks like now, read without charging anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// One snapshot per limit of the budget's policy, in its order.
    pub limits: Vec<Snapshot>,
    /// Requests holding an in-flight slot (leases not run out).
    pub in_flight: u64,
    /// How much longer the budget is paused (zero when it is not).
    pub paused_for: Duration,
}

impl BudgetSnapshot {
    /// The snapshot of `limits` (one state per limit of `policy`) at `now`.
    pub(crate) fn new(
        policy: &Policy,
        limits: &[LimitState],
        now: Nanos,
        in_flight: u64,
        paused_until: Nanos,
    ) -> Self {
        Self {
            limits: policy
                .limits
                .iter()
                .zip(limits)
                .map(|(l, s)| l.rule.snapshot(s, now))
                .collect(),
            in_flight,
            paused_for: Duration::from_nanos(paused_until.saturating_sub(now)),
        }
    }
}

/// State of limits kept somewhere: in this process ([`MemoryStore`]) or shared (the Redis
/// store). Every call applies the core's rules to the state atomically.
///
/// Costs that a limit can never admit are refused before anything is read
/// ([`StoreError::Refused`]).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Decides `ask` on all its budgets at once. Admitted now, or (within its `max_wait`)
    /// reserved at its earliest instant: [`Answer::Reserved`], recorded on every limit of every
    /// budget with a lease on each in-flight cap. Otherwise [`Answer::Refused`], and nothing
    /// is recorded.
    fn acquire<'a>(&'a self, ask: Ask<'a>) -> StoreFuture<'a, Answer>;

    /// Ends `reservation`: with `used`, its reservation is replaced by that usage on every
    /// limit (refunds and charges, as [`core::settle_budget`](crate::core::settle_budget);
    /// figures the usage leaves out count as reserved, as [`Permit::settle`](crate::Permit::settle)
    /// reads them); without, the reservation stays counted (a failed call). Either way its
    /// lease ends. A usage of zero on every figure cancels a reservation that has not started.
    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        used: Option<&'a Usage>,
    ) -> StoreFuture<'a, ()>;

    /// Extends the lease of `reservation`'s in-flight slots to the store's lease time from now.
    fn renew<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()>;

    /// Pauses `budget` for `pause` from now: replacing any pause in force when `replace` (zero
    /// lifts it), else keeping the later end. Returns how long the budget is paused now.
    fn pause<'a>(
        &'a self,
        budget: &'a StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> StoreFuture<'a, Duration>;

    /// What `budget` looks like now, charging nothing.
    fn snapshot<'a>(&'a self, budget: &'a StoreBudget) -> StoreFuture<'a, BudgetSnapshot>;

    /// Forgets everything `budget` holds: its limits, slots and pause start afresh.
    fn reset<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, ()>;

    /// Gives back `place` on `budget` (a [`Refusal::Ahead`]'s), for a request that will not
    /// ask again: when it is still the last in line, the line ends where it did before it;
    /// otherwise nothing changes (the place stays unused, at most the time its limit takes
    /// to earn it). A store that cannot give places back keeps them (the default): the safe
    /// side.
    fn leave<'a>(&'a self, budget: &'a StoreBudget, place: Place) -> StoreFuture<'a, ()> {
        let _ = (budget, place);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Counts on limit `limit` of `budget` (an index into its policy's limits) what `counted`
    /// exceeds of what the limit counts now (its snapshot's `used`): what a provider reports
    /// having counted there (its limit less its remaining: another client on the same
    /// account, a drift) and the store has not. The excess is charged at now, as the
    /// in-memory limiter's [`observe`](crate::Limiter::observe) does; nothing when the limit
    /// counts as much already. Returns the units charged.
    ///
    /// A store that cannot lowers nothing and says so ([`StoreError::Unsupported`], the
    /// default).
    fn lower<'a>(
        &'a self,
        budget: &'a StoreBudget,
        limit: usize,
        counted: u64,
    ) -> StoreFuture<'a, u64> {
        let _ = (budget, limit, counted);
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "this store does not lower its limits to a provider's remaining".into(),
        ))))
    }

    /// A mark for [`released`](Self::released), taken before an ask that may find every
    /// in-flight slot of `budget` held.
    fn release_mark(&self, budget: &StoreBudget) -> u64 {
        let _ = budget;
        0
    }

    /// Resolves when an in-flight slot of `budget` may have come back since `mark` was
    /// taken, so that a caller waiting for one asks again then. It may never resolve (a store
    /// that cannot tell, the default; a release it did not hear): the caller bounds the wait,
    /// and asks again when its bound ends.
    fn released<'a>(&'a self, budget: &'a StoreBudget, mark: u64) -> StoreFuture<'a, ()> {
        let _ = (budget, mark);
        Box::pin(std::future::pending())
    }

    /// Whether this store's calls may run on any tokio runtime rather than their caller's:
    /// true for a store that reads no clock of the caller's runtime, and needs nothing of it
    /// (the Redis store on connections it makes, whose clock is the server's). A limiter then
    /// sends what goes on after its caller has moved on (a settlement, a lease's renewals, a
    /// place in line given back, a provider's pause shared) from a runtime that is always
    /// driven: the caller's when it has worker threads, else one of its own. A current-thread
    /// runtime left idle between calls would otherwise hold them until it is driven again.
    /// False (the default): they run on the caller's runtime, as a store on a test's paused
    /// clock needs.
    ///
    /// ```
    /// use tokengate::store::{MemoryStore, Store};
    ///
    /// // The in-memory store reads its own clock, which may be a runtime's.
    /// assert!(!MemoryStore::new().any_runtime());
    /// ```
    fn any_runtime(&self) -> bool {
        false
    }
}

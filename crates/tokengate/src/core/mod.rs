//! The pure algorithm core: plain state in, decision out.
//!
//! Nothing in this module reads a clock, sleeps, locks or allocates on the hot path. Every
//! function takes the current instant `now` as integer nanoseconds since the clock's origin
//! ([`Nanos`]) and the state of one limit as plain data, so the same rules can be replayed
//! from test vectors and applied by another store (a Redis script) with the same answers.
//!
//! # The store seam
//! A store keeps, per key, one [`LimitState`] per limit of the key's policy: plain integers
//! (nanosecond instants, unit counts; the sliding log a list of `(instant, amount)` pairs), no
//! floats, no pointers. It applies three steps atomically: [`decide_all`] (changes nothing),
//! [`commit_all`] after an admit (returns a [`Receipt`] per limit), and [`settle_all`] with
//! those receipts. The in-memory limiter does so under one lock; a shared store (Redis) runs
//! the same steps in one script, and is held to the same answers by the test vectors in
//! `tests/vectors/` (the format is described beside them).
//!
//! A request falls under several budgets (the account's, its model's or family's, its
//! tenant's), each a policy with its own limit states, in-flight count and provider pause
//! ([`BudgetView`]). [`decide_request`] decides it on all of them at once (all or none),
//! [`commit_budget`] records an admission on each, [`settle_budget`] settles it with what it
//! used (refunds with each limit's receipt): the whole-request rules every store applies,
//! replayed by `tests/vectors/requests.json`.
//!
//! The entry point is [`LimitRule`]: a validated limit (amount per period, burst, algorithm)
//! that decides an admission against a [`LimitState`]:
//!
//! ```
//! use std::time::Duration;
//! use tokengate::core::{Decision, LimitRule};
//! use tokengate::{Algorithm, Limit};
//!
//! let rule = LimitRule::new(&Limit::new(10, Duration::from_secs(1)).algorithm(Algorithm::FixedWindow))?;
//! let mut state = rule.new_state();
//! assert_eq!(rule.decide(&state, 0, 10), Decision::Admit);
//! let receipt = rule.commit(&mut state, 0, 10);
//! assert_eq!(receipt.admitted_at, 0);
//! // The window is full: the next unit is admitted when the next window opens, at 1 s.
//! assert_eq!(rule.decide(&state, 5, 1), Decision::NotUntil(1_000_000_000));
//! # Ok::<(), tokengate::BuildError>(())
//! ```

mod combined;
mod fixed_window;
pub(crate) mod gcra;
mod request;
mod rule;
mod sliding_counter;
mod sliding_log;
mod time;

pub use combined::{commit_all, decide_all, settle_all, CombinedDecision};
pub use fixed_window::FixedWindowState;
pub use gcra::GcraState;
pub use request::{
    commit_budget, decide_request, settle_budget, BudgetDecision, BudgetView, RequestDecision,
};
pub(crate) use rule::BucketParts;
pub use rule::{Decision, LimitRule, LimitState, Receipt, Snapshot};
pub use sliding_counter::SlidingCounterState;
pub use sliding_log::SlidingLogState;
pub use time::Nanos;
pub(crate) use time::{Rate, Span};

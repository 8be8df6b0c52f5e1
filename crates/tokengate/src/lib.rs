//! Rate limiting for programs that call LLM APIs: stay under every limit a provider sets
//! (requests, input and output tokens, combined tokens, requests in flight, per minute and per
//! day at once) while using as much of the quota as possible.
//!
//! # Quick start
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tokengate::{Cost, Limiter, Policy, Usage};
//!
//! let policy = Policy::builder()
//!     .requests_per_minute(500)
//!     .input_tokens_per_minute(30_000)
//!     .output_tokens_per_minute(8_000)
//!     .requests_per_day(10_000)
//!     .max_in_flight(10)
//!     .build()?; // invalid limits are an error here, never a panic later
//! let limiter = Limiter::new(policy); // in memory, system clock; Clone + Send + Sync
//!
//! // Reserve the prompt and up to 800 output tokens; wait (FIFO, exactly as long as needed).
//! let permit = limiter.acquire(Cost::request().input(1_200).output(800)).await?;
//! // ... call the model ...
//! permit.settle(Usage::new().input(1_180).output(312)); // 488 output tokens come back at once
//! # Ok(())
//! # }
//! ```
//!
//! # Concepts
//! - A [`Limit`] is one rule on one dimension: `amount` per `period`, counted by an
//!   [`Algorithm`] (with a `burst` for the bucket algorithms).
//! - A [`Dimension`] is what a limit counts: requests, input tokens, output tokens, combined
//!   tokens (with weights: AWS Bedrock counts output 5x), or a name of your own. Requests in
//!   flight are capped separately with [`PolicyBuilder::max_in_flight`].
//! - A [`Policy`] is the set of limits that governs one key. Building it validates every limit:
//!   zero amounts, zero periods, NaN or infinite figures are a [`BuildError`] that says what to do.
//! - A [`Cost`] is what one request needs on each dimension; [`Usage`] is what it really used.
//! - A [`Limiter`] admits costs under a policy. [`Limiter::try_acquire`] never waits and says
//!   for how long it would; [`Limiter::acquire`] (async) and [`Limiter::acquire_blocking`] wait,
//!   in FIFO order, exactly as long as the limits require; the `_timeout` variants fail at once
//!   when the wait is known to exceed the timeout.
//! - A [`Permit`] is an admission. It holds an in-flight slot until dropped, and
//!   [`Permit::settle`] refunds what was reserved and not used, or charges what was used beyond
//!   the reservation, once.
//! - A [`Clock`] gives time: [`SystemClock`] by default, [`ManualClock`] for tests,
//!   [`TokioClock`] for virtual time under tokio's paused clock.
//!
//! # Keys: models, families, tenants
//! A provider limits each model (some share one budget among several model names); a service
//! adds limits of its own per tenant. [`Limiter::from_config`] reads them from a TOML file
//! ([`config`]), and [`Limiter::key`] names the tenant and model of a request. A request on a
//! key is charged to every budget it falls under at once, all or none: the model's (or its
//! family's), the tenant's, and the limiter's own.
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tokengate::config::Config;
//! use tokengate::{Cost, Limiter};
//!
//! let config = Config::from_toml_str(r#"
//!     [models.gpt-4o]
//!     requests_per_minute = 500
//!     tokens_per_minute = 30_000
//!     [families.gpt-4o-mini]
//!     match = ["gpt-4o-mini*"]
//!     requests_per_minute = 5_000
//!     [tenants.acme]
//!     tokens_per_minute = 20_000
//!     [defaults.tenant]
//!     tokens_per_minute = 5_000
//! "#, "limits.toml")?;
//! let limiter = Limiter::from_config(config);
//! let permit = limiter.key("acme", "gpt-4o").acquire(Cost::request().input(1_200).output(800)).await?;
//! # drop(permit);
//! # Ok(())
//! # }
//! ```
//! - **Fairness across keys**: waiters that a budget holds back are admitted in arrival order;
//!   a waiter held back by one budget (a tenant over its own limit) never holds up others on a
//!   budget it merely passes through (the model they share).
//! - **One lock**: every budget of a limiter lives under one lock, so a decision over several
//!   budgets is atomic without lock ordering; a decision on a key costs a few hundred
//!   nanoseconds (name lookups included), far below the rate of any LLM API.
//! - **Bounded memory**: budgets are made on first use; one whose limits are all back to a
//!   fresh state, with nothing in flight or outstanding, is dropped (a new one would be the
//!   same). Names the config does not list (tenants and models under its defaults) are capped
//!   ([`Limiter::set_max_keys`]); past the cap, new names share one overflow budget under the
//!   default policy: never unlimited, never everyone denied.
//! - **Run-time changes**: [`Limiter::reload`] puts a new config in force and keeps what is
//!   counted.
//! - **One step**: [`Key::run`] prices a request ([`call::ModelRequest`], implemented for
//!   OpenAI and Anthropic JSON), waits, calls, and settles from the reply's usage
//!   ([`call::ModelReply`]).
//!
//! # Rules the limiter keeps
//! 1. **All or nothing**: a cost is admitted on every limit at once, or on none; a denial
//!    changes no state.
//! 2. **Exact waits**: the wait is computed, not polled for; a cost is denied before that
//!    instant and admitted at it. A waiter sleeps once and is woken once. The instant keeps a
//!    safety margin (50 ms by default, [`Limit::margin`]) clear of the jitter between an
//!    admission and the provider's count of it.
//! 3. **FIFO**: waiters are admitted in arrival order, one wake-up per admission. A large cost
//!    at the head is not overtaken by small ones (head-of-line blocking is the price of no
//!    starvation); `try_acquire` never overtakes a queue either.
//! 4. **Impossible costs fail at once**: a cost above a limit's capacity is
//!    [`AcquireError::Exceeds`], naming the dimension, the cost and the capacity.
//!    [`Cost::zero`] peeks.
//! 5. **Cancellation is safe**: a dropped acquisition leaves the queue and charges nothing; a
//!    dropped permit frees its slot.
//! 6. **Settlement**: unused reservation comes back at once, never above capacity; usage above
//!    the reservation is charged, into debt; each permit settles at most once.
//! 7. **Overflow-safe**: every amount and rate is integer arithmetic that saturates or fails
//!    with an error; no user figure can wrap a limit into no limit. Time is 64-bit
//!    nanoseconds, and at its end (584 years from the clock's origin, within reach only of a
//!    clock set near it or a period of centuries) a limit stays strict: what would need its
//!    state past the end is never admitted, a wait to the end
//!    ([`Decision::NotUntil`](core::Decision::NotUntil)`(u64::MAX)`).
//!
//! # Threads and speed
//! A limiter is shared by cloning it (clones share one state). Every budget lives under one
//! mutex, with one exception, the **lane**. When a limiter of one policy (built with
//! [`Limiter::new`] or [`Limiter::with_clock`]) has at most four [`Algorithm::TokenBucket`] or
//! [`Algorithm::LeakyBucket`] limits on the built-in dimensions (with or without an in-flight
//! cap), [`Limiter::try_acquire`], [`Limiter::try_admit`], the first try of
//! [`Limiter::acquire`] and [`Limiter::acquire_blocking`], and dropping a permit decide without
//! the mutex: one compare-and-swap to enter, a plain store to leave, the very same bucket code
//! as the engine. [`Limiter::try_admit`] is the fastest call: a request counted and done at
//! once, with no permit to build (about a third of a one-limit decision) or settle.
//! Whatever the lane cannot admit at once (a wait, a full in-flight cap, a pause, a queue to
//! join) goes to the engine under the mutex, which takes the lane's state first, so the rules
//! above hold whichever path a request takes. The lane closes while anyone waits on the
//! limiter's own budget, so nobody overtakes a queue. A loom model checks that no unit or slot
//! is lost or counted twice whichever way the two paths interleave, and a differential test
//! that both give the same answers. Limiters built from a config (their budget is shared by
//! every key), the default [`Algorithm::SmoothWindow`] (its window log is not a few integers)
//! and settlements take the mutex, and so does everything with the `tracing` or `metrics`
//! feature (a report names the budget's policy, which lives under the mutex). The README's
//! Performance section has the figures, next to governor's.
//!
//! # Learning from the provider
//! Every response says how much of each limit is left; a 429 says how long to wait.
//! [`feedback::ProviderReport::from_headers`] reads OpenAI's and Anthropic's headers (Anthropic
//! rounds its token figures to thousands: read as up to 500 more), and [`Limiter::observe`]
//! corrects the limiter with them: a provider that has counted more than the limiter (another
//! process shares the key) lowers it, in the window only, never the other way;
//! [`Limiter::observe_throttled`] (or [`Limiter::pause`]) pauses admissions for a 429's
//! `retry-after`, with waiters kept in order. A 429 also teaches: the limits it refused on are
//! lowered to 7/10 and climb back while no 429 comes (see [`Limiter::observe_throttled`]).
//!
//! Settling follows how the provider counts: OpenAI keeps `max_tokens` charged for a call
//! whatever it produced, Anthropic corrects output to what was produced
//! ([`OutputCount`]; [`feedback::usage::ReplyUsage::usage`] settles by the reply's format).
//!
//! # Sharing limits across processes
//! Processes that call one provider account share its limits: [`Limiter::with_store`] keeps a
//! limiter's state in a [`store::Store`] ([`store::MemoryStore`] in this process; the Redis
//! store, feature `redis`, across machines), and every front end (keys, [`Key::run`], the
//! reqwest middleware, the tower layer) decides there unchanged, with exact reserved waits and
//! 429 pauses shared by every process. [`Limiter::on_store_error`] says what happens while the
//! store fails ([`OnStoreError`]), and [`Limiter::store_stats`] counts it.
//!
//! # Observability
//! Two features, both off by default, report what the in-memory [`Limiter`] does. Without them
//! the instrumentation compiles to nothing. Each report is made after the limiter's lock is
//! released. The names below are stable.
//!
//! **`tracing`**: events with structured fields, target `tokengate::limiter` (filter with
//! `tokengate=debug`), each with the message in the first column:
//!
//! | message | level | fields | when |
//! |---|---|---|---|
//! | `waiting` | debug | `reason` (`rate_limited`, `paused`, `in_flight`, `waiters_ahead`); `dimension`, `cost` (on that dimension), `wait_secs`, `waiters`, as they apply | an acquisition joins the queue |
//! | `admitted after waiting` | debug | `waited_secs` | a queued acquisition gets its permit |
//! | `timed out` | debug | `error` (the [`AcquireError`]), `waited_secs` | a wait ends at its timeout |
//! | `cancelled` | debug | `waited_secs`, `revoked` (it had been admitted: the admission is taken back) | a queued acquisition is dropped |
//! | `denied` | trace | `reason` (as above, or `never`); `dimension`, `cost`, `wait_secs`, `max`, `waiters`, `error`, as they apply | [`Limiter::try_acquire`] says no |
//! | `settled` | trace | `dimension`, `reserved`, `used`, `refunded`, `charged` | [`Permit::settle`], one event per dimension |
//! | `paused` | info | `retry_after_secs`, `throttled` (a 429), `paused_for_secs` (the pause now in force) | the provider asks for a pause ([`Limiter::observe`], [`Limiter::observe_throttled`], [`Limiter::pause`]) |
//! | `lowered` | debug | `dimension`, `units` | [`Limiter::observe`] charges what the provider counted beyond the limiter |
//! | `lowered after a 429` | info | `dimension`, `amount` (now in force), `configured` | [`Limiter::observe_throttled`] lowers a limit's amount |
//! | `raised a step` | debug | `dimension`, `amount`, `configured` | time without a 429 raises a lowered limit back a step (read at the next [`Limiter::observe`]) |
//! | `store call failed` | warn | `call` (`acquire`, `settle`, `renew`, `pause`), `error`, `on_store_error` (for an acquisition: `fail_closed`, `fail_open`, `local_share`) | a call to the limiter's store ([`Limiter::with_store`]) fails |
//!
//! **`metrics`**: through the [`metrics`](https://docs.rs/metrics) facade (install any
//! recorder, such as a Prometheus exporter):
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | `tokengate_admitted_total` | counter | `budget` | permits delivered, at once or after a wait |
//! | `tokengate_denied_total` | counter | | [`Limiter::try_acquire`] denials ([`Stats::denied`]; not [`Denied::Never`]) |
//! | `tokengate_timed_out_total` | counter | | waits that ended at their timeout |
//! | `tokengate_cancelled_total` | counter | | queued acquisitions dropped |
//! | `tokengate_throttled_total` | counter | | 429s reported ([`Limiter::observe_throttled`], [`Limiter::pause`]) |
//! | `tokengate_units_charged_total` | counter | `dimension`, `budget` | units reserved by admissions and charged beyond the reservation by settlements |
//! | `tokengate_units_refunded_total` | counter | `dimension`, `budget` | units a settlement gave back (reserved, not used) |
//! | `tokengate_units_lowered_total` | counter | `dimension` | units [`Limiter::observe`] charged to match the provider |
//! | `tokengate_rate_decreases_total` | counter | `dimension` | times a 429 lowered a limit's amount ([`LimitStats::decreases`]) |
//! | `tokengate_limit_amount` | gauge | `dimension` | a limit's amount in force, set when a 429 lowers it or a step raises it ([`LimitStats::amount`]) |
//! | `tokengate_wait_seconds` | histogram | `budget` | the wait of each admission that queued |
//! | `tokengate_store_calls_total` | counter | | calls to the limiter's store ([`StoreStats::calls`]) |
//! | `tokengate_store_errors_total` | counter | `call` (as the event above) | store calls that failed ([`StoreStats::errors`]) |
//! | `tokengate_store_fail_open_total` | counter | | acquisitions admitted without limits as the store failed ([`OnStoreError::FailOpen`]) |
//! | `tokengate_store_local_share_total` | counter | | acquisitions decided on the local share as the store failed ([`OnStoreError::LocalShare`]) |
//! | `tokengate_store_in_flight_polls_total` | counter | | asks again for an in-flight slot of the store ([`StoreStats::in_flight_polls`]) |
//!
//! `dimension` is [`Dimension::name`]. `budget` is `limiter` for a limiter of one policy, and
//! for a request on a [`Key`] its model's budget (`model gpt-4o`, `family gpt-4o-mini`), whose
//! policy names the dimensions; tenants are not labels, as their number has no bound (read
//! them from [`Key::stats`] or [`Limiter::all_stats`]). The tracing events of admissions and
//! settlements carry the same `budget` field. A dimension with several limits (per minute and per
//! day) is counted once, on its first limit. The counters follow [`Stats`] and
//! [`LimitStats`], except that an admission made for a waiter that was dropped before it
//! picked up its permit (and so taken back) counts in none of them.
//!
//! # Algorithms
//! Each mathematics is implemented once, in the pure [`core`]. The figures below were
//! measured for N = 500 per minute on a manual clock by
//! `cargo run --release --example algorithms` (adversarial greedy clients, windows starting
//! anywhere, including just before a fixed-window boundary):
//!
//! | algorithm | same mathematics as | most admitted in any window of one period | burst at one instant (cost 1) | utilisation, cost 1 / cost N/20 | state per key |
//! |---|---|---|---|---|---|
//! | [`Algorithm::SmoothWindow`] (default) | sliding window log + GCRA | 1.000 N (exact) | 8 (N/60, rounded down), on every dimension | 100% / 100% | 80 B + 16 B per admission instant in the window (8,272 B at 500/min) |
//! | [`Algorithm::TokenBucket`] | GCRA; leaky bucket as a meter | 1.998 N (burst + N) | N (the burst) | 100% / 100% | 80 B (24 B of it used) |
//! | [`Algorithm::LeakyBucket`] | GCRA with a burst of 1 (shaper) | 1.998 N (paced, then one cost of N) | 1 | 100% / 100% | 80 B (24 B used) |
//! | [`Algorithm::SlidingWindowLog`] | — | 1.000 N (exact) | N | 100% / 100% | 80 B + 16 B per admission instant (8,272 B) |
//! | [`Algorithm::SlidingWindowCounter`] | two fixed windows, weighted | 1.998 N (a burst just before a boundary) | N | 99.8% / 95.0% | 80 B (24 B used) |
//! | [`Algorithm::FixedWindow`] | — | 2.000 N (across a boundary) | N | 100% / 100% | 80 B (16 B used) |
//!
//! Providers read "N per minute" in two ways: at most N in any 60-second window, and a smooth
//! rate enforced over shorter periods (OpenAI and Anthropic both say a per-minute limit may be
//! enforced per second), so a burst of all N requests at once is refused. The default,
//! [`Algorithm::SmoothWindow`], stays within both on every dimension: an exact sliding window
//! caps every window at N, and a token bucket refilling at N per period holds N/60 (one
//! second's worth of a per-minute limit, rounded down), whether N counts requests or tokens.
//! A prompt larger than that bucket is admitted when the bucket is full, into debt, as a
//! provider enforcing the short period admits it. So with only the limits a provider states,
//! a provider that enforces both readings on every dimension refuses nothing the limiter
//! admits. Daily caps are budgets, not paces: their burst is the whole amount. A burst of the
//! whole minute is an explicit choice ([`Limit::burst`]), for a provider documented to accept
//! a minute's amount at once.
//!
//! ## Against a strict provider
//! `tests/strict_provider.rs` holds the defaults to the promise. Its mock provider enforces
//! every per-minute limit both ways on every dimension (the 60 s window of N and a bucket of
//! N/60, a larger request admitted into debt when the bucket is full), counts output as OpenAI
//! (kept) or Anthropic (corrected, token figures rounded to thousands) does, and answers 429
//! with `retry-after-ms`. With only the limits it states (600 requests and 60,000 tokens a
//! minute, from a limits file), 24 workers send prompts of 200-3,000 tokens with `max_tokens`
//! 256 for 10 virtual minutes, through a [`Limiter`] used directly, [`Key::run`] and the
//! reqwest middleware, each with 429s retried straight to the provider or through the
//! limiter, provider feedback off and on, in OpenAI's and Anthropic's shape (half of the
//! Anthropic calls streamed): 0 429s in all 24 cells, 96.2% (OpenAI, tokens) and 96.4%
//! (Anthropic, input tokens) of the binding limit used, and every admission log within the
//! window and the bucket by an independent checker. The same cells with the whole-minute
//! token burst of earlier versions: 2,460-5,516 429s per 1,000 calls. One cell in real time
//! on loopback for a minute (40 times the limits, 1,199-1,306 calls): 0-2 429s in four runs,
//! all in the first two seconds (requests waiting for their first connections), none after.
//! Two clients each given the whole key's limits learn from the 429s to share it: after the
//! first minute, 33.6 429s per 1,000 calls with 95.9% of the key's tokens used (without what
//! 429s teach: 1,092.9 per 1,000).
//!
//! The long-run utilisation is 100% of N: an evenly paced stream at N per period passes both
//! checks. What it costs: memory, one entry per distinct admission instant within a period;
//! and after an idle spell, requests and tokens start at the paced rate after a burst of N/60
//! rather than all N at once. A single cost above the burst is admitted once the bucket is full and pays
//! its excess back before the next admission.

// The README's Rust examples, compiled with the crate's doctests (they need the features they
// name in their `[dependencies]`).
#[cfg(all(doctest, feature = "reqwest", feature = "config", feature = "redis"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

pub mod call;
#[cfg(feature = "config")]
pub mod config;
pub mod core;
pub mod estimate;
pub mod feedback;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "reqwest")]
pub mod reqwest;
pub mod store;
#[cfg(feature = "tower")]
pub mod tower;

mod clock;
mod cost;
mod dimension;
mod error;
mod fmt;
mod limit;
mod limiter;
mod policy;
mod stats;
mod sync;

#[cfg(feature = "tokio")]
pub use clock::TokioClock;
pub use clock::{Clock, ManualClock, SystemClock};
pub use cost::{Cost, OutputCount, Usage};
pub use dimension::Dimension;
pub use error::{AcquireError, BuildError, Denied};
pub use limit::{Algorithm, Limit};
#[cfg(feature = "tokio")]
pub use limiter::{Acquire, OnStoreError, SharedBudget, StoreStats};
pub use limiter::{Key, Limiter, Permit};
pub use policy::{Policy, PolicyBuilder};
pub use stats::{BudgetKind, LimitStats, Stats, WaitStats};

//! Measures the trade-offs of every [`Algorithm`] on a [`ManualClock`], for one limit of
//! N = 500 per minute, and prints them as a markdown table (the figures behind the crate docs'
//! algorithm table):
//!
//! - (a) the largest amount admitted in any window of one period, as a multiple of N, under an
//!   adversarial greedy client: it calls `try_acquire` again at exactly the instant the last
//!   denial named, starting fresh at a window boundary, just before one (a whole burst at
//!   `P - 1 ns`, then on across the boundary) or mid-window, with costs 1 and N/20;
//! - (b) the largest amount admitted at one instant: cost-1 requests from a fresh key, and the
//!   largest single cost a fresh key admits;
//! - (c) long-run utilisation, admitted / (N x periods), of the same greedy client over 50
//!   periods after a warm-up of 2, with costs 1 and N/20;
//! - (d) memory per key: `size_of::<LimitState>()` plus the heap of the window log (its
//!   capacity x 16 bytes) at steady state, with one cost-1 request every P/N (the most
//!   distinct admission instants a full window can hold).
//!
//! ```text
//! cargo run --release --example algorithms
//! ```

mod common;

use std::mem::size_of;
use std::time::Duration;

use tokengate::core::{
    Decision, FixedWindowState, GcraState, LimitRule, LimitState, Nanos, SlidingCounterState,
    SlidingLogState,
};
use tokengate::{Algorithm, Clock, Cost, Dimension, Limit, Limiter, ManualClock, Policy};

const N: u64 = 500;
const PERIOD: Duration = Duration::from_secs(60);
const P: Nanos = 60_000_000_000;

/// The limits measured: every algorithm with its default burst (the smooth window's is N/60,
/// rounded down), and the smooth window with the whole-period burst a user may choose for a
/// provider documented to accept a period's amount at once. All exact: no safety margin
/// (`Limit::margin`), so that the figures are the algorithms' own.
fn variants() -> Vec<(String, Limit)> {
    let exact = || Limit::new(N, PERIOD).margin(Duration::ZERO);
    let mut v: Vec<_> = Algorithm::ALL
        .into_iter()
        .map(|a| (a.to_string(), exact().algorithm(a)))
        .collect();
    v[0].0 += ", burst N/60 (the default)";
    v.insert(
        1,
        (
            String::from("smooth window, burst N (an explicit choice)"),
            exact().burst(N),
        ),
    );
    v
}

/// A limiter with the one limit on requests (a cost of `k` units is `k` requests), and its clock.
fn limiter(limit: &Limit) -> (Limiter<ManualClock>, ManualClock) {
    let policy = Policy::builder()
        .limit(Dimension::Requests, limit.clone())
        .build()
        .expect("a valid limit");
    let clock = ManualClock::new();
    (Limiter::with_clock(policy, clock.clone()), clock)
}

fn units(k: u64) -> Cost {
    Cost::request().with_requests(k)
}

/// A client that asks again at exactly the instant each denial names, from `start` (a fresh
/// key) until `end`, with the cost `cost_at(now)`. Returns `(instant, amount)` of every
/// admission, in order.
fn greedy(
    limit: &Limit,
    start: Nanos,
    end: Nanos,
    cost_at: impl Fn(Nanos) -> u64,
) -> Vec<(Nanos, u64)> {
    let (limiter, clock) = limiter(limit);
    clock.set(start);
    let mut admitted = Vec::new();
    while clock.now() < end {
        let cost = cost_at(clock.now());
        match limiter.try_acquire(units(cost)) {
            Ok(permit) => admitted.push((permit.admitted_at(), cost)),
            Err(denied) => match denied.wait() {
                Some(wait) if !wait.is_zero() => clock.advance(wait),
                _ => panic!("{limit}: a greedy client got {denied}"),
            },
        }
    }
    admitted
}

/// (a): the worst window over the client strategies, as a multiple of N, and the strategy
/// that reached it. `largest` is the largest single cost (b).
fn worst_window(limit: &Limit, largest: u64) -> (f64, String) {
    let end = 4 * P;
    let mut runs = Vec::new();
    let at = |start: Nanos| match start {
        0 => "0",
        s if s == P - 1 => "P-1ns",
        _ => "P/2",
    };
    // Constant costs, starting fresh at a boundary, just before one, and mid-window.
    for cost in [1, N / 20, largest] {
        for start in [0, P - 1, P / 2] {
            runs.push((
                format!("cost {cost} from {}", at(start)),
                greedy(limit, start, start + end, |_| cost),
            ));
        }
    }
    // The largest cost at once just before a boundary, then cost-1 requests across it.
    runs.push((
        format!("{largest} at P-1ns, then cost 1"),
        greedy(limit, P - 1, end, |t| if t == P - 1 { largest } else { 1 }),
    ));
    // Cost-1 requests up to just before a boundary (or mid-window), then the largest cost.
    for switch in [P - 1, P / 2] {
        runs.push((
            format!("cost 1, then {largest} from {}", at(switch)),
            greedy(limit, 0, end, |t| if t < switch { 1 } else { largest }),
        ));
    }
    let mut worst = (0, String::new());
    for (label, run) in runs {
        let w = common::largest_window(&run, P);
        if w > worst.0 {
            worst = (w, label);
        }
    }
    (worst.0 as f64 / N as f64, worst.1)
}

/// (b): cost-1 requests admitted at instant 0 by a fresh key.
fn burst_at_one_instant(limit: &Limit) -> u64 {
    let (limiter, _clock) = limiter(limit);
    let mut n = 0;
    while n <= 4 * N && limiter.try_acquire(units(1)).is_ok() {
        n += 1;
    }
    n
}

/// (b): the largest single cost a fresh key admits (searched, not read from the rule).
fn largest_single_cost(limit: &Limit) -> u64 {
    let admits = |k: u64| limiter(limit).0.try_acquire(units(k)).is_ok();
    let (mut lo, mut hi) = (0, 4 * N); // admits(lo) (or lo = 0), !admits(hi + 1) assumed
    assert!(!admits(hi + 1), "{limit} admits above 4N at once");
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if admits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// (c): admitted / (N x periods) over 50 periods after a warm-up of 2.
fn utilisation(limit: &Limit, cost: u64) -> f64 {
    const WARM_UP: u64 = 2;
    const PERIODS: u64 = 50;
    let admitted = greedy(limit, 0, (WARM_UP + PERIODS) * P, |_| cost);
    let total: u64 = admitted
        .iter()
        .filter(|&&(t, _)| t >= WARM_UP * P)
        .map(|&(_, a)| a)
        .sum();
    total as f64 / (N * PERIODS) as f64
}

/// The size of the state an algorithm really needs (the variant's contents), and the
/// `(entries, heap bytes)` it holds: the window log's buffer.
fn state_size(state: &LimitState) -> (usize, usize, usize) {
    let log_heap = |log: &SlidingLogState| {
        (
            log.entries.len(),
            log.entries.capacity() * size_of::<(Nanos, u64)>(),
        )
    };
    match state {
        LimitState::Gcra(_) => (size_of::<GcraState>(), 0, 0),
        LimitState::Log(log) => {
            let (n, heap) = log_heap(log);
            (size_of::<SlidingLogState>(), n, heap)
        }
        LimitState::Counter(_) => (size_of::<SlidingCounterState>(), 0, 0),
        LimitState::Fixed(_) => (size_of::<FixedWindowState>(), 0, 0),
        LimitState::Smooth(_, log) => {
            let (n, heap) = log_heap(log);
            (
                size_of::<GcraState>() + size_of::<SlidingLogState>(),
                n,
                heap,
            )
        }
    }
}

/// (d): the largest `(inner size, entries, heap bytes)` seen over the third period of a stream of cost-1
/// requests, one every P/N (a request the rule denies waits for the instant it names), on the
/// pure rule.
fn steady_state_memory(limit: &Limit) -> (usize, usize, usize) {
    let rule = LimitRule::new(limit).expect("a valid limit");
    let mut state = rule.new_state();
    let mut worst = (0, 0, 0);
    let mut now = 0;
    while now < 3 * P {
        match rule.decide(&state, now, 1) {
            Decision::Admit => {
                rule.commit(&mut state, now, 1);
                if now >= 2 * P {
                    worst = worst.max(state_size(&state));
                }
                now += P / N;
            }
            Decision::NotUntil(t) => now = t,
            Decision::Impossible { .. } => panic!("{limit}: a cost of 1 is impossible"),
        }
    }
    worst
}

fn main() {
    println!("Algorithms, one limit of N = {N} per {PERIOD:?} on requests, on a ManualClock.\n");
    println!(
        "| algorithm | (a) most in any window of one period | (b) burst at one instant (cost-1 requests) | (b) largest single cost | (c) utilisation, cost 1 | (c) utilisation, cost N/20 | (d) state per key: size_of LimitState + heap (log entries; the variant's own contents) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let enum_size = size_of::<LimitState>();
    for (name, limit) in variants() {
        let limit = &limit;
        let (inner, entries, heap) = steady_state_memory(limit);
        let largest = largest_single_cost(limit);
        let (worst, strategy) = worst_window(limit, largest);
        println!(
            "| {name} | {worst:.3} N ({strategy}) | {} | {largest} | {:.1}% | {:.1}% | {enum_size} + {heap} = {} B ({entries} entries; contents {inner} B) |",
            burst_at_one_instant(limit),
            100.0 * utilisation(limit, 1),
            100.0 * utilisation(limit, N / 20),
            enum_size + heap,
        );
    }
    println!(
        "\n(a) the worst of: a greedy client from a fresh key at 0, P-1ns and P/2 with costs 1, {} and \
         the largest single cost; the largest cost at P-1ns, then cost 1; cost 1, then the largest cost \
         from P-1ns or P/2; each over 4 periods, every window [s, s + P) of the admissions. \
         (c) 50 periods after a warm-up of 2. \
         (d) one cost-1 request every P/N = {:?} (later when denied), the largest over the third period.",
        N / 20,
        Duration::from_nanos(P / N)
    );
}

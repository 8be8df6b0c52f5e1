//! Checks an admission log against rate limits, window by window: every window of a limit's
//! period holds at most its amount (the sliding-window reading of "N per period", the
//! strictest a provider enforces). Checked here exactly, in nanoseconds, and again by the
//! independent checker `shared/tools/check-admissions` when it is there
//! ([`check_admissions`](super::check_admissions)).
#![allow(unreachable_pub)]

use std::time::Duration;

use tokengate::Cost;

/// One limit: at most `amount` of `dimension` (`requests`, `input_tokens`) in any window of
/// `period`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub dimension: &'static str,
    pub amount: u64,
    pub period: Duration,
}

impl Window {
    pub fn new(dimension: &'static str, amount: u64, period: Duration) -> Self {
        Self {
            dimension,
            amount,
            period,
        }
    }

    fn of(&self, cost: &Cost) -> u64 {
        match self.dimension {
            "requests" => cost.requests(),
            "input_tokens" => cost.input_tokens(),
            "output_tokens" => cost.output_tokens(),
            other => cost.custom(other),
        }
    }
}

/// The most of `amounts` admitted in any half-open window `[s, s + width)`, `points` sorted
/// by instant.
pub fn most_in_window(points: &[(Duration, u64)], width: Duration) -> u64 {
    let (mut best, mut total, mut first) = (0, 0, 0);
    for (i, &(t, amount)) in points.iter().enumerate() {
        total += amount;
        while points[first].0 + width <= t {
            total -= points[first].1;
            first += 1;
        }
        debug_assert!(first <= i);
        best = best.max(total);
    }
    best
}

/// Asserts that `admitted` (instants on one clock, any order) holds every one of `windows`,
/// each window narrowed by `slack` (the lateness of instants read after the fact; zero for a
/// store's own instants). Returns the most seen in a window of each limit.
///
/// # Panics
/// On a window above its limit, naming it.
pub fn assert_windows(
    name: &str,
    admitted: &[(Duration, Cost)],
    windows: &[Window],
    slack: Duration,
) -> Vec<u64> {
    let mut sorted: Vec<&(Duration, Cost)> = admitted.iter().collect();
    sorted.sort_by_key(|(t, _)| *t);
    let mut most = Vec::new();
    for w in windows {
        let points: Vec<(Duration, u64)> = sorted.iter().map(|(t, c)| (*t, w.of(c))).collect();
        let seen = most_in_window(&points, w.period.saturating_sub(slack));
        assert!(
            seen <= w.amount,
            "{name}: {seen} {} in a window of {:?} (less {slack:?} of slack), above the limit of \
             {}",
            w.dimension,
            w.period,
            w.amount
        );
        most.push(seen);
    }
    if let Some(&(origin, _)) = sorted.first() {
        // Seconds from a whole second before the first: small enough a float for nanoseconds.
        let origin = Duration::from_secs(origin.as_secs());
        let mut log = String::new();
        for (t, cost) in &sorted {
            let mut line = format!("{{\"t\": {:.9}", (*t - origin).as_secs_f64());
            for w in windows {
                line += &format!(", \"{}\": {}", w.dimension, w.of(cost));
            }
            log += &line;
            log += "}\n";
        }
        let mut args: Vec<String> = windows
            .iter()
            .map(|w| {
                format!(
                    "--limit={}={}/{}",
                    w.dimension,
                    w.amount,
                    w.period.as_secs_f64()
                )
            })
            .collect();
        if !slack.is_zero() {
            args.push(format!("--slack={}", slack.as_secs_f64()));
        }
        super::check_admissions::check(name, &log, &args);
    }
    most
}

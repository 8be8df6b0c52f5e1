//! Helpers the examples share (`mod common;` in each).

use tokengate::core::Nanos;

/// The largest sum over any half-open window `[s, s + width)`; `points` sorted by time.
pub(crate) fn largest_window(points: &[(Nanos, u64)], width: Nanos) -> u64 {
    let (mut best, mut sum, mut first) = (0, 0, 0);
    for &(t, amount) in points {
        sum += amount;
        while points[first].0.saturating_add(width) <= t {
            sum -= points[first].1;
            first += 1;
        }
        best = best.max(sum);
    }
    best
}

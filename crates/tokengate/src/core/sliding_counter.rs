//! Sliding window counter: approximates the sliding window with two fixed-window counters,
//! weighting the previous window by how much of it still overlaps the sliding window.
//!
//! Three integers of state. It assumes the previous window's admissions were spread evenly,
//! so it can admit more than N in some exact window when they were not (measured in the
//! crate docs' trade-off table).

use super::fixed_window::window_of;
use super::time::Nanos;

/// State of a sliding window counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlidingCounterState {
    /// Start of the current fixed window.
    pub window_start: Nanos,
    /// Units admitted in the window before it.
    pub previous: u64,
    /// Units admitted in the current window.
    pub current: u64,
}

/// `(previous, current)` as seen from the window that contains `now`.
#[inline]
fn counts(state: &SlidingCounterState, period: Nanos, now: Nanos) -> (u64, u64) {
    let w = window_of(now, period);
    if w <= state.window_start {
        (state.previous, state.current)
    } else if w.checked_sub(period) == Some(state.window_start) {
        (state.current, 0)
    } else {
        (0, 0)
    }
}

/// The weighted estimate at `now`: `previous * (period - elapsed) / period + current`, rounded up.
#[inline]
pub(crate) fn estimate(state: &SlidingCounterState, period: Nanos, now: Nanos) -> u64 {
    // A clock that stepped back is read as at the start of the state's window at the earliest.
    let now = now.max(state.window_start);
    let (previous, current) = counts(state, period, now);
    let elapsed = now - window_of(now, period);
    let weighted = (previous as u128 * (period - elapsed) as u128).div_ceil(period as u128);
    (weighted as u64).saturating_add(current)
}

/// Earliest instant `>= now` at which `cost` units fit (requires `cost <= amount`).
#[inline]
pub(crate) fn earliest(
    state: &SlidingCounterState,
    amount: u64,
    period: Nanos,
    now: Nanos,
    cost: u64,
) -> Nanos {
    let now = now.max(state.window_start);
    let mut w = window_of(now, period);
    let (mut previous, mut current) = counts(state, period, now);
    // Elapsed within window w where the search starts.
    let mut from = now - w;
    // At most three windows: this one, the next (previous := current), the one after (empty).
    for _ in 0..3 {
        if let Some(room) = amount
            .checked_sub(cost)
            .and_then(|r| r.checked_sub(current))
        {
            // ceil(previous * (period - e) / period) <= room  <=>  e >= period - floor(room * period / previous)
            let e = if previous == 0 {
                0
            } else {
                let free =
                    (room as u128 * period as u128 / previous as u128).min(period as u128) as u64;
                period - free
            };
            if e < period {
                return w.saturating_add(e.max(from));
            }
        }
        w = w.saturating_add(period);
        previous = current;
        current = 0;
        from = 0;
    }
    w
}

#[inline]
pub(crate) fn commit(state: &mut SlidingCounterState, period: Nanos, now: Nanos, cost: u64) {
    let w = window_of(now, period);
    if w > state.window_start {
        let (previous, current) = counts(state, period, now);
        *state = SlidingCounterState {
            window_start: w,
            previous,
            current,
        };
    }
    state.current = state.current.saturating_add(cost);
}

pub(crate) fn refund(
    state: &mut SlidingCounterState,
    period: Nanos,
    admitted_at: Nanos,
    units: u64,
) {
    let w = window_of(admitted_at, period);
    if w == state.window_start {
        state.current = state.current.saturating_sub(units);
    } else if w.checked_add(period) == Some(state.window_start) {
        state.previous = state.previous.saturating_sub(units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_window_fades_linearly() {
        let mut s = SlidingCounterState::default();
        commit(&mut s, 100, 50, 10);
        // At 150 half the previous window overlaps: estimate 5.
        assert_eq!(estimate(&s, 100, 150), 5);
        assert_eq!(earliest(&s, 10, 100, 60, 5), 150);
        assert_eq!(earliest(&s, 10, 100, 60, 10), 200);
        assert_eq!(earliest(&s, 10, 100, 60, 0), 60);
        commit(&mut s, 100, 150, 5);
        assert_eq!(
            s,
            SlidingCounterState {
                window_start: 100,
                previous: 10,
                current: 5
            }
        );
        // No room left in this window; at 200 the previous count becomes 5 at full weight: 5 + 5 fits.
        assert_eq!(earliest(&s, 10, 100, 150, 5), 200);
        assert_eq!(earliest(&s, 10, 100, 150, 6), 220);
    }

    #[test]
    fn a_clock_that_steps_back_is_read_at_the_state_window() {
        let mut s = SlidingCounterState::default();
        commit(&mut s, 100, 150, 10);
        assert_eq!(estimate(&s, 100, 50), 10);
        assert_eq!(earliest(&s, 10, 100, 50, 1), 210);
    }
}

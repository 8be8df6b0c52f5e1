//! Fixed window: at most N per window, windows aligned to multiples of the period from the
//! clock's origin. The cheapest algorithm (two integers), and the loosest: up to 2N can pass
//! across a window boundary.

use super::time::Nanos;

/// State of a fixed window counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FixedWindowState {
    /// Start of the window that `used` counts.
    pub window_start: Nanos,
    /// Units admitted in that window.
    pub used: u64,
}

#[inline]
pub(crate) fn window_of(now: Nanos, period: Nanos) -> Nanos {
    now - now % period
}

/// Units counted against the window that contains `now`. A `now` before the state's window
/// (a clock that stepped back) is read as in that window, never as a fresh one.
#[inline]
pub(crate) fn used(state: &FixedWindowState, period: Nanos, now: Nanos) -> u64 {
    if window_of(now, period) <= state.window_start {
        state.used
    } else {
        0
    }
}

/// Earliest instant `>= now` at which `cost` units fit (requires `cost <= amount`).
#[inline]
pub(crate) fn earliest(
    state: &FixedWindowState,
    amount: u64,
    period: Nanos,
    now: Nanos,
    cost: u64,
) -> Nanos {
    if amount
        .checked_sub(used(state, period, now))
        .is_some_and(|room| cost <= room)
    {
        now
    } else {
        window_of(now.max(state.window_start), period).saturating_add(period)
    }
}

#[inline]
pub(crate) fn commit(state: &mut FixedWindowState, period: Nanos, now: Nanos, cost: u64) {
    let w = window_of(now, period);
    if state.window_start != w {
        // A clock that stepped back stays in the later window.
        if w > state.window_start {
            *state = FixedWindowState {
                window_start: w,
                used: 0,
            };
        }
    }
    state.used = state.used.saturating_add(cost);
}

pub(crate) fn refund(state: &mut FixedWindowState, period: Nanos, admitted_at: Nanos, units: u64) {
    if state.window_start == window_of(admitted_at, period) {
        state.used = state.used.saturating_sub(units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_at_the_boundary() {
        let mut s = FixedWindowState::default();
        commit(&mut s, 100, 99, 10);
        assert_eq!(earliest(&s, 10, 100, 99, 1), 100);
        assert_eq!(earliest(&s, 10, 100, 100, 10), 100);
        commit(&mut s, 100, 100, 10);
        assert_eq!(
            s,
            FixedWindowState {
                window_start: 100,
                used: 10
            }
        );
        refund(&mut s, 100, 99, 5); // admitted in the previous window: nothing to give back
        assert_eq!(s.used, 10);
        refund(&mut s, 100, 150, 5);
        assert_eq!(s.used, 5);
    }

    #[test]
    fn a_clock_that_steps_back_never_sees_a_fresh_window() {
        let mut s = FixedWindowState::default();
        commit(&mut s, 100, 150, 10);
        assert_eq!(used(&s, 100, 50), 10);
        assert_eq!(earliest(&s, 10, 100, 50, 1), 200);
        commit(&mut s, 100, 60, 0);
        assert_eq!(
            s,
            FixedWindowState {
                window_start: 100,
                used: 10
            }
        );
    }
}

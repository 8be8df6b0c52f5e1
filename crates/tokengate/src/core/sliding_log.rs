//! Sliding window log: the exact reading of "at most N in any window of length P".
//!
//! Every admission is kept as `(instant, amount)` until it leaves the window, so the answer is
//! exact for any window, at the price of memory that grows with the admissions in one window.

use std::collections::VecDeque;

use super::time::Nanos;

/// State of a sliding window log: the admissions still inside the window (oldest first) and
/// their sum. Admissions at the same instant share one entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlidingLogState {
    /// `(instant, amount)` of each admission not yet known to have left the window.
    pub entries: VecDeque<(Nanos, u64)>,
    /// Sum of the amounts in `entries`: 128 bits, so debt charged on top of a window of nearly
    /// `u64::MAX` units is still counted exactly.
    pub total: u128,
}

/// The last admission instant that has left the window at `now`, if any: an entry admitted
/// at `t` counts while `now < t + period`, and to the end of the clock when `t + period` is at
/// or past it (`u64::MAX` is never).
#[inline]
fn expired_until(period: Nanos, now: Nanos) -> Option<Nanos> {
    now.min(Nanos::MAX - 1).checked_sub(period)
}

/// Earliest instant `>= now` at which `cost` more units fit under `amount` (requires
/// `cost <= amount`).
#[inline]
pub(crate) fn earliest(
    state: &SlidingLogState,
    amount: u64,
    period: Nanos,
    now: Nanos,
    cost: u64,
) -> Nanos {
    let room = u128::from(amount - cost);
    let mut live = state.total;
    let mut at = now;
    for &(t, a) in &state.entries {
        if live <= room {
            break;
        }
        live -= u128::from(a);
        at = t.saturating_add(period);
    }
    at.max(now)
}

/// Drops the entries that have left the window at `now`.
#[inline]
fn expire(state: &mut SlidingLogState, period: Nanos, now: Nanos) {
    let Some(last) = expired_until(period, now) else {
        return;
    };
    while let Some(&(t, a)) = state.entries.front() {
        if t > last {
            break;
        }
        state.total -= u128::from(a);
        state.entries.pop_front();
    }
    // A burst's entries are gone: give back the memory it needed (halving keeps the cost of
    // shrinking constant per entry).
    let (len, capacity) = (state.entries.len(), state.entries.capacity());
    if capacity > 64 && len < capacity / 4 {
        state.entries.shrink_to(capacity / 2);
    }
}

/// Records `cost` units at `now`.
#[inline]
pub(crate) fn commit(state: &mut SlidingLogState, period: Nanos, now: Nanos, cost: u64) {
    expire(state, period, now);
    if cost == 0 {
        return;
    }
    state.total += u128::from(cost);
    // Entries stay sorted even if a caller's clock steps back: record at the later instant,
    // which keeps the units in the window longer, never shorter.
    match state.entries.back_mut() {
        Some((t, a)) if *t >= now => *a = a.saturating_add(cost),
        _ => state.entries.push_back((now, cost)),
    }
}

/// Gives back up to `units` of what was admitted at `admitted_at`.
pub(crate) fn refund(state: &mut SlidingLogState, admitted_at: Nanos, units: u64) {
    if let Ok(i) = state.entries.binary_search_by_key(&admitted_at, |e| e.0) {
        let entry = &mut state.entries[i].1;
        let back = units.min(*entry);
        *entry -= back;
        state.total -= u128::from(back);
    }
}

/// Units counted in the window at `now`.
pub(crate) fn used(state: &SlidingLogState, period: Nanos, now: Nanos) -> u64 {
    let last = expired_until(period, now);
    let live: u128 = state
        .entries
        .iter()
        .filter(|&&(t, _)| last.is_none_or(|last| t > last))
        .map(|&(_, a)| u128::from(a))
        .sum();
    u64::try_from(live).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_exactly_for_enough_to_leave_the_window() {
        let mut s = SlidingLogState::default();
        commit(&mut s, 100, 0, 3);
        commit(&mut s, 100, 10, 4);
        commit(&mut s, 100, 20, 3);
        // Window of 10 is full. Two units need the first entry (3) to leave: at 100.
        assert_eq!(earliest(&s, 10, 100, 30, 2), 100);
        // Six units need the first two entries (7) to leave: at 110.
        assert_eq!(earliest(&s, 10, 100, 30, 6), 110);
        assert_eq!(earliest(&s, 10, 100, 30, 0), 30);
        commit(&mut s, 100, 100, 2);
        assert_eq!(s.entries.len(), 3);
        assert_eq!(used(&s, 100, 100), 9);
    }

    #[test]
    fn refund_targets_its_own_admission() {
        let mut s = SlidingLogState::default();
        commit(&mut s, 100, 0, 5);
        commit(&mut s, 100, 0, 5);
        commit(&mut s, 100, 7, 5);
        refund(&mut s, 0, 4);
        refund(&mut s, 7, 99);
        assert_eq!(s.total, 6);
        refund(&mut s, 3, 1); // nothing admitted at 3
        assert_eq!(s.total, 6);
    }
}

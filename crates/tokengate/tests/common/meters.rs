//! How the mock provider counts one dimension, written independently of tokengate's core (so
//! that a bug there is not mirrored here), in exact integer arithmetic on tokio's clock.
//!
//! - [`Enforcement::MinuteBucket`]: a token bucket holding a whole minute's amount, refilling
//!   continuously; a correction at the end of a call gives the unused units back (capped).
//! - [`Enforcement::Strict`]: both readings of "N per minute", as OpenAI documents a per-minute
//!   limit may be enforced over shorter periods, applied to every dimension: a request is
//!   admitted only if it fits the sliding 60 s window of N **and** a token bucket holding N/60
//!   that refills at N/60 a second. A request larger than that bucket waits for a full bucket
//!   and drives it into debt. A correction gives the window back the unused units of its
//!   admission, and the bucket only what it still holds of them (its water drains first in,
//!   first out: units drained by time are not given again).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The period of every limit of the mock: a minute.
pub const MINUTE: Duration = Duration::from_secs(60);
const PERIOD_NS: i128 = 60_000_000_000;

/// How the mock enforces a per-minute limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// A token bucket holding the whole minute's amount.
    MinuteBucket,
    /// The sliding 60 s window and a bucket of a sixtieth, both.
    Strict,
}

/// One dimension's limit, as the mock enforces it.
#[derive(Debug)]
pub enum Meter {
    MinuteBucket(MinuteBucket),
    Strict(Window, SecondBucket),
}

impl Meter {
    pub fn new(enforcement: Enforcement, amount: u64, now: Instant) -> Self {
        match enforcement {
            Enforcement::MinuteBucket => Meter::MinuteBucket(MinuteBucket::new(amount, now)),
            Enforcement::Strict => {
                Meter::Strict(Window::new(amount), SecondBucket::new(amount, now))
            }
        }
    }

    /// How long until `units` fit (zero if they do now).
    pub fn wait_for(&mut self, now: Instant, units: u64) -> Duration {
        match self {
            Meter::MinuteBucket(b) => {
                b.refill(now);
                b.wait_for(units)
            }
            Meter::Strict(w, b) => {
                b.refill(now);
                w.prune(now);
                w.wait_for(now, units).max(b.wait_for(units))
            }
        }
    }

    /// Counts `units` for admission `id` (after `wait_for` said zero).
    pub fn take(&mut self, now: Instant, id: u64, units: u64) {
        match self {
            Meter::MinuteBucket(b) => b.take(units),
            Meter::Strict(w, b) => {
                w.take(now, id, units);
                b.take(id, units);
            }
        }
    }

    /// Gives back `units` of admission `id`: the call used less than was counted.
    pub fn give_back(&mut self, now: Instant, id: u64, units: u64) {
        match self {
            Meter::MinuteBucket(b) => {
                b.refill(now);
                b.give_back(units);
            }
            Meter::Strict(w, b) => {
                b.refill(now);
                w.prune(now);
                w.give_back(id, units);
                b.give_back(id, units);
            }
        }
    }

    /// What the provider reports as remaining: units that fit the per-minute limit now (the
    /// bucket's level, or the window's room).
    pub fn remaining(&mut self, now: Instant) -> u64 {
        match self {
            Meter::MinuteBucket(b) => {
                b.refill(now);
                b.remaining()
            }
            Meter::Strict(w, b) => {
                b.refill(now);
                w.prune(now);
                w.amount.saturating_sub(w.sum)
            }
        }
    }

    /// Until the limit is back to its initial state.
    pub fn reset(&mut self, now: Instant) -> Duration {
        match self {
            Meter::MinuteBucket(b) => {
                b.refill(now);
                b.reset()
            }
            Meter::Strict(w, b) => {
                b.refill(now);
                w.prune(now);
                w.reset(now).max(b.reset())
            }
        }
    }
}

/// A token bucket of `amount` a minute, capacity `amount`. The level is kept in units x
/// period-nanoseconds, so a refill of `dt` ns adds `dt * amount`.
#[derive(Debug)]
pub struct MinuteBucket {
    amount: u128,
    period: u128,
    /// units * period, at most amount * period.
    level: u128,
    last: Instant,
}

impl MinuteBucket {
    fn new(amount: u64, now: Instant) -> Self {
        let period = MINUTE.as_nanos();
        Self {
            amount: amount.into(),
            period,
            level: u128::from(amount) * period,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos();
        self.level = (self.level + dt * self.amount).min(self.amount * self.period);
        self.last = now;
    }

    fn wait_for(&self, units: u64) -> Duration {
        let need = u128::from(units) * self.period;
        if need <= self.level {
            return Duration::ZERO;
        }
        Duration::from_nanos(((need - self.level).div_ceil(self.amount)) as u64)
    }

    fn take(&mut self, units: u64) {
        self.level -= u128::from(units) * self.period;
    }

    fn give_back(&mut self, units: u64) {
        self.level = (self.level + u128::from(units) * self.period).min(self.amount * self.period);
    }

    fn remaining(&self) -> u64 {
        (self.level / self.period) as u64
    }

    fn reset(&self) -> Duration {
        let missing = self.amount * self.period - self.level;
        Duration::from_nanos(missing.div_ceil(self.amount) as u64)
    }
}

/// At most `amount` in any 60 s: an admission at `t` counts while `now < t + 60 s`.
#[derive(Debug)]
pub struct Window {
    amount: u64,
    entries: VecDeque<(Instant, u64, u64)>,
    sum: u64,
}

impl Window {
    fn new(amount: u64) -> Self {
        Self {
            amount,
            entries: VecDeque::new(),
            sum: 0,
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(t, _, units)) = self.entries.front() {
            if t + MINUTE > now {
                break;
            }
            self.sum -= units;
            self.entries.pop_front();
        }
    }

    fn wait_for(&self, now: Instant, units: u64) -> Duration {
        if self.sum + units <= self.amount {
            return Duration::ZERO;
        }
        // The oldest admissions leave until the rest and `units` fit.
        let mut left = self.sum;
        for &(t, _, u) in &self.entries {
            left -= u;
            if left + units <= self.amount {
                return (t + MINUTE).saturating_duration_since(now);
            }
        }
        MINUTE
    }

    fn take(&mut self, now: Instant, id: u64, units: u64) {
        self.entries.push_back((now, id, units));
        self.sum += units;
    }

    fn give_back(&mut self, id: u64, units: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.1 == id) {
            let back = units.min(entry.2);
            entry.2 -= back;
            self.sum -= back;
        }
    }

    fn reset(&self, now: Instant) -> Duration {
        self.entries
            .iter()
            .rev()
            .find(|e| e.2 > 0)
            .map_or(Duration::ZERO, |&(t, _, _)| {
                (t + MINUTE).saturating_duration_since(now)
            })
    }
}

/// A bucket holding `amount / 60` that refills at `amount / 60` a second, in units x 60 s
/// (exact: a nanosecond refills `amount` of them, the capacity is `amount * 1e9`). It keeps the
/// water it holds as a queue on one axis: `filled` counts all ever poured in (less what was
/// given back), `drained` all ever drained; the bucket holds `filled - drained` (its debt when
/// above the capacity).
#[derive(Debug)]
pub struct SecondBucket {
    amount: i128,
    capacity: i128,
    filled: i128,
    drained: i128,
    /// Everything given back so far.
    returned: i128,
    /// Per admission: where its water ends on the axis, `returned` then, and its size.
    marks: BTreeMap<u64, (i128, i128, i128)>,
    last: Instant,
}

impl SecondBucket {
    fn new(amount: u64, now: Instant) -> Self {
        let amount = i128::from(amount);
        Self {
            amount,
            capacity: amount * PERIOD_NS / 60,
            filled: 0,
            drained: 0,
            returned: 0,
            marks: BTreeMap::new(),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos() as i128;
        self.drained = (self.drained + dt * self.amount).min(self.filled);
        self.last = now;
    }

    fn held(&self) -> i128 {
        self.filled - self.drained
    }

    fn wait_for(&self, units: u64) -> Duration {
        let need = i128::from(units) * PERIOD_NS;
        let over = if need > self.capacity {
            // Larger than the bucket: when it is full (holds nothing).
            self.held()
        } else {
            self.held() + need - self.capacity
        };
        if over <= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos((over + self.amount - 1).div_euclid(self.amount) as u64)
        }
    }

    fn take(&mut self, id: u64, units: u64) {
        let size = i128::from(units) * PERIOD_NS;
        self.filled += size;
        self.marks.insert(id, (self.filled, self.returned, size));
    }

    fn give_back(&mut self, id: u64, units: u64) {
        let Some((end, returned_then, size)) = self.marks.remove(&id) else {
            return;
        };
        // Everything given back since moved this admission's water forward (or, for later
        // admissions, makes it look so: never more generous than the exact queue).
        let end = end - (self.returned - returned_then);
        let still_held = (end - self.drained).clamp(0, size);
        let back = (i128::from(units) * PERIOD_NS).min(still_held);
        self.filled -= back;
        self.returned += back;
    }

    fn reset(&self) -> Duration {
        Duration::from_nanos((self.held().max(0) + self.amount - 1).div_euclid(self.amount) as u64)
    }
}

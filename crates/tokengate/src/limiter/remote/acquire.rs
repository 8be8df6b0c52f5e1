//! An acquisition on the store: one ask that reserves the request at its instant (or says
//! why not), a sleep on tokio's timer until then, and a permit holding the reservation. A
//! request admissible only beyond the horizon keeps its place in line and asks again shortly
//! before its instant. A full in-flight cap, which has no known wait, is asked again after a
//! backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::super::keys::KeyNames;
use super::super::{Limiter, Permit};
use super::driver;
use super::held::{Pending, Places};
use super::{Held, StoreLink};
use crate::clock::Clock;
use crate::cost::Cost;
use crate::dimension::Dimension;
use crate::error::AcquireError;
use crate::store::{Answer, Ask, Refusal, StoreBudget, StoreError};

/// How far ahead a request is reserved: one admissible later is told its instant, keeps its
/// place in line, and asks again [`HORIZON`]` / 2` before it (see [`crate::store`],
/// "Reserving ahead"). Well above a round trip to a loaded Redis, well below an LLM call.
pub(in crate::limiter) const HORIZON: Duration = Duration::from_millis(250);

/// The first wait before asking again for an in-flight slot; each next one doubles, up to
/// [`LAST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LAST_BACKOFF: Duration = Duration::from_secs(1);

impl<C: Clock> Limiter<C> {
    /// Acquires `cost` on `key`'s store budgets (the limiter's own for `None`), waiting at
    /// most `timeout` (the longest pause without one): see [`Limiter::with_store`].
    pub(in crate::limiter) async fn acquire_remote<'a>(
        &'a self,
        link: &'a StoreLink<C>,
        key: Option<Arc<KeyNames>>,
        cost: Cost,
        timeout: Option<Duration>,
    ) -> Result<Permit<'a, C>, AcquireError> {
        {
            let Ok(handle) = Handle::try_current() else {
                return Err(AcquireError::Store {
                    message: "a store-backed limiter waits on tokio's timer: await its \
                              acquisitions inside a tokio runtime, or use `acquire_blocking` \
                              outside one"
                        .into(),
                });
            };
            let started = Instant::now();
            let (max_pause, lease) = {
                let st = self.lock();
                (st.max_pause, st.store.lease)
            };
            let (store, route) = link.route(key.as_deref())?;
            // Where the calls that outlive this one run: its settlement, renewals, places.
            let handle = driver::spawner(&*store).unwrap_or(handle);
            if route.budgets.is_empty() {
                // No budget limits this key (a config without `[account]`, a model it passes):
                // nothing to ask.
                let now = self.shared.clock.now();
                return Ok(Permit::held(self, cost, now, Held::Unlimited));
            }
            let limit = timeout.unwrap_or(Duration::from_nanos(max_pause));
            let deadline = started.checked_add(limit);
            let mut polls = 0;
            let mut places = Places::new(
                Arc::clone(&store),
                Arc::clone(&link.counters),
                handle.clone(),
            );
            loop {
                let left = deadline.map_or(limit, |d| d.saturating_duration_since(Instant::now()));
                link.counters.call();
                let held = places.list();
                // Where a cap may be full: a mark, so that a slot freed after this ask wakes the
                // wait for one.
                let marks: Vec<u64> = route
                    .budgets
                    .iter()
                    .map(|b| match b.policy().max_in_flight() {
                        Some(_) => store.release_mark(b),
                        None => 0,
                    })
                    .collect();
                let ask = Ask::new(&route.budgets, &cost)
                    .max_wait(left)
                    .horizon(HORIZON)
                    .placed(&held);
                match store.acquire(ask).await {
                    Ok(Answer::Reserved(reservation)) => {
                        places.keep();
                        let wait = reservation.wait();
                        let counters = Arc::clone(&link.counters);
                        let pending = Pending::new(store, counters, reservation, handle);
                        if !wait.is_zero() {
                            // Dropped here, `pending` cancels the reservation.
                            tokio::time::sleep(wait).await;
                        }
                        let held = pending.hold(lease / 3);
                        let now = self.shared.clock.now();
                        return Ok(Permit::held(self, cost, now, held));
                    }
                    Ok(Answer::Refused(Refusal::Ahead {
                        wait,
                        budget,
                        place,
                    })) => {
                        // Its place in line is kept: back shortly before its instant. (Dropped
                        // meanwhile, `places` gives it back.)
                        if let Some(b) = route.budgets.get(budget) {
                            places.add(budget, b.clone(), place);
                        }
                        tokio::time::sleep(wait.saturating_sub(HORIZON / 2)).await;
                    }
                    Ok(Answer::Refused(Refusal::InFlightFull { budget })) if !left.is_zero() => {
                        // Until a slot comes back (the store may say so), at most the backoff.
                        let nth = link.counters.polled();
                        let most = backoff(polls, nth).min(left);
                        match route.budgets.get(budget) {
                            Some(b) => {
                                let mark = marks.get(budget).copied().unwrap_or(0);
                                let _ = tokio::time::timeout(most, store.released(b, mark)).await;
                            }
                            None => tokio::time::sleep(most).await,
                        }
                        polls += 1;
                    }
                    Ok(Answer::Refused(refusal)) => {
                        return Err(timeout_error(&route.budgets, refusal, &cost, limit));
                    }
                    Err(StoreError::Refused(never)) => return Err(never),
                    Err(error @ StoreError::Backend(_)) => {
                        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
                        return self.fall_back(link, key, cost, left, error).await;
                    }
                    Err(error) => {
                        link.counters.failed("acquire", &error, None);
                        return Err(AcquireError::Store {
                            message: error.to_string(),
                        });
                    }
                }
            }
        }
    }
}

/// The wait before the `polls`th ask again: 10 ms doubling to 1 s, the upper half of it
/// drawn from `nth` (a SplitMix64 step), so waiters polling together spread apart.
fn backoff(polls: u32, nth: u64) -> Duration {
    let step = FIRST_BACKOFF
        .saturating_mul(1 << polls.min(16))
        .min(LAST_BACKOFF);
    let mut z = nth.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let half = step / 2;
    let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos((z ^ (z >> 31)) % jitter_ns)
}

/// The error of a request the store refused within `timeout`, as the in-memory limiter
/// words it.
fn timeout_error(
    budgets: &[StoreBudget],
    refusal: Refusal,
    cost: &Cost,
    timeout: Duration,
) -> AcquireError {
    match refusal {
        Refusal::Paused { wait, .. } => AcquireError::Paused { wait, timeout },
        // Behind earlier reservations, as a waiter behind others in memory; how many the
        // store does not say: at least one.
        Refusal::Queued { .. } => AcquireError::QueueTimeout {
            waiters_ahead: 1,
            timeout,
        },
        Refusal::Wait {
            wait,
            budget,
            limit,
        } => {
            let held_by = budgets
                .get(budget)
                .and_then(|b| b.policy().limits.get(limit));
            AcquireError::Timeout {
                dimension: held_by.map_or(Dimension::Requests, |l| l.dimension.clone()),
                cost: held_by.map_or(cost.requests(), |l| {
                    l.measure.amount(cost).unwrap_or(u64::MAX)
                }),
                wait: Some(wait),
                timeout,
            }
        }
        // (Never here: the loop asks again.)
        Refusal::Ahead { .. } => AcquireError::QueueTimeout {
            waiters_ahead: 1,
            timeout,
        },
        Refusal::InFlightFull { .. } => AcquireError::Timeout {
            dimension: Dimension::InFlight,
            cost: 1,
            wait: None,
            timeout,
        },
    }
}

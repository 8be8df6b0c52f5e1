//! The loom model of the in-memory limiter: callers deciding in the lock-free lane
//! (`try_acquire`, `try_admit`, dropping a permit) and a blocking waiter that closes it race with callers under the mutex (`stats`, `settle`,
//! `pause`, denials), and loom runs every interleaving of their atomic operations. In each, no unit and
//! no in-flight slot is lost or counted twice, and the counters add up.
//!
//! Only built with `--cfg loom` (tokengate then runs on loom's mutex and atomics):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p tokengate-loom --release --target-dir target/loom
//! ```
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

use tokengate::{Algorithm, Cost, Denied, Dimension, Limit, Limiter, ManualClock, Policy, Usage};

/// `amount` a minute, all of it at once (the clock never moves in these models).
fn bucket(amount: u64) -> Limit {
    Limit::per_minute(amount).algorithm(Algorithm::TokenBucket)
}

/// A limiter of `amount` requests a minute (a bucket: it fits the lane), with an in-flight cap
/// if given, on a manual clock.
fn requests(amount: u64, max_in_flight: Option<u64>) -> Limiter<ManualClock> {
    let mut policy = Policy::builder().limit(Dimension::Requests, bucket(amount));
    if let Some(cap) = max_in_flight {
        policy = policy.max_in_flight(cap);
    }
    Limiter::with_clock(policy.build().unwrap(), ManualClock::new())
}

/// Two callers race for one unit while a third party takes the lock (reads stats): exactly
/// one is admitted, the other is denied, and the stats say so.
#[test]
fn racing_callers_take_the_last_unit_once() {
    loom::model(|| {
        let limiter = requests(1, None);
        let admitted = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (limiter, admitted) = (limiter.clone(), Arc::clone(&admitted));
                thread::spawn(move || {
                    if let Ok(permit) = limiter.try_acquire(Cost::request()) {
                        admitted.fetch_add(1, SeqCst);
                        drop(permit);
                    }
                })
            })
            .collect();
        let during = limiter.stats();
        assert!(during.admitted <= 1 && during.limits[0].used <= 1);
        for caller in callers {
            caller.join().unwrap();
        }
        let after = limiter.stats();
        assert_eq!(admitted.load(SeqCst), 1);
        assert_eq!((after.admitted, after.denied), (1, 1));
        assert_eq!((after.limits[0].used, after.limits[0].charged), (1, 1));
    });
}

/// An in-flight cap of one: two callers acquire and drop permits (in the lane or under the
/// lock) while a third reads stats. Never two permits at once, every slot comes back, and
/// the admissions counted are the ones made.
#[test]
fn in_flight_slots_are_never_shared_or_lost() {
    loom::model(|| {
        let limiter = requests(100, Some(1));
        let held = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicU64::new(0));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (limiter, held, admitted) =
                    (limiter.clone(), Arc::clone(&held), Arc::clone(&admitted));
                thread::spawn(move || {
                    if let Ok(permit) = limiter.try_acquire(Cost::request()) {
                        assert_eq!(held.fetch_add(1, SeqCst), 0, "two permits at once");
                        admitted.fetch_add(1, SeqCst);
                        held.fetch_sub(1, SeqCst);
                        drop(permit);
                    }
                })
            })
            .collect();
        assert!(limiter.stats().in_flight <= 1);
        for caller in callers {
            caller.join().unwrap();
        }
        let after = limiter.stats();
        let admitted = admitted.load(SeqCst);
        assert!(admitted >= 1);
        assert_eq!(after.in_flight, 0);
        assert_eq!(after.admitted, admitted);
        assert_eq!(after.limits[0].used, admitted);
        // The slot is free again, in whichever place holds the state now.
        assert!(limiter.try_acquire(Cost::request()).is_ok());
    });
}

/// A settlement (under the lock) races with an admission (in the lane): the refund and the
/// charge both land, whichever comes first.
#[test]
fn settlements_and_admissions_both_land() {
    loom::model(|| {
        let policy = Policy::builder()
            .limit(Dimension::OutputTokens, bucket(10))
            .build()
            .unwrap();
        let limiter = Limiter::with_clock(policy, ManualClock::new());
        let first = limiter
            .try_acquire(Cost::request().output(6))
            .unwrap()
            .into_owned();
        let settler = thread::spawn(move || first.settle(Usage::new().output(2)));
        let other = limiter.clone();
        let caller = thread::spawn(move || other.try_acquire(Cost::request().output(6)).is_ok());
        settler.join().unwrap();
        let second = caller.join().unwrap();
        let after = limiter.stats();
        // 6 reserved, 2 used: 4 refunded. The second fits only after the refund.
        let expected = 2 + if second { 6 } else { 0 };
        assert_eq!(after.limits[0].used, expected);
        assert_eq!(after.limits[0].refunded, 4);
        assert_eq!(after.limits[0].charged, 6 + if second { 6 } else { 0 });
        assert_eq!(after.admitted, 1 + u64::from(second));
        assert_eq!(after.denied, u64::from(!second));
    });
}

/// A pause (a 429's retry-after, set under the lock) races with an admission in the lane: the
/// admission lands before the pause or is denied by it, and once `pause` has returned the lane
/// admits nothing until the pause ends.
#[test]
fn a_pause_reaches_the_lane() {
    loom::model(|| {
        let limiter = requests(100, None);
        let other = limiter.clone();
        let caller = thread::spawn(move || match other.try_acquire(Cost::request()) {
            Ok(_) => true,
            Err(Denied::Paused { .. }) => false,
            Err(e) => panic!("denied for another reason: {e}"),
        });
        limiter.pause(Duration::from_secs(1));
        assert!(matches!(
            limiter.try_acquire(Cost::request()),
            Err(Denied::Paused { .. })
        ));
        let admitted = caller.join().unwrap();
        let after = limiter.stats();
        assert_eq!(after.admitted, u64::from(admitted));
        assert_eq!(after.limits[0].used, u64::from(admitted));
    });
}

/// `try_admit` (no permit) races with a permit held and dropped, under an in-flight cap of
/// one, while a third party takes the lock: it is admitted or denied for the full cap only,
/// it never holds a slot afterwards, and every admission is counted once.
#[test]
fn try_admit_checks_the_cap_and_holds_no_slot() {
    loom::model(|| {
        let limiter = requests(100, Some(1));
        let holder = limiter.clone();
        let holding = thread::spawn(move || {
            let permit = holder.try_acquire(Cost::request());
            let held = permit.is_ok();
            drop(permit);
            held
        });
        let other = limiter.clone();
        let admitting = thread::spawn(move || match other.try_admit(Cost::request()) {
            Ok(()) => true,
            Err(Denied::InFlightFull { max: 1 }) => false,
            Err(e) => panic!("denied for another reason: {e}"),
        });
        assert!(limiter.stats().in_flight <= 1);
        let held = holding.join().unwrap();
        let admitted = admitting.join().unwrap();
        // At least one of them got the only slot; the other found it taken or free.
        assert!(held || admitted);
        let after = limiter.stats();
        assert_eq!(after.in_flight, 0);
        assert_eq!(after.admitted, u64::from(held) + u64::from(admitted));
        assert_eq!(after.limits[0].used, after.admitted);
        assert_eq!(after.denied, u64::from(!held) + u64::from(!admitted));
        // Nothing holds the slot now: another admission finds it free.
        assert!(limiter.try_admit(Cost::request()).is_ok());
    });
}

/// A blocking waiter closes the lane (nobody may overtake it) and its admission opens it
/// again, while the main thread tries the lane (finding it open, closed, or told open by a hint
/// not yet cleared): under an in-flight cap of one, the try is denied for the full cap or for
/// the waiter ahead, the held permit's drop serves the waiter, nothing is counted twice, and
/// no thread is left parked (loom reports a deadlock otherwise).
#[test]
fn a_waiter_closes_the_lane_and_its_admission_reopens_it() {
    // The mutex holder waits out a caller inside the lane by spinning, one loom branch a spin:
    // this model's paths are long enough to pass loom's default bound of 1,000.
    let mut model = loom::model::Builder::new();
    model.max_branches = 20_000;
    model.check(|| {
        let limiter = requests(100, Some(1));
        let first = limiter.try_acquire(Cost::request()).unwrap();
        let waiter = limiter.clone();
        let waiting = thread::spawn(move || {
            let permit = waiter.acquire_blocking(Cost::request()).unwrap();
            drop(permit);
        });
        match limiter.try_acquire(Cost::request()) {
            Err(Denied::InFlightFull { max: 1 } | Denied::WaitersAhead { waiters: 1 }) => {}
            other => panic!("admitted past the cap or the waiter: {other:?}"),
        }
        drop(first);
        waiting.join().unwrap();
        let after = limiter.stats();
        assert_eq!((after.in_flight, after.waiters), (0, 0));
        assert_eq!((after.admitted, after.denied), (2, 1));
        assert_eq!(after.limits[0].used, 2);
        // Nobody waits now: the lane is open again, and admits.
        assert!(limiter.try_acquire(Cost::request()).is_ok());
    });
}

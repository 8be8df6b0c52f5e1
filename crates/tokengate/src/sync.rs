//! The synchronization primitives of the in-memory limiter: std's, or loom's when the crate is
//! built with `--cfg loom`, so that the loom model (`crates/tokengate-loom/tests/lane.rs`) can
//! explore every interleaving of the lock and the lock-free lane.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

pub(crate) use std::sync::atomic::Ordering;

// Parking a thread, for the blocking front end: a waiter parks until a permit, a settlement
// or its timer serves it, and loom must see the park to model waiters closing the lane.
#[cfg(loom)]
pub(crate) use loom::thread::{current, park, Thread};
#[cfg(not(loom))]
pub(crate) use std::thread::{current, park, park_timeout, Thread};

/// Parks for at most `timeout`. Loom has no timed park; a wake-up with nothing to do is
/// allowed to any park, so under loom it lets the other threads run and returns.
#[cfg(loom)]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    loom::thread::yield_now();
}

/// One step of a short wait for a holder that is running (on another core): a pause
/// instruction, or under loom a yield so the model lets the holder run.
#[inline]
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A short delay of `n` pause instructions, before a waiter looks again. Under loom nothing:
/// a delay synchronises nothing, and the model already tries every interleaving.
#[inline]
pub(crate) fn spin_for(n: u32) {
    #[cfg(loom)]
    let _ = n;
    #[cfg(not(loom))]
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// One step of a longer wait: lets another thread run (the holder may have been preempted).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

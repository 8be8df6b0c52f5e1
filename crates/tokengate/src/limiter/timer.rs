//! The head's timer, owned by the limiter so that it can be handed from waiter to waiter.
//!
//! When a waiter is admitted and the next one must wait until an instant, the admitting side
//! sets this one timer for that instant with the next waiter's waker, instead of waking the
//! next waiter only for it to set a timer of its own. So a waiter sleeps once and is woken
//! once, when it is admitted.

#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::pin::Pin;
#[cfg(feature = "tokio")]
use std::task::Context;
use std::task::Waker;
#[cfg(feature = "tokio")]
use std::time::Duration;

use crate::core::Nanos;

#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub(crate) struct HeadTimer {
    /// The timer, and the runtime it belongs to: it is only ever set or polled from a task of
    /// that runtime, so a limiter shared by several runtimes never touches another's timer.
    sleep: Option<(tokio::runtime::Id, Pin<Box<tokio::time::Sleep>>)>,
    /// The waiter and instant the timer is set for.
    armed: Option<(u64, Nanos)>,
}

#[cfg(feature = "tokio")]
impl HeadTimer {
    /// Sets the timer to wake `waker` (of waiter `id`, polled on the runtime tagged `owner`)
    /// at `until`, `until - now` from now on tokio's clock. Returns false when this thread is
    /// not in the waiter's own runtime (or in none, or the waiter has none): a timer of another
    /// runtime might never be driven, so the waiter must arrange its own wake-up.
    pub(crate) fn arm(
        &mut self,
        id: u64,
        owner: RuntimeTag,
        now: Nanos,
        until: Nanos,
        waker: &Waker,
    ) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if owner == NO_RUNTIME || owner != tag_of(runtime.id()) {
            return false;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_nanos(until.saturating_sub(now));
        let sleep = match &mut self.sleep {
            Some((owner, sleep)) if *owner == runtime.id() => {
                // Also reset a timer that fired while the limiter's clock had not reached
                // `until` (a clock other than tokio's): it sleeps the remaining time again.
                if self.armed != Some((id, until)) || sleep.is_elapsed() {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            slot => {
                &mut slot
                    .insert((runtime.id(), Box::pin(tokio::time::sleep_until(deadline))))
                    .1
            }
        };
        self.armed = Some((id, until));
        if sleep
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
        {
            // Already due on tokio's clock: wake the waiter now.
            self.armed = None;
            waker.wake_by_ref();
        }
        true
    }

    /// Stops the timer from firing (no waiter needs it).
    pub(crate) fn disarm(&mut self) {
        if self.armed.take().is_some() {
            let here = tokio::runtime::Handle::try_current().map(|h| h.id()).ok();
            match &mut self.sleep {
                // Far ahead rather than dropped, so the allocation is reused.
                Some((owner, sleep)) if Some(*owner) == here => {
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
                }
                // Not ours to touch from here: drop it, which cancels it.
                _ => self.sleep = None,
            }
        }
    }
}

/// Which tokio runtime a waiter is polled on, folded to 32 bits (entries stay small); a clash
/// of two runtimes' tags would only let one arm a timer the other drives, as before tags.
pub(crate) type RuntimeTag = u32;

/// The tag of a waiter polled outside any tokio runtime (a blocking waiter).
pub(crate) const NO_RUNTIME: RuntimeTag = 0;

#[cfg(feature = "tokio")]
fn tag_of(id: tokio::runtime::Id) -> RuntimeTag {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    let v = h.finish();
    // Never NO_RUNTIME.
    (((v >> 32) ^ v) as u32).max(1)
}

/// The tag of the runtime this thread is in, if any.
pub(crate) fn current_runtime() -> RuntimeTag {
    #[cfg(feature = "tokio")]
    {
        tokio::runtime::Handle::try_current().map_or(NO_RUNTIME, |h| tag_of(h.id()))
    }
    #[cfg(not(feature = "tokio"))]
    {
        NO_RUNTIME
    }
}

/// Without tokio there is no timer to share: every waiter wakes itself.
#[cfg(not(feature = "tokio"))]
#[derive(Debug, Default)]
pub(crate) struct HeadTimer {
    _none: (),
}

#[cfg(not(feature = "tokio"))]
impl HeadTimer {
    pub(crate) fn arm(
        &mut self,
        _id: u64,
        _owner: RuntimeTag,
        _now: Nanos,
        _until: Nanos,
        _waker: &Waker,
    ) -> bool {
        false
    }

    pub(crate) fn disarm(&mut self) {}
}

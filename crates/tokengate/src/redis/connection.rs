//! Where a store's calls get their connection, and how a connection that stopped answering
//! is given up for a new one.
//!
//! redis-rs's `ConnectionManager` reconnects when its connection is closed or refused, never
//! when it merely stops answering: a peer that vanished without a reset (a host powered off, a
//! network partition, a middlebox dropping the flow) leaves a socket that accepts writes and
//! never replies, until the kernel gives it up (about 15 minutes of retransmissions; never
//! when something still acknowledges). A store that kept it would fail every call at its
//! deadline for as long. So a connection the store made itself is replaced when a call times
//! out with no reply on that connection since the call was sent: a slow server that still
//! answers other calls keeps its connection, a silent one is given up at the first deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::RedisResult;

/// Makes a new connection (lazily: it connects on its first call). Called on the runtime of
/// the call that needs it.
pub(super) type Make<C> = Box<dyn Fn() -> RedisResult<C> + Send + Sync>;

/// A store's source of connections.
pub(super) enum Link<C> {
    /// The caller's own connection, used as it is.
    Given(C),
    /// A connection the store makes (at its first call, or given made), made anew when it
    /// stops answering.
    Made(Arc<Rotating<C>>),
}

/// A connection lent to one call: which generation it is, to judge it by its outcome.
pub(super) struct Lent<C> {
    pub(super) connection: C,
    generation: u64,
}

/// The current connection (none until a call needs one, and after one was given up) and what
/// is known of its health.
pub(super) struct Rotating<C> {
    make: Make<C>,
    current: Mutex<(Option<C>, u64)>,
    /// The current connection's generation (also in `current`, read without the lock).
    generation: AtomicU64,
    /// When a reply last came on the current connection, in nanoseconds from `base`.
    replied: AtomicU64,
    /// How many connections were given up.
    replaced: AtomicU64,
    base: Instant,
}

impl<C: Clone> Link<C> {
    /// The caller's connection.
    pub(super) fn given(connection: C) -> Self {
        Self::Given(connection)
    }

    /// Connections made by `make`, starting with `first` (`None`: made at the first call).
    pub(super) fn made(first: Option<C>, make: Make<C>) -> Self {
        Self::Made(Arc::new(Rotating {
            make,
            current: Mutex::new((first, 0)),
            generation: AtomicU64::new(0),
            replied: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            base: Instant::now(),
        }))
    }

    /// The connection for one call, made now if there is none.
    ///
    /// # Errors
    /// What making it failed with (no runtime to make it on, most often).
    pub(super) fn lend(&self) -> RedisResult<Lent<C>> {
        match self {
            Self::Given(c) => Ok(Lent {
                connection: c.clone(),
                generation: 0,
            }),
            Self::Made(r) => {
                let mut current = r.lock();
                let connection = match &current.0 {
                    Some(c) => c.clone(),
                    None => {
                        let c = (r.make)()?;
                        current.0 = Some(c.clone());
                        c
                    }
                };
                Ok(Lent {
                    connection,
                    generation: current.1,
                })
            }
        }
    }

    /// A reply came on `lent` (an error reply too: the server answers).
    pub(super) fn replied(&self, lent: &Lent<C>) {
        if let Self::Made(r) = self {
            if r.generation.load(Ordering::Acquire) == lent.generation {
                r.replied.fetch_max(r.since_base(), Ordering::AcqRel);
            }
        }
    }

    /// A call sent on `lent` at `sent` got no reply within its deadline: when nothing else
    /// answered on that connection since `sent`, it is given up and the next call gets a new
    /// one. Returns whether this call replaced it.
    pub(super) fn stalled(&self, lent: &Lent<C>, sent: Instant) -> bool {
        let Self::Made(r) = self else {
            return false;
        };
        let sent = u64::try_from(sent.saturating_duration_since(r.base).as_nanos()).unwrap_or(0);
        let mut current = r.lock();
        if current.1 != lent.generation || r.replied.load(Ordering::Acquire) > sent {
            return false;
        }
        // The next call makes a new one.
        *current = (None, lent.generation + 1);
        // The new connection is judged by calls sent from now on.
        r.replied.store(r.since_base(), Ordering::Release);
        r.generation.store(lent.generation + 1, Ordering::Release);
        r.replaced.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many connections were given up for not answering.
    pub(super) fn replaced(&self) -> u64 {
        match self {
            Self::Given(_) => 0,
            Self::Made(r) => r.replaced.load(Ordering::Relaxed),
        }
    }
}

impl<C> Rotating<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<C>, u64)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn since_base(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counting() -> Link<u32> {
        let made = Arc::new(AtomicU64::new(1));
        Link::made(
            Some(0),
            Box::new(move || Ok(made.fetch_add(1, Ordering::Relaxed) as u32)),
        )
    }

    #[test]
    fn a_silent_connection_is_replaced_once() {
        let link = counting();
        let sent = Instant::now();
        let a = link.lend().unwrap();
        let b = link.lend().unwrap();
        assert!(link.stalled(&a, sent), "nothing answered since it was sent");
        // The other call on the same dead connection finds it replaced already.
        assert!(!link.stalled(&b, sent));
        assert_eq!(link.lend().unwrap().connection, 1);
        assert_eq!(link.replaced(), 1);
    }

    #[test]
    fn a_connection_that_answers_others_is_kept() {
        let link = counting();
        let slow = link.lend().unwrap();
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let quick = link.lend().unwrap();
        link.replied(&quick);
        assert!(!link.stalled(&slow, sent), "a reply came after it was sent");
        assert_eq!(link.lend().unwrap().connection, 0);
        // A call sent after the last reply, and unanswered, gives it up.
        std::thread::sleep(Duration::from_millis(2));
        assert!(link.stalled(&slow, Instant::now()));
        assert_eq!(link.lend().unwrap().connection, 1);
    }

    #[test]
    fn a_reply_on_an_old_connection_does_not_vouch_for_the_new_one() {
        let link = counting();
        let old = link.lend().unwrap();
        assert!(link.stalled(&old, Instant::now()));
        std::thread::sleep(Duration::from_millis(2));
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        link.replied(&old);
        let new = link.lend().unwrap();
        assert!(link.stalled(&new, sent));
    }

    #[test]
    fn a_lazy_connection_is_made_at_the_first_call_and_again_when_it_fails() {
        let made = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&made);
        let link: Link<u32> = Link::made(
            None,
            Box::new(move || match count.fetch_add(1, Ordering::Relaxed) {
                0 => Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "no runtime",
                ))),
                n => Ok(n as u32),
            }),
        );
        assert_eq!(
            made.load(Ordering::Relaxed),
            0,
            "nothing made before a call"
        );
        assert!(link.lend().is_err(), "making it failed: the call fails");
        assert_eq!(link.lend().unwrap().connection, 1, "the next call makes it");
        assert_eq!(link.lend().unwrap().connection, 1, "and keeps it");
    }

    #[test]
    fn a_given_connection_is_never_replaced() {
        let link = Link::given(7u32);
        let lent = link.lend().unwrap();
        assert!(!link.stalled(&lent, Instant::now()));
        assert_eq!(link.lend().unwrap().connection, 7);
        assert_eq!(link.replaced(), 0);
    }
}

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
//!
//! A connection's tasks live on the runtime it was made on. So a connection the store makes
//! is made on a runtime that is always driven, one attempt at a time, whatever its callers do
//! ([`making`](super::making)). A runtime with worker threads may still shut down, and its
//! tasks go with it: every call on the connection would then fail once, and the connection
//! reconnect. So a connection the store made is replaced before its next call when the
//! runtime it was made on is gone; in a child forked while one was being made, a new one is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::RedisResult;

use super::making::{Connecting, Made, Making};

/// Makes a new connection: what connecting takes. Awaited in a task on a runtime that is
/// always driven, whose tasks the connection's then are; one attempt at a time (see
/// [`making`](super::making)).
pub(super) type Make<C> = Box<dyn Fn() -> Connecting<C> + Send + Sync>;

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

/// The current connection (none until a call needs one, and after one was given up), with its
/// generation, and what is known of its health.
pub(super) struct Rotating<C> {
    make: Make<C>,
    current: Mutex<(Arc<Making<C>>, u64)>,
    /// The current connection's generation (also in `current`, read without the lock).
    generation: AtomicU64,
    /// When a reply last came on the current connection, in nanoseconds from `base`.
    replied: AtomicU64,
    /// How many connections were given up.
    replaced: AtomicU64,
    base: Instant,
}

impl<C: Clone> Clone for Link<C> {
    fn clone(&self) -> Self {
        match self {
            Self::Given(c) => Self::Given(c.clone()),
            Self::Made(r) => Self::Made(Arc::clone(r)),
        }
    }
}

impl<C: Clone + Send + Sync + 'static> Link<C> {
    /// The caller's connection.
    pub(super) fn given(connection: C) -> Self {
        Self::Given(connection)
    }

    /// Connections made by `make`, starting with `first` (`None`: made at the first call),
    /// which was made on the runtime current now.
    pub(super) fn made(first: Option<C>, make: Make<C>) -> Self {
        Self::starting_with(Arc::new(Making::new(first.map(Made::watched))), make)
    }

    /// Connections made by `make`, starting with one it makes now (as every one is made: see
    /// [`making`](super::making)).
    ///
    /// # Errors
    /// What making it failed with.
    pub(super) async fn connected(make: Make<C>) -> RedisResult<Self> {
        let making = Arc::new(Making::new(None));
        making.made(|| make()).await?;
        Ok(Self::starting_with(making, make))
    }

    fn starting_with(first: Arc<Making<C>>, make: Make<C>) -> Self {
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
    /// What making it failed with (no runtime to make it on, no node of a cluster
    /// answering): the next call tries again.
    pub(super) async fn lend(&self) -> RedisResult<Lent<C>> {
        let mut retried = false;
        match self {
            Self::Given(c) => Ok(Lent {
                connection: c.clone(),
                generation: 0,
            }),
            // (A second connection whose runtime is gone at once, this one shutting down, is
            // lent as it is: the call fails, as it would have.)
            Self::Made(r) => loop {
                let (making, generation) = {
                    let current = r.lock();
                    (Arc::clone(&current.0), current.1)
                };
                let made = match making.get() {
                    Some(made) => made,
                    None if making.forked() => {
                        // Being made in the parent, which this process has none of the tasks
                        // of: a new one. (A connection made there fails its first call here,
                        // and is then replaced as silent.)
                        r.replace(generation);
                        continue;
                    }
                    None => making.made(|| (r.make)()).await?,
                };
                if made.runtime_gone() && !retried {
                    // Its tasks went with its runtime: a new one.
                    r.replace(generation);
                    retried = true;
                    continue;
                }
                return Ok(Lent {
                    connection: made.connection.clone(),
                    generation,
                });
            },
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
        if r.replied.load(Ordering::Acquire) > sent || !r.replace(lent.generation) {
            return false;
        }
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
    fn lock(&self) -> std::sync::MutexGuard<'_, (Arc<Making<C>>, u64)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives up the connection of `generation`, if it is still the current one (else another
    /// call did): the next call makes a new one. Returns whether this call did.
    fn replace(&self, generation: u64) -> bool {
        let mut current = self.lock();
        if current.1 != generation {
            return false;
        }
        *current = (Arc::new(Making::new(None)), generation + 1);
        // The new connection is judged by calls sent from now on.
        self.replied.store(self.since_base(), Ordering::Release);
        self.generation.store(generation + 1, Ordering::Release);
        true
    }

    fn since_base(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::super::making::tests::{alive_tasks_fall_to, multi_thread_runtime};
    use super::*;
    use std::time::Duration;

    fn counting() -> Link<u32> {
        let made = Arc::new(AtomicU64::new(1));
        Link::made(
            Some(0),
            Box::new(move || {
                let n = made.fetch_add(1, Ordering::Relaxed) as u32;
                Box::pin(async move { Ok(n) })
            }),
        )
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    }

    thread_local! {
        /// The test's runtime, which lives as long as its thread.
        static RUNTIME: tokio::runtime::Runtime = runtime();
    }

    /// The connection a call would be lent now.
    fn lend(link: &Link<u32>) -> RedisResult<Lent<u32>> {
        RUNTIME.with(|runtime| runtime.block_on(link.lend()))
    }

    #[test]
    fn a_silent_connection_is_replaced_once() {
        let link = counting();
        let sent = Instant::now();
        let a = lend(&link).unwrap();
        let b = lend(&link).unwrap();
        assert!(link.stalled(&a, sent), "nothing answered since it was sent");
        // The other call on the same dead connection finds it replaced already.
        assert!(!link.stalled(&b, sent));
        assert_eq!(lend(&link).unwrap().connection, 1);
        assert_eq!(link.replaced(), 1);
    }

    #[test]
    fn a_connection_that_answers_others_is_kept() {
        let link = counting();
        let slow = lend(&link).unwrap();
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let quick = lend(&link).unwrap();
        link.replied(&quick);
        assert!(!link.stalled(&slow, sent), "a reply came after it was sent");
        assert_eq!(lend(&link).unwrap().connection, 0);
        // A call sent after the last reply, and unanswered, gives it up.
        std::thread::sleep(Duration::from_millis(2));
        assert!(link.stalled(&slow, Instant::now()));
        assert_eq!(lend(&link).unwrap().connection, 1);
    }

    #[test]
    fn a_reply_on_an_old_connection_does_not_vouch_for_the_new_one() {
        let link = counting();
        let old = lend(&link).unwrap();
        assert!(link.stalled(&old, Instant::now()));
        std::thread::sleep(Duration::from_millis(2));
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        link.replied(&old);
        let new = lend(&link).unwrap();
        assert!(link.stalled(&new, sent));
    }

    #[test]
    fn a_lazy_connection_is_made_at_the_first_call_and_again_when_it_fails() {
        let made = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&made);
        let link: Link<u32> = Link::made(
            None,
            Box::new(move || {
                let made = match count.fetch_add(1, Ordering::Relaxed) {
                    0 => Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "no runtime",
                    ))),
                    n => Ok(n as u32),
                };
                Box::pin(async move { made })
            }),
        );
        assert_eq!(
            made.load(Ordering::Relaxed),
            0,
            "nothing made before a call"
        );
        assert!(lend(&link).is_err(), "making it failed: the call fails");
        assert_eq!(lend(&link).unwrap().connection, 1, "the next call makes it");
        assert_eq!(lend(&link).unwrap().connection, 1, "and keeps it");
    }

    #[test]
    fn a_connection_made_on_a_runtime_since_shut_down_is_replaced_before_its_next_call() {
        let link = counting();
        let made_on = multi_thread_runtime();
        // The first, made outside any runtime, then one made on `made_on`.
        let first = lend(&link).unwrap();
        assert!(link.stalled(&first, Instant::now()));
        assert_eq!(made_on.block_on(link.lend()).unwrap().connection, 1);
        assert_eq!(lend(&link).unwrap().connection, 1, "its runtime lives");
        drop(made_on);
        assert_eq!(lend(&link).unwrap().connection, 2, "its runtime is gone");
        assert_eq!(lend(&link).unwrap().connection, 2);
        // Not counted as silent.
        assert_eq!(link.replaced(), 1);
    }

    #[test]
    fn a_connection_lent_on_a_current_thread_runtime_is_made_on_the_process_own() {
        let link = counting();
        let first = lend(&link).unwrap();
        assert!(link.stalled(&first, Instant::now()));
        // Made for a call on a current-thread runtime, which may idle between calls, or stop.
        let call = runtime();
        assert_eq!(call.block_on(link.lend()).unwrap().connection, 1);
        assert_eq!(
            call.metrics().num_alive_tasks(),
            0,
            "nothing of it runs there"
        );
        drop(call);
        assert_eq!(
            lend(&link).unwrap().connection,
            1,
            "it outlives that runtime"
        );
    }

    #[test]
    fn a_connection_given_up_leaves_no_task_behind() {
        let link = counting();
        let made_on = multi_thread_runtime();
        for _ in 0..10 {
            let lent = made_on.block_on(link.lend()).unwrap();
            assert!(link.stalled(&lent, Instant::now()));
        }
        // The watches of the ten connections given up end (on the runtime's worker); the
        // current one's stays.
        made_on.block_on(link.lend()).unwrap();
        alive_tasks_fall_to(&made_on, 1);
    }

    #[test]
    fn a_given_connection_is_never_replaced() {
        let link = Link::given(7u32);
        let lent = lend(&link).unwrap();
        assert!(!link.stalled(&lent, Instant::now()));
        assert_eq!(lend(&link).unwrap().connection, 7);
        assert_eq!(link.replaced(), 0);
    }
}

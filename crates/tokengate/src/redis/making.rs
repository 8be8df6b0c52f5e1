//! One connection of the store's (one generation: see [`connection`](super::connection)) and
//! its making: once, by one attempt at a time, in a task on a runtime that is always driven
//! ([`driven`]: the caller's when it has worker threads, else the process's own). redis-rs
//! spawns a connection's tasks, its reconnections included, on the runtime it is made on, and
//! those of one made on a current-thread runtime stop whenever that runtime idles between
//! calls (a store connected in a `block_on` of its own, then used from `acquire_blocking`).
//!
//! A caller waits for the attempt under way within its own deadline, and leaves it running
//! when it leaves: the next call finds the connection made, or waits for the same attempt,
//! rather than start another (a connection that takes longer than one call's deadline to make
//! is still made). However many calls ask while Redis is down, one attempt runs at a time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use redis::RedisResult;
use tokio::sync::Notify;

use crate::store::background::driven;

/// What making a connection takes, not yet started.
pub(super) type Connecting<C> = Pin<Box<dyn Future<Output = RedisResult<C>> + Send>>;

/// A connection the store made, and whether the runtime it was made on has shut down since:
/// a task there holds a guard that says so when dropped, as a runtime drops its tasks when it
/// shuts down (a task that never ran too). The task ends when the connection is dropped.
pub(super) struct Made<C> {
    pub(super) connection: C,
    gone: Arc<AtomicBool>,
    /// Ends the task when dropped.
    _watch: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<C> Made<C> {
    /// `connection`, made on the runtime current now (none: never gone).
    pub(super) fn watched(connection: C) -> Self {
        let gone = Arc::new(AtomicBool::new(false));
        let watch = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (watch, dropped) = tokio::sync::oneshot::channel::<()>();
            let guard = Guard(Arc::clone(&gone));
            drop(runtime.spawn(async move {
                let _guard = guard;
                let _ = dropped.await;
            }));
            watch
        });
        Self {
            connection,
            gone,
            _watch: watch,
        }
    }

    pub(super) fn runtime_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
}

/// Sets its flag when dropped.
struct Guard(Arc<AtomicBool>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A generation's connection: made, or being made, or neither (none asked yet, or the last
/// attempt failed).
pub(super) struct Making<C> {
    made: OnceLock<Made<C>>,
    attempts: Mutex<Attempts>,
    /// Told when an attempt ends.
    ended: Notify,
    /// The process it was made in: a child forked since has none of its tasks.
    pid: u32,
    /// Callers waiting for an attempt to end.
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Attempts {
    /// Whether one is under way.
    running: bool,
    /// How many were started.
    started: u64,
    /// The last that failed, and why.
    failed: Option<(u64, String)>,
}

impl<C: Send + Sync + 'static> Making<C> {
    /// The connection, if made.
    pub(super) fn get(&self) -> Option<&Made<C>> {
        self.made.get()
    }

    /// Whether it belongs to a parent this process was forked from.
    pub(super) fn forked(&self) -> bool {
        self.pid != std::process::id()
    }

    /// The connection: made, or made now by `connect` (called to start an attempt, when none
    /// is under way), or by the attempt under way.
    ///
    /// # Errors
    /// Why the attempt it waited for failed (the next call starts another).
    pub(super) async fn made(
        self: &Arc<Self>,
        connect: impl FnOnce() -> Connecting<C>,
    ) -> RedisResult<&Made<C>> {
        let mut connect = Some(connect);
        // The attempt this call waits for (0: none yet): it returns when that one, or a later
        // one, has failed.
        let mut waited = 0;
        loop {
            if let Some(made) = self.made.get() {
                return Ok(made);
            }
            // (told of any attempt that ends from here on)
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let start = {
                let mut attempts = self.lock();
                if self.made.get().is_some() {
                    continue;
                }
                if let Some((attempt, why)) = &attempts.failed {
                    if waited > 0 && *attempt >= waited {
                        return Err(failed(why));
                    }
                }
                if attempts.running {
                    waited = attempts.started;
                    None
                } else {
                    // (this call's own attempt, if it started one, has ended: failed, above)
                    let connect = connect.take().ok_or_else(|| failed("no attempt ended"))?;
                    attempts.running = true;
                    attempts.started += 1;
                    waited = attempts.started;
                    Some(connect)
                }
            };
            if let Some(connect) = start {
                // (ended by its guard whatever happens from here: a panic in `connect` too)
                let ending = Ending {
                    making: Arc::clone(self),
                    attempt: waited,
                    outcome: None,
                };
                let connecting = connect();
                match driven() {
                    Some(runtime) => drop(runtime.spawn(ending.run(connecting))),
                    // No runtime of the process's own (no thread could be made): made here,
                    // and ended, failed, should this caller leave.
                    None => ending.run(connecting).await,
                }
            }
            #[cfg(test)]
            let waiting = tests::Counted::new(&self.waiting);
            ended.await;
            #[cfg(test)]
            drop(waiting);
        }
    }

    /// Attempt `attempt` ended with `outcome`.
    fn end(&self, attempt: u64, outcome: Result<Made<C>, String>) {
        {
            let mut attempts = self.lock();
            match outcome {
                Ok(made) => {
                    let _ = self.made.set(made);
                }
                Err(why) => attempts.failed = Some((attempt, why)),
            }
            attempts.running = false;
        }
        self.ended.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, Attempts> {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C> Making<C> {
    /// A generation starting with `first`, made (`None`: made when a call asks).
    pub(super) fn new(first: Option<Made<C>>) -> Self {
        let made = OnceLock::new();
        if let Some(first) = first {
            let _ = made.set(first);
        }
        Self {
            made,
            attempts: Mutex::default(),
            ended: Notify::new(),
            pid: std::process::id(),
            #[cfg(test)]
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Ends an attempt however its task ends: with its outcome, or, dropped unfinished (its
/// runtime shut down), as failed.
struct Ending<C: Send + Sync + 'static> {
    making: Arc<Making<C>>,
    attempt: u64,
    outcome: Option<Result<Made<C>, String>>,
}

impl<C: Send + Sync + 'static> Ending<C> {
    /// Runs the attempt, `connecting`, and ends it.
    async fn run(mut self, connecting: Connecting<C>) {
        self.outcome = Some(match connecting.await {
            // (watched from the runtime it was made on: this one)
            Ok(connection) => Ok(Made::watched(connection)),
            Err(e) => Err(e.to_string()),
        });
    }
}

impl<C: Send + Sync + 'static> Drop for Ending<C> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(
                "the attempt to make the connection ended unfinished (its runtime shut down, \
                 or it panicked)"
                    .into(),
            )
        });
        self.making.end(self.attempt, outcome);
    }
}

fn failed(why: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "making a connection to Redis failed",
        why.to_string(),
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A runtime with a worker thread: what is made for a call on it is made on it.
    pub(in crate::redis) fn multi_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// Waits (5 s at most) until `runtime` has `n` tasks alive, and checks that it has.
    pub(in crate::redis) fn alive_tasks_fall_to(runtime: &tokio::runtime::Runtime, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while runtime.metrics().num_alive_tasks() > n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(runtime.metrics().num_alive_tasks(), n);
    }

    /// Connections made once `gate` lets each through (it starts open when `open`), failing
    /// when `fails`, numbered from `first`; counted as they start, with the most under way at
    /// once.
    struct Maker {
        gate: Arc<Semaphore>,
        takes: Duration,
        fails: bool,
        first: u64,
        started: Arc<AtomicU64>,
        running: Arc<AtomicU64>,
        most: Arc<AtomicU64>,
    }

    impl Maker {
        fn new(takes: Duration, fails: bool, first: u64, open: bool) -> Self {
            let permits = if open { Semaphore::MAX_PERMITS } else { 0 };
            Self {
                gate: Arc::new(Semaphore::new(permits)),
                takes,
                fails,
                first,
                started: Arc::default(),
                running: Arc::default(),
                most: Arc::default(),
            }
        }

        fn connect(&self) -> Connecting<u64> {
            let n = self.first + self.started.fetch_add(1, Ordering::SeqCst);
            let (takes, fails, gate) = (self.takes, self.fails, Arc::clone(&self.gate));
            let (running, most) = (Arc::clone(&self.running), Arc::clone(&self.most));
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _pass = gate.acquire().await;
                tokio::time::sleep(takes).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if fails {
                    Err(failed("refused"))
                } else {
                    Ok(n)
                }
            })
        }
    }

    /// Counts one while it lives (a caller waiting, until it returns or leaves).
    pub(super) struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

    impl<'a> Counted<'a> {
        pub(super) fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
            count.fetch_add(1, Ordering::SeqCst);
            Self(count)
        }
    }

    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits (5 s at most) until `making` has `n` callers waiting for an attempt.
    fn until_waiting(making: &Making<u64>, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while making.waiting.load(Ordering::SeqCst) != n {
            assert!(std::time::Instant::now() < deadline, "{n} callers wait");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_caller_that_leaves_leaves_the_attempt_running_for_the_next() {
        let runtime = multi_thread_runtime();
        let making = Arc::new(Making::new(None));
        // Held until the callers below have left.
        let maker = Maker::new(Duration::ZERO, false, 0, false);
        runtime.block_on(async {
            for _ in 0..3 {
                let waited = tokio::time::timeout(
                    Duration::from_millis(20),
                    making.made(|| maker.connect()),
                )
                .await;
                assert!(waited.is_err(), "not made yet");
            }
            maker.gate.add_permits(1);
            let made =
                tokio::time::timeout(Duration::from_secs(5), making.made(|| maker.connect()))
                    .await
                    .expect("made within 5 s")
                    .expect("made");
            assert_eq!(made.connection, 0);
        });
        assert_eq!(maker.started.load(Ordering::SeqCst), 1, "one attempt");
    }

    #[test]
    fn while_making_fails_one_attempt_runs_at_a_time() {
        let runtime = multi_thread_runtime();
        let making = Arc::new(Making::new(None));
        let maker = Maker::new(Duration::from_millis(50), true, 0, true);
        let start = std::time::Instant::now();
        runtime.block_on(async {
            // 200 calls, each waiting 2 ms at most.
            for _ in 0..200 {
                let _ =
                    tokio::time::timeout(Duration::from_millis(2), making.made(|| maker.connect()))
                        .await;
            }
        });
        let elapsed = start.elapsed().as_millis() as u64;
        assert_eq!(maker.most.load(Ordering::SeqCst), 1, "one at a time");
        let started = maker.started.load(Ordering::SeqCst);
        assert!(
            started <= elapsed / 50 + 2,
            "{started} attempts in {elapsed} ms of 50 ms each"
        );
        // None left waiting behind another: the making task ends with its attempt.
        alive_tasks_fall_to(&runtime, 0);
    }

    #[test]
    fn callers_waiting_for_a_failed_attempt_get_its_failure_and_the_next_tries_again() {
        let runtime = multi_thread_runtime();
        let making = Arc::new(Making::new(None));
        let failing = Maker::new(Duration::ZERO, true, 0, false);
        runtime.block_on(async {
            let (starter, waiter) = (Arc::clone(&making), Arc::clone(&making));
            let first = {
                let connecting = failing.connect();
                tokio::spawn(async move { starter.made(|| connecting).await.map(|_| ()) })
            };
            // The second waits for the first's attempt: it starts none of its own.
            let second = tokio::spawn(async move {
                waiter
                    .made(|| Box::pin(std::future::pending()))
                    .await
                    .map(|_| ())
            });
            until_waiting(&making, 2);
            failing.gate.add_permits(1);
            for caller in [first, second] {
                let e = caller.await.expect("a caller").expect_err("failed");
                assert!(e.to_string().contains("refused"), "{e}");
            }
        });
        assert_eq!(failing.started.load(Ordering::SeqCst), 1);
        let working = Maker::new(Duration::ZERO, false, 7, true);
        let made = runtime
            .block_on(making.made(|| working.connect()))
            .expect("made");
        assert_eq!(made.connection, 7, "by the next call's attempt");
    }

    #[test]
    fn callers_racing_attempts_that_fail_at_once_get_their_failure() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let making = Arc::new(Making::new(None));
        let maker = Arc::new(Maker::new(Duration::ZERO, true, 0, true));
        let errors: Vec<String> = runtime.block_on(async {
            let callers: Vec<_> = (0..8)
                .map(|_| {
                    let (making, maker) = (Arc::clone(&making), Arc::clone(&maker));
                    tokio::spawn(async move {
                        let mut errors = Vec::new();
                        for _ in 0..300 {
                            match making.made(|| maker.connect()).await {
                                Ok(_) => errors.push("made".to_string()),
                                Err(e) => errors.push(e.to_string()),
                            }
                        }
                        errors
                    })
                })
                .collect();
            let mut all = Vec::new();
            for caller in callers {
                all.extend(caller.await.expect("a caller"));
            }
            all
        });
        assert_eq!(errors.len(), 2_400);
        for e in &errors {
            assert!(e.contains("refused"), "{e}");
        }
        assert_eq!(maker.most.load(Ordering::SeqCst), 1, "one at a time");
    }

    #[test]
    fn an_attempt_whose_runtime_shuts_down_fails_its_callers() {
        let making = Arc::new(Making::new(None));
        let maker = Maker::new(Duration::ZERO, false, 0, false);
        let runtime = multi_thread_runtime();
        // Started by a call on `runtime` (which leaves at once): the attempt runs there.
        runtime.block_on(async {
            let waited =
                tokio::time::timeout(Duration::from_millis(1), making.made(|| maker.connect()))
                    .await;
            assert!(waited.is_err());
        });
        let waiter = {
            let making = Arc::clone(&making);
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(async {
                        let made = making.made(|| Box::pin(std::future::pending()));
                        tokio::time::timeout(Duration::from_secs(10), made)
                            .await
                            .map(|m| m.map(|_| ()).map_err(|e| e.to_string()))
                    })
            })
        };
        until_waiting(&making, 1);
        drop(runtime);
        let answer = waiter.join().expect("the waiter");
        let why = answer.expect("answered within 10 s").expect_err("failed");
        assert!(why.contains("ended unfinished"), "{why}");
        assert_eq!(maker.started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_attempt_whose_connect_panics_ends() {
        let runtime = multi_thread_runtime();
        let making = Arc::new(Making::new(None));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(making.made(|| panic!("a maker that panics")))
        }));
        assert!(panicked.is_err());
        let maker = Maker::new(Duration::ZERO, false, 3, true);
        let made = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), making.made(|| maker.connect())).await
            })
            .expect("not stuck behind the attempt that panicked")
            .expect("made");
        assert_eq!(made.connection, 3);
    }
}

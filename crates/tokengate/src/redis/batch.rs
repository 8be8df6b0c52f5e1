//! Acquisitions sent together ([`script::acquires`]). An acquisition made while no call of
//! acquisitions is in flight on the store goes at once, alone, as the call it always was.
//! Those made while one is in flight wait for it and then go together in the next call;
//! unless `EARLY` of them wait, which go at once in a second call (never more than `SENDING`
//! in flight). Under load, one call decides many acquisitions: Redis reads and writes each
//! budget's state once for all of them, and runs one call where it would run many. Each
//! caller waits at most the store's deadline, queued or sent.
//!
//! Every call runs on a task of the store's, never in a caller's future: a caller may leave
//! (its call then still ends, and gives back what an answer nobody received took), or stop
//! being polled while others wait behind its call. A slot's task makes its call, then the
//! call of what waited meanwhile, and so on until nothing waits (one task for a run of calls,
//! rather than one spawned for each). The task runs on the caller's runtime when that
//! runtime has worker threads, which drive it whatever its callers do; else on a runtime of
//! the process's own, on a thread of its own (made when first needed, and again in a process
//! forked since): never on a current-thread runtime, which may stop being driven (made for
//! one call, then dropped or left idle) with other callers' acquisitions in its hands. A call
//! whose task is dropped (its runtime shut down) gives its slot back, and what waits goes from
//! the process's own runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::Link;
use super::script::{self, AcquireReply, Batched, Invocation};
use super::store::{backend, release_on, release_on_link, run_on_link, timed_out};
use crate::store::background::{driven, runtime as background};
use crate::store::StoreError;

/// Calls of acquisitions in flight on one store at once.
const SENDING: usize = 2;

/// Acquisitions waiting that go before the call in flight has answered (when fewer wait, they
/// wait for it, and go together).
const EARLY: usize = 8;

/// Acquisitions in one call at most.
const BATCH: usize = 64;

/// The call that gives back a place in line an acquisition took: on its budget `i`, the
/// line from `from` to `to` in epoch `epoch` (an `Ahead` answer's). None for a budget it
/// does not have.
pub(super) type Leave = dyn Fn(usize, u64, u64, u64) -> Option<Invocation> + Send + Sync;

/// What an acquisition may take that must be given back should its answer reach nobody: its
/// in-flight lease (when its cost takes slots), its place in line (when it may be answered
/// `Ahead`). Charges stay: the safe side.
#[derive(Clone, Default)]
pub(super) struct Undo {
    /// The call that ends its lease.
    pub(super) release: Option<Invocation>,
    pub(super) leave: Option<Arc<Leave>>,
}

impl Undo {
    /// The call that gives back what `answer`, received by nobody, took.
    fn unreceived(&self, answer: &AcquireReply) -> Option<Invocation> {
        match *answer {
            AcquireReply::Admitted { .. } => self.release.clone(),
            AcquireReply::Ahead {
                budget,
                from,
                to,
                epoch,
                ..
            } => self.leave.as_ref()?(budget, from, to, epoch),
            _ => None,
        }
    }
}

/// An acquisition waiting to be sent, and where its answer goes.
struct Waiting {
    call: Invocation,
    /// What it takes, given back when its answer is lost.
    undo: Undo,
    answer: oneshot::Sender<Result<AcquireReply, StoreError>>,
    /// When its caller stops waiting.
    deadline: Instant,
}

/// A caller's answer, not yet read: should its caller leave after the answer was sent and
/// before reading it (cancelled, or timed out at that instant), what the answer took is given
/// back, as when its caller left before it was sent (see [`run`]). Exactly one of the two
/// sees it lost: the channel is closed before it is read here.
struct Unread<C: ConnectionLike + Clone + Send + Sync + 'static> {
    receiver: oneshot::Receiver<Result<AcquireReply, StoreError>>,
    /// What it takes, while its answer is unread.
    undo: Option<(Undo, Link<C>, Duration)>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Drop for Unread<C> {
    fn drop(&mut self) {
        let Some((undo, link, timeout)) = self.undo.take() else {
            return;
        };
        self.receiver.close();
        // (an error was answered with its lease already ended: see `run`)
        if let Ok(Ok(answer)) = self.receiver.try_recv() {
            if let Some(call) = undo.unreceived(&answer) {
                release_on_link(link, timeout, call);
            }
        }
    }
}

/// The leases of a call's acquisitions, while the call is in flight: should its task be
/// dropped (its runtime shut down) before their answers are handed out, every one is ended,
/// from the process's own runtime. Their callers get no answer, so none holds the slot.
struct Unanswered<C: ConnectionLike + Clone + Send + Sync + 'static> {
    connection: C,
    timeout: Duration,
    releases: Vec<Option<Invocation>>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Drop for Unanswered<C> {
    fn drop(&mut self) {
        for release in self.releases.drain(..).flatten() {
            release_on(self.connection.clone(), self.timeout, release);
        }
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Calls in flight.
    sending: usize,
    /// The process these were counted in (0: none yet): a child forked since has none of the
    /// parent's calls in flight.
    pid: u32,
}

/// A store's acquisitions on their way to Redis.
#[derive(Default)]
pub(super) struct Batcher {
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// A call in flight, and the task that makes it and then the calls of what waits meanwhile:
/// given back when nothing waits, or when its task is dropped (its runtime shut down),
/// whereupon the acquisitions that wait go from the process's own runtime.
struct Slot<C: ConnectionLike + Clone + Send + Sync + 'static> {
    batcher: Arc<Batcher>,
    link: Link<C>,
    timeout: Duration,
    /// Whether it was given back (else its task was dropped, on a runtime that may be going).
    free: std::cell::Cell<bool>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Drop for Slot<C> {
    fn drop(&mut self) {
        if !self.free.get() {
            self.batcher.dropped(&self.link, self.timeout);
        }
    }
}

impl Batcher {
    /// Sends `call` (an acquisition) alone or with others on `link`, and answers it within
    /// `timeout` of now. `undo` gives back what it takes, sent after it when its answer is
    /// lost (the deadline passed, or its caller left).
    pub(super) async fn acquire<C>(
        self: &Arc<Self>,
        link: &Link<C>,
        timeout: Duration,
        call: Invocation,
        undo: Undo,
    ) -> Result<AcquireReply, StoreError>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let deadline = Instant::now() + timeout;
        let (answer, receiver) = oneshot::channel();
        let mut answered = Unread {
            receiver,
            undo: (undo.release.is_some() || undo.leave.is_some())
                .then(|| (undo.clone(), link.clone(), timeout)),
        };
        let now = {
            let mut queue = self.lock();
            let pid = std::process::id();
            if queue.pid != pid {
                // Made in a parent before a fork: its calls in flight, and their callers, are
                // the parent's (never touched here).
                std::mem::forget(std::mem::take(&mut queue.waiting));
                queue.sending = 0;
                queue.pid = pid;
            }
            queue.waiting.push(Waiting {
                call,
                undo,
                answer,
                deadline,
            });
            let go =
                queue.sending == 0 || (queue.sending < SENDING && queue.waiting.len() >= EARLY);
            go.then(|| {
                queue.sending += 1;
                take(&mut queue, timeout)
            })
        };
        if let Some(batch) = now {
            self.send_away(link, timeout, batch);
        }
        match tokio::time::timeout_at(deadline, &mut answered.receiver).await {
            Ok(Ok(answer)) => {
                answered.undo = None;
                answer
            }
            Ok(Err(_)) => Err(StoreError::Backend(
                "the call to Redis ended without an answer".into(),
            )),
            Err(_) => Err(timed_out(timeout)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call in flight ended: what waits meanwhile goes next in its slot, or (none) the slot
    /// is free.
    fn next(&self, timeout: Duration) -> Option<Vec<Waiting>> {
        let mut queue = self.lock();
        let next = take(&mut queue, timeout);
        if next.is_empty() {
            queue.sending = queue.sending.saturating_sub(1);
            return None;
        }
        Some(next)
    }

    /// The task of a slot was dropped (its runtime shut down): what waits goes, in its slot,
    /// from the process's own runtime (not the one that dropped the task: it may be going).
    fn dropped<C>(self: &Arc<Self>, link: &Link<C>, timeout: Duration)
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        if let Some(next) = self.next(timeout) {
            self.send_from(background(), link, timeout, next);
        }
    }

    /// Sends `batch`, in a slot already taken, from a task of a runtime that drives it
    /// (`driven`).
    fn send_away<C>(self: &Arc<Self>, link: &Link<C>, timeout: Duration, batch: Vec<Waiting>)
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.send_from(driven(), link, timeout, batch);
    }

    fn send_from<C>(
        self: &Arc<Self>,
        runtime: Option<tokio::runtime::Handle>,
        link: &Link<C>,
        timeout: Duration,
        batch: Vec<Waiting>,
    ) where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let Some(runtime) = runtime else {
            // No runtime to send from: they fail (their answers dropped), and so does what
            // waits, until the slot is free.
            drop(batch);
            while self.next(timeout).is_some() {}
            return;
        };
        let slot = Slot {
            batcher: Arc::clone(self),
            link: link.clone(),
            timeout,
            free: std::cell::Cell::new(false),
        };
        // (dropped should its runtime shut down: the slot then sends what waits)
        drop(runtime.spawn(async move {
            let mut batch = batch;
            loop {
                run(&slot.link, slot.timeout, batch).await;
                // The callers just answered ask again at once, most of them: they go in the
                // next call rather than the one after (on their runtime; on another, too late
                // for it).
                tokio::task::yield_now().await;
                // What waits goes next, from this task.
                match slot.batcher.next(slot.timeout) {
                    Some(next) => batch = next,
                    None => break,
                }
            }
            slot.free.set(true);
        }));
    }
}

/// The next batch: the first `BATCH` waiting whose callers still wait. One whose deadline has
/// passed is answered so, not sent: its caller is leaving.
fn take(queue: &mut Queue, timeout: Duration) -> Vec<Waiting> {
    let now = Instant::now();
    let mut batch = Vec::with_capacity(queue.waiting.len().min(BATCH));
    for w in std::mem::take(&mut queue.waiting) {
        if w.answer.is_closed() {
            continue;
        }
        if w.deadline <= now {
            let _ = w.answer.send(Err(timed_out(timeout)));
        } else if batch.len() < BATCH {
            batch.push(w);
        } else {
            queue.waiting.push(w);
        }
    }
    batch
}

/// One call for `batch`, and each its answer.
async fn run<C>(link: &Link<C>, timeout: Duration, mut batch: Vec<Waiting>)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    // The call ends when the last of its callers stops waiting: each of the others leaves at
    // its own deadline (its answer then lost, and its lease ended, below), and one about to
    // leave does not fail the call for all.
    let Some(deadline) = batch.iter().map(|w| w.deadline).max() else {
        return;
    };
    let lent = match tokio::time::timeout_at(deadline, link.lend()).await {
        Ok(Ok(lent)) => lent,
        failed => {
            // No connection: nothing was sent, so nothing to release.
            let e = match failed {
                Ok(Err(e)) => backend(e),
                _ => timed_out(timeout),
            };
            for w in batch {
                let _ = w.answer.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut unanswered = Unanswered {
        connection: lent.connection.clone(),
        timeout,
        releases: batch.iter_mut().map(|w| w.undo.release.take()).collect(),
    };
    let answers: Result<Vec<Result<AcquireReply, StoreError>>, StoreError> = if batch.len() == 1 {
        run_on_link::<C, AcquireReply>(link, deadline, timeout, &lent, &batch[0].call)
            .await
            .map(|a| vec![Ok(a)])
    } else {
        let calls: Vec<&Invocation> = batch.iter().map(|w| &w.call).collect();
        let together = script::acquires(&calls);
        run_on_link::<C, Batched>(link, deadline, timeout, &lent, &together)
            .await
            .and_then(|Batched(answers)| {
                if answers.len() == batch.len() {
                    Ok(answers
                        .into_iter()
                        .map(|a| a.map_err(StoreError::Backend))
                        .collect())
                } else {
                    Err(StoreError::Backend(format!(
                        "Redis answered {} acquisitions of {}",
                        answers.len(),
                        batch.len()
                    )))
                }
            })
    };
    let answers = match answers {
        Ok(answers) => answers,
        Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
    };
    let releases = std::mem::take(&mut unanswered.releases);
    for ((w, answer), release) in batch.into_iter().zip(answers).zip(releases) {
        // An acquisition that failed may have taken its slot (or may still, should a stalled
        // server wake): its lease ends now. One answered for a caller who left keeps its
        // charge (the safe side), and gives back its slot or its place in line. Each by a call
        // sent after it on the same connection (so it runs after the acquisition, if that
        // ever runs), rather than when the lease runs out or the line passes.
        let undo = Undo { release, ..w.undo };
        let failed = answer.is_err();
        let undone = match w.answer.send(answer) {
            Err(Ok(lost)) => undo.unreceived(&lost),
            Err(Err(_)) | Ok(()) if failed => undo.release,
            _ => None,
        };
        if let Some(call) = undone {
            release_on(lent.connection.clone(), timeout, call);
        }
    }
}

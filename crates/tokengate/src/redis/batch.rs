//! Acquisitions sent together ([`script::acquires`]). An acquisition made while no call of
//! acquisitions is in flight on the store goes at once, alone, as the call it always was.
//! Those made while one is in flight wait for its answer and go together in the next call;
//! unless `EARLY` of them wait, which go at once, in a second call (never more than `SENDING`
//! in flight). Under load, one call decides many acquisitions: Redis reads and writes each
//! budget's state once for all of them, and runs one call where it would run many. Each
//! caller waits at most the store's deadline, queued or sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use tokio::sync::oneshot;

use super::connection::Link;
use super::script::{self, AcquireReply, Batched, Invocation};
use super::store::{run_on_link, spawn_release};
use crate::store::StoreError;

/// Calls of acquisitions in flight on one store at once.
const SENDING: usize = 2;

/// Acquisitions waiting that go before the call in flight has answered (when fewer wait, they
/// wait for it, and go together).
const EARLY: usize = 8;

/// Acquisitions in one call at most.
const BATCH: usize = 64;

/// An acquisition waiting to be sent, and where its answer goes.
struct Waiting {
    call: Invocation,
    /// The call that ends its lease, when it takes one and its answer is lost.
    release: Option<Invocation>,
    answer: oneshot::Sender<Result<AcquireReply, StoreError>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Calls in flight.
    sending: usize,
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

impl Batcher {
    /// Sends `call` (an acquisition) alone or with others on `link`, and answers it within
    /// `timeout` of now. `release` ends the lease it takes, sent after it when its answer is
    /// lost (the deadline passed, or its caller left).
    pub(super) async fn acquire<C>(
        self: &Arc<Self>,
        link: &Link<C>,
        timeout: Duration,
        call: Invocation,
        release: Option<Invocation>,
    ) -> Result<AcquireReply, StoreError>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut queue = self.lock();
            queue.waiting.push(Waiting {
                call,
                release,
                answer,
            });
            if queue.sending == 0 || (queue.sending < SENDING && queue.waiting.len() >= EARLY) {
                queue.sending += 1;
                Some(take(&mut queue))
            } else {
                None
            }
        };
        if let Some(batch) = first {
            // On a task of its own: its caller may leave, the others in it may not.
            tokio::spawn(Arc::clone(self).send(link.clone(), timeout, batch));
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(StoreError::Backend(
                "the call to Redis ended without an answer (its runtime shut down)".into(),
            )),
            Err(_) => Err(super::store::timed_out(timeout)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `batch`, then whatever waits meanwhile, until nothing does.
    async fn send<C>(self: Arc<Self>, link: Link<C>, timeout: Duration, mut batch: Vec<Waiting>)
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        loop {
            // Those whose caller left before it was sent go no further.
            batch.retain(|w| !w.answer.is_closed());
            if !batch.is_empty() {
                run(&link, timeout, batch).await;
                // The callers just answered ask again at once, most of them: they go in the
                // next call rather than the one after.
                tokio::task::yield_now().await;
            }
            let mut queue = self.lock();
            if queue.waiting.is_empty() {
                queue.sending -= 1;
                return;
            }
            batch = take(&mut queue);
        }
    }
}

/// The next batch: the first `BATCH` waiting.
fn take(queue: &mut Queue) -> Vec<Waiting> {
    if queue.waiting.len() <= BATCH {
        std::mem::take(&mut queue.waiting)
    } else {
        queue.waiting.drain(..BATCH).collect()
    }
}

/// One call for `batch`, and each its answer.
async fn run<C>(link: &Link<C>, timeout: Duration, batch: Vec<Waiting>)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let lent = match link.lend().await {
        Ok(lent) => lent,
        Err(e) => {
            let e = super::store::backend(e);
            for w in batch {
                let _ = w.answer.send(Err(e.clone()));
            }
            return;
        }
    };
    let answers: Result<Vec<Result<AcquireReply, StoreError>>, StoreError> = if batch.len() == 1 {
        run_on_link::<C, AcquireReply>(link, timeout, &lent, &batch[0].call)
            .await
            .map(|a| vec![Ok(a)])
    } else {
        let calls: Vec<&Invocation> = batch.iter().map(|w| &w.call).collect();
        let together = script::acquires(&calls);
        run_on_link::<C, Batched>(link, timeout, &lent, &together)
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
    match answers {
        Ok(answers) => {
            for (w, answer) in batch.into_iter().zip(answers) {
                if let Err(Ok(AcquireReply::Admitted { .. })) = w.answer.send(answer) {
                    // Admitted for a caller who left: its reservation stays spent (the safe
                    // side), its lease ends now rather than when it runs out.
                    if let Some(release) = w.release {
                        spawn_release(&lent, timeout, release);
                    }
                }
            }
        }
        Err(e) => {
            for w in batch {
                // It may still run, later, when a stalled server wakes: its lease is ended
                // by a call sent after it on the same connection.
                if let Some(release) = w.release {
                    spawn_release(&lent, timeout, release);
                }
                let _ = w.answer.send(Err(e.clone()));
            }
        }
    }
}

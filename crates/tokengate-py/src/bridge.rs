//! Acquisitions awaited by asyncio, their answers carried to the event loop without the GIL.
//!
//! An acquisition that has to wait runs on this process's runtime (`runtime`). When it ends,
//! its task puts the answer in the bridge's inbox and, when the inbox was empty, writes one
//! byte to a socket the event loop watches (`loop.add_reader`); the loop's thread then takes
//! every answer in the inbox at once ([`Bridge::drain`]) and sets the asyncio futures. No
//! thread but the loop's ever asks for the GIL, so an answer never waits for the loop to hand
//! the GIL over (CPython's switch interval is 5 ms), and a burst of answers costs one wake-up.
//!
//! A loop that cannot watch a socket (`add_reader` not implemented, as on Windows' proactor)
//! is woken instead by a Python callable ([`Bridge::wake_with`]) that the runtime calls with
//! the GIL, off its worker thread.
//!
//! Cancelling ([`Bridge::cancel`]) drops the waiting acquisition on the runtime (it leaves the
//! queue, charging nothing) and answers a second future once it is gone. An answer nobody
//! takes any more (its future was cancelled) is dropped, and a permit in it given back.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use tokengate::{AcquireError, Cost, Limiter};
use tokio::sync::oneshot;

use crate::acquire::{self, Admitted, Names};
use crate::{errors, runtime};

/// How an acquisition ended, as its task reports it.
#[derive(Debug)]
enum Answer {
    /// Admitted, or refused with an error.
    Done(Result<Admitted, AcquireError>),
    /// Dropped before it ended: cancelled, or (never expected) its task panicked.
    Dropped,
}

/// How the runtime tells the loop that answers are waiting.
#[derive(Debug)]
enum Wake {
    /// One byte on a socket the loop watches: the end written, the end the loop reads. Both
    /// live as long as the last task that may write (so a write never meets a closed peer).
    #[cfg(unix)]
    Socket {
        writer: std::os::unix::net::UnixStream,
        reader: std::os::unix::net::UnixStream,
    },
    /// A Python callable (given by `wake_with`) that schedules `drain` on the loop.
    Call(Mutex<Option<Arc<Py<PyAny>>>>),
}

/// What the runtime's tasks share with the loop: the answers not yet taken.
#[derive(Debug)]
struct Inbox {
    answers: Mutex<Vec<(u64, Answer)>>,
    /// A wake-up is on its way (set by the first answer after a drain).
    woken: AtomicBool,
    wake: Wake,
}

impl Inbox {
    fn answers(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Answer)>> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts an answer in, and wakes the loop unless a wake-up is already on its way.
    fn put(&self, id: u64, answer: Answer) {
        self.answers().push((id, answer));
        if self.woken.swap(true, Ordering::AcqRel) {
            return;
        }
        match &self.wake {
            #[cfg(unix)]
            Wake::Socket { writer, .. } => {
                use std::io::Write;
                // Non-blocking: a full socket already holds a wake-up the loop has not read.
                let _ = (&*writer).write(&[1]);
            }
            Wake::Call(callable) => {
                let Some(callable) = callable
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                else {
                    return;
                };
                let call = move || {
                    runtime::unless_exiting(|| {
                        Python::attach(|py| {
                            // A loop already closed has nobody left to tell.
                            let _ = callable.bind(py).call0();
                        });
                    });
                };
                // Off the runtime's worker thread, which must not wait for the GIL.
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => drop(handle.spawn_blocking(call)),
                    Err(_) => call(),
                }
            }
        }
    }
}

/// An acquisition the loop waits for.
#[derive(Debug)]
struct Waiting {
    /// The asyncio future its caller awaits (after `cancel`, the one that says it is gone).
    future: Py<PyAny>,
    /// Dropping it (or sending) drops the acquisition on the runtime.
    stop: Option<oneshot::Sender<()>>,
    /// `cancel` was called: whatever comes back is given back, and `future` set to `None`.
    cancelled: bool,
}

/// Puts `Dropped` in the inbox if the task ends without an answer.
#[derive(Debug)]
struct Report {
    inbox: Arc<Inbox>,
    id: u64,
    sent: bool,
}

impl Report {
    fn send(mut self, answer: Answer) {
        self.sent = true;
        self.inbox.put(self.id, answer);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            self.inbox.put(self.id, Answer::Dropped);
        }
    }
}

/// The answers of one event loop's acquisitions. Made by the package for each loop that
/// waits, and only used on that loop's thread.
#[pyclass(frozen, weakref, module = "tokengate._tokengate")]
#[derive(Debug)]
pub struct Bridge {
    inbox: Arc<Inbox>,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next: AtomicU64,
    /// The process generation it was made in (see `runtime`).
    generation: u64,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.let_go();
    }
}

impl Bridge {
    /// Drops every acquisition still waiting (on the runtime) and every answer not taken (a
    /// permit in it given back). A bridge made before a fork forgets them instead: they
    /// belong to the parent's runtime.
    fn let_go(&self) {
        let waiting = std::mem::take(&mut *self.waiting());
        if self.is_stale() {
            // Its futures are forgotten, its senders never used (they would wake tasks of
            // the parent's runtime, which has no thread here), and its inbox never touched:
            // a thread of the parent's may have held its lock at the fork, and its answers
            // hold the parent's permits. The count kept here keeps the inbox from being
            // freed in this process.
            std::mem::forget(waiting);
            std::mem::forget(Arc::clone(&self.inbox));
            return;
        }
        let answers = std::mem::take(&mut *self.inbox.answers());
        drop(waiting);
        drop(answers);
    }

    fn is_stale(&self) -> bool {
        self.generation != runtime::generation()
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts waiting for `cost` on `names` of `limiter`; `future` gets the answer.
    pub(crate) fn submit(
        &self,
        limiter: Limiter,
        names: Names,
        cost: Cost,
        timeout: Option<Duration>,
        future: Py<PyAny>,
    ) -> PyResult<u64> {
        if self.is_stale() {
            return Err(PyRuntimeError::new_err(
                "tokengate: this event loop's bridge was made before a fork; \
                 run a new event loop in the child",
            ));
        }
        let runtime = runtime::get()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = oneshot::channel::<()>();
        let report = Report {
            inbox: Arc::clone(&self.inbox),
            id,
            sent: false,
        };
        self.waiting().insert(
            id,
            Waiting {
                future,
                stop: Some(stop),
                cancelled: false,
            },
        );
        let task = async move {
            let answer = {
                let mut stopped = stopped;
                let mut acquisition =
                    std::pin::pin!(acquire::acquire(limiter, names, cost, timeout));
                std::future::poll_fn(|cx| {
                    // Cancelled, or the bridge is gone.
                    if Pin::new(&mut stopped).poll(cx).is_ready() {
                        return Poll::Ready(Answer::Dropped);
                    }
                    acquisition.as_mut().poll(cx).map(Answer::Done)
                })
                .await
                // The acquisition is dropped here, before its answer goes: once the loop
                // hears of a cancellation, the reservation is back.
            };
            report.send(answer);
        };
        drop(runtime.spawn(task));
        Ok(id)
    }
}

#[pymethods]
impl Bridge {
    #[new]
    fn new() -> PyResult<Self> {
        #[cfg(unix)]
        {
            let (reader, writer) = std::os::unix::net::UnixStream::pair()
                .and_then(|(r, w)| {
                    r.set_nonblocking(true)?;
                    w.set_nonblocking(true)?;
                    Ok((r, w))
                })
                .map_err(|e| {
                    PyRuntimeError::new_err(format!(
                        "tokengate could not open a socket pair to wake the event loop: {e}"
                    ))
                })?;
            Ok(Self::with(Wake::Socket { writer, reader }))
        }
        #[cfg(not(unix))]
        Ok(Self::calling())
    }

    /// The descriptor the loop watches for answers (`loop.add_reader(fd, bridge.drain)`);
    /// -1 where there is none (then call `wake_with`).
    fn fileno(&self) -> i64 {
        #[cfg(unix)]
        if let Wake::Socket { reader, .. } = &self.inbox.wake {
            use std::os::fd::AsRawFd;
            return i64::from(reader.as_raw_fd());
        }
        -1
    }

    /// Whether it was made before a fork (in the parent): a child makes its own.
    #[getter]
    fn stale(&self) -> bool {
        self.is_stale()
    }

    /// Wakes the loop by calling `wake` (with the GIL, off the runtime's worker thread)
    /// rather than through the socket: for a loop without `add_reader`. `wake` must schedule
    /// `drain` on the loop (`loop.call_soon_threadsafe(bridge.drain)`).
    fn wake_with(&self, wake: Py<PyAny>) -> PyResult<()> {
        match &self.inbox.wake {
            Wake::Call(callable) => {
                *callable.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(wake));
                Ok(())
            }
            #[cfg(unix)]
            Wake::Socket { .. } => Err(PyRuntimeError::new_err(
                "this bridge wakes its loop through a socket: make one with Bridge.calling()",
            )),
        }
    }

    /// A bridge that wakes its loop by calling back (see `wake_with`), never through a socket.
    #[staticmethod]
    fn calling() -> Self {
        Self::with(Wake::Call(Mutex::new(None)))
    }

    /// Takes every answer in the inbox and sets the futures waiting for them. Called on the
    /// loop's thread when the socket is readable (or by the wake callable).
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_stale() {
            // The parent's socket and answers (see `let_go`): none of this process's.
            return Ok(());
        }
        #[cfg(unix)]
        if let Wake::Socket { reader, .. } = &self.inbox.wake {
            use std::io::Read;
            let mut bytes = [0u8; 64];
            // Empties the socket: it is non-blocking, so this ends at `WouldBlock`.
            while matches!((&*reader).read(&mut bytes), Ok(1..)) {}
        }
        // Before taking the answers: one put after this wakes the loop again.
        self.inbox.woken.store(false, Ordering::Release);
        let answers = std::mem::take(&mut *self.inbox.answers());
        if answers.is_empty() {
            return Ok(());
        }
        let mut ready = Vec::with_capacity(answers.len());
        {
            let mut waiting = self.waiting();
            for (id, answer) in answers {
                // An answer nobody waits for is dropped here: a permit in it is given back.
                if let Some(entry) = waiting.remove(&id) {
                    ready.push((entry, answer));
                }
            }
        }
        // Every future is answered, even when setting one fails (the first failure is
        // raised after): a future left unanswered would keep its caller waiting forever.
        let mut failed = None;
        for (entry, answer) in ready {
            if let Err(error) = deliver(py, entry, answer) {
                failed.get_or_insert(error);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Drops the acquisition `id` on the runtime. With `over` (an asyncio future), true when
    /// `over` will be set once it is gone and its reservation given back; false when it was
    /// over already (its answer delivered, or dropped here: a permit in it given back).
    /// Without `over` (the caller cannot wait: its coroutine is being closed), nothing is
    /// told.
    #[pyo3(signature = (id, over=None))]
    fn cancel(&self, id: u64, over: Option<Py<PyAny>>) -> bool {
        if self.is_stale() {
            return false;
        }
        let mut waiting = self.waiting();
        let Some(entry) = waiting.get_mut(&id) else {
            return false;
        };
        if let Some(stop) = entry.stop.take() {
            let _ = stop.send(());
        }
        // An answer in the inbox, not drained yet (the loop may never drain again: its
        // coroutine is being closed with the loop): dropped now.
        let answered = {
            let mut answers = self.inbox.answers();
            let before = answers.len();
            answers.retain(|(of, _)| *of != id);
            answers.len() != before
        };
        match over {
            Some(over) if !answered => {
                entry.cancelled = true;
                entry.future = over;
                true
            }
            _ => {
                waiting.remove(&id);
                false
            }
        }
    }

    /// Acquisitions waiting now.
    fn __len__(&self) -> usize {
        self.waiting().len()
    }

    /// The futures it holds: a loop closed under waiting tasks leaves a cycle (bridge,
    /// future, task, loop) that only the garbage collector can end.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Only threads holding the GIL lock it, and none can while the collector runs.
        if let Ok(waiting) = self.waiting.try_lock() {
            for entry in waiting.values() {
                visit.call(&entry.future)?;
            }
        }
        Ok(())
    }

    /// Ends the cycle: every acquisition still waiting is dropped on the runtime, and every
    /// answer not taken is dropped here (a permit in it given back).
    fn __clear__(&self) {
        self.let_go();
    }
}

impl Bridge {
    fn with(wake: Wake) -> Self {
        Self {
            inbox: Arc::new(Inbox {
                answers: Mutex::new(Vec::new()),
                woken: AtomicBool::new(false),
                wake,
            }),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            generation: runtime::generation(),
        }
    }
}

/// Answers one acquisition's future (unless its task cancelled it already: the answer is then
/// dropped, a permit in it given back).
fn deliver(py: Python<'_>, entry: Waiting, answer: Answer) -> PyResult<()> {
    let future = entry.future.bind(py);
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if entry.cancelled {
        drop(answer);
        future.call_method1("set_result", (py.None(),))?;
        return Ok(());
    }
    match answer {
        Answer::Done(Ok(admitted)) => {
            future.call_method1("set_result", (admitted.into_permit(),))?;
        }
        Answer::Done(Err(error)) => {
            let error = errors::acquire_error(py, &error).into_value(py);
            future.call_method1("set_exception", (error,))?;
        }
        Answer::Dropped => {
            let error = PyRuntimeError::new_err(
                "tokengate: the acquisition ended without an answer (its task panicked)",
            );
            future.call_method1("set_exception", (error.into_value(py),))?;
        }
    }
    Ok(())
}

//! Waiting for admission, from asyncio and from threads. Both await the crate's own
//! acquisition on this process's runtime (`runtime`): one engine, one FIFO queue.
//!
//! - asyncio: an asyncio future over the Rust one (pyo3-async-runtimes). Cancelling it drops
//!   the Rust acquisition, which leaves the queue and charges nothing.
//! - threads: the calling thread waits on a channel with the GIL released, waking every
//!   [`SIGNAL_CHECK`] to run Python's signal handlers, so Ctrl-C interrupts the wait.
//!
//! A permit that is admitted but never reaches its caller (the caller was cancelled or
//! interrupted just as it was admitted) is given back whole by [`Admitted`]'s drop.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{self, ContextExt, JoinError};
use pyo3_async_runtimes::TaskLocals;
use tokengate::{AcquireError, Cost, Limiter, SystemClock};

use crate::errors;
use crate::permit::Permit;
use crate::runtime;

/// How often a blocking wait wakes to run Python's signal handlers (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The tenant and model a request is charged to (neither: the limiter's own budget only).
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    pub(crate) tenant: Option<String>,
    pub(crate) model: Option<String>,
}

/// The crate's acquisition of `cost` on `names`, waiting at most `timeout`.
pub(crate) async fn acquire(
    limiter: Limiter,
    names: Names,
    cost: Cost,
    timeout: Option<Duration>,
) -> Result<Admitted, AcquireError> {
    let permit = if names.tenant.is_none() && names.model.is_none() {
        match timeout {
            Some(timeout) => limiter.acquire_timeout(cost, timeout).await,
            None => limiter.acquire(cost).await,
        }
        .map(tokengate::Permit::into_owned)
    } else {
        let key = limiter.key_of(names.tenant.as_deref(), names.model.as_deref());
        match timeout {
            Some(timeout) => key.acquire_timeout(cost, timeout).await,
            None => key.acquire(cost).await,
        }
        .map(tokengate::Permit::into_owned)
    }?;
    Ok(Admitted(Some(permit)))
}

/// A permit on its way to its caller. Dropped before it gets there, it gives back everything
/// it reserved: the call was never made.
#[derive(Debug)]
pub(crate) struct Admitted(Option<tokengate::Permit<'static, SystemClock>>);

impl Admitted {
    /// The permit, handed over.
    pub(crate) fn into_permit(mut self) -> Permit {
        Permit::new(self.0.take())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take() {
            permit.cancel();
        }
    }
}

/// What an asyncio acquisition resolves to: a `Permit`, or the exception.
struct Outcome(Result<Admitted, AcquireError>);

impl<'py> IntoPyObject<'py> for Outcome {
    type Target = Permit;
    type Output = Bound<'py, Permit>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, Permit>> {
        match self.0 {
            Ok(admitted) => Bound::new(py, admitted.into_permit()),
            Err(error) => Err(errors::acquire_error(py, &error)),
        }
    }
}

/// Calls a Python function on an event loop's thread when dropped: tells the caller that an
/// acquisition is over (admitted, failed, or dropped after a cancellation, its reservation
/// given back).
struct OnDrop {
    /// The event loop and the callback; taken when dropped.
    call: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        let Some((event_loop, callback)) = self.call.take() else {
            return;
        };
        let call = move || {
            runtime::unless_exiting(|| {
                Python::attach(|py| {
                    // A loop already closed has nobody left to tell.
                    let _ = event_loop
                        .bind(py)
                        .call_method1("call_soon_threadsafe", (callback.bind(py),));
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

/// An asyncio future of the acquisition, on the running event loop. `on_drop`, if given, is
/// called on the loop once the Rust acquisition is over, cancelled ones included.
pub(crate) fn acquire_async(
    py: Python<'_>,
    limiter: Limiter,
    names: Names,
    cost: Cost,
    timeout: Option<Duration>,
    on_drop: Option<Py<PyAny>>,
) -> PyResult<Bound<'_, PyAny>> {
    // Made (or made again after a fork) here, holding the GIL.
    runtime::get()?;
    let locals = TaskLocals::with_running_loop(py)?.copy_context(py)?;
    let on_drop = on_drop.map(|callback| OnDrop {
        call: Some((locals.event_loop(py).unbind(), callback)),
    });
    generic::future_into_py_with_locals::<Tokio, _, _>(py, locals, async move {
        let _on_drop = on_drop;
        Ok(Outcome(acquire(limiter, names, cost, timeout).await))
    })
}

/// The acquisition, waited for by this thread with the GIL released.
///
/// # Errors
/// The acquisition's error; `KeyboardInterrupt` (or whatever a signal handler raises) when a
/// signal interrupts the wait: the acquisition is then dropped, charging nothing.
pub(crate) fn acquire_blocking(
    py: Python<'_>,
    limiter: Limiter,
    names: Names,
    cost: Cost,
    timeout: Option<Duration>,
) -> PyResult<Permit> {
    let runtime = runtime::get()?;
    let (sender, receiver) = mpsc::sync_channel(1);
    let task = runtime.spawn(async move {
        let outcome = acquire(limiter, names, cost, timeout).await;
        // A receiver gone (the caller was interrupted) drops the permit: given back.
        let _ = sender.send(outcome);
    });
    let mut receiver = receiver;
    loop {
        let (answer, back) = py.detach(move || (receiver.recv_timeout(SIGNAL_CHECK), receiver));
        receiver = back;
        match answer {
            Ok(Ok(admitted)) => return Ok(admitted.into_permit()),
            Ok(Err(error)) => return Err(errors::acquire_error(py, &error)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupted) = py.check_signals() {
                    task.abort();
                    return Err(interrupted);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err(
                    "tokengate: the acquisition ended without an answer (its task panicked)",
                ))
            }
        }
    }
}

/// This process's runtime, as pyo3-async-runtimes spawns on it.
struct Tokio;

tokio::task_local! {
    /// The event loop and context of the asyncio call a task serves.
    static LOCALS: std::cell::OnceCell<TaskLocals>;
}

/// Where a task is spawned: the runtime the caller is on (a task of ours spawning its
/// follow-ups), else this process's runtime.
fn spawner() -> tokio::runtime::Handle {
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
        // Only reached from `acquire_async`, which made the runtime first.
        runtime::get()
            .expect("the runtime was made before the acquisition")
            .handle()
            .clone()
    })
}

impl generic::Runtime for Tokio {
    type JoinError = Failed;
    type JoinHandle = Joined;

    fn spawn<F>(fut: F) -> Joined
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Its end sets the asyncio future's result, in Python.
        Joined(spawner().spawn(runtime::Gated::new(fut)))
    }

    fn spawn_blocking<F>(f: F) -> Joined
    where
        F: FnOnce() + Send + 'static,
    {
        Joined(spawner().spawn_blocking(move || {
            runtime::unless_exiting(f);
        }))
    }
}

impl ContextExt for Tokio {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        LOCALS
            .try_with(|cell| cell.get().cloned())
            .unwrap_or_default()
    }
}

/// A task spawned for pyo3-async-runtimes.
struct Joined(tokio::task::JoinHandle<()>);

impl Future for Joined {
    type Output = Result<(), Failed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.map_err(Failed))
    }
}

/// A task that panicked or was cancelled.
struct Failed(tokio::task::JoinError);

impl JoinError for Failed {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }

    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

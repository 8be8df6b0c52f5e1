//! Waiting for admission, from asyncio and from threads. Both await the crate's own
//! acquisition on this process's runtime (`runtime`): one engine, one FIFO queue.
//!
//! - asyncio: through the event loop's `Bridge` (`bridge`). Cancelling drops the Rust
//!   acquisition, which leaves the queue and charges nothing.
//! - threads: the calling thread waits on a channel with the GIL released, waking every
//!   [`SIGNAL_CHECK`] to run Python's signal handlers, so Ctrl-C interrupts the wait.
//!
//! A permit that is admitted but never reaches its caller (the caller was cancelled or
//! interrupted just as it was admitted) is given back whole by [`Admitted`]'s drop.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
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

//! `Acquisition`: what `Limiter.acquire()` returns, to `async with` or to `await`.
//!
//! A request the limits admit at once is decided here, on the event loop's thread, and its
//! `__aenter__` (or `__await__`) returns a coroutine that only returns the permit: no
//! future, no other thread. Only a request that must wait (or a limiter on
//! Redis, which must ask) goes to the package's Python code, which waits on the runtime
//! through a `Bridge` and handles asyncio's cancellation; the package hands that code over
//! once, at import ([`set_waiting`]).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use tokengate::Cost;

use crate::acquire::Names;
use crate::bridge::Bridge;
use crate::limiter::{self, LimiterCore};
use crate::permit::Permit;

/// The package's coroutine functions: `enter(acquisition)` for the `__aenter__` of a request
/// that waits, `wait(acquisition)` for its `__await__`, and `ready(value)`, which returns
/// `value` (a coroutine of CPython's own is the cheapest awaitable to make and to await).
static WAITING: PyOnceLock<Coroutines> = PyOnceLock::new();

#[derive(Debug)]
struct Coroutines {
    enter: Py<PyAny>,
    wait: Py<PyAny>,
    ready: Py<PyAny>,
}

/// Hands over the package's coroutine functions (called once, by the package at import).
#[pyfunction]
pub(crate) fn set_waiting(
    py: Python<'_>,
    enter: Py<PyAny>,
    wait: Py<PyAny>,
    ready: Py<PyAny>,
) -> PyResult<()> {
    WAITING
        .set(py, Coroutines { enter, wait, ready })
        .map_err(|_| PyRuntimeError::new_err("tokengate: set_waiting was called twice"))
}

fn waiting(py: Python<'_>) -> PyResult<&Coroutines> {
    WAITING.get(py).ok_or_else(|| {
        PyRuntimeError::new_err(
            "tokengate: import the `tokengate` package, not its extension alone",
        )
    })
}

/// An asynchronous acquisition: ``async with`` it, or ``await`` it for the :class:`Permit`.
///
/// ``async with limiter.acquire(...) as permit:`` waits (FIFO, never blocking the event
/// loop) until the request is admitted, and releases the permit at the end of the block
/// unless it was settled. Cancelling the waiting task (or ``asyncio.timeout``) gives the
/// reservation back whole.
#[pyclass(frozen, module = "tokengate._tokengate")]
#[derive(Debug)]
pub struct Acquisition {
    core: Py<LimiterCore>,
    model: Option<String>,
    tenant: Option<String>,
    /// The cost's requests, input and output.
    cost: (u64, u64, u64),
    timeout: Option<Duration>,
    /// The permit of an `async with`, released by `__aexit__`.
    held: Mutex<Option<Py<Permit>>>,
}

impl Acquisition {
    /// An acquisition of `cost` on `core`'s budgets of `model` and `tenant`.
    pub(crate) fn new(
        core: Py<LimiterCore>,
        model: Option<String>,
        tenant: Option<String>,
        cost: (u64, u64, u64),
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        Ok(Self {
            core,
            model,
            tenant,
            cost,
            timeout: limiter::timeout(timeout)?,
            held: Mutex::new(None),
        })
    }

    /// Keeps the permit of an `async with` for `__aexit__`.
    fn hold(&self, permit: Py<Permit>) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
    }

    fn cost(&self) -> Cost {
        let (requests, input, output) = self.cost;
        limiter::cost(requests, input, output)
    }

    /// The permit, if the limits admit it now without waiting (never on a store).
    fn now(&self, py: Python<'_>) -> PyResult<Option<Py<Permit>>> {
        let core = self.core.get();
        match core.try_now(
            py,
            self.model.as_deref(),
            self.tenant.as_deref(),
            self.cost(),
        )? {
            Some(permit) => Ok(Some(Py::new(py, permit)?)),
            None => Ok(None),
        }
    }
}

#[pymethods]
impl Acquisition {
    /// Waits for admission; the permit.
    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if let Some(permit) = this.now(py)? {
            this.hold(permit.clone_ref(py));
            return Ok(waiting(py)?.ready.bind(py).call1((permit,))?.unbind());
        }
        Ok(waiting(py)?.enter.bind(py).call1((slf,))?.unbind())
    }

    /// Releases the permit unless it was settled (or cancelled).
    #[pyo3(signature = (*_exc))]
    fn __aexit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(permit) = held {
            permit.get().release()?;
        }
        Ok(waiting(py)?.ready.bind(py).call1((py.None(),))?.unbind())
    }

    /// ``permit = await limiter.acquire(...)``: the permit, to end yourself.
    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let coroutine = match slf.get().now(py)? {
            Some(permit) => waiting(py)?.ready.bind(py).call1((permit,))?,
            None => waiting(py)?.wait.bind(py).call1((slf,))?,
        };
        Ok(coroutine.call_method0("__await__")?.unbind())
    }

    /// Starts waiting on `bridge`; `future` (on the running loop) gets the permit. The
    /// acquisition's id on the bridge, to cancel it.
    fn _submit(&self, bridge: &Bridge, future: Py<PyAny>) -> PyResult<u64> {
        let limiter = self.core.get().limiter()?;
        let names = Names {
            tenant: self.tenant.clone(),
            model: self.model.clone(),
        };
        bridge.submit(limiter, names, self.cost(), self.timeout, future)
    }

    /// Keeps the permit an `async with` waited for, for `__aexit__`.
    fn _hold(&self, permit: Py<Permit>) {
        self.hold(permit);
    }
}

//! `Permit`: an admission, settled with what the call used.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokengate::{SystemClock, Usage};

use crate::{errors, runtime, usage};

/// An admission: holds its in-flight slot (if the limits cap requests in flight) and what it
/// reserved, until it is settled, released or cancelled.
///
/// - ``settle(usage)`` or ``settle(input=..., output=...)``: what the call really used; what
///   it reserved and did not use comes back at once (as the provider counts it).
/// - ``release()``: the call is over and its usage unknown; the reservation stays counted.
/// - ``cancel()``: the call was never made; everything comes back.
///
/// Leaving a ``with`` block releases it unless it was settled.
#[derive(Debug)]
#[pyclass(frozen, module = "tokengate._tokengate")]
pub struct Permit {
    inner: Mutex<Option<tokengate::Permit<'static, SystemClock>>>,
    /// The process generation it was admitted in (see `runtime`).
    generation: u64,
    requests: u64,
    input: u64,
    output: u64,
}

impl Permit {
    pub(crate) fn new(permit: Option<tokengate::Permit<'static, SystemClock>>) -> Self {
        let (requests, input, output) = permit.as_ref().map_or((0, 0, 0), |p| {
            let cost = p.cost();
            (cost.requests(), cost.input_tokens(), cost.output_tokens())
        });
        Self {
            inner: Mutex::new(permit),
            generation: runtime::generation(),
            requests,
            input,
            output,
        }
    }

    /// The permit, taken out to end it; `None` if it already ended.
    pub(crate) fn take(&self) -> PyResult<Option<tokengate::Permit<'static, SystemClock>>> {
        let permit = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if permit.is_some() && self.generation != runtime::generation() {
            // The parent's: never touched here (see `runtime`).
            std::mem::forget(permit);
            return Err(errors::forked());
        }
        Ok(permit)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.generation != runtime::generation() {
            let permit = self
                .inner
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            std::mem::forget(permit);
        }
    }
}

#[pymethods]
impl Permit {
    /// Settles with what the call used: a usage object of the OpenAI or Anthropic SDKs (or the
    /// whole reply), a dict of the same fields, or ``input=``/``output=`` token counts. What was
    /// reserved and not used comes back at once; use beyond the reservation is charged. Output
    /// is counted as the provider counts it: OpenAI keeps ``max_tokens`` charged, Anthropic
    /// counts what was produced. Frees the in-flight slot. A permit settles once.
    #[pyo3(signature = (usage=None, *, input=None, output=None, requests=None))]
    fn settle(
        &self,
        usage: Option<&Bound<'_, PyAny>>,
        input: Option<u64>,
        output: Option<u64>,
        requests: Option<u64>,
    ) -> PyResult<()> {
        let used = match usage {
            Some(object) if !object.is_none() => {
                if input.is_some() || output.is_some() || requests.is_some() {
                    return Err(errors::usage_error(
                        "give the usage object or input=/output=/requests=, not both",
                    ));
                }
                usage::of_object(object)?
            }
            _ => {
                let mut used = Usage::new();
                if let Some(n) = requests {
                    used = used.requests(n);
                }
                if let Some(n) = input {
                    used = used.input(n);
                }
                if let Some(n) = output {
                    used = used.output(n);
                }
                used
            }
        };
        match self.take()? {
            Some(permit) => {
                permit.settle(used);
                Ok(())
            }
            None => Err(errors::usage_error(
                "this permit has already ended (settled, released or cancelled): a permit settles once",
            )),
        }
    }

    /// Ends the permit without its usage: its in-flight slot is freed and its reservation
    /// stays counted, as used. Nothing happens if it already ended.
    pub(crate) fn release(&self) -> PyResult<()> {
        drop(self.take()?);
        Ok(())
    }

    /// Gives the whole reservation back: the call was not made. Nothing happens if the
    /// permit already ended.
    fn cancel(&self) -> PyResult<()> {
        if let Some(permit) = self.take()? {
            permit.cancel();
        }
        Ok(())
    }

    /// Requests reserved.
    #[getter]
    fn requests(&self) -> u64 {
        self.requests
    }

    /// Input tokens reserved.
    #[getter]
    fn input(&self) -> u64 {
        self.input
    }

    /// Output tokens reserved.
    #[getter]
    fn output(&self) -> u64 {
        self.output
    }

    /// Whether the permit has ended (settled, released or cancelled).
    #[getter]
    fn ended(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The permit itself: `with limiter.try_acquire(...) as permit:`.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Releases the permit unless it was settled.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    /// What it reserved, and whether it has ended.
    fn __repr__(&self) -> String {
        format!(
            "<Permit requests={} input={} output={}{}>",
            self.requests,
            self.input,
            self.output,
            if self.ended() { " ended" } else { "" }
        )
    }
}

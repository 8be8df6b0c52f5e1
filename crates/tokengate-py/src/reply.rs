//! `ReplyMeter`: settles a model call's permit from its reply, as the reqwest middleware does
//! (`tokengate::reqwest`): from the JSON body's `usage`, or from the usage a server-sent event
//! stream shows as it passes ([`StreamUsage`]), when it ends, is closed or is dropped; a 429
//! as the provider counts a refused call ([`Refused`]); a call that never reached the
//! provider with its tokens back.

use std::sync::Mutex;

use pyo3::prelude::*;
use tokengate::call::{PendingCall, Refused, ReplyKind};
use tokengate::estimate::Estimator;
use tokengate::feedback::usage::{ReplyUsage, StreamUsage};

use crate::permit::Permit;

/// What the meter reads the reply as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not told yet: the reply's headers have not arrived.
    Waiting,
    /// A server-sent event stream, fed chunk by chunk.
    Stream,
    /// A JSON body, read whole.
    Json,
    /// Nothing to read a usage from; the permit was released.
    Nothing,
}

#[derive(Debug)]
struct State {
    permit: Option<Py<Permit>>,
    mode: Mode,
    stream: Option<StreamUsage>,
}

/// Settles one call's permit from its reply. Made by ``PricedCall.meter(permit)``; the permit
/// ends exactly once, whichever way the call ends, and at the latest when the meter is
/// dropped (with what a stream showed, else released).
#[derive(Debug)]
#[pyclass(frozen, module = "tokengate._tokengate")]
pub struct ReplyMeter {
    state: Mutex<State>,
    estimator: Estimator,
    model: Option<String>,
    heuristic: Option<u64>,
}

impl ReplyMeter {
    pub(crate) fn new(
        permit: Py<Permit>,
        estimator: Estimator,
        model: Option<String>,
        heuristic: Option<u64>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                permit: Some(permit),
                mode: Mode::Waiting,
                stream: None,
            }),
            estimator,
            model,
            heuristic,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The permit's Rust admission, taken out to end it; `None` once it has ended.
    fn take(&self) -> PyResult<Option<tokengate::Permit<'static, tokengate::SystemClock>>> {
        let permit = self.state().permit.take();
        match permit {
            Some(permit) => permit.get().take(),
            None => Ok(None),
        }
    }

    /// The permit's call, taken out to settle it; `None` once it has ended.
    fn pending(&self) -> PyResult<Option<PendingCall<tokengate::SystemClock>>> {
        Ok(self.take()?.map(|permit| {
            PendingCall::new(permit, self.estimator.clone(), self.model.clone())
                .heuristic_input(self.heuristic)
        }))
    }

    /// Settles with `reply`'s usage (learning from complete figures, as the middleware
    /// does); with none, the reservation stands. Whether a usage was read.
    fn settle(&self, reply: Option<ReplyUsage>) -> PyResult<bool> {
        let Some(pending) = self.pending()? else {
            return Ok(false);
        };
        let read = reply.is_some();
        pending.settle(reply);
        Ok(read)
    }
}

impl Drop for ReplyMeter {
    fn drop(&mut self) {
        let stream = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .stream
            .take();
        // A permit of the parent's, after a fork, is left alone by `Permit::take`.
        let _ = self.settle(stream.and_then(StreamUsage::finish));
    }
}

#[pymethods]
impl ReplyMeter {
    /// Tells the meter the reply's ``content-type`` (``None`` when it has none): returns
    /// ``"stream"`` (``text/event-stream``: ``push`` its bytes, then ``finish``), ``"json"``
    /// (JSON or no type: ``settle_json`` its body) or ``"none"`` (audio, images...: no usage
    /// to read; the permit is released now, its reservation standing).
    #[pyo3(signature = (content_type))]
    fn reply(&self, content_type: Option<&str>) -> PyResult<&'static str> {
        let mode = match ReplyKind::of(content_type) {
            ReplyKind::EventStream => Mode::Stream,
            ReplyKind::Json => Mode::Json,
            _ => Mode::Nothing,
        };
        {
            let mut state = self.state();
            state.mode = mode;
            if mode == Mode::Stream {
                state.stream = Some(StreamUsage::new());
            }
        }
        Ok(match mode {
            Mode::Stream => "stream",
            Mode::Json => "json",
            Mode::Nothing | Mode::Waiting => {
                drop(self.take()?);
                "none"
            }
        })
    }

    /// Feeds bytes of a streamed reply, as they arrive (split anywhere).
    fn push(&self, py: Python<'_>, chunk: &[u8]) {
        let mut state = self.state();
        if let Some(stream) = state.stream.as_mut() {
            if chunk.len() > 64 << 10 {
                py.detach(|| stream.push(chunk));
            } else {
                stream.push(chunk);
            }
        }
    }

    /// The stream is over (ended, closed or broken): settles with what it showed. A stream
    /// cut short keeps its output reservation; one that showed no usage keeps it all.
    /// Whether a usage was read; ``False`` too once the permit has ended.
    fn finish(&self) -> PyResult<bool> {
        let stream = self.state().stream.take();
        self.settle(stream.and_then(StreamUsage::finish))
    }

    /// Settles from a whole JSON reply body; a body with no usage (an error reply) leaves the
    /// reservation standing. Whether a usage was read.
    fn settle_json(&self, py: Python<'_>, body: &[u8]) -> PyResult<bool> {
        let reply = py.detach(|| ReplyUsage::from_json(body).ok());
        self.settle(reply)
    }

    /// The provider answered 429: the request stays counted, its tokens (never processed)
    /// come back.
    fn refused(&self) -> PyResult<()> {
        if let Some(pending) = self.pending()? {
            pending.settle_refused(Refused::default());
        }
        Ok(())
    }

    /// The request never reached the provider (the connection could not be made): its
    /// tokens come back, the request stays counted.
    fn unprocessed(&self) -> PyResult<()> {
        if let Some(pending) = self.pending()? {
            pending.settle_unprocessed();
        }
        Ok(())
    }

    /// Ends the permit without a usage (the call failed after it was sent, or was cancelled):
    /// its in-flight slot is freed, its reservation stands.
    fn release(&self) -> PyResult<()> {
        self.state().stream = None;
        drop(self.take()?);
        Ok(())
    }

    /// Whether the permit has ended.
    #[getter]
    fn ended(&self) -> bool {
        self.state().permit.is_none()
    }
}

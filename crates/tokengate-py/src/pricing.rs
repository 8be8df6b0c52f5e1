//! `Pricer`: what a request to an OpenAI- or Anthropic-style endpoint costs, read from its
//! path and JSON body by the crate's own reader ([`ChatRequest`]) and estimator, as the
//! reqwest middleware prices it. The package's httpx transports (`tokengate/_sdk.py`) ask it
//! for every request they send.

use pyo3::prelude::*;
use tokengate::estimate::{ApiFormat, ChatRequest, Estimator};

use crate::permit::Permit;
use crate::reply::ReplyMeter;

/// Prices model calls: the prompt's tokens counted, the output reserved up to the request's
/// cap (``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``), or
/// ``default_max_tokens`` when it sets none.
#[derive(Debug)]
#[pyclass(frozen, module = "tokengate._tokengate")]
pub struct Pricer {
    estimator: Estimator,
}

#[pymethods]
impl Pricer {
    /// A pricer; ``default_max_tokens`` is the output reserved for a request that sets no
    /// cap (the crate's default, 4,096, when ``None``).
    #[new]
    #[pyo3(signature = (*, default_max_tokens=None))]
    fn new(default_max_tokens: Option<u64>) -> PyResult<Self> {
        let estimator = match default_max_tokens {
            Some(tokens) => Estimator::builder()
                .default_max_tokens(tokens)
                .build()
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?,
            None => Estimator::new(),
        };
        Ok(Self { estimator })
    }

    /// The priced call of a request, or ``None`` when it is not a model call (not a ``POST``
    /// to a path ending in ``/chat/completions``, ``/responses``, ``/messages``,
    /// ``/completions`` or ``/embeddings``, or a body that is not such a JSON request).
    fn price(&self, py: Python<'_>, method: &str, path: &str, body: &[u8]) -> Option<PricedCall> {
        if !method.eq_ignore_ascii_case("POST") {
            return None;
        }
        let format = ApiFormat::from_path(path)?;
        let estimator = self.estimator.clone();
        py.detach(|| {
            let chat = ChatRequest::from_json(format, body)?;
            let cost = chat.cost(&estimator);
            Some(PricedCall {
                model: chat.model.clone(),
                requests: cost.requests(),
                input: cost.input_tokens(),
                output: cost.output_tokens(),
                stream: chat.stream,
                heuristic: estimator.heuristic_input(&chat),
                estimator,
            })
        })
    }
}

/// One model call's price and what settling it needs.
#[derive(Debug)]
#[pyclass(frozen, module = "tokengate._tokengate")]
pub struct PricedCall {
    model: Option<String>,
    requests: u64,
    input: u64,
    output: u64,
    stream: bool,
    /// The heuristic's own count of the input, when the estimator learns input counts.
    heuristic: Option<u64>,
    estimator: Estimator,
}

#[pymethods]
impl PricedCall {
    /// The ``model`` the body names.
    #[getter]
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Requests to reserve (1).
    #[getter]
    fn requests(&self) -> u64 {
        self.requests
    }

    /// Input tokens to reserve: the prompt, counted.
    #[getter]
    fn input(&self) -> u64 {
        self.input
    }

    /// Output tokens to reserve: the request's cap.
    #[getter]
    fn output(&self) -> u64 {
        self.output
    }

    /// Whether the body asks for a streamed reply.
    #[getter]
    fn stream(&self) -> bool {
        self.stream
    }

    /// The meter that settles `permit`, admitted for this call, from its reply.
    fn meter(&self, permit: Py<Permit>) -> ReplyMeter {
        ReplyMeter::new(
            permit,
            self.estimator.clone(),
            self.model.clone(),
            self.heuristic,
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "<PricedCall model={:?} requests={} input={} output={}{}>",
            self.model.as_deref().unwrap_or(""),
            self.requests,
            self.input,
            self.output,
            if self.stream { " stream" } else { "" }
        )
    }
}

//! Rust errors as the package's exception classes, defined in `tokengate/_errors.py` and
//! raised here with their attributes.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::BoundObject;
use tokengate::config::{ConfigError, ErrorKind};
use tokengate::{AcquireError, BuildError, Denied};

/// The module that defines the classes.
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception `class` (a name in `tokengate._errors`) with `message` and `attrs` as its
/// keyword arguments.
fn raise(py: Python<'_>, class: &str, message: &str, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let module =
            ERRORS.get_or_try_init(py, || py.import("tokengate._errors").map(Bound::unbind))?;
        let class = module.bind(py).getattr(class)?.cast_into::<PyType>()?;
        let kwargs = PyDict::new(py);
        for (name, value) in attrs {
            kwargs.set_item(name, value)?;
        }
        let error = class.call((message,), Some(&kwargs))?;
        Ok(PyErr::from_value(error))
    })();
    made.unwrap_or_else(|e| e)
}

/// Seconds as a float; `inf` for [`Duration::MAX`] (never, by time alone).
pub(crate) fn seconds(d: Duration) -> f64 {
    if d == Duration::MAX {
        f64::INFINITY
    } else {
        d.as_secs_f64()
    }
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, value: T) -> Py<PyAny> {
    value
        .into_pyobject(py)
        .map(|v| v.into_any().unbind())
        .unwrap_or_else(|_| py.None())
}

/// An acquisition that failed: the wait was too long, the request can never pass, the model
/// is not in the file, or the store failed.
pub(crate) fn acquire_error(py: Python<'_>, error: &AcquireError) -> PyErr {
    let message = error.to_string();
    match error {
        AcquireError::Exceeds {
            dimension,
            cost,
            capacity,
            limit,
            ..
        } => raise(
            py,
            "RequestTooLarge",
            &message,
            &[
                ("dimension", obj(py, dimension.name())),
                ("cost", obj(py, *cost)),
                ("capacity", obj(py, *capacity)),
                ("limit", obj(py, limit.as_str())),
            ],
        ),
        AcquireError::Overflow { dimension } => raise(
            py,
            "RequestTooLarge",
            &message,
            &[("dimension", obj(py, dimension.name()))],
        ),
        AcquireError::Timeout {
            dimension,
            cost,
            wait,
            timeout,
        } => raise(
            py,
            "AcquireTimeout",
            &message,
            &[
                ("dimension", obj(py, dimension.name())),
                ("cost", obj(py, *cost)),
                ("wait", obj(py, wait.map(seconds))),
                ("timeout", obj(py, seconds(*timeout))),
                ("reason", obj(py, "timeout")),
            ],
        ),
        AcquireError::Paused { wait, timeout } => raise(
            py,
            "AcquireTimeout",
            &message,
            &[
                ("wait", obj(py, seconds(*wait))),
                ("timeout", obj(py, seconds(*timeout))),
                ("reason", obj(py, "paused")),
            ],
        ),
        AcquireError::QueueTimeout {
            waiters_ahead,
            timeout,
        } => raise(
            py,
            "AcquireTimeout",
            &message,
            &[
                ("waiters_ahead", obj(py, *waiters_ahead)),
                ("timeout", obj(py, seconds(*timeout))),
                ("reason", obj(py, "queued")),
            ],
        ),
        AcquireError::UnknownModel {
            model,
            suggestion,
            listed,
            file,
        } => raise(
            py,
            "UnknownModel",
            &message,
            &[
                ("model", obj(py, model.as_str())),
                ("suggestion", obj(py, suggestion.as_deref())),
                ("listed", obj(py, listed.clone())),
                ("file", obj(py, file.as_str())),
            ],
        ),
        AcquireError::Store { .. } => raise(py, "StoreError", &message, &[]),
        _ => raise(py, "TokengateError", &message, &[]),
    }
}

/// A `try_acquire` that did not admit now.
pub(crate) fn denied(py: Python<'_>, denied: &Denied) -> PyErr {
    let message = denied.to_string();
    match denied {
        Denied::RateLimited {
            dimension,
            cost,
            limit,
            wait,
        } => raise(
            py,
            "RateLimitExceeded",
            &message,
            &[
                ("dimension", obj(py, dimension.name())),
                ("cost", obj(py, *cost)),
                ("wait", obj(py, seconds(*wait))),
                ("limit", obj(py, limit.as_str())),
                ("reason", obj(py, "rate_limited")),
            ],
        ),
        Denied::InFlightFull { max } => raise(
            py,
            "RateLimitExceeded",
            &message,
            &[
                ("dimension", obj(py, "in_flight")),
                ("cost", obj(py, 1u64)),
                ("limit", obj(py, format!("{max} in flight"))),
                ("reason", obj(py, "in_flight")),
            ],
        ),
        Denied::Paused { wait } => raise(
            py,
            "RateLimitExceeded",
            &message,
            &[
                ("wait", obj(py, seconds(*wait))),
                ("reason", obj(py, "paused")),
            ],
        ),
        Denied::WaitersAhead { waiters } => raise(
            py,
            "RateLimitExceeded",
            &message,
            &[
                ("waiters_ahead", obj(py, *waiters)),
                ("reason", obj(py, "queued")),
            ],
        ),
        Denied::Never(error) => acquire_error(py, error),
        _ => raise(py, "RateLimitExceeded", &message, &[]),
    }
}

/// The name of a config error's kind, as `ConfigError.kind` gives it.
fn kind_name(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Io(_) => "io",
        ErrorKind::Syntax => "syntax",
        ErrorKind::UnknownField => "unknown_field",
        ErrorKind::WrongType => "wrong_type",
        ErrorKind::InvalidValue => "invalid_value",
        ErrorKind::Missing => "missing",
        ErrorKind::Duplicate => "duplicate",
        ErrorKind::Overlap => "overlap",
        ErrorKind::Empty => "empty",
        ErrorKind::Policy(_) => "policy",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::StoreChanged => "store_changed",
        _ => "other",
    }
}

/// A mistake in a limits file, with its file, line, column and field.
pub(crate) fn config_error(py: Python<'_>, error: &ConfigError) -> PyErr {
    let (line, column) = if error.line == 0 {
        (None, None)
    } else {
        (Some(error.line), Some(error.column))
    };
    let field = (!error.field.is_empty()).then_some(error.field.as_str());
    raise(
        py,
        "ConfigError",
        &error.to_string(),
        &[
            ("file", obj(py, error.file.as_str())),
            ("line", obj(py, line)),
            ("column", obj(py, column)),
            ("field", obj(py, field)),
            ("kind", obj(py, kind_name(&error.kind))),
        ],
    )
}

/// A `ConfigError` about an argument (`field`), or a file without a line.
pub(crate) fn config_error_of(message: &str, file: Option<&str>, field: &str) -> PyErr {
    Python::attach(|py| {
        raise(
            py,
            "ConfigError",
            message,
            &[
                ("file", obj(py, file)),
                ("field", obj(py, field)),
                ("kind", obj(py, "invalid_value")),
            ],
        )
    })
}

/// Limits given as arguments that make no policy.
pub(crate) fn build_error(error: &BuildError) -> PyErr {
    config_error_of(&format!("invalid limits: {error}"), None, "limits")
}

/// A limiter made before a fork, used in the child, whose limits live in this process only.
pub(crate) fn forked() -> PyErr {
    Python::attach(|py| {
        raise(
            py,
            "ForkError",
            &format!(
                "this limiter was made in a parent process before a fork, and its limits live in \
                 that process's memory: process {} cannot share them. Make the limiter in each \
                 process after the fork (gunicorn: in the app, without --preload, or in a \
                 post_fork hook; Celery: on worker_process_init), giving each its share of the \
                 limits, or share one set of limits through Redis: Limiter(..., redis=\"redis://...\") \
                 or a limits file with a [store]",
                std::process::id()
            ),
            &[],
        )
    })
}

/// A usage that cannot be read.
pub(crate) fn usage_error(message: &str) -> PyErr {
    Python::attach(|py| raise(py, "UsageError", message, &[]))
}

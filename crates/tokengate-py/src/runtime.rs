//! The tokio runtime that waits, talks to Redis and settles for this process.
//!
//! Made at first use, one per process: a fork copies the parent's memory but not its threads,
//! so a runtime inherited from the parent has no thread to drive it. A hook registered with
//! `os.register_at_fork` counts forks in the child ([`generation`]); the next call there makes
//! a runtime of its own, and whatever belonged to the parent's runtime (its limiters' Redis
//! connections, its permits) is left untouched and never dropped: dropping it could wait
//! forever on the parent's threads or locks.
//!
//! The lock below is only taken by threads holding the GIL, and never across a release of it;
//! `os.fork` holds the GIL too, so no other thread holds the lock at a fork.
//!
//! At interpreter exit the runtime's threads live on, and some of their tasks would call into
//! Python (waking an event loop that cannot watch a socket, see `bridge`): a thread that asks
//! for the GIL while the interpreter finalizes is ended by CPython in the middle of Rust code,
//! which crashes the process. So an `atexit` hook ([`at_exit`]) closes the gate first: every
//! task that may call into Python runs through [`unless_exiting`], and once the gate is closed
//! none starts again; the hook waits (with the GIL released, at most a second) for those
//! already inside.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Builder, Runtime};

/// Forks seen by this process's line of descent: 0 in the process that imported the module.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The runtime of the current generation, once made. Leaked on purpose: a runtime is never
/// dropped (the parent's, seen in a child, must not be).
static RUNTIME: Mutex<Option<(u64, &'static Runtime)>> = Mutex::new(None);

/// Set by [`at_exit`]: from then on no task of ours calls into Python.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Tasks of ours running code that may call into Python, now.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// How long the exit hook waits for the tasks already inside Python.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Runs `f`, which may call into Python, unless the interpreter is exiting (`None` then).
pub(crate) fn unless_exiting<R>(f: impl FnOnce() -> R) -> Option<R> {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            INSIDE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    if EXITING.load(Ordering::SeqCst) {
        return None;
    }
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    // Checked again once counted: the hook either sees this task inside, or this task sees
    // the gate closed.
    if EXITING.load(Ordering::SeqCst) {
        return None;
    }
    Some(f())
}

/// Called by `atexit`: closes the gate, then waits for the tasks inside Python to leave.
#[pyfunction]
fn at_exit(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + EXIT_WAIT;
        while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Registers [`at_exit`] with `atexit`.
pub(crate) fn register_exit_hook(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(at_exit, module)?;
    module
        .py()
        .import("atexit")?
        .getattr("register")?
        .call1((hook,))?;
    Ok(())
}

/// The number of forks between the process that imported the module and this one.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// This process's runtime, made now if this process has none yet.
///
/// # Errors
/// `RuntimeError` when no thread can be started for it.
pub(crate) fn get() -> PyResult<&'static Runtime> {
    let generation = generation();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((made_in, runtime)) = *slot {
        if made_in == generation {
            return Ok(runtime);
        }
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(8)
        .thread_name("tokengate")
        .enable_all()
        .build()
        .map_err(|e| {
            PyRuntimeError::new_err(format!("tokengate could not start its runtime: {e}"))
        })?;
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *slot = Some((generation, runtime));
    Ok(runtime)
}

/// Called by `os.register_at_fork(after_in_child=...)`: this process is a new generation.
#[pyfunction]
fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Registers [`after_fork_in_child`] with `os.register_at_fork`.
pub(crate) fn register_fork_hook(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let hook = wrap_pyfunction!(after_fork_in_child, module)?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", hook)?;
    py.import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    Ok(())
}

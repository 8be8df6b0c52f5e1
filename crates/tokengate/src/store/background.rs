//! The process's own runtime for store calls that must go on whatever their callers do: a
//! current-thread runtime, time and I/O enabled, driven by a thread of its own, made at first
//! use (and again in a child forked since, where the parent's thread is gone).

use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

/// The runtime, with the process it was made in.
static RUNTIME: OnceLock<Mutex<Option<(u32, Handle)>>> = OnceLock::new();

/// A runtime whose tasks are driven whatever their callers do: the current one when it has
/// worker threads, else the process's own ([`runtime`]). Never a current-thread runtime,
/// which may stop being driven (made for one call, then dropped or left idle).
pub(crate) fn driven() -> Option<Handle> {
    match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => Some(current),
        _ => runtime(),
    }
}

/// The process's own runtime; `None` when no runtime or thread can be made.
pub(crate) fn runtime() -> Option<Handle> {
    let slot = RUNTIME.get_or_init(Mutex::default);
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((made_in, handle)) = &*slot {
        if *made_in == pid {
            return Some(handle.clone());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("tokengate-store".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .ok()?;
    *slot = Some((pid, handle.clone()));
    Some(handle)
}

/// Spawns `task` on `handle`, or, should that runtime drop it before it starts (the runtime
/// is shutting down, or has shut down: one made for a call, say, and dropped with the permit
/// still alive), on the process's own runtime ([`runtime`]), [`HANDED_OVER_AFTER`] later.
/// For what must be done once its caller has moved on: a settlement, a place in line given
/// back, a pause shared. (A task dropped once started is not run again: it may have made its
/// call.)
pub(crate) fn spawn_kept<F>(handle: &Handle, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut kept = Kept(Some(task));
    drop(handle.spawn(async move {
        if let Some(task) = kept.0.take() {
            task.await;
        }
    }));
}

/// How long work handed over from a runtime that is shutting down waits before its first
/// call: the runtime's other tasks are being dropped meanwhile, and with them the tasks of
/// the connections made on it, which the Redis store then sees gone and replaces, rather than
/// fail the call on one.
pub(crate) const HANDED_OVER_AFTER: Duration = Duration::from_millis(50);

/// A task not yet started: spawned on the process's own runtime when dropped so.
struct Kept<F: Future<Output = ()> + Send + 'static>(Option<F>);

impl<F: Future<Output = ()> + Send + 'static> Drop for Kept<F> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            if let Some(runtime) = runtime() {
                drop(runtime.spawn(async move {
                    tokio::time::sleep(HANDED_OVER_AFTER).await;
                    task.await;
                }));
            }
        }
    }
}

//! `tokengate._tokengate`: the extension module under the `tokengate` Python package.
//!
//! Every admission rule lives in the `tokengate` crate; this module only carries calls across:
//! arguments into [`tokengate::Cost`] and [`tokengate::Usage`], permits and stats back, Rust
//! errors into the package's exception classes (`tokengate/_errors.py`). The pure-Python
//! layer (`python/tokengate/`) adds the context managers and the decorator.
//!
//! - `runtime`: the tokio runtime of this process, made at first use and made again in a
//!   child after a fork.
//! - `limiter`: `LimiterCore`, a limiter built from limits or a limits file, rebuilt from the
//!   same recipe in a forked child when its limits live in Redis.
//! - `acquisition`: `Acquisition`, what `Limiter.acquire()` returns: decided on the loop's
//!   thread when the limits admit at once, else waited for through the loop's `bridge`.
//! - `bridge`: the answers of waiting acquisitions, carried to the event loop's thread
//!   without the GIL (a byte on a socket the loop watches).
//! - `acquire`: the crate's acquisition, and waiting for it from threads (the GIL released,
//!   Ctrl-C answered).
//! - `permit`: `Permit`, settled from usage objects, dicts or numbers.
//! - `pricing`, `reply`: the httpx transports' pricing of a model call from its body, and
//!   its settling from the reply (JSON or a server-sent event stream), as the reqwest
//!   middleware does.
//! - `errors`, `stats`, `headers`, `usage`: conversions.

mod acquire;
mod acquisition;
mod bridge;
mod errors;
mod headers;
mod limiter;
mod permit;
mod pricing;
mod recipe;
mod reply;
mod runtime;
mod stats;
mod usage;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
mod _tokengate {
    #[pymodule_export]
    use super::acquisition::{set_waiting, Acquisition};
    #[pymodule_export]
    use super::bridge::Bridge;
    #[pymodule_export]
    use super::limiter::LimiterCore;
    #[pymodule_export]
    use super::permit::Permit;
    #[pymodule_export]
    use super::pricing::{PricedCall, Pricer};
    #[pymodule_export]
    use super::reply::ReplyMeter;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::runtime::register_fork_hook(m)?;
        super::runtime::register_exit_hook(m)
    }
}

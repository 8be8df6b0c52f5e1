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
//! - `acquire`: waiting for admission, from asyncio (an asyncio future over the Rust one) and
//!   from threads (the GIL released, Ctrl-C answered).
//! - `permit`: `Permit`, settled from usage objects, dicts or numbers.
//! - `errors`, `stats`, `headers`, `usage`: conversions.

mod acquire;
mod errors;
mod headers;
mod limiter;
mod permit;
mod recipe;
mod runtime;
mod stats;
mod usage;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
mod _tokengate {
    #[pymodule_export]
    use super::limiter::LimiterCore;
    #[pymodule_export]
    use super::permit::Permit;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::runtime::register_fork_hook(m)
    }
}

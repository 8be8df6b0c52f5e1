//! The `tokengate` command line tool, as a library so that its tests and benchmarks call it
//! directly.
//!
//! - [`simulate`] drives the real limiter ([`tokengate::Limiter`], through [`gate::Gate`])
//!   with tokio's virtual clock against a simulated [`provider::Provider`] that enforces its
//!   own limits, and returns a [`report::Report`], the admissions and the queue over time.
//! - [`fleet::simulate_processes`] runs a simulation in several processes whose limiters
//!   share one set of limits in Redis, and replays the provider on their merged log.
//! - [`check::check`] validates a limits, provider or workload file and explains it.
//! - [`chart::write_svg`] draws a simulation.
//! - [`audit::audit`] checks an admission log against every limit of a limits file, under both
//!   readings of "N per period".
//!
//! ```no_run
//! use tokengate_cli::{simulate, SimInput, SimOptions};
//!
//! let input = SimInput::example()?;
//! let sim = simulate(&input, &SimOptions { seed: Some(7), ..SimOptions::default() })?;
//! println!("{}", sim.report.table());
//! # Ok::<(), tokengate_cli::Error>(())
//! ```

pub mod audit;
pub mod bounds;
pub mod chart;
pub mod check;
pub mod duration;
pub mod error;
pub mod fleet;
pub mod gate;
pub mod input;
mod interrupt;
pub mod output;
pub mod provider;
pub mod refusal;
pub mod report;
mod schema;
pub mod sim;
pub mod workload;

pub use error::Error;
pub use sim::{simulate, Record, Sample, Share, SimInput, SimOptions, Simulation, StoreOptions};

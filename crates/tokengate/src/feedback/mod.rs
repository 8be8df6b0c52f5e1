//! Learning from the provider: rate-limit headers and 429s.
//!
//! Providers say on every response how much of each limit is left and when it refills, and on
//! a 429 how long to wait. [`ProviderReport::from_headers`] reads what OpenAI (and the
//! OpenAI-compatible APIs that copy its `x-ratelimit-*` headers) and Anthropic send, plus
//! `retry-after` and `retry-after-ms`, into one value:
//!
//! - [`ProviderReport::limits`]: per [`Dimension`](crate::Dimension), the provider's limit,
//!   what remains, and the time until it resets ([`ReportedLimit`]);
//! - [`ProviderReport::retry_after`]: the wait a 429 (or 503) asked for;
//! - [`ProviderReport::ignored`]: rate-limit headers that could not be read, with the reason,
//!   to log ([`IgnoredHeader`]). Reading never fails and never panics.
//!
//! # Examples
//! ```
//! use std::time::{Duration, SystemTime};
//! use tokengate::feedback::ProviderReport;
//! use tokengate::Dimension;
//!
//! // A 429 from OpenAI.
//! let headers = [
//!     ("x-ratelimit-limit-requests", "500"),
//!     ("x-ratelimit-remaining-requests", "0"),
//!     ("x-ratelimit-reset-requests", "120ms"),
//!     ("x-ratelimit-limit-tokens", "30000"),
//!     ("x-ratelimit-remaining-tokens", "29180"),
//!     ("x-ratelimit-reset-tokens", "1.64s"),
//!     ("retry-after-ms", "120"),
//!     ("retry-after", "1"),
//! ];
//! let report = ProviderReport::from_headers(headers, SystemTime::now());
//! assert_eq!(report.retry_after, Some(Duration::from_millis(120))); // the finer header wins
//! let tokens = report.limit(&Dimension::Tokens).expect("tokens were reported");
//! assert_eq!(tokens.reset_after, Some(Duration::from_millis(1_640)));
//! for ignored in &report.ignored {
//!     eprintln!("{ignored}"); // e.g. `ignored header x-ratelimit-...: "5x": unknown unit ...`
//! }
//! ```

mod header_names;
mod header_values;
mod headers;
#[cfg(feature = "json")]
pub mod usage;

pub use header_values::parse_go_duration;
pub use headers::{IgnoredHeader, ProviderReport, ReportedLimit};

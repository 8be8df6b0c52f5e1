//! Tower middleware: limit any [`Service`](tower_service::Service) with a [`Limiter`].
//!
//! [`TokenGateLayer`] wraps a service in a [`TokenGate`]. For each request it works out the
//! [`Cost`] with your `cost_of` function, waits for the limiter to admit it (FIFO, exactly as
//! long as the limits require), calls the inner service, and settles the permit with the
//! [`Usage`] your `usage_of` function reads from the response: reserved tokens the call did not
//! use come back at once.
//!
//! Split like tower's `limit::rate`: the layer ([`TokenGateLayer`]), the service
//! ([`TokenGate`], with its [`ResponseFuture`]), the configuration ([`TokenGateConfig`]) and
//! one error type ([`TokenGateError`]); and a policy for tower's `RetryLayer`,
//! [`RetryThrottled`], that retries a 429 through the limiter.
//!
//! # How a request goes through
//! 1. `poll_ready` asks the inner service only (see [`TokenGate`] for why it does not wait for
//!    the limiter, unlike tower's `RateLimit`).
//! 2. `call` computes the cost from the request and returns a [`ResponseFuture`]; the inner
//!    service is not called yet.
//! 3. The future, when polled, acquires the cost: at once, after the exact wait, or not at all
//!    ([`TokenGateError::Limit`]: a cost above a limit's capacity, or a wait beyond the
//!    [timeout](TokenGateConfig::with_timeout)).
//! 4. Admitted, it calls the inner service and awaits its response.
//! 5. It settles the permit with `usage_of(&result)`: `Some(usage)` refunds (or charges) the
//!    difference from the reservation; `None` keeps the whole reservation (see below).
//! 6. The in-flight slot is freed when the future completes, or when it is dropped.
//!
//! # Failed calls keep their reservation
//! When `usage_of` returns `None` (typically for an error: no usage was reported), the permit
//! is dropped unsettled, which keeps everything reserved as used. That is the safe reading:
//! providers count a request that reached them against the request limits even when it fails,
//! and may count its prompt tokens too, and a client cannot tell from a timeout or a dropped
//! connection how far the request got. When you know a failure was not counted (the
//! connection was refused), return `Some(Usage::new().input(0).output(0))` for it instead:
//! the tokens come back, the request itself stays counted.
//!
//! Likewise a response future dropped while the inner service is working (a client timeout,
//! a cancelled task) frees its in-flight slot and keeps its reservation. One dropped while it
//! still waits for admission leaves the queue and charges nothing.
//!
//! # Examples
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tokengate::tower::TokenGateLayer;
//! use tokengate::{Cost, Limiter, Policy, Usage};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! struct Prompt {
//!     text: String,
//!     max_tokens: u64,
//! }
//! struct Reply {
//!     text: String,
//!     input_tokens: u64,
//!     output_tokens: u64,
//! }
//!
//! // Stands in for an HTTP client calling the model.
//! let model = service_fn(|prompt: Prompt| async move {
//!     let input_tokens = prompt.text.split_whitespace().count() as u64;
//!     Ok::<_, std::io::Error>(Reply { text: "Paris.".into(), input_tokens, output_tokens: 2 })
//! });
//!
//! let policy = Policy::builder()
//!     .requests_per_minute(500)
//!     .input_tokens_per_minute(30_000)
//!     .output_tokens_per_minute(8_000)
//!     .max_in_flight(10)
//!     .build()?;
//! let limiter = Limiter::new(policy);
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(TokenGateLayer::new(
//!         limiter.clone(),
//!         // Reserve an estimate of the prompt and the most the reply may use.
//!         |p: &Prompt| Cost::request().input(p.text.len() as u64 / 4 + 1).output(p.max_tokens),
//!         // Settle with what the provider says was used; keep the reservation on errors.
//!         |r: &Result<Reply, std::io::Error>| {
//!             let reply = r.as_ref().ok()?;
//!             Some(Usage::new().input(reply.input_tokens).output(reply.output_tokens))
//!         },
//!     ))
//!     .service(model);
//!
//! let prompt = Prompt { text: "What is the capital of France?".into(), max_tokens: 100 };
//! let reply = client.ready().await?.call(prompt).await?;
//! assert_eq!(reply.text, "Paris.");
//!
//! // The 98 output tokens reserved and not used came back when the call settled.
//! let stats = limiter.stats();
//! assert_eq!(stats.limits[2].used, 2);
//! assert_eq!(stats.in_flight, 0);
//! # Ok(())
//! # }
//! ```
//!
//! [`Limiter`]: crate::Limiter
//! [`Cost`]: crate::Cost
//! [`Usage`]: crate::Usage

mod config;
mod error;
mod future;
mod layer;
mod retry;
mod service;

pub use config::TokenGateConfig;
pub use error::TokenGateError;
pub use future::ResponseFuture;
pub use layer::TokenGateLayer;
pub use retry::RetryThrottled;
pub use service::TokenGate;

//! [`reqwest_middleware`] middleware: OpenAI- and Anthropic-style calls made with a `reqwest`
//! client are limited, settled and corrected from the provider's headers, with no other code.
//!
//! Install a [`TokenGateMiddleware`] on a
//! [`ClientWithMiddleware`](reqwest_middleware::ClientWithMiddleware) and make calls as usual.
//!
//! # How a call goes through
//! 1. **Estimate.** A `POST` to a model endpoint (the path ends with `/chat/completions`,
//!    `/responses`, `/messages`, `/completions` or `/embeddings`: [`ApiFormat::from_path`])
//!    whose body is JSON is read into a [`ChatRequest`]: the prompt text (OpenAI `messages`,
//!    Responses `instructions` and `input`, Anthropic `system` and `messages` with content
//!    blocks), the `model` and the output cap (`max_completion_tokens`, `max_tokens`,
//!    `max_output_tokens`). The [`Estimator`](crate::estimate::Estimator) makes its cost:
//!    input tokens counted, output tokens reserved up to the cap. A
//!    [cost function](TokenGateMiddleware::with_cost_fn) can replace this.
//! 2. **Other requests pass through, not limited**: `GET /v1/models`, file uploads, a body
//!    that is not JSON or is a stream. They are not model calls, and providers' token and
//!    request limits are per model; a [default cost](GateConfig::with_default_cost) charges
//!    them instead. Their responses' headers are still observed.
//! 3. **Acquire**: wait for admission, in FIFO order, as long as the limits require, or up to
//!    the [timeout](GateConfig::with_timeout). A timeout, or a cost no limit can ever admit,
//!    is [`reqwest_middleware::Error::Middleware`] holding the
//!    [`AcquireError`], which names the dimension and the amounts (get it
//!    back with [`acquire_error`]); the request is not sent.
//! 4. **Send**, then read the provider's rate-limit headers
//!    ([`ProviderReport::from_headers`](crate::feedback::ProviderReport::from_headers)) and
//!    [`observe`](crate::Limiter::observe) them: a provider that has counted more than the
//!    limiter lowers it. Malformed headers are ignored (logged at debug level with the
//!    `tracing` feature).
//! 5. **429**: the permit is settled as the provider counts a refused call
//!    ([`Refused`](crate::call::Refused): by default the request stays counted and its tokens,
//!    never processed, come back), and [`observe_throttled`](crate::Limiter::observe_throttled)
//!    pauses admissions until its `retry-after` and lowers the limits it refused on. The call
//!    is retried, through the limiter, after that wait (up to
//!    [twice](GateConfig::with_retry) by default); the last 429 is returned to the caller
//!    unchanged. With a retry layer of your own, set [`Retry::none`](crate::call::Retry::none)
//!    and put it *outside* this middleware, so that each retry waits for admission again: a
//!    retry that bypasses the limiter reaches the provider when the limiter did not count it.
//! 6. **Settle** from the reply's `usage`
//!    ([`ReplyUsage`](crate::feedback::usage::ReplyUsage)):
//!    - a JSON reply is read whole, settled, and handed on with the same status, headers and
//!      body (an error reading it is returned from `send`, and the reservation stands);
//!    - a streamed reply (`text/event-stream`) is handed on at once, its body wrapped to
//!      read the usage from the events as they pass (the final chunk of OpenAI Chat
//!      Completions, sent only when the request sets `"stream_options": {"include_usage":
//!      true}`; `response.completed` of Responses; Anthropic's `message_start` and
//!      `message_delta`). It settles when the stream ends, breaks, or is dropped: a stream
//!      cut short is settled with what it showed and keeps its output reservation.
//!    - cached input tokens are charged or not as [`GateConfig::with_cached_input`] says
//!      (by default as each provider counts them).
//!    - a reply with no usage (an error status, another content type) settles nothing: the
//!      whole reservation stands, as [`Limiter::run`](crate::Limiter::run) does for a call it
//!      cannot account.
//! 7. **A failed send**: a connection that was refused or could not be made
//!    ([`reqwest::Error::is_connect`](::reqwest::Error::is_connect)) never reached the
//!    provider: the tokens come back and the request stays counted, as for a 429. Any other
//!    error (a timeout, a connection broken after sending) may have been processed: the
//!    reservation stands.
//!
//! # Tenants and models
//! A request may name its tenant with a [`Tenant`] extension
//! (`RequestBuilder::with_extension(Tenant::new("acme"))`) or a configured header
//! ([`GateConfig::with_tenant_header`]); the model is read from the body. With one
//! [`Limiter`](crate::Limiter) every call shares its limits.
//!
//! # Examples
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tokengate::reqwest::{Tenant, TokenGateMiddleware};
//! use tokengate::{Limiter, Policy};
//!
//! let policy = Policy::builder()
//!     .requests_per_minute(500)
//!     .tokens_per_minute(30_000)
//!     .build()?;
//! let limiter = Limiter::new(policy);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(TokenGateMiddleware::new(limiter.clone()))
//!     .build();
//!
//! // An ordinary call: estimated, admitted, sent, settled from its `usage`.
//! let reply = client
//!     .post("https://api.openai.com/v1/chat/completions")
//!     .bearer_auth("sk-...")
//!     .header("content-type", "application/json")
//!     .body(r#"{"model": "gpt-4o-mini", "max_tokens": 200,
//!               "messages": [{"role": "user", "content": "Name three primes."}]}"#)
//!     .with_extension(Tenant::new("acme"))
//!     .send()
//!     .await?;
//! println!("{}", reply.text().await?);
//! println!("{:?}", limiter.stats());
//! # Ok(())
//! # }
//! ```

mod admission;
mod config;
mod middleware;
mod route;
mod settle;

pub use crate::estimate::{ApiFormat, ChatRequest, RequestMessage, IMAGE_TOKENS};
pub use admission::Admission;
pub use config::GateConfig;
pub use middleware::TokenGateMiddleware;
pub use route::Tenant;

use crate::error::AcquireError;

/// The limiter's error inside a middleware error: why the middleware did not send the request
/// (its cost is above a limit's capacity, or it could not be admitted within the timeout).
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tokengate::reqwest::{acquire_error, TokenGateMiddleware};
/// use tokengate::{AcquireError, Dimension, Limiter, Policy};
///
/// let limiter = Limiter::new(Policy::builder().output_tokens_per_minute(1_000).build()?);
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(TokenGateMiddleware::new(limiter))
///     .build();
/// // 4,000 output tokens can never fit under 1,000 a minute: an error at once, nothing sent.
/// let err = client
///     .post("http://127.0.0.1:9/v1/chat/completions")
///     .body(r#"{"model": "gpt-4o", "max_tokens": 4000, "messages": [{"role": "user", "content": "Hi"}]}"#)
///     .send()
///     .await
///     .unwrap_err();
/// match acquire_error(&err) {
///     Some(AcquireError::Exceeds { dimension, cost, capacity, .. }) => {
///         assert_eq!((dimension, *cost, *capacity), (&Dimension::OutputTokens, 4_000, 1_000));
///     }
///     other => panic!("expected Exceeds, got {other:?}"),
/// }
/// assert!(err.to_string().contains("4000 output_tokens can never be admitted"));
/// # Ok(())
/// # }
/// ```
pub fn acquire_error(error: &reqwest_middleware::Error) -> Option<&AcquireError> {
    match error {
        reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<AcquireError>(),
        _ => None,
    }
}

//! Model calls the limiter can price before they are sent and settle after: what
//! [`Key::run`](crate::Key::run) needs to estimate, acquire, call, settle and retry in one step.
//!
//! [`ModelRequest`] says what a request will cost (its prompt's tokens and its output cap);
//! [`ModelReply`] says what it used, and whether the provider refused it for its rate limits
//! (a 429, which [`Retry`] settles and retries). Both are implemented for OpenAI- and
//! Anthropic-style JSON (`serde_json::Value`, feature `json`), for `http::Response` of such a
//! body (feature `reqwest`), and for `Result` (a failed call says nothing, so its reservation
//! stands); implement them for your client's own types.
//!
//! # Examples
//! ```
//! use tokengate::call::{ModelReply, ModelRequest};
//! use tokengate::estimate::Estimator;
//! use tokengate::{Cost, Usage};
//!
//! struct Summarise { text: String, max_words: u64 }
//! struct Summary { words: u64 }
//!
//! impl ModelRequest for Summarise {
//!     fn cost(&self, estimator: &Estimator, model: &str) -> Cost {
//!         let input = estimator.count_text(model, &self.text).tokens;
//!         Cost::request().input(input).output(self.max_words * 2)
//!     }
//! }
//!
//! impl ModelReply for Summary {
//!     fn usage(&self) -> Option<Usage> {
//!         None // this client does not report usage: the reservation stands
//!     }
//! }
//!
//! let cost = Summarise { text: "A long text.".into(), max_words: 50 }.cost(&Estimator::new(), "my-model");
//! assert_eq!(cost.output_tokens(), 100);
//! ```

#[cfg(feature = "json")]
mod reply;
mod retry;

#[cfg(feature = "json")]
pub use reply::{PendingCall, ReplyKind};

#[cfg(feature = "tokio")]
pub(crate) use retry::Deadline;
pub(crate) use retry::RetryCount;
pub use retry::{Refused, Retry};

use crate::cost::{Cost, Usage};
use crate::estimate::Estimator;
use crate::feedback::ProviderReport;

/// A model call the limiter can price before it is sent.
pub trait ModelRequest {
    /// What to reserve for it on `model` (the key's model; a request that names its own model
    /// may prefer that one for counting).
    fn cost(&self, estimator: &Estimator, model: &str) -> Cost;

    /// The heuristic's own count of this request's input, when [`cost`](Self::cost) priced it
    /// with the estimator's heuristic ([`Estimator::heuristic_input`]): the input a reply
    /// reports then teaches the estimator ([`Estimator::observe_input`]). `None` unless said:
    /// a count of your own teaches nothing.
    fn heuristic_input(&self, estimator: &Estimator, model: &str) -> Option<u64> {
        let _ = (estimator, model);
        None
    }
}

/// What a model call returned, as far as settling its permit goes.
pub trait ModelReply {
    /// What the call used, when the reply says; `None` keeps the whole reservation as the
    /// usage (what a provider counts for a call nobody can account for).
    fn usage(&self) -> Option<Usage>;

    /// Whether the provider refused the call for its rate limits (an HTTP 429), with what it
    /// said ([`ProviderReport::from_headers`] of the reply, or a default report when the
    /// headers are gone: a wait of a second). [`Key::run`](crate::Key::run) settles such a
    /// call as [`Refused`] says, tells the limiter
    /// ([`observe_throttled`](crate::Key::observe_throttled)) and retries it as [`Retry`]
    /// says. By default a reply is never refused.
    fn throttled(&self) -> Option<ProviderReport> {
        None
    }

    /// Every input token the provider counted for the call, cached ones included (what the
    /// input estimate is compared with to learn its scale); by default the usage's input.
    fn counted_input(&self) -> Option<u64> {
        self.usage().and_then(|u| u.input_tokens())
    }
}

impl<T: ModelRequest + ?Sized> ModelRequest for &T {
    fn cost(&self, estimator: &Estimator, model: &str) -> Cost {
        (**self).cost(estimator, model)
    }

    fn heuristic_input(&self, estimator: &Estimator, model: &str) -> Option<u64> {
        (**self).heuristic_input(estimator, model)
    }
}

impl<T: ModelReply, E> ModelReply for Result<T, E> {
    fn usage(&self) -> Option<Usage> {
        self.as_ref().ok().and_then(ModelReply::usage)
    }

    fn throttled(&self) -> Option<ProviderReport> {
        self.as_ref().ok().and_then(ModelReply::throttled)
    }

    fn counted_input(&self) -> Option<u64> {
        self.as_ref().ok().and_then(ModelReply::counted_input)
    }
}

impl<T: ModelReply> ModelReply for Option<T> {
    fn usage(&self) -> Option<Usage> {
        self.as_ref().and_then(ModelReply::usage)
    }

    fn throttled(&self) -> Option<ProviderReport> {
        self.as_ref().and_then(ModelReply::throttled)
    }

    fn counted_input(&self) -> Option<u64> {
        self.as_ref().and_then(ModelReply::counted_input)
    }
}

/// A reply with its status and headers: refused when the status is 429 (its headers say for
/// how long), else the body's usage.
#[cfg(feature = "reqwest")]
impl<T: ModelReply> ModelReply for http::Response<T> {
    fn usage(&self) -> Option<Usage> {
        self.body().usage()
    }

    fn throttled(&self) -> Option<ProviderReport> {
        (self.status() == http::StatusCode::TOO_MANY_REQUESTS)
            .then(|| ProviderReport::from_headers(self.headers(), std::time::SystemTime::now()))
    }
}

#[cfg(feature = "json")]
mod json {
    use serde_json::Value;

    use super::{ModelReply, ModelRequest};
    use crate::cost::{Cost, Usage};
    use crate::estimate::{ChatRequest, Estimator};
    use crate::feedback::usage::ReplyUsage;
    use crate::feedback::ProviderReport;

    /// An OpenAI Chat Completions, Responses, Completions or Embeddings body, or an
    /// Anthropic Messages body, told apart by its fields ([`ChatRequest::from_value`]): one
    /// request, the prompt's tokens, and the output cap (or the estimator's default).
    /// Counted for the body's `model`, else the key's. A body that is no model call costs one
    /// request.
    impl ModelRequest for Value {
        fn cost(&self, estimator: &Estimator, model: &str) -> Cost {
            match ChatRequest::from_value(None, self) {
                Some(mut chat) => {
                    if chat.model.is_none() && !model.is_empty() {
                        chat.model = Some(model.to_owned());
                    }
                    chat.cost(estimator)
                }
                None => Cost::request(),
            }
        }

        fn heuristic_input(&self, estimator: &Estimator, model: &str) -> Option<u64> {
            let mut chat = ChatRequest::from_value(None, self)?;
            if chat.model.is_none() && !model.is_empty() {
                chat.model = Some(model.to_owned());
            }
            estimator.heuristic_input(&chat)
        }
    }

    impl ModelRequest for ChatRequest {
        fn cost(&self, estimator: &Estimator, model: &str) -> Cost {
            if self.model.is_none() && !model.is_empty() {
                let mut named = self.clone();
                named.model = Some(model.to_owned());
                return named.cost(estimator);
            }
            ChatRequest::cost(self, estimator)
        }

        fn heuristic_input(&self, estimator: &Estimator, model: &str) -> Option<u64> {
            if self.model.is_none() && !model.is_empty() {
                let mut named = self.clone();
                named.model = Some(model.to_owned());
                return estimator.heuristic_input(&named);
            }
            estimator.heuristic_input(self)
        }
    }

    /// A reply's `usage` (OpenAI or Anthropic), cached input counted as its provider counts
    /// it; `None` when the reply has none. Refused when it is a rate-limit error body:
    /// OpenAI's `{"error": {"code": "rate_limit_exceeded"}}`, Anthropic's
    /// `{"type": "error", "error": {"type": "rate_limit_error"}}`. A body carries no
    /// `retry-after`: such a call is retried after a second (an `http::Response` of it, with
    /// its headers, waits what the provider asked).
    impl ModelReply for Value {
        fn usage(&self) -> Option<Usage> {
            ReplyUsage::from_value(self)
                .ok()
                .as_ref()
                .and_then(ModelReply::usage)
        }

        fn counted_input(&self) -> Option<u64> {
            ReplyUsage::from_value(self).ok().map(|r| r.input_tokens)
        }

        fn throttled(&self) -> Option<ProviderReport> {
            let error = self.get("error")?;
            let openai = error.get("code").and_then(Value::as_str) == Some("rate_limit_exceeded");
            let anthropic = self.get("type").and_then(Value::as_str) == Some("error")
                && error.get("type").and_then(Value::as_str) == Some("rate_limit_error");
            (openai || anthropic).then(ProviderReport::default)
        }
    }

    impl ModelReply for ReplyUsage {
        fn usage(&self) -> Option<Usage> {
            Some(ReplyUsage::usage(self, self.format.default_cached_input()))
        }

        fn counted_input(&self) -> Option<u64> {
            Some(self.input_tokens)
        }
    }
}

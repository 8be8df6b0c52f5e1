//! Model calls the limiter can price before they are sent and settle after: what
//! [`Key::run`](crate::Key::run) needs to estimate, acquire, call and settle in one step.
//!
//! [`ModelRequest`] says what a request will cost (its prompt's tokens and its output cap);
//! [`ModelReply`] says what it used. Both are implemented for OpenAI- and Anthropic-style JSON
//! (`serde_json::Value`, feature `json`), and for `Result` (a failed call says nothing, so its
//! reservation stands); implement them for your client's own types.
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

use crate::cost::{Cost, Usage};
use crate::estimate::Estimator;

/// A model call the limiter can price before it is sent.
pub trait ModelRequest {
    /// What to reserve for it on `model` (the key's model; a request that names its own model
    /// may prefer that one for counting).
    fn cost(&self, estimator: &Estimator, model: &str) -> Cost;
}

/// What a model call returned, as far as settling its permit goes.
pub trait ModelReply {
    /// What the call used, when the reply says; `None` keeps the whole reservation as the
    /// usage (what a provider counts for a call nobody can account for).
    fn usage(&self) -> Option<Usage>;
}

impl<T: ModelRequest + ?Sized> ModelRequest for &T {
    fn cost(&self, estimator: &Estimator, model: &str) -> Cost {
        (**self).cost(estimator, model)
    }
}

impl<T: ModelReply, E> ModelReply for Result<T, E> {
    fn usage(&self) -> Option<Usage> {
        self.as_ref().ok().and_then(ModelReply::usage)
    }
}

impl<T: ModelReply> ModelReply for Option<T> {
    fn usage(&self) -> Option<Usage> {
        self.as_ref().and_then(ModelReply::usage)
    }
}

#[cfg(feature = "json")]
mod json {
    use serde_json::Value;

    use super::{ModelReply, ModelRequest};
    use crate::cost::{Cost, Usage};
    use crate::estimate::{ChatRequest, Estimator};
    use crate::feedback::usage::ReplyUsage;

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
    }

    /// A reply's `usage` (OpenAI or Anthropic), cached input counted as its provider counts
    /// it; `None` when the reply has none.
    impl ModelReply for Value {
        fn usage(&self) -> Option<Usage> {
            ReplyUsage::from_value(self)
                .ok()
                .as_ref()
                .and_then(ModelReply::usage)
        }
    }

    impl ModelReply for ReplyUsage {
        fn usage(&self) -> Option<Usage> {
            Some(ReplyUsage::usage(self, self.format.default_cached_input()))
        }
    }
}

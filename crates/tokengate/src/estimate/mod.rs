//! Token estimates for a request before it is sent: the [`Cost`] to acquire.
//!
//! An [`Estimator`] turns a chat request (model, messages, `max_tokens`) into a cost:
//!
//! - **Input tokens.** For OpenAI models, counted with OpenAI's own tokenizer (the `tiktoken`
//!   feature, off by default: the encodings add several megabytes), chosen by model name
//!   ([`Encoding::for_model`]), plus the framing every chat message adds
//!   ([`TOKENS_PER_MESSAGE`], [`TOKENS_PER_NAME`], [`REPLY_PRIMING`]) as OpenAI's cookbook counts
//!   it. For other models, or without the feature, a [heuristic](heuristic_tokens) that errs
//!   high, with the same framing. Every count says how it was made ([`Method`]).
//! - **Output tokens.** The request's `max_tokens` (what the provider itself reserves), or,
//!   when `max_tokens` is not given, a default ([`EstimatorBuilder::default_max_tokens`]).
//!   Opt-in ([`EstimatorBuilder::learn_output`]): a high quantile of the output each model
//!   really produced ([`Estimator::observe_output`]), capped at `max_tokens`, so that the
//!   reservation follows what requests use rather than what they might.
//! - **Learned input scaling.** Opt-in ([`EstimatorBuilder::learn_input`]): heuristic counts
//!   multiplied by a high quantile of what the provider counted over what the heuristic
//!   counted ([`Estimator::observe_input`]), for models without a tokenizer here.
//!
//! What counting costs, measured by `cargo bench -p tokengate --features tiktoken --bench
//! estimate` (release build, one core of a shared 2-core machine): about 0.2 ms per 1,000
//! input tokens with `o200k_base`, 0.4 ms with `cl100k_base`, 8 µs with the heuristic; building
//! the two encoders, once per process, about 0.3 s ([`Estimator::preload_encoders`]).
//!
//! Estimates are reservations: settle each permit with the usage the provider reports
//! ([`Permit::settle`](crate::Permit::settle)) and the difference is refunded or charged.
//!
//! # Examples
//! ```
//! use tokengate::estimate::{ChatMessage, Estimator, Method};
//!
//! let estimator = Estimator::new(); // Clone + Send + Sync; counters are shared
//! let messages = [
//!     ChatMessage::system("You are a terse assistant."),
//!     ChatMessage::user("Name three prime numbers."),
//! ];
//! let cost = estimator.estimate_chat("gpt-4o-mini", &messages, Some(200));
//! assert_eq!(cost.output_tokens(), 200);
//!
//! // Why that many input tokens: the tokenizer with the `tiktoken` feature, else the heuristic.
//! let input = estimator.count_chat("gpt-4o-mini", &messages);
//! assert_eq!(input.tokens, cost.input_tokens());
//! match input.method {
//!     Method::Tokenizer(encoding) => assert_eq!(encoding.name(), "o200k_base"),
//!     Method::Heuristic(reason) => println!("estimated: {reason}"),
//! }
//! ```
//!
//! With learned output reservations:
//! ```
//! use tokengate::estimate::{ChatMessage, Estimator, OutputLearning, OutputSource};
//!
//! let estimator = Estimator::builder()
//!     .learn_output(OutputLearning::new().min_observations(10))
//!     .build()?;
//! let messages = [ChatMessage::user("Summarise this paragraph: ...")];
//! for used in [180, 210, 150, 300, 240, 190, 220, 170, 260, 200] {
//!     estimator.observe_output("gpt-4.1", used); // from each reply's usage
//! }
//! let estimate = estimator.explain_chat("gpt-4.1", &messages, Some(4_096));
//! assert_eq!(estimate.output.tokens, 300); // p99 of 10 observations: the largest
//! assert_eq!(estimate.output.source, OutputSource::Learned { observations: 10 });
//! # Ok::<(), tokengate::estimate::EstimatorError>(())
//! ```

mod chat;
mod encoding;
mod heuristic;
mod input;
mod learner;
mod output;
#[cfg(feature = "json")]
mod request;

use std::fmt;
use std::sync::Arc;

use crate::cost::Cost;

pub use chat::{ChatMessage, REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME};
pub use encoding::Encoding;
pub use heuristic::heuristic_tokens;
pub use input::{InputLearning, InputStats};
pub use output::{OutputLearning, OutputStats};
#[cfg(feature = "json")]
pub use request::{ApiFormat, ChatRequest, RequestMessage, IMAGE_TOKENS};

use learner::Learner;

/// The output reservation when a request gives no `max_tokens` and none was configured.
///
/// What a provider's rate limiter reserves for such a request is not documented (OpenAI's
/// documents the larger of `max_tokens` and its input estimate only when `max_tokens` is
/// given), so no figure here can be exact. 4,096 covers most replies; for a model whose output
/// cap is larger and whose provider reserves the cap, set
/// [`EstimatorBuilder::default_max_tokens`] to that cap (the safe side), or give every request
/// a `max_tokens`, which is what the provider then charges.
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;

/// How a token count was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// With the model's own tokenizer: the count the provider will make, framing included
    /// (per OpenAI's cookbook; tool definitions, images and audio are not counted).
    Tokenizer(Encoding),
    /// With [`heuristic_tokens`]: an estimate, meant to err high, and why.
    Heuristic(HeuristicReason),
}

impl Method {
    /// Whether the count came from the model's tokenizer.
    pub fn is_tokenizer(self) -> bool {
        matches!(self, Method::Tokenizer(_))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Tokenizer(encoding) => write!(f, "counted with {encoding}"),
            Method::Heuristic(reason) => write!(f, "estimated by the heuristic: {reason}"),
        }
    }
}

/// Why a count fell back to the heuristic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeuristicReason {
    /// The model is not an OpenAI model this crate knows the encoding of.
    UnknownModel,
    /// The model's encoding is known, but the `tiktoken` feature is off.
    TokenizerDisabled(Encoding),
}

impl fmt::Display for HeuristicReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeuristicReason::UnknownModel => f.write_str("no known tokenizer for this model"),
            HeuristicReason::TokenizerDisabled(encoding) => write!(
                f,
                "the model uses {encoding}, but tokengate was built without the `tiktoken` feature"
            ),
        }
    }
}

/// A number of tokens, and how it was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    /// The tokens.
    pub tokens: u64,
    /// How they were counted.
    pub method: Method,
}

/// Where an output reservation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSource {
    /// The request's `max_tokens` (learning is off, or has too few observations of the model).
    MaxTokens,
    /// No `max_tokens` was given: the estimator's default ([`DEFAULT_MAX_TOKENS`] unless set).
    DefaultMaxTokens,
    /// The learned quantile of the model's output (between the floor and `max_tokens`).
    Learned {
        /// Observations of the model it was learned from.
        observations: usize,
    },
}

/// The output tokens to reserve, and why that many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputReservation {
    /// The tokens.
    pub tokens: u64,
    /// Where the figure came from.
    pub source: OutputSource,
}

/// A request's estimate, with how each part was made ([`Estimator::explain_chat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The input (prompt) tokens.
    pub input: TokenCount,
    /// The output tokens to reserve.
    pub output: OutputReservation,
}

impl Estimate {
    /// One request with these input and output tokens.
    pub fn cost(&self) -> Cost {
        Cost::request()
            .input(self.input.tokens)
            .output(self.output.tokens)
    }
}

impl From<Estimate> for Cost {
    fn from(estimate: Estimate) -> Cost {
        estimate.cost()
    }
}

/// A figure of [`EstimatorBuilder`] that is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EstimatorError {
    /// The quantile is not in `(0, 1]`.
    #[error("the learning quantile {quantile} is invalid: give a fraction above 0 and at most 1, e.g. 0.99 for the 99th percentile")]
    BadQuantile {
        /// The quantile given.
        quantile: f64,
    },
    /// The window is 0.
    #[error("the learning window is 0: keep at least 1 observation per model (default 512)")]
    ZeroWindow,
    /// The minimum number of observations is 0 or above the window.
    #[error("min_observations is {min_observations} with a window of {window}: give from 1 to the window, or the learned figure would be used on no data or never")]
    BadMinObservations {
        /// The minimum given.
        min_observations: usize,
        /// The window.
        window: usize,
    },
}

/// Builds an [`Estimator`].
#[derive(Debug, Clone)]
pub struct EstimatorBuilder {
    default_max_tokens: u64,
    learning: Option<OutputLearning>,
    input_learning: Option<InputLearning>,
}

impl EstimatorBuilder {
    /// The output reservation when a request gives no `max_tokens` (default
    /// [`DEFAULT_MAX_TOKENS`]); also the cap of a learned reservation for such a request.
    pub fn default_max_tokens(mut self, tokens: u64) -> Self {
        self.default_max_tokens = tokens;
        self
    }

    /// Learns each model's output reservation from [`Estimator::observe_output`] (off by
    /// default: without it, observations are ignored and `max_tokens` is reserved).
    pub fn learn_output(mut self, learning: OutputLearning) -> Self {
        self.learning = Some(learning);
        self
    }

    /// Scales each model's heuristic input counts by what the provider counted, from
    /// [`Estimator::observe_input`] (off by default: see [`InputLearning`] for the trade).
    pub fn learn_input(mut self, learning: InputLearning) -> Self {
        self.input_learning = Some(learning);
        self
    }

    /// The estimator.
    ///
    /// # Errors
    /// [`EstimatorError`] when a figure of the [`OutputLearning`] or [`InputLearning`] is out
    /// of range.
    pub fn build(self) -> Result<Estimator, EstimatorError> {
        let output = self.learning.map(|l| (l, l.learning));
        let input = self.input_learning.map(|l| l.learning);
        for learning in output.iter().map(|(_, l)| l).chain(input.iter()) {
            learning.validate()?;
        }
        Ok(Estimator {
            shared: Arc::new(Shared {
                default_max_tokens: self.default_max_tokens,
                learner: output.map(|(config, learning)| (config, Learner::new(learning))),
                input_learner: input.map(Learner::new),
            }),
        })
    }
}

/// Estimates what chat requests will cost before they are sent: input tokens counted, output
/// tokens reserved. Cheap to clone (clones share what was learned); `Send + Sync`.
///
/// See the [module documentation](self) for what is counted and how.
#[derive(Debug, Clone)]
pub struct Estimator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    default_max_tokens: u64,
    /// Learned output reservations: the floor and cap come from the config.
    learner: Option<(OutputLearning, Learner)>,
    /// Learned input ratios, in `input::RATIO_UNIT`ths.
    input_learner: Option<Learner>,
}

impl Default for Estimator {
    fn default() -> Self {
        Self::new()
    }
}

impl Estimator {
    /// An estimator that reserves `max_tokens` (or [`DEFAULT_MAX_TOKENS`]) for output.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                default_max_tokens: DEFAULT_MAX_TOKENS,
                learner: None,
                input_learner: None,
            }),
        }
    }

    /// A builder, for learned output reservations or another default `max_tokens`.
    pub fn builder() -> EstimatorBuilder {
        EstimatorBuilder {
            default_max_tokens: DEFAULT_MAX_TOKENS,
            learning: None,
            input_learning: None,
        }
    }

    /// How text for `model` is counted: with its tokenizer, or by the heuristic and why.
    pub fn method(&self, model: &str) -> Method {
        match Encoding::for_model(model) {
            #[cfg(feature = "tiktoken")]
            Some(encoding) => Method::Tokenizer(encoding),
            #[cfg(not(feature = "tiktoken"))]
            Some(encoding) => Method::Heuristic(HeuristicReason::TokenizerDisabled(encoding)),
            None => Method::Heuristic(HeuristicReason::UnknownModel),
        }
    }

    /// The tokens of plain text (no chat framing) for `model`.
    pub fn count_text(&self, model: &str, text: &str) -> TokenCount {
        let method = self.method(model);
        TokenCount {
            tokens: self.scaled(model, method, count_with(method, text)),
            method,
        }
    }

    /// The input tokens of a chat request: every message with its framing, and the reply
    /// priming (see [`ChatMessage`]).
    pub fn count_chat(&self, model: &str, messages: &[ChatMessage<'_>]) -> TokenCount {
        let method = self.method(model);
        let tokens = chat::count_messages(messages, |text| count_with(method, text));
        TokenCount {
            tokens: self.scaled(model, method, tokens),
            method,
        }
    }

    /// The output tokens to reserve for a request to `model` with this `max_tokens`.
    ///
    /// Without learning: `max_tokens`, or the default when it is `None`. With learning, once
    /// the model has enough observations: their quantile, raised to the floor, then capped at
    /// `max_tokens` (or the default): never more than the request allows the model to write.
    pub fn reserve_output(&self, model: &str, max_tokens: Option<u64>) -> OutputReservation {
        let (cap, source) = match max_tokens {
            Some(tokens) => (tokens, OutputSource::MaxTokens),
            None => (
                self.shared.default_max_tokens,
                OutputSource::DefaultMaxTokens,
            ),
        };
        if let Some((config, learner)) = &self.shared.learner {
            if let Some(stats) = learner.stats(model).filter(|s| s.trusted) {
                return OutputReservation {
                    tokens: stats.quantile.max(config.floor).min(cap),
                    source: OutputSource::Learned {
                        observations: stats.observations,
                    },
                };
            }
        }
        OutputReservation {
            tokens: cap,
            source,
        }
    }

    /// The cost of a chat request: one request, its input tokens ([`Estimator::count_chat`])
    /// and its output reservation ([`Estimator::reserve_output`]).
    pub fn estimate_chat(
        &self,
        model: &str,
        messages: &[ChatMessage<'_>],
        max_tokens: Option<u64>,
    ) -> Cost {
        self.explain_chat(model, messages, max_tokens).cost()
    }

    /// [`Estimator::estimate_chat`] with how each figure was made, to log or inspect.
    pub fn explain_chat(
        &self,
        model: &str,
        messages: &[ChatMessage<'_>],
        max_tokens: Option<u64>,
    ) -> Estimate {
        Estimate {
            input: self.count_chat(model, messages),
            output: self.reserve_output(model, max_tokens),
        }
    }

    /// Records the output tokens a reply from `model` really used (from the provider's usage),
    /// for learned reservations; does nothing when learning is off.
    pub fn observe_output(&self, model: &str, output_tokens: u64) {
        if let Some((_, learner)) = &self.shared.learner {
            learner.observe(model, output_tokens);
        }
    }

    /// What has been learned of `model`'s output; `None` when learning is off or the model
    /// has not been observed.
    pub fn output_stats(&self, model: &str) -> Option<OutputStats> {
        let (_, learner) = self.shared.learner.as_ref()?;
        let learned = learner.stats(model)?;
        Some(OutputStats {
            observations: learned.observations,
            quantile_tokens: learned.quantile,
            trusted: learned.trusted,
        })
    }

    /// Records what the provider counted (`reported`: every input token of a reply's usage,
    /// cached ones included) for a request to `model` whose input the heuristic counted as
    /// `heuristic` (its own count, before any learned factor: [`heuristic_input`](Self::heuristic_input)
    /// for a request body), for learned input scaling ([`InputLearning`]). Does nothing when
    /// that is off, or when `model`'s tokenizer counts its input (no heuristic to scale).
    pub fn observe_input(&self, model: &str, heuristic: u64, reported: u64) {
        let Some(learner) = &self.shared.input_learner else {
            return;
        };
        if self.method(model).is_tokenizer() {
            return;
        }
        learner.observe(model, input::ratio(heuristic, reported));
    }

    /// The heuristic's own count of `chat`'s input (before any learned factor), to observe
    /// against the provider's count with [`observe_input`](Self::observe_input); `None` when
    /// input learning is off, when the model's tokenizer counts it, or when the request carries
    /// fixed reservations the heuristic did not count (images, token arrays), which would skew
    /// the ratio learned for text.
    #[cfg(feature = "json")]
    pub fn heuristic_input(&self, chat: &ChatRequest) -> Option<u64> {
        self.shared.input_learner.as_ref()?;
        let model = chat.model.as_deref()?;
        if self.method(model).is_tokenizer() || chat.extra_tokens > 0 {
            return None;
        }
        let unscaled = Estimator {
            shared: Arc::new(Shared {
                default_max_tokens: self.shared.default_max_tokens,
                learner: None,
                input_learner: None,
            }),
        };
        Some(chat.estimate(&unscaled).input.tokens)
    }

    /// What has been learned of `model`'s input counts; `None` when learning is off or the
    /// model has not been observed.
    pub fn input_stats(&self, model: &str) -> Option<InputStats> {
        let learned = self.shared.input_learner.as_ref()?.stats(model)?;
        Some(InputStats {
            observations: learned.observations,
            factor: learned.quantile as f64 / input::RATIO_UNIT as f64,
            trusted: learned.trusted,
        })
    }

    /// The trusted ratio (in `input::RATIO_UNIT`ths) heuristic counts of `model` are scaled by.
    fn input_ratio(&self, model: &str) -> Option<u64> {
        let learned = self.shared.input_learner.as_ref()?.stats(model)?;
        learned.trusted.then_some(learned.quantile)
    }

    /// `tokens` counted by `method` for `model`, scaled by the learned ratio when the
    /// heuristic counted them.
    fn scaled(&self, model: &str, method: Method, tokens: u64) -> u64 {
        if method.is_tokenizer() {
            return tokens;
        }
        match self.input_ratio(model) {
            Some(ratio) => input::scale(tokens, ratio),
            None => tokens,
        }
    }

    /// Builds both encoders now (about 0.3 s in a release build, once per process) rather than
    /// on the first request. Does nothing without the `tiktoken` feature.
    pub fn preload_encoders(&self) {
        #[cfg(feature = "tiktoken")]
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            encoding.preload();
        }
    }
}

/// The tokens of `text` counted by `method`.
fn count_with(method: Method, text: &str) -> u64 {
    match method {
        #[cfg(feature = "tiktoken")]
        Method::Tokenizer(encoding) => encoding.count(text),
        #[cfg(not(feature = "tiktoken"))]
        Method::Tokenizer(_) => heuristic_tokens(text),
        Method::Heuristic(_) => heuristic_tokens(text),
    }
}

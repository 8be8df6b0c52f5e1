//! What a call really used, read from the provider's JSON reply, streamed or not, to settle
//! its [`Permit`](crate::Permit).
//!
//! - [`ReplyUsage::from_json`] reads a whole reply body and detects its shape: OpenAI Chat
//!   Completions, OpenAI Responses or Anthropic Messages.
//! - [`StreamUsage`] is fed a server-sent event stream chunk by chunk, as the bytes arrive
//!   (chunks may split lines and UTF-8 characters anywhere), in bounded memory;
//!   [`ReplyUsage::from_sse`] reads a whole transcript at once.
//! - [`ReplyUsage::usage`] turns the figures into a [`Usage`] for
//!   [`Permit::settle`](crate::Permit::settle), charging cached input tokens or not
//!   ([`CachedInput`]).
//!
//! | reply | usage is in | [`input_tokens`](ReplyUsage::input_tokens) | [`cached_input_tokens`](ReplyUsage::cached_input_tokens) | [`output_tokens`](ReplyUsage::output_tokens) |
//! |---|---|---|---|---|
//! | OpenAI Chat Completions | `usage`; streamed, the last chunk (only when the request sets `"stream_options": {"include_usage": true}`) | `prompt_tokens` | `prompt_tokens_details.cached_tokens` | `completion_tokens` |
//! | OpenAI Responses | `usage`; streamed, `response.usage` of the `response.completed` event (or `.incomplete`, `.failed`) | `input_tokens` | `input_tokens_details.cached_tokens` | `output_tokens` |
//! | Anthropic Messages | `usage`; streamed, `message.usage` of `message_start`, then the cumulative `usage` of `message_delta` | `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` | `cache_read_input_tokens` | `output_tokens` |
//!
//! Figures are exact `u64`s: a negative, fractional or too large count is an error that names
//! the field, never a wrapped or rounded figure. Reading never panics, whatever the bytes.
//!
//! # Examples
//! ```
//! use tokengate::feedback::usage::{CachedInput, ReplyUsage, StreamUsage};
//! use tokengate::{Cost, Limiter, Policy};
//!
//! let limiter = Limiter::new(Policy::builder().input_tokens_per_minute(30_000).build()?);
//!
//! // Not streamed: read the body.
//! let permit = limiter.try_acquire(Cost::request().input(1_200).output(800))?;
//! let body = br#"{"id": "msg_01", "type": "message", "role": "assistant", "content": [],
//!     "usage": {"input_tokens": 180, "cache_read_input_tokens": 1000, "output_tokens": 312}}"#;
//! let reply = ReplyUsage::from_json(body)?;
//! assert_eq!((reply.input_tokens, reply.cached_input_tokens), (1_180, 1_000));
//! // Anthropic does not count cache reads against its input-token limit.
//! permit.settle(reply.usage(CachedInput::ProviderDefault)); // input 180, output 312
//!
//! // Streamed: feed the bytes as they arrive.
//! let permit = limiter.try_acquire(Cost::request().input(9).output(100))?;
//! let mut meter = StreamUsage::new();
//! for chunk in [
//!     &b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\nda"[..],
//!     b"ta: {\"object\":\"chat.completion.chunk\",\"choices\":[],",
//!     b"\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
//! ] {
//!     meter.push(chunk); // and pass the chunk on to the caller
//! }
//! match meter.finish() {
//!     Some(reply) => permit.settle(reply.usage(CachedInput::default())),
//!     None => drop(permit), // no usage in the stream: the reservation stands
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde_json::{Map, Number, Value};

use crate::Usage;

/// The longest line [`StreamUsage::new`] reads: 8 MiB.
///
/// A Responses `response.completed` event repeats the whole response on one line, images
/// from the image generation tool included (a few MiB of base64); other events are a few
/// hundred bytes. Longer lines are skipped and reported ([`StreamUsage::ignored`]).
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::{StreamUsage, DEFAULT_MAX_LINE_BYTES};
///
/// let meter = StreamUsage::new();
/// assert_eq!(meter.max_line_bytes(), DEFAULT_MAX_LINE_BYTES);
/// ```
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 << 20;

/// How many ignored lines a [`StreamUsage`] keeps (it counts them all).
const IGNORED_KEPT: usize = 16;
/// The longest excerpt of a value or message kept in an error, in characters.
const EXCERPT_CHARS: usize = 160;
/// The longest SSE `event:` name kept: longer names are not names any provider sends.
const EVENT_NAME_MAX: usize = 64;
/// 2^64: a JSON number at or above it does not fit in a `u64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

// Reasons a field is invalid, one wording each.
const NEGATIVE: &str = "negative number";
const NOT_INTEGER: &str = "not an integer";
const TOO_LARGE: &str = "number too large";
const NOT_A_NUMBER: &str = "not a number";
const NOT_AN_OBJECT: &str = "not an object";

// Reasons a stream line is ignored.
const LINE_TOO_LONG: &str = "line longer than the cap";
const EVENT_TOO_LONG: &str = "event data longer than the cap";
const MALFORMED_JSON: &str = "malformed JSON";
const NOT_JSON_OBJECT: &str = "event data is not a JSON object";
const INVALID_USAGE: &str = "invalid usage";
const DELTA_BEFORE_START: &str = "message_delta before message_start";
const EVENT_WITHOUT_USAGE: &str = "event without usage";

// What was expected, when no usage was found.
const EXPECT_ANY: &str = "a JSON object with a `usage` object: `prompt_tokens` and `completion_tokens` (OpenAI Chat Completions), or `input_tokens` and `output_tokens` (OpenAI Responses, Anthropic Messages)";
const EXPECT_CHAT: &str =
    "a `usage` object with `prompt_tokens` and `completion_tokens` (OpenAI Chat Completions)";
const EXPECT_RESPONSES: &str = "a `usage` object with `input_tokens` and `output_tokens` (OpenAI Responses; it is null until the response is done)";
const EXPECT_ANTHROPIC: &str =
    "a `usage` object with `input_tokens` and `output_tokens` (Anthropic Messages)";
const EXPECT_CHAT_STREAM: &str = "a last chunk with `usage`: OpenAI sends it only when the request sets `\"stream_options\": {\"include_usage\": true}`";
const EXPECT_RESPONSES_STREAM: &str = "a `response.completed` (or `response.incomplete`, `response.failed`) event with `response.usage`: the stream ended before it";
const EXPECT_ANTHROPIC_STREAM: &str = "a `message_start` event with `message.usage`";
const EXPECT_ANY_STREAM: &str = "server-sent events of OpenAI Chat Completions, OpenAI Responses or Anthropic Messages that carry usage";

/// The shape of a reply, which says where its usage is and what its figures mean.
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::{CachedInput, ReplyFormat, ReplyUsage};
///
/// let reply = ReplyUsage::from_json(br#"{"object": "response", "usage": {"input_tokens": 5, "output_tokens": 7}}"#)?;
/// assert_eq!(reply.format, ReplyFormat::Responses);
/// assert_eq!(ReplyFormat::Responses.default_cached_input(), CachedInput::Count);
/// # Ok::<(), tokengate::feedback::usage::UsageError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyFormat {
    /// OpenAI Chat Completions (`/v1/chat/completions`) and the OpenAI-compatible APIs that
    /// copy it: `usage.prompt_tokens`, `usage.completion_tokens`.
    ChatCompletions,
    /// OpenAI Responses (`/v1/responses`): `usage.input_tokens`, `usage.output_tokens`.
    Responses,
    /// Anthropic Messages (`/v1/messages`): `usage.input_tokens` (uncached only),
    /// `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`.
    AnthropicMessages,
}

impl ReplyFormat {
    /// What the provider's input-token limit does with cached input tokens: what
    /// [`CachedInput::ProviderDefault`] stands for. [`CachedInput::Count`] for OpenAI's
    /// formats, [`CachedInput::Exclude`] for Anthropic's.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::{CachedInput, ReplyFormat};
    ///
    /// assert_eq!(ReplyFormat::ChatCompletions.default_cached_input(), CachedInput::Count);
    /// assert_eq!(ReplyFormat::AnthropicMessages.default_cached_input(), CachedInput::Exclude);
    /// ```
    pub fn default_cached_input(self) -> CachedInput {
        match self {
            ReplyFormat::ChatCompletions | ReplyFormat::Responses => CachedInput::Count,
            ReplyFormat::AnthropicMessages => CachedInput::Exclude,
        }
    }
}

impl fmt::Display for ReplyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyFormat::ChatCompletions => "OpenAI Chat Completions",
            ReplyFormat::Responses => "OpenAI Responses",
            ReplyFormat::AnthropicMessages => "Anthropic Messages",
        })
    }
}

/// Whether input tokens read from the provider's prompt cache are charged to the limiter's
/// input-token (and combined-token) limits when a permit is settled.
///
/// This is about rate limits, not billing (both providers bill cache reads at a discount):
///
/// - **OpenAI** counts every prompt token against TPM, cached or not: the rate limiter runs
///   before the cache is looked up. [`ReplyFormat::ChatCompletions`] and
///   [`ReplyFormat::Responses`] default to [`Count`](Self::Count).
/// - **Anthropic** counts `input_tokens + cache_creation_input_tokens` against ITPM for most
///   models and leaves `cache_read_input_tokens` out, so caching raises the effective
///   input-token limit. [`ReplyFormat::AnthropicMessages`] defaults to
///   [`Exclude`](Self::Exclude). A few older models (marked on Anthropic's rate-limits page)
///   count cache reads too: use [`Count`](Self::Count) for them. Tokens written to the cache
///   always count.
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::{CachedInput, ReplyUsage};
///
/// let reply = ReplyUsage::from_json(br#"{"object": "chat.completion", "usage": {
///     "prompt_tokens": 2006, "completion_tokens": 300,
///     "prompt_tokens_details": {"cached_tokens": 1920}}}"#)?;
/// assert_eq!(reply.charged_input_tokens(CachedInput::default()), 2_006); // OpenAI counts them
/// assert_eq!(reply.charged_input_tokens(CachedInput::Exclude), 86);
/// # Ok::<(), tokengate::feedback::usage::UsageError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CachedInput {
    /// As the provider whose reply it is counts them: see [`ReplyFormat::default_cached_input`].
    #[default]
    ProviderDefault,
    /// Cache reads are charged like any input token.
    Count,
    /// Cache reads are not charged: the input charged is
    /// [`input_tokens`](ReplyUsage::input_tokens) minus
    /// [`cached_input_tokens`](ReplyUsage::cached_input_tokens).
    Exclude,
}

/// The token counts a reply reports, normalised across providers.
///
/// [`input_tokens`](Self::input_tokens) is every input token the call processed, cached or
/// not: for Anthropic that is the sum of its three input fields (its own `input_tokens` counts
/// only the uncached ones).
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::{ReplyFormat, ReplyUsage};
///
/// let reply = ReplyUsage::from_json(br#"{"type": "message", "usage": {"input_tokens": 25,
///     "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 0, "output_tokens": 98}}"#)?;
/// assert_eq!(
///     reply,
///     ReplyUsage {
///         format: ReplyFormat::AnthropicMessages,
///         input_tokens: 2_025,
///         cached_input_tokens: 0,
///         cache_creation_input_tokens: 2_000,
///         output_tokens: 98,
///         complete: true,
///     }
/// );
/// # Ok::<(), tokengate::feedback::usage::UsageError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyUsage {
    /// The shape of the reply the figures were read from.
    pub format: ReplyFormat,
    /// Every input (prompt) token, cached ones included.
    pub input_tokens: u64,
    /// The input tokens read from the provider's prompt cache: part of
    /// [`input_tokens`](Self::input_tokens), never more.
    pub cached_input_tokens: u64,
    /// The input tokens written to the prompt cache (Anthropic; 0 for OpenAI, which caches
    /// without saying so): part of [`input_tokens`](Self::input_tokens).
    pub cache_creation_input_tokens: u64,
    /// Output tokens, reasoning tokens included.
    pub output_tokens: u64,
    /// Whether these are the reply's final figures: always for a whole JSON reply; for a
    /// stream, once its final usage was seen. An Anthropic stream that ends early carries
    /// the input figures and a running output count that is only a lower bound.
    pub complete: bool,
}

impl ReplyUsage {
    /// Reads the usage of a whole (not streamed) reply body, detecting its shape.
    ///
    /// The shape is told by `"type": "message"` (Anthropic), `"object": "response"`
    /// (Responses) or `"object": "chat.completion"` (Chat Completions), else by the fields of
    /// `usage`: `prompt_tokens` is Chat Completions, `input_tokens` with `total_tokens` or
    /// `*_details` is Responses, `input_tokens` alone is Anthropic. Absent or null
    /// `cached_tokens` and cache fields are 0; embeddings replies (`"object": "list"`), which
    /// have no `completion_tokens`, have 0 output tokens.
    ///
    /// # Errors
    /// - [`UsageError::Json`]: not JSON (the reason says where; a server-sent event stream is
    ///   pointed to [`ReplyUsage::from_sse`]);
    /// - [`UsageError::ProviderError`]: an error reply (`{"error": {...}}`) without usage;
    /// - [`UsageError::NoUsage`]: no `usage` object, or not one of the known shapes;
    /// - [`UsageError::MissingField`], [`UsageError::InvalidField`]: a count is absent, or not
    ///   an integer from 0 to `u64::MAX`;
    /// - [`UsageError::Inconsistent`]: more cached tokens than input tokens;
    /// - [`UsageError::Overflow`]: Anthropic's input fields add up beyond `u64::MAX`.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::{ReplyFormat, ReplyUsage, UsageError};
    ///
    /// let body = br#"{"id": "chatcmpl-1", "object": "chat.completion", "choices": [],
    ///     "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}}"#;
    /// let reply = ReplyUsage::from_json(body)?;
    /// assert_eq!(reply.format, ReplyFormat::ChatCompletions);
    /// assert_eq!((reply.input_tokens, reply.output_tokens), (19, 10));
    ///
    /// let err = ReplyUsage::from_json(br#"{"usage": {"prompt_tokens": -1, "completion_tokens": 2}}"#);
    /// assert_eq!(
    ///     err.unwrap_err().to_string(),
    ///     "`usage.prompt_tokens` is -1: negative number; expected an integer from 0 to 18446744073709551615"
    /// );
    /// # Ok::<(), UsageError>(())
    /// ```
    pub fn from_json(body: &[u8]) -> Result<Self, UsageError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            let mut reason = e.to_string();
            if looks_like_sse(body) {
                reason.push_str(
                    "; the body looks like server-sent events: read it with ReplyUsage::from_sse or StreamUsage",
                );
            }
            UsageError::Json { reason }
        })?;
        let Value::Object(reply) = value else {
            return Err(UsageError::NoUsage {
                expected: EXPECT_ANY,
            });
        };
        let kind = str_field(&reply, "type");
        let object = str_field(&reply, "object");
        let format = if kind == Some("message") {
            Some(ReplyFormat::AnthropicMessages)
        } else if object == Some("response") {
            Some(ReplyFormat::Responses)
        } else if object.is_some_and(|o| {
            o.starts_with("chat.completion") || o == "text_completion" || o == "list"
        }) {
            Some(ReplyFormat::ChatCompletions)
        } else {
            None
        };
        let Some(usage) = object_field(&reply, "usage")? else {
            if let Some(message) = error_message(&reply) {
                return Err(UsageError::ProviderError { message });
            }
            return Err(UsageError::NoUsage {
                expected: match format {
                    Some(ReplyFormat::ChatCompletions) => EXPECT_CHAT,
                    Some(ReplyFormat::Responses) => EXPECT_RESPONSES,
                    Some(ReplyFormat::AnthropicMessages) => EXPECT_ANTHROPIC,
                    None => EXPECT_ANY,
                },
            });
        };
        let has = |key: &str| usage.get(key).is_some_and(|v| !v.is_null());
        let format = match format {
            Some(format) => format,
            None if has("prompt_tokens") || has("completion_tokens") => {
                ReplyFormat::ChatCompletions
            }
            None if has("total_tokens")
                || has("input_tokens_details")
                || has("output_tokens_details") =>
            {
                ReplyFormat::Responses
            }
            None if has("input_tokens") || has("output_tokens") => ReplyFormat::AnthropicMessages,
            None => {
                return Err(UsageError::NoUsage {
                    expected: EXPECT_ANY,
                })
            }
        };
        match format {
            ReplyFormat::ChatCompletions => read_openai(usage, &CHAT, object == Some("list")),
            ReplyFormat::Responses => read_openai(usage, &RESPONSES, false),
            ReplyFormat::AnthropicMessages => read_anthropic(usage, &ANTHROPIC, None)?.reply(true),
        }
    }

    /// Reads the usage of a whole server-sent event stream (a transcript): the same as
    /// pushing it into a [`StreamUsage`] and calling [`StreamUsage::try_finish`].
    ///
    /// # Errors
    /// As [`StreamUsage::try_finish`]: no usage in the stream, and why.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::{ReplyUsage, UsageError};
    ///
    /// let transcript = b"event: message_start\n\
    /// data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
    /// event: message_delta\n\
    /// data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n";
    /// let reply = ReplyUsage::from_sse(transcript)?;
    /// assert_eq!((reply.input_tokens, reply.output_tokens, reply.complete), (25, 15, true));
    ///
    /// let no_usage = b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\ndata: [DONE]\n\n";
    /// assert!(matches!(ReplyUsage::from_sse(no_usage), Err(UsageError::NoUsage { .. })));
    /// # Ok::<(), UsageError>(())
    /// ```
    pub fn from_sse(transcript: &[u8]) -> Result<Self, UsageError> {
        let mut meter = StreamUsage::new();
        meter.push(transcript);
        meter.try_finish()
    }

    /// The input tokens to charge: [`input_tokens`](Self::input_tokens), less
    /// [`cached_input_tokens`](Self::cached_input_tokens) when `cached` excludes them.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::{CachedInput, ReplyUsage};
    ///
    /// let reply = ReplyUsage::from_json(br#"{"type": "message", "usage": {"input_tokens": 30,
    ///     "cache_read_input_tokens": 5000, "output_tokens": 12}}"#)?;
    /// assert_eq!(reply.charged_input_tokens(CachedInput::ProviderDefault), 30);
    /// assert_eq!(reply.charged_input_tokens(CachedInput::Count), 5_030);
    /// # Ok::<(), tokengate::feedback::usage::UsageError>(())
    /// ```
    pub fn charged_input_tokens(&self, cached: CachedInput) -> u64 {
        let cached = match cached {
            CachedInput::ProviderDefault => self.format.default_cached_input(),
            other => other,
        };
        match cached {
            CachedInput::Exclude => self.input_tokens.saturating_sub(self.cached_input_tokens),
            CachedInput::Count | CachedInput::ProviderDefault => self.input_tokens,
        }
    }

    /// The [`Usage`] to settle a permit with: the charged input tokens
    /// ([`charged_input_tokens`](Self::charged_input_tokens)) and, when the figures are
    /// [`complete`](Self::complete), the output tokens.
    ///
    /// The output of an incomplete reply (a stream that ended early) is left unset, so the
    /// reservation stands: the tokens seen are only a lower bound of what the provider counts.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::{CachedInput, ReplyUsage};
    ///
    /// let reply = ReplyUsage::from_json(br#"{"object": "response", "usage": {"input_tokens": 328,
    ///     "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 52, "total_tokens": 380}}"#)?;
    /// let usage = reply.usage(CachedInput::default());
    /// assert_eq!((usage.input_tokens(), usage.output_tokens()), (Some(328), Some(52)));
    ///
    /// let cut = ReplyUsage::from_sse(b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n")?;
    /// assert!(!cut.complete);
    /// assert_eq!(cut.usage(CachedInput::default()).output_tokens(), None); // as reserved
    /// # Ok::<(), tokengate::feedback::usage::UsageError>(())
    /// ```
    pub fn usage(&self, cached: CachedInput) -> Usage {
        let usage = Usage::new().input(self.charged_input_tokens(cached));
        if self.complete {
            usage.output(self.output_tokens)
        } else {
            usage
        }
    }
}

/// Why no usage could be read.
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::{ReplyUsage, UsageError};
///
/// let err = ReplyUsage::from_json(br#"{"usage": {"prompt_tokens": 18446744073709551616, "completion_tokens": 1}}"#)
///     .unwrap_err();
/// assert!(matches!(err, UsageError::InvalidField { path: "usage.prompt_tokens", reason: "number too large", .. }));
///
/// let err = ReplyUsage::from_json(br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#)
///     .unwrap_err();
/// assert_eq!(err.to_string(), "the provider replied with an error: overloaded_error: Overloaded");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The body is not JSON (or not UTF-8, or nested deeper than 128 levels).
    #[error("the reply is not JSON: {reason}")]
    Json {
        /// What the JSON parser said, with the line and column.
        reason: String,
    },
    /// The provider replied with an error and no usage.
    #[error("the provider replied with an error: {message}")]
    ProviderError {
        /// The error's type (or code) and message, as the provider gave them (shortened).
        message: String,
    },
    /// The reply carries no usage.
    #[error("no usage in the reply: expected {expected}")]
    NoUsage {
        /// Where the usage was expected, and for a stream, why it may be missing.
        expected: &'static str,
    },
    /// A count the format requires is absent (or null).
    #[error("`{path}` is missing: expected an integer from 0 to 18446744073709551615")]
    MissingField {
        /// The field's path in the reply, e.g. `usage.completion_tokens`.
        path: &'static str,
    },
    /// A field is present but not what it should be.
    #[error("`{path}` is {found}: {reason}; expected {}", expected(reason))]
    InvalidField {
        /// The field's path in the reply, e.g. `usage.prompt_tokens`.
        path: &'static str,
        /// `"negative number"`, `"not an integer"`, `"number too large"` (at least 2^64),
        /// `"not a number"` or `"not an object"`.
        reason: &'static str,
        /// The value found, as JSON (shortened).
        found: String,
    },
    /// A part of a count is larger than the count.
    #[error(
        "`{part}` ({part_tokens}) is more than `{whole}` ({whole_tokens}), of which it is a part"
    )]
    Inconsistent {
        /// The part's path, e.g. `usage.prompt_tokens_details.cached_tokens`.
        part: &'static str,
        /// Its value.
        part_tokens: u64,
        /// The whole's path, e.g. `usage.prompt_tokens`.
        whole: &'static str,
        /// Its value.
        whole_tokens: u64,
    },
    /// A sum of counts does not fit in a `u64`.
    #[error("{sum} is more than 18446744073709551615")]
    Overflow {
        /// The sum, e.g. `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
        sum: &'static str,
    },
    /// The stream carried no usage, and this line, which might have, was ignored.
    #[error("no usage in the stream; {0}")]
    Ignored(IgnoredLine),
}

fn expected(reason: &str) -> &'static str {
    if reason == NOT_AN_OBJECT {
        "an object"
    } else {
        "an integer from 0 to 18446744073709551615"
    }
}

/// A line of a stream that could not be read, kept so the caller can log it.
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::StreamUsage;
///
/// let mut meter = StreamUsage::new();
/// meter.push(b"data: {\"usage\": \n\n");
/// let ignored = &meter.ignored()[0];
/// assert_eq!((ignored.line, ignored.reason), (1, "malformed JSON"));
/// assert_eq!(
///     ignored.to_string(),
///     "ignored line 1 of the stream: malformed JSON: EOF while parsing a value at line 1 column 10"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredLine {
    /// The line's number, from 1 (for an event, the line of its last `data:` field).
    pub line: u64,
    /// Why it was ignored, e.g. `"malformed JSON"` or `"line longer than the cap"`.
    pub reason: &'static str,
    /// More about it (the parser's message, the length), possibly empty; shortened.
    pub detail: String,
}

impl fmt::Display for IgnoredLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ignored line {} of the stream: {}",
            self.line, self.reason
        )?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for IgnoredLine {}

/// Reads usage from a server-sent event stream as its bytes arrive.
///
/// Push every chunk of the body, in order, with [`push`](Self::push): a chunk may end
/// anywhere, inside a line, a CRLF or a UTF-8 character; the result does not depend on where.
/// Lines end with LF, CRLF or CR; `data:` lines are joined and dispatched at a blank line, as
/// the SSE specification says. Each event is read as it completes:
///
/// - OpenAI Chat Completions: a chunk with a non-null `usage` (the last one, when the request
///   set `stream_options.include_usage`; its `choices` is empty). `data: [DONE]` ends it.
/// - OpenAI Responses: `response.usage` of `response.completed`, `response.incomplete` or
///   `response.failed`.
/// - Anthropic Messages: `message.usage` of `message_start` (input figures and an initial
///   output count), then each `message_delta`'s `usage`, cumulative, whose fields replace
///   those seen; final at a `message_delta` with a `stop_reason`, or `message_stop`.
///
/// The last usage seen wins. Memory is bounded: a line longer than
/// [`max_line_bytes`](Self::max_line_bytes) is skipped (and an event whose data would exceed
/// it), and reported in [`ignored`](Self::ignored); the buffers never hold more than the cap.
/// Pushing never fails and never panics.
///
/// # Examples
/// ```
/// use tokengate::feedback::usage::{CachedInput, StreamUsage};
///
/// let stream = "event: message_start\r\n\
/// data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"content\":[],\
/// \"usage\":{\"input_tokens\":472,\"cache_read_input_tokens\":2048,\"output_tokens\":2}}}\r\n\r\n\
/// event: content_block_delta\r\n\
/// data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Grüße\"}}\r\n\r\n\
/// event: message_delta\r\n\
/// data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":86}}\r\n\r\n\
/// event: message_stop\r\n\
/// data: {\"type\":\"message_stop\"}\r\n\r\n";
/// let mut meter = StreamUsage::new();
/// for chunk in stream.as_bytes().chunks(7) {
///     meter.push(chunk); // splits lines, CRLFs and the `ü`
/// }
/// assert!(meter.ignored().is_empty());
/// let reply = meter.finish().expect("usage was streamed");
/// assert_eq!((reply.input_tokens, reply.cached_input_tokens, reply.output_tokens), (2_520, 2_048, 86));
/// assert_eq!(reply.charged_input_tokens(CachedInput::default()), 472);
/// ```
#[derive(Debug, Clone)]
pub struct StreamUsage {
    max_line: usize,
    /// The line being read, without its end.
    line: Vec<u8>,
    /// The line being read is longer than the cap: its bytes are dropped until its end.
    skipping_line: bool,
    /// The last byte was a CR: an LF right after it ends no line.
    after_cr: bool,
    /// Lines ended so far.
    lines: u64,
    /// The current event's `event:` name (empty if none, or too long).
    event_name: Vec<u8>,
    /// The current event's data lines, joined with LF.
    data: Vec<u8>,
    /// Whether the current event has a `data:` field.
    has_data: bool,
    /// A `data:` line of the current event was skipped: the event is not read.
    data_broken: bool,
    /// The line of the current event's last `data:` field.
    data_line: u64,
    /// The usage seen so far.
    seen: Option<Seen>,
    /// The formats recognised in the stream, usage or not, for the error when none came.
    formats: Formats,
    /// The last error event's message.
    provider_error: Option<String>,
    ignored: Vec<IgnoredLine>,
    ignored_total: u64,
}

/// Usage seen in a stream.
#[derive(Debug, Clone, Copy)]
struct Seen {
    reply: ReplyUsage,
    /// Anthropic's fields, which `message_delta` updates one by one.
    anthropic: Option<AnthropicParts>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Formats {
    chat: bool,
    responses: bool,
    anthropic: bool,
}

impl Default for StreamUsage {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamUsage {
    /// A reader for one stream, skipping lines longer than [`DEFAULT_MAX_LINE_BYTES`].
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let meter = StreamUsage::new();
    /// assert!(meter.current().is_none());
    /// assert!(meter.finish().is_none());
    /// ```
    pub fn new() -> Self {
        Self::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// A reader that skips lines longer than `max` bytes (line end excluded), and events
    /// whose data lines add up to more: its two buffers, the line being read and the event's
    /// data, never grow beyond `max` bytes each.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::with_max_line_bytes(64);
    /// meter.push(format!("data: {{\"padding\": \"{}\"}}\n\n", "x".repeat(100)).as_bytes());
    /// assert_eq!(meter.ignored()[0].reason, "line longer than the cap");
    /// ```
    pub fn with_max_line_bytes(max: usize) -> Self {
        Self {
            max_line: max,
            line: Vec::new(),
            skipping_line: false,
            after_cr: false,
            lines: 0,
            event_name: Vec::new(),
            data: Vec::new(),
            has_data: false,
            data_broken: false,
            data_line: 0,
            seen: None,
            formats: Formats::default(),
            provider_error: None,
            ignored: Vec::new(),
            ignored_total: 0,
        }
    }

    /// The longest line read, in bytes.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// assert_eq!(StreamUsage::with_max_line_bytes(1 << 16).max_line_bytes(), 65_536);
    /// ```
    pub fn max_line_bytes(&self) -> usize {
        self.max_line
    }

    /// Reads the next bytes of the stream. Events are read as soon as their blank line
    /// arrives.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,");
    /// assert!(meter.current().is_none()); // the line is not complete
    /// meter.push(b"\"completion_tokens\":12}}\n\n");
    /// assert_eq!(meter.current().map(|u| u.output_tokens), Some(12));
    /// ```
    pub fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((&first, tail)) = rest.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    rest = tail;
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.append(rest);
                    break;
                }
                Some(end) => {
                    let (piece, after) = rest.split_at(end);
                    self.append(piece);
                    if after.first() == Some(&b'\r') {
                        self.after_cr = true;
                    }
                    self.end_line();
                    rest = after.get(1..).unwrap_or_default();
                }
            }
        }
    }

    /// The usage seen so far, from complete events.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n");
    /// let so_far = meter.current().expect("message_start was read");
    /// assert_eq!((so_far.input_tokens, so_far.output_tokens, so_far.complete), (10, 1, false));
    /// ```
    pub fn current(&self) -> Option<ReplyUsage> {
        self.seen.map(|seen| seen.reply)
    }

    /// Lines that could not be read, in order: the first 16 of them (see
    /// [`ignored_total`](Self::ignored_total)).
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push(b"data: [1, 2]\n\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n");
    /// let reasons: Vec<_> = meter.ignored().iter().map(|i| (i.line, i.reason)).collect();
    /// assert_eq!(reasons, [(1, "event data is not a JSON object"), (3, "message_delta before message_start")]);
    /// ```
    pub fn ignored(&self) -> &[IgnoredLine] {
        &self.ignored
    }

    /// How many lines could not be read, including those not kept in
    /// [`ignored`](Self::ignored).
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push("data: nope\n\n".repeat(20).as_bytes());
    /// assert_eq!((meter.ignored().len(), meter.ignored_total()), (16, 20));
    /// ```
    pub fn ignored_total(&self) -> u64 {
        self.ignored_total
    }

    /// The message of the last error event (`event: error` from Anthropic, `{"error": ...}`
    /// or `"type": "error"` from OpenAI), if any.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
    /// assert_eq!(meter.provider_error(), Some("overloaded_error: Overloaded"));
    /// ```
    pub fn provider_error(&self) -> Option<&str> {
        self.provider_error.as_deref()
    }

    /// Ends the stream and returns the usage seen, or `None` when it carried none.
    ///
    /// A last line without a line end and a last event without its blank line are read too,
    /// so a stream cut short yields what it had: settle with it. See
    /// [`try_finish`](Self::try_finish) for why there is none.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::StreamUsage;
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":8}}");
    /// assert!(meter.current().is_none()); // no line end yet
    /// assert_eq!(meter.finish().map(|u| u.output_tokens), Some(8));
    /// ```
    pub fn finish(mut self) -> Option<ReplyUsage> {
        self.end_of_stream();
        self.current()
    }

    /// Ends the stream like [`finish`](Self::finish), saying why when it carried no usage.
    ///
    /// # Errors
    /// When no usage was seen: [`UsageError::ProviderError`] if an error event came;
    /// else [`UsageError::Ignored`] with the first line ignored, if any; else
    /// [`UsageError::NoUsage`], which says what was expected for the format seen (for Chat
    /// Completions: `stream_options.include_usage`).
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::{StreamUsage, UsageError};
    ///
    /// let mut meter = StreamUsage::new();
    /// meter.push(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
    /// let err = meter.try_finish().unwrap_err();
    /// assert!(err.to_string().contains("include_usage"), "{err}");
    /// ```
    pub fn try_finish(mut self) -> Result<ReplyUsage, UsageError> {
        self.end_of_stream();
        if let Some(seen) = self.seen {
            return Ok(seen.reply);
        }
        if let Some(message) = self.provider_error {
            return Err(UsageError::ProviderError { message });
        }
        if let Some(first) = self.ignored.into_iter().next() {
            return Err(UsageError::Ignored(first));
        }
        let expected = if self.formats.chat {
            EXPECT_CHAT_STREAM
        } else if self.formats.responses {
            EXPECT_RESPONSES_STREAM
        } else if self.formats.anthropic {
            EXPECT_ANTHROPIC_STREAM
        } else {
            EXPECT_ANY_STREAM
        };
        Err(UsageError::NoUsage { expected })
    }

    /// Reads what a stream cut short left: the last line, then the last event.
    fn end_of_stream(&mut self) {
        if !self.line.is_empty() || self.skipping_line {
            self.end_line();
        }
        self.dispatch();
    }

    /// Adds bytes to the line being read, up to the cap.
    fn append(&mut self, piece: &[u8]) {
        if self.skipping_line || piece.is_empty() {
            return;
        }
        let len = self.line.len().saturating_add(piece.len());
        if len <= self.max_line {
            extend_capped(&mut self.line, piece, self.max_line);
            return;
        }
        // Too long: the line's field is in its first bytes.
        let head: Vec<u8> = self.line.iter().chain(piece).take(5).copied().collect();
        if head.starts_with(b"data") && head.get(4).is_none_or(|&b| b == b':') {
            self.data_broken = true;
        }
        self.skipping_line = true;
        self.line = Vec::new();
        let line = self.lines.saturating_add(1);
        self.ignore(
            line,
            LINE_TOO_LONG,
            format!("more than {} bytes", self.max_line),
        );
    }

    /// The line being read has ended.
    fn end_line(&mut self) {
        self.lines = self.lines.saturating_add(1);
        if self.skipping_line {
            self.skipping_line = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.read_line(&line);
        self.line = line;
        self.line.clear();
    }

    /// One line of the stream, without its end.
    fn read_line(&mut self, mut line: &[u8]) {
        if self.lines == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(colon) => {
                let (field, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.data_line = self.lines;
                if self.data_broken {
                    return;
                }
                let separator = usize::from(self.has_data);
                let len = self
                    .data
                    .len()
                    .saturating_add(separator)
                    .saturating_add(value.len());
                if len > self.max_line {
                    self.data_broken = true;
                    self.data = Vec::new();
                    self.ignore(
                        self.lines,
                        EVENT_TOO_LONG,
                        format!("more than {} bytes", self.max_line),
                    );
                    return;
                }
                if self.has_data {
                    extend_capped(&mut self.data, b"\n", self.max_line);
                }
                extend_capped(&mut self.data, value, self.max_line);
                self.has_data = true;
            }
            b"event" => {
                self.event_name.clear();
                if value.len() <= EVENT_NAME_MAX {
                    self.event_name.extend_from_slice(value);
                }
            }
            _ => {} // `id`, `retry` and unknown fields
        }
    }

    /// The blank line after an event (or the end of the stream): reads the event.
    fn dispatch(&mut self) {
        let name = std::mem::take(&mut self.event_name);
        let data = std::mem::take(&mut self.data);
        let (has_data, broken) = (self.has_data, self.data_broken);
        self.has_data = false;
        self.data_broken = false;
        if has_data && !broken {
            self.read_event(&name, &data);
        }
        self.event_name = name;
        self.event_name.clear();
        self.data = data;
        self.data.clear();
    }

    /// One event's data.
    fn read_event(&mut self, name: &[u8], data: &[u8]) {
        let line = self.data_line;
        if data.trim_ascii() == b"[DONE]" {
            self.formats.chat = true;
            if let Some(seen) = &mut self.seen {
                if seen.reply.format == ReplyFormat::ChatCompletions {
                    seen.reply.complete = true;
                }
            }
            return;
        }
        let value: Value = match serde_json::from_slice(data) {
            Ok(value) => value,
            Err(e) => return self.ignore(line, MALFORMED_JSON, e.to_string()),
        };
        let Value::Object(event) = value else {
            return self.ignore(line, NOT_JSON_OBJECT, excerpt(&value));
        };
        let kind = str_field(&event, "type")
            .or_else(|| std::str::from_utf8(name).ok().filter(|n| !n.is_empty()));
        match self.read_object(kind, &event) {
            Ok(()) => {}
            Err(Skip::Usage(e @ UsageError::NoUsage { .. })) => {
                self.ignore(line, EVENT_WITHOUT_USAGE, e.to_string());
            }
            Err(Skip::Usage(e)) => self.ignore(line, INVALID_USAGE, e.to_string()),
            Err(Skip::Reason(reason)) => self.ignore(line, reason, String::new()),
        }
    }

    /// Folds one event into the usage seen. An error leaves the usage as it was.
    fn read_object(&mut self, kind: Option<&str>, event: &Map<String, Value>) -> Result<(), Skip> {
        match kind {
            Some("message_start") => {
                self.formats.anthropic = true;
                let message = object_field(event, "message")?;
                let usage = match message {
                    Some(message) => object_field(message, "usage")?,
                    None => None,
                };
                let Some(usage) = usage else {
                    return Err(Skip::Usage(UsageError::NoUsage {
                        expected: EXPECT_ANTHROPIC_STREAM,
                    }));
                };
                let parts = read_anthropic(usage, &ANTHROPIC_START, None)?;
                self.seen = Some(Seen {
                    reply: parts.reply(false)?,
                    anthropic: Some(parts),
                });
            }
            Some("message_delta") => {
                self.formats.anthropic = true;
                let Some(Seen {
                    anthropic: Some(before),
                    reply,
                }) = self.seen
                else {
                    return Err(Skip::Reason(DELTA_BEFORE_START));
                };
                let stopped = object_field(event, "delta")?
                    .and_then(|delta| delta.get("stop_reason"))
                    .is_some_and(|reason| !reason.is_null());
                let parts = match object_field(event, "usage")? {
                    Some(usage) => read_anthropic(usage, &ANTHROPIC, Some(before))?,
                    None => before,
                };
                self.seen = Some(Seen {
                    reply: parts.reply(reply.complete || stopped)?,
                    anthropic: Some(parts),
                });
            }
            Some("message_stop") => {
                self.formats.anthropic = true;
                if let Some(seen) = &mut self.seen {
                    if seen.anthropic.is_some() {
                        seen.reply.complete = true;
                    }
                }
            }
            Some(
                "response.completed"
                | "response.incomplete"
                | "response.failed"
                | "response.cancelled",
            ) => {
                self.formats.responses = true;
                let response = object_field(event, "response")?;
                match response
                    .map(|r| object_field(r, "usage"))
                    .transpose()?
                    .flatten()
                {
                    Some(usage) => {
                        self.seen = Some(Seen {
                            reply: read_openai(usage, &RESPONSES_STREAM, false)?,
                            anthropic: None,
                        });
                    }
                    None => {
                        if let Some(message) = response.and_then(error_message) {
                            self.provider_error = Some(message);
                        } else {
                            return Err(Skip::Usage(UsageError::NoUsage {
                                expected: EXPECT_RESPONSES_STREAM,
                            }));
                        }
                    }
                }
            }
            Some("error") => {
                self.provider_error =
                    Some(error_message(event).unwrap_or_else(|| excerpt_map(event)));
            }
            Some(kind) if kind.starts_with("response.") => self.formats.responses = true,
            Some(kind) if kind.starts_with("content_block_") || kind == "ping" => {
                self.formats.anthropic = true;
            }
            _ => {
                let chunk =
                    str_field(event, "object").is_some_and(|o| o.starts_with("chat.completion"));
                self.formats.chat |= chunk;
                match object_field(event, "usage")? {
                    Some(usage) if chunk || usage.contains_key("prompt_tokens") => {
                        self.formats.chat = true;
                        let mut reply = read_openai(usage, &CHAT, false)?;
                        // OpenAI's usage chunk is the last one, with no choices; APIs that
                        // send a running count on every chunk are final at `[DONE]`.
                        reply.complete = event
                            .get("choices")
                            .is_some_and(|c| c.as_array().is_some_and(Vec::is_empty));
                        self.seen = Some(Seen {
                            reply,
                            anthropic: None,
                        });
                    }
                    _ => {
                        if let Some(message) = error_message(event) {
                            self.provider_error = Some(message);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn ignore(&mut self, line: u64, reason: &'static str, detail: String) {
        self.ignored_total = self.ignored_total.saturating_add(1);
        if self.ignored.len() < IGNORED_KEPT {
            self.ignored.push(IgnoredLine {
                line,
                reason,
                detail: shorten(detail),
            });
        }
    }
}

/// Appends `bytes` (which fit: `buf.len() + bytes.len() <= max`), growing the buffer by
/// doubling as `Vec` does, but never beyond `max`.
fn extend_capped(buf: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let needed = buf.len().saturating_add(bytes.len());
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity().saturating_mul(2).min(max));
        buf.reserve_exact(target.saturating_sub(buf.len()));
    }
    buf.extend_from_slice(bytes);
}

/// Why an event was not read.
enum Skip {
    Usage(UsageError),
    Reason(&'static str),
}

impl From<UsageError> for Skip {
    fn from(e: UsageError) -> Self {
        Skip::Usage(e)
    }
}

/// Where a format's figures are; each path ends with the field's key.
struct Paths {
    input: &'static str,
    output: &'static str,
    /// The object that holds `cached`, or "" when `cached` is in the usage object itself.
    details: &'static str,
    cached: &'static str,
    /// Anthropic's cache writes ("" for OpenAI).
    creation: &'static str,
}

const CHAT: Paths = Paths {
    input: "usage.prompt_tokens",
    output: "usage.completion_tokens",
    details: "usage.prompt_tokens_details",
    cached: "usage.prompt_tokens_details.cached_tokens",
    creation: "",
};
const RESPONSES: Paths = Paths {
    input: "usage.input_tokens",
    output: "usage.output_tokens",
    details: "usage.input_tokens_details",
    cached: "usage.input_tokens_details.cached_tokens",
    creation: "",
};
const RESPONSES_STREAM: Paths = Paths {
    input: "response.usage.input_tokens",
    output: "response.usage.output_tokens",
    details: "response.usage.input_tokens_details",
    cached: "response.usage.input_tokens_details.cached_tokens",
    creation: "",
};
const ANTHROPIC: Paths = Paths {
    input: "usage.input_tokens",
    output: "usage.output_tokens",
    details: "",
    cached: "usage.cache_read_input_tokens",
    creation: "usage.cache_creation_input_tokens",
};
const ANTHROPIC_START: Paths = Paths {
    input: "message.usage.input_tokens",
    output: "message.usage.output_tokens",
    details: "",
    cached: "message.usage.cache_read_input_tokens",
    creation: "message.usage.cache_creation_input_tokens",
};

/// The key a path ends with.
fn key(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// OpenAI's usage (Chat Completions or Responses): cached tokens are part of the input.
fn read_openai(
    usage: &Map<String, Value>,
    paths: &Paths,
    output_optional: bool,
) -> Result<ReplyUsage, UsageError> {
    let input = required(usage, paths.input)?;
    let output = match count(usage, paths.output)? {
        Some(output) => output,
        None if output_optional => 0,
        None => return Err(UsageError::MissingField { path: paths.output }),
    };
    let cached = match object_field_at(usage, paths.details)? {
        Some(details) => count(details, paths.cached)?.unwrap_or(0),
        None => 0,
    };
    if cached > input {
        return Err(UsageError::Inconsistent {
            part: paths.cached,
            part_tokens: cached,
            whole: paths.input,
            whole_tokens: input,
        });
    }
    Ok(ReplyUsage {
        format: if paths.input.ends_with("prompt_tokens") {
            ReplyFormat::ChatCompletions
        } else {
            ReplyFormat::Responses
        },
        input_tokens: input,
        cached_input_tokens: cached,
        cache_creation_input_tokens: 0,
        output_tokens: output,
        complete: true,
    })
}

/// Anthropic's four counts, as the provider gives them (`input` is the uncached part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AnthropicParts {
    input: u64,
    creation: u64,
    read: u64,
    output: u64,
}

impl AnthropicParts {
    fn reply(self, complete: bool) -> Result<ReplyUsage, UsageError> {
        let input = self
            .input
            .checked_add(self.creation)
            .and_then(|sum| sum.checked_add(self.read))
            .ok_or(UsageError::Overflow {
                sum: "input_tokens + cache_creation_input_tokens + cache_read_input_tokens",
            })?;
        Ok(ReplyUsage {
            format: ReplyFormat::AnthropicMessages,
            input_tokens: input,
            cached_input_tokens: self.read,
            cache_creation_input_tokens: self.creation,
            output_tokens: self.output,
            complete,
        })
    }
}

/// Anthropic's usage; with `before` (a `message_delta`), the fields present replace those.
fn read_anthropic(
    usage: &Map<String, Value>,
    paths: &Paths,
    before: Option<AnthropicParts>,
) -> Result<AnthropicParts, UsageError> {
    let (input, output) = match before {
        None => (
            required(usage, paths.input)?,
            required(usage, paths.output)?,
        ),
        Some(b) => (
            count(usage, paths.input)?.unwrap_or(b.input),
            count(usage, paths.output)?.unwrap_or(b.output),
        ),
    };
    Ok(AnthropicParts {
        input,
        output,
        creation: count(usage, paths.creation)?.unwrap_or(before.map_or(0, |b| b.creation)),
        read: count(usage, paths.cached)?.unwrap_or(before.map_or(0, |b| b.read)),
    })
}

/// A count at `path` in `map`: absent or null is `None`; anything but a `u64` is an error.
fn count(map: &Map<String, Value>, path: &'static str) -> Result<Option<u64>, UsageError> {
    match map.get(key(path)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => number(n, path).map(Some),
        Some(other) => Err(UsageError::InvalidField {
            path,
            reason: NOT_A_NUMBER,
            found: excerpt(other),
        }),
    }
}

fn required(map: &Map<String, Value>, path: &'static str) -> Result<u64, UsageError> {
    count(map, path)?.ok_or(UsageError::MissingField { path })
}

fn number(n: &Number, path: &'static str) -> Result<u64, UsageError> {
    if let Some(n) = n.as_u64() {
        return Ok(n);
    }
    let reason = if n.is_i64() {
        NEGATIVE
    } else {
        match n.as_f64() {
            Some(f) if f.is_sign_negative() => NEGATIVE,
            Some(f) if f >= TWO_POW_64 => TOO_LARGE,
            _ => NOT_INTEGER,
        }
    };
    Err(UsageError::InvalidField {
        path,
        reason,
        found: n.to_string(),
    })
}

/// The object at the key `path` ends with: absent or null is `None`.
fn object_field_at<'a>(
    map: &'a Map<String, Value>,
    path: &'static str,
) -> Result<Option<&'a Map<String, Value>>, UsageError> {
    if path.is_empty() {
        return Ok(Some(map));
    }
    match map.get(key(path)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(other) => Err(UsageError::InvalidField {
            path,
            reason: NOT_AN_OBJECT,
            found: excerpt(other),
        }),
    }
}

/// The object under `key` (a key of the reply's top level or an event's): absent or null is
/// `None`.
fn object_field<'a>(
    map: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a Map<String, Value>>, UsageError> {
    object_field_at(map, key)
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// "type: message" of a non-null `error` object (OpenAI, Anthropic), or of the object itself
/// when it is an error event (`"type": "error"` with `code` and `message`).
fn error_message(map: &Map<String, Value>) -> Option<String> {
    let error = match map.get("error") {
        Some(Value::Object(error)) => error,
        Some(Value::Null) | None if str_field(map, "type") == Some("error") => map,
        Some(Value::String(message)) => return Some(shorten(message.clone())),
        _ => return None,
    };
    let kind = str_field(error, "type")
        .filter(|k| *k != "error")
        .or_else(|| str_field(error, "code"));
    let message = str_field(error, "message");
    Some(shorten(match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_owned(),
        (Some(kind), None) => kind.to_owned(),
        (None, None) => excerpt_map(error),
    }))
}

/// Whether a body that is not JSON starts like a server-sent event stream.
fn looks_like_sse(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = body.trim_ascii_start();
    [&b"data:"[..], b"event:", b"id:", b"retry:", b":"]
        .iter()
        .any(|start| body.starts_with(start))
}

fn excerpt(value: &Value) -> String {
    shorten(value.to_string())
}

fn excerpt_map(map: &Map<String, Value>) -> String {
    excerpt(&Value::Object(map.clone()))
}

/// At most [`EXCERPT_CHARS`] characters, with `...` when cut.
fn shorten(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(EXCERPT_CHARS) {
        text.truncate(at);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Number {
        match serde_json::from_str(text) {
            Ok(Value::Number(n)) => n,
            other => panic!("{text} is not a number: {other:?}"),
        }
    }

    fn reason_of(text: &str) -> Result<u64, &'static str> {
        number(&n(text), "usage.x").map_err(|e| match e {
            UsageError::InvalidField { reason, path, .. } => {
                assert_eq!(path, "usage.x");
                reason
            }
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn numbers_are_u64_or_say_why_not() {
        assert_eq!(reason_of("0"), Ok(0));
        assert_eq!(reason_of("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(reason_of("18446744073709551616"), Err(TOO_LARGE));
        assert_eq!(reason_of("1e19"), Err(NOT_INTEGER)); // below 2^64, but written as a float
        assert_eq!(reason_of("1e20"), Err(TOO_LARGE));
        assert_eq!(reason_of("-1"), Err(NEGATIVE));
        assert_eq!(reason_of("-0"), Err(NEGATIVE));
        assert_eq!(reason_of("-99999999999999999999"), Err(NEGATIVE));
        assert_eq!(reason_of("1.5"), Err(NOT_INTEGER));
        assert_eq!(reason_of("12.0"), Err(NOT_INTEGER));
    }

    #[test]
    fn paths_end_with_their_key() {
        assert_eq!(
            key("usage.prompt_tokens_details.cached_tokens"),
            "cached_tokens"
        );
        assert_eq!(key("usage"), "usage");
        assert_eq!(key(""), "");
        for paths in [
            &CHAT,
            &RESPONSES,
            &RESPONSES_STREAM,
            &ANTHROPIC,
            &ANTHROPIC_START,
        ] {
            assert!(paths.cached.starts_with(paths.details));
            assert!(paths.input.rsplit_once('.').is_some());
        }
    }

    #[test]
    fn shorten_cuts_at_a_character() {
        assert_eq!(shorten("abc".to_owned()), "abc");
        let long = "ü".repeat(EXCERPT_CHARS + 1);
        let short = shorten(long);
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 3);
        assert!(short.ends_with("ü..."));
        assert_eq!(shorten("x".repeat(EXCERPT_CHARS)).len(), EXCERPT_CHARS);
    }

    #[test]
    fn sse_is_recognised_for_the_hint() {
        assert!(looks_like_sse(b"data: {}"));
        assert!(looks_like_sse(b"\xEF\xBB\xBF\r\n event: message_start"));
        assert!(looks_like_sse(b": keep-alive"));
        assert!(!looks_like_sse(b"{\"usage\": 1"));
        assert!(!looks_like_sse(b"database"));
    }

    #[test]
    fn error_messages_of_both_providers() {
        let map = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        let cases = [
            (
                r#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#,
                Some("requests: Rate limit reached"),
            ),
            (
                r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
                Some("overloaded_error: Overloaded"),
            ),
            (
                r#"{"type": "error", "code": "server_error", "message": "boom", "sequence_number": 3}"#,
                Some("server_error: boom"),
            ),
            (
                r#"{"error": {"code": "server_error"}}"#,
                Some("server_error"),
            ),
            (r#"{"error": "plain"}"#, Some("plain")),
            (r#"{"error": {"param": 1}}"#, Some(r#"{"param":1}"#)),
            (r#"{"error": null}"#, None),
            (r#"{"error": 5}"#, None),
            (r#"{"type": "message"}"#, None),
        ];
        for (text, message) in cases {
            assert_eq!(error_message(&map(text)).as_deref(), message, "{text}");
        }
    }

    /// Every line the stream reader saw, as (line number, field, value) via ignored events:
    /// simpler to test through the public behaviour.
    fn outcome(chunks: &[&[u8]]) -> (Option<ReplyUsage>, Vec<IgnoredLine>) {
        let mut meter = StreamUsage::new();
        for chunk in chunks {
            meter.push(chunk);
        }
        let ignored = meter.ignored.clone();
        (meter.finish(), ignored)
    }

    #[test]
    fn line_ends_lf_crlf_cr_across_chunks() {
        let event =
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
        for end in [&b"\n"[..], b"\r\n", b"\r"] {
            let mut whole = event.to_vec();
            whole.extend_from_slice(end);
            whole.extend_from_slice(end);
            whole.extend_from_slice(b"data: nope");
            whole.extend_from_slice(end);
            whole.extend_from_slice(end);
            for split in 0..=whole.len() {
                let (a, b) = whole.split_at(split);
                let (usage, ignored) = outcome(&[a, b]);
                assert_eq!(
                    usage.map(|u| u.output_tokens),
                    Some(4),
                    "{end:?} at {split}"
                );
                // `data: nope` is line 3 whatever the line end and the split.
                assert_eq!(ignored.len(), 1);
                assert_eq!((ignored[0].line, ignored[0].reason), (3, MALFORMED_JSON));
            }
        }
    }

    #[test]
    fn a_cr_then_lf_in_the_next_push_is_one_line_end() {
        let mut meter = StreamUsage::new();
        meter.push(b"data: 1\r");
        meter.push(b"\n");
        meter.push(b"\r\n"); // the blank line
        assert_eq!(meter.lines, 2);
        assert_eq!(meter.ignored_total(), 1); // `1` is not an object: read once
        meter.push(b"\r");
        meter.push(b"\r");
        assert_eq!(meter.lines, 4);
    }

    #[test]
    fn buffers_stay_within_the_cap() {
        let cap = 1024;
        let mut meter = StreamUsage::with_max_line_bytes(cap);
        let long = vec![b'x'; 1 << 20];
        meter.push(b"data: ");
        for chunk in long.chunks(999) {
            meter.push(chunk);
            assert!(
                meter.line.capacity() <= 2 * cap,
                "{}",
                meter.line.capacity()
            );
        }
        meter.push(b"\n\n");
        // An event whose data lines add up beyond the cap: the second one is too many.
        for _ in 0..100 {
            meter.push(&[b"data: ", &long[..600], b"\n"].concat());
            assert!(
                meter.data.capacity() <= 2 * cap,
                "{}",
                meter.data.capacity()
            );
        }
        meter.push(b"\n");
        let reasons: Vec<_> = meter.ignored().iter().map(|i| (i.line, i.reason)).collect();
        assert_eq!(reasons, [(1, LINE_TOO_LONG), (4, EVENT_TOO_LONG)]);
        assert_eq!(meter.ignored_total(), 2);
        // The reader is usable again.
        meter.push(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        );
        assert_eq!(meter.current().map(|u| u.input_tokens), Some(1));
    }

    #[test]
    fn a_long_comment_does_not_break_the_event() {
        let mut meter = StreamUsage::with_max_line_bytes(100);
        meter.push(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n",
        );
        meter.push(format!(": {}\n\n", "p".repeat(200)).as_bytes());
        assert_eq!(meter.current().map(|u| u.output_tokens), Some(2));
        assert_eq!(meter.ignored()[0].reason, LINE_TOO_LONG);
        // A long `data:` line breaks its event, even if another data line is fine.
        let mut meter = StreamUsage::with_max_line_bytes(100);
        meter.push(format!("data: {}\n", "p".repeat(200)).as_bytes());
        meter.push(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        );
        assert_eq!(meter.current(), None);
        // A line of exactly the cap is read.
        let line =
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
        let mut meter = StreamUsage::with_max_line_bytes(line.len());
        meter.push(line);
        meter.push(b"\n\n");
        assert!(meter.ignored().is_empty());
        assert!(meter.current().is_some());
    }

    #[test]
    fn bom_is_stripped_from_the_first_line_only() {
        let (usage, ignored) = outcome(&[
            b"\xEF\xBB",
            b"\xBFdata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        ]);
        assert!(usage.is_some() && ignored.is_empty());
        let (usage, _) = outcome(&[
            b"\n\xEF\xBB\xBFdata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        ]);
        assert_eq!(usage, None); // field `\u{FEFF}data`: unknown, skipped
    }

    #[test]
    fn fields_follow_the_sse_rules() {
        // Two data lines joined by LF; `id`, `retry`, comments and a field without a colon
        // change nothing; `data` without a space.
        let (usage, ignored) = outcome(&[
            b": hello\nid: 7\nretry: 100\nfoo\nevent: message_start\ndata:{\"type\":\"message_start\",\n",
            b"data: \"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
        ]);
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(usage.map(|u| u.input_tokens), Some(4));
        // The event name stands in for a missing `type`, and is reset after each event.
        let (usage, ignored) = outcome(&[
            b"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
            b"data: {\"usage\":{\"output_tokens\":9}}\n\n",
        ]);
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(usage.map(|u| u.output_tokens), Some(1));
    }
}

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

use serde_json::Value;

use crate::{OutputCount, Usage};

mod fields;
mod formats;
mod stream;

use fields::{error_message, object_field, str_field, NOT_AN_OBJECT};
use formats::{read_anthropic, read_openai, ANTHROPIC, CHAT, RESPONSES};
pub use stream::{StreamUsage, DEFAULT_MAX_LINE_BYTES};

// What was expected, when no usage was found.
const EXPECT_ANY: &str = "a JSON object with a `usage` object: `prompt_tokens` and `completion_tokens` (OpenAI Chat Completions), or `input_tokens` and `output_tokens` (OpenAI Responses, Anthropic Messages)";
const EXPECT_CHAT: &str =
    "a `usage` object with `prompt_tokens` and `completion_tokens` (OpenAI Chat Completions)";
const EXPECT_RESPONSES: &str = "a `usage` object with `input_tokens` and `output_tokens` (OpenAI Responses; it is null until the response is done)";
const EXPECT_ANTHROPIC: &str =
    "a `usage` object with `input_tokens` and `output_tokens` (Anthropic Messages)";

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

    /// How the provider's limits count the output of a call in this format, which
    /// [`ReplyUsage::usage`] settles by: [`OutputCount::Reserved`] for OpenAI's formats (the
    /// `max_tokens` charged at admission stays charged), [`OutputCount::Produced`] for
    /// Anthropic's (corrected to the tokens produced when the call ends). An OpenAI-compatible
    /// server that gives back unused output is counted as OpenAI is: more than it counts,
    /// never less; settle it with [`Usage::output`] to give the rest back.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::ReplyFormat;
    /// use tokengate::OutputCount;
    ///
    /// assert_eq!(ReplyFormat::ChatCompletions.output_count(), OutputCount::Reserved);
    /// assert_eq!(ReplyFormat::AnthropicMessages.output_count(), OutputCount::Produced);
    /// ```
    pub fn output_count(self) -> OutputCount {
        match self {
            ReplyFormat::ChatCompletions | ReplyFormat::Responses => OutputCount::Reserved,
            ReplyFormat::AnthropicMessages => OutputCount::Produced,
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
        Self::from_value(&value)
    }

    /// [`from_json`](Self::from_json) on a reply already parsed.
    ///
    /// # Errors
    /// As [`from_json`](Self::from_json), but for JSON syntax.
    ///
    /// # Examples
    /// ```
    /// use tokengate::feedback::usage::ReplyUsage;
    ///
    /// let reply = serde_json::json!({"type": "message", "usage": {"input_tokens": 12, "output_tokens": 30}});
    /// let usage = ReplyUsage::from_value(&reply)?;
    /// assert_eq!((usage.input_tokens, usage.output_tokens), (12, 30));
    /// # Ok::<(), tokengate::feedback::usage::UsageError>(())
    /// ```
    pub fn from_value(value: &Value) -> Result<Self, UsageError> {
        let Value::Object(reply) = value else {
            return Err(UsageError::NoUsage {
                expected: EXPECT_ANY,
            });
        };
        let kind = str_field(reply, "type");
        let object = str_field(reply, "object");
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
        let Some(usage) = object_field(reply, "usage")? else {
            if let Some(message) = error_message(reply) {
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
    /// [`complete`](Self::complete), the output tokens, counted as the format's provider
    /// counts them ([`ReplyFormat::output_count`]: an OpenAI call keeps its reservation).
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
            usage.output_counted(self.output_tokens, self.format.output_count())
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

/// Whether a body that is not JSON starts like a server-sent event stream.
fn looks_like_sse(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = body.trim_ascii_start();
    [&b"data:"[..], b"event:", b"id:", b"retry:", b":"]
        .iter()
        .any(|start| body.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_is_recognised_for_the_hint() {
        assert!(looks_like_sse(b"data: {}"));
        assert!(looks_like_sse(b"\xEF\xBB\xBF\r\n event: message_start"));
        assert!(looks_like_sse(b": keep-alive"));
        assert!(!looks_like_sse(b"{\"usage\": 1"));
        assert!(!looks_like_sse(b"database"));
    }
}

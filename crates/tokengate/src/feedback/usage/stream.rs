//! The server-sent event stream reader, [`StreamUsage`]: splitting lines and events as
//! the bytes arrive, within the line cap, and folding each event's usage in.

use serde_json::{Map, Value};

use super::fields::{error_message, excerpt, excerpt_map, object_field, shorten, str_field};
use super::formats::{
    read_anthropic, read_openai, AnthropicParts, ANTHROPIC, ANTHROPIC_START, CHAT, RESPONSES_STREAM,
};
use super::{IgnoredLine, ReplyFormat, ReplyUsage, UsageError};

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
/// The longest SSE `event:` name kept: longer names are not names any provider sends.
const EVENT_NAME_MAX: usize = 64;

// Reasons a stream line is ignored.
const LINE_TOO_LONG: &str = "line longer than the cap";
const EVENT_TOO_LONG: &str = "event data longer than the cap";
const MALFORMED_JSON: &str = "malformed JSON";
const NOT_JSON_OBJECT: &str = "event data is not a JSON object";
const INVALID_USAGE: &str = "invalid usage";
const DELTA_BEFORE_START: &str = "message_delta before message_start";
const EVENT_WITHOUT_USAGE: &str = "event without usage";

// What was expected, when no usage was found in a stream.
const EXPECT_CHAT_STREAM: &str = "a last chunk with `usage`: OpenAI sends it only when the request sets `\"stream_options\": {\"include_usage\": true}`";
const EXPECT_RESPONSES_STREAM: &str = "a `response.completed` (or `response.incomplete`, `response.failed`) event with `response.usage`: the stream ended before it";
const EXPECT_ANTHROPIC_STREAM: &str = "a `message_start` event with `message.usage`";
const EXPECT_ANY_STREAM: &str = "server-sent events of OpenAI Chat Completions, OpenAI Responses or Anthropic Messages that carry usage";

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Reading a model call from its JSON request body: the API, the model, the text of the
//! prompt and the output cap, from which its [`Cost`] is estimated.

use serde_json::{Map, Value};

use crate::cost::Cost;
use crate::estimate::{ChatMessage, Estimate, Estimator};

/// Input tokens reserved for each image (or document block) in a prompt: the text of an image
/// cannot be counted before the call. About the most either provider charges for one image
/// (Anthropic: up to about 1,600 tokens; OpenAI: up to about 1,100 at high detail), so the
/// reservation errs high and the reply's usage gives the rest back.
///
/// # Examples
/// ```
/// use tokengate::estimate::{ApiFormat, ChatRequest, IMAGE_TOKENS};
///
/// let body = br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": [
///     {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}]}]}"#;
/// let chat = ChatRequest::from_json(ApiFormat::ChatCompletions, body).unwrap();
/// assert_eq!(chat.extra_tokens, IMAGE_TOKENS);
/// ```
pub const IMAGE_TOKENS: u64 = 1_600;

/// The API a request body is written for, told by the request path.
///
/// # Examples
/// ```
/// use tokengate::estimate::ApiFormat;
///
/// assert_eq!(ApiFormat::from_path("/v1/chat/completions"), Some(ApiFormat::ChatCompletions));
/// assert_eq!(ApiFormat::from_path("/openai/deployments/gpt-4o/chat/completions"), Some(ApiFormat::ChatCompletions));
/// assert_eq!(ApiFormat::from_path("/v1/messages"), Some(ApiFormat::AnthropicMessages));
/// assert_eq!(ApiFormat::from_path("/v1/models"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiFormat {
    /// OpenAI Chat Completions (`.../chat/completions`) and the APIs that copy it: `messages`,
    /// `max_completion_tokens` or `max_tokens`, `n`.
    ChatCompletions,
    /// OpenAI Responses (`.../responses`): `instructions`, `input`, `max_output_tokens`.
    Responses,
    /// Anthropic Messages (`.../messages`): `system`, `messages` with content blocks,
    /// `max_tokens`.
    AnthropicMessages,
    /// OpenAI legacy Completions (`.../completions`): `prompt`, `max_tokens`, `n`.
    Completions,
    /// OpenAI Embeddings (`.../embeddings`): `input`; no output tokens.
    Embeddings,
}

impl ApiFormat {
    /// The API a request body is written for, told by its fields (see
    /// [`ChatRequest::from_value`]).
    fn detect(body: &Map<String, Value>) -> Option<Self> {
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        if body.contains_key("messages") {
            let anthropic = body.contains_key("system") || model.starts_with("claude");
            return Some(if anthropic {
                ApiFormat::AnthropicMessages
            } else {
                ApiFormat::ChatCompletions
            });
        }
        if body.contains_key("input") {
            return Some(if model.contains("embedding") {
                ApiFormat::Embeddings
            } else {
                ApiFormat::Responses
            });
        }
        body.contains_key("prompt")
            .then_some(ApiFormat::Completions)
    }

    /// The API of a request to `path` (a URL path; a trailing `/` is ignored), or `None` when
    /// the path is not a model call this module reads.
    ///
    /// # Examples
    /// ```
    /// use tokengate::estimate::ApiFormat;
    ///
    /// assert_eq!(ApiFormat::from_path("/v1/responses/"), Some(ApiFormat::Responses));
    /// assert_eq!(ApiFormat::from_path("/v1/embeddings"), Some(ApiFormat::Embeddings));
    /// assert_eq!(ApiFormat::from_path("/v1/messages/count_tokens"), None);
    /// ```
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Self::ChatCompletions)
        } else if path.ends_with("/responses") {
            Some(Self::Responses)
        } else if path.ends_with("/messages") {
            Some(Self::AnthropicMessages)
        } else if path.ends_with("/completions") {
            Some(Self::Completions)
        } else if path.ends_with("/embeddings") {
            Some(Self::Embeddings)
        } else {
            None
        }
    }
}

/// One message of a request, its text gathered from all its parts.
///
/// # Examples
/// ```
/// use tokengate::estimate::{ApiFormat, ChatRequest, RequestMessage};
///
/// let body = br#"{"model": "gpt-4o", "messages": [{"role": "user", "name": "ada",
///     "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]}"#;
/// let chat = ChatRequest::from_json(ApiFormat::ChatCompletions, body).unwrap();
/// assert_eq!(
///     chat.messages,
///     [RequestMessage { role: "user".into(), text: "Hello\nthere".into(), name: Some("ada".into()) }]
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The text of every text part (and of tool calls and tool results), joined by newlines.
    pub text: String,
    /// The participant's name (Chat Completions), if given.
    pub name: Option<String>,
}

/// A model call read from its JSON request body ([`ChatRequest::from_json`]): what the
/// estimate of its cost is made from.
///
/// | API | prompt read from | output cap read from |
/// |---|---|---|
/// | [`ChatCompletions`](ApiFormat::ChatCompletions) | `messages[].content` (a string, or the `text` of its parts), `tool_calls`, `name` | `max_completion_tokens`, else `max_tokens`; times `n` |
/// | [`Responses`](ApiFormat::Responses) | `instructions`; `input` (a string, or items with `content`, `arguments`, `output`) | `max_output_tokens` |
/// | [`AnthropicMessages`](ApiFormat::AnthropicMessages) | `system`; `messages[].content` (a string, or `text`, `tool_use` and `tool_result` blocks) | `max_tokens` |
/// | [`Completions`](ApiFormat::Completions) | `prompt` (a string or strings) | `max_tokens`; times `n` |
/// | [`Embeddings`](ApiFormat::Embeddings) | `input` (a string or strings; token arrays by their length) | none: 0 |
///
/// Every API: the `tools` definitions count as input text; each image, audio or document part
/// reserves [`IMAGE_TOKENS`]. A request without an output cap reserves the
/// [`Estimator`]'s default.
///
/// # Examples
/// ```
/// use tokengate::estimate::Estimator;
/// use tokengate::estimate::{ApiFormat, ChatRequest};
///
/// let body = br#"{"model": "claude-sonnet-4-5", "max_tokens": 1024,
///     "system": "You are terse.",
///     "messages": [{"role": "user", "content": [{"type": "text", "text": "Name three primes."}]}]}"#;
/// let chat = ChatRequest::from_json(ApiFormat::AnthropicMessages, body).expect("a model call");
/// assert_eq!(chat.model.as_deref(), Some("claude-sonnet-4-5"));
/// assert_eq!(chat.max_output_tokens, Some(1_024));
/// assert_eq!(chat.messages.len(), 2); // the system prompt, then the user's message
///
/// let cost = chat.estimate(&Estimator::new()).cost();
/// assert_eq!(cost.output_tokens(), 1_024);
/// assert!(cost.input_tokens() > 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    /// The API.
    pub format: ApiFormat,
    /// `model`, when the body names one (Azure OpenAI names the deployment in the path).
    pub model: Option<String>,
    /// The messages (the system prompt or instructions first), or for
    /// [`Completions`](ApiFormat::Completions) and [`Embeddings`](ApiFormat::Embeddings), none.
    pub messages: Vec<RequestMessage>,
    /// Input text counted without chat framing: tool definitions, prompts, embedding inputs.
    pub extra_text: String,
    /// Input tokens counted already (token-array prompts) or reserved for images.
    pub extra_tokens: u64,
    /// The most output tokens the call may produce, as the request caps it (times the number
    /// of choices `n`); `None` when the request sets no cap.
    pub max_output_tokens: Option<u64>,
    /// Whether the request asks for a streamed reply (`"stream": true`).
    pub stream: bool,
}

impl ChatRequest {
    /// Reads a request body written for `format`. `None` when the body is not a JSON object,
    /// or has none of the fields that make a model call (`messages`, `input`, `prompt`).
    ///
    /// # Examples
    /// ```
    /// use tokengate::estimate::{ApiFormat, ChatRequest};
    ///
    /// let body = br#"{"model": "gpt-4.1", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 300, "stream": true}"#;
    /// let chat = ChatRequest::from_json(ApiFormat::Responses, body).unwrap();
    /// assert_eq!((chat.max_output_tokens, chat.stream), (Some(300), true));
    /// assert_eq!(chat.messages[0].role, "system");
    ///
    /// assert_eq!(ChatRequest::from_json(ApiFormat::Responses, b"not json"), None);
    /// ```
    pub fn from_json(format: ApiFormat, body: &[u8]) -> Option<Self> {
        let value = serde_json::from_slice::<Value>(body).ok()?;
        Self::from_value(format, &value)
    }

    /// Reads a request body already parsed; the API is told by the fields when `format` is
    /// `None` (`input`: Responses or Embeddings; `messages` with a top-level `system` or a
    /// `claude` model: Anthropic Messages; `messages`: Chat Completions; `prompt`: Completions).
    ///
    /// # Examples
    /// ```
    /// use tokengate::estimate::{ApiFormat, ChatRequest};
    ///
    /// let body = serde_json::json!({"model": "claude-sonnet-4-5", "system": "Be brief.",
    ///     "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 512});
    /// let chat = ChatRequest::from_value(None, &body).unwrap();
    /// assert_eq!(chat.format, ApiFormat::AnthropicMessages);
    /// assert_eq!(chat.max_output_tokens, Some(512));
    /// ```
    pub fn from_value(format: impl Into<Option<ApiFormat>>, body: &Value) -> Option<Self> {
        let Value::Object(body) = body else {
            return None;
        };
        let format = format.into().or_else(|| ApiFormat::detect(body))?;
        let mut chat = ChatRequest {
            format,
            model: body.get("model").and_then(Value::as_str).map(str::to_owned),
            messages: Vec::new(),
            extra_text: String::new(),
            extra_tokens: 0,
            max_output_tokens: None,
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
        };
        let choices = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
        let cap = |key: &str| body.get(key).and_then(Value::as_u64);
        match format {
            ApiFormat::ChatCompletions => {
                let messages = body.get("messages")?.as_array()?;
                for message in messages {
                    chat.push_message(message, "content");
                }
                chat.max_output_tokens = cap("max_completion_tokens")
                    .or_else(|| cap("max_tokens"))
                    .map(|m| m.saturating_mul(choices));
            }
            ApiFormat::Responses => {
                if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
                    chat.messages.push(RequestMessage {
                        role: "system".into(),
                        text: instructions.into(),
                        name: None,
                    });
                }
                match body.get("input")? {
                    Value::String(text) => chat.messages.push(RequestMessage {
                        role: "user".into(),
                        text: text.clone(),
                        name: None,
                    }),
                    Value::Array(items) => {
                        for item in items {
                            chat.push_message(item, "content");
                        }
                    }
                    _ => return None,
                }
                chat.max_output_tokens = cap("max_output_tokens");
            }
            ApiFormat::AnthropicMessages => {
                let messages = body.get("messages")?.as_array()?;
                if let Some(system) = body.get("system") {
                    let mut text = String::new();
                    chat.gather(system, &mut text);
                    chat.messages.push(RequestMessage {
                        role: "system".into(),
                        text,
                        name: None,
                    });
                }
                for message in messages {
                    chat.push_message(message, "content");
                }
                chat.max_output_tokens = cap("max_tokens");
            }
            ApiFormat::Completions | ApiFormat::Embeddings => {
                let field = if format == ApiFormat::Completions {
                    "prompt"
                } else {
                    "input"
                };
                let mut text = String::new();
                chat.gather(body.get(field)?, &mut text);
                chat.extra_text.push_str(&text);
                chat.max_output_tokens = if format == ApiFormat::Embeddings {
                    Some(0)
                } else {
                    cap("max_tokens").map(|m| m.saturating_mul(choices))
                };
            }
        }
        if let Some(tools) = body.get("tools") {
            if !chat.extra_text.is_empty() {
                chat.extra_text.push('\n');
            }
            chat.extra_text.push_str(&tools.to_string());
        }
        Some(chat)
    }

    /// The estimate of the call: the messages counted as chat messages, the extra text as
    /// plain text, plus [`extra_tokens`](Self::extra_tokens); output reserved for
    /// [`max_output_tokens`](Self::max_output_tokens).
    ///
    /// # Examples
    /// ```
    /// use tokengate::estimate::{ChatMessage, Estimator, OutputSource};
    /// use tokengate::estimate::{ApiFormat, ChatRequest};
    ///
    /// let body = br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}"#;
    /// let chat = ChatRequest::from_json(ApiFormat::ChatCompletions, body).unwrap();
    /// let estimator = Estimator::builder().default_max_tokens(512).build()?;
    /// let estimate = chat.estimate(&estimator);
    /// // No max_tokens in the request: the estimator's default is reserved.
    /// assert_eq!((estimate.output.tokens, estimate.output.source), (512, OutputSource::DefaultMaxTokens));
    /// assert_eq!(estimate.input.tokens, estimator.count_chat("gpt-4o", &[ChatMessage::user("Hi")]).tokens);
    /// # Ok::<(), tokengate::estimate::EstimatorError>(())
    /// ```
    pub fn estimate(&self, estimator: &Estimator) -> Estimate {
        let model = self.model.as_deref().unwrap_or("");
        let messages: Vec<ChatMessage<'_>> = self
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: &m.role,
                content: &m.text,
                name: m.name.as_deref(),
            })
            .collect();
        let mut estimate = estimator.explain_chat(model, &messages, self.max_output_tokens);
        if self.messages.is_empty() {
            // Not a chat: no framing, no reply priming.
            estimate.input.tokens = 0;
        }
        if !self.extra_text.is_empty() {
            let extra = estimator.count_text(model, &self.extra_text).tokens;
            estimate.input.tokens = estimate.input.tokens.saturating_add(extra);
        }
        estimate.input.tokens = estimate.input.tokens.saturating_add(self.extra_tokens);
        estimate
    }

    /// [`estimate`](Self::estimate) as a [`Cost`]: one request, its input and output tokens.
    ///
    /// # Examples
    /// ```
    /// use tokengate::estimate::Estimator;
    /// use tokengate::estimate::{ApiFormat, ChatRequest};
    ///
    /// let body = br#"{"model": "text-embedding-3-small", "input": "Hello, world!"}"#;
    /// let chat = ChatRequest::from_json(ApiFormat::Embeddings, body).unwrap();
    /// let estimator = Estimator::new();
    /// let cost = chat.cost(&estimator);
    /// // Embeddings: the input's tokens as the model's tokenizer (or the heuristic) counts
    /// // them, no chat overhead, no output.
    /// let input = estimator.count_text("text-embedding-3-small", "Hello, world!").tokens;
    /// assert_eq!((cost.requests(), cost.input_tokens(), cost.output_tokens()), (1, input, 0));
    /// ```
    pub fn cost(&self, estimator: &Estimator) -> Cost {
        self.estimate(estimator).cost()
    }

    /// Adds one message (an object with `role` and `content`), or for Responses items without
    /// a role (function calls and their outputs), their text as a message of its own.
    fn push_message(&mut self, message: &Value, content_key: &str) {
        let Some(object) = message.as_object() else {
            return;
        };
        let role = object
            .get("role")
            .and_then(Value::as_str)
            .or_else(|| object.get("type").and_then(Value::as_str))
            .unwrap_or("user")
            .to_owned();
        let mut text = String::new();
        if let Some(content) = object.get(content_key) {
            self.gather(content, &mut text);
        }
        for key in ["arguments", "output", "refusal"] {
            if let Some(value) = object.get(key) {
                self.gather(value, &mut text);
            }
        }
        if let Some(calls) = object.get("tool_calls") {
            self.gather_calls(calls, &mut text);
        }
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.messages.push(RequestMessage { role, text, name });
    }

    /// Chat Completions `tool_calls`: each function's name and arguments.
    fn gather_calls(&mut self, calls: &Value, text: &mut String) {
        for call in calls.as_array().into_iter().flatten() {
            if let Some(function) = call.get("function").and_then(Value::as_object) {
                for key in ["name", "arguments"] {
                    if let Some(value) = function.get(key) {
                        self.gather(value, text);
                    }
                }
            }
        }
    }

    /// Appends the text of a content value: a string, an array of strings, token ids or parts,
    /// or a part (`text`, `tool_use` input, `tool_result` content); counts media parts.
    fn gather(&mut self, value: &Value, text: &mut String) {
        match value {
            Value::String(s) => push_line(text, s),
            Value::Array(items) => {
                if items.iter().all(Value::is_number) {
                    // A prompt given as token ids: exactly that many tokens.
                    self.extra_tokens = self.extra_tokens.saturating_add(items.len() as u64);
                    return;
                }
                for item in items {
                    self.gather(item, text);
                }
            }
            Value::Object(part) => self.gather_part(part, text),
            _ => {}
        }
    }

    fn gather_part(&mut self, part: &Map<String, Value>, text: &mut String) {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        if matches!(
            kind,
            "image"
                | "image_url"
                | "input_image"
                | "input_audio"
                | "input_file"
                | "document"
                | "file"
        ) {
            self.extra_tokens = self.extra_tokens.saturating_add(IMAGE_TOKENS);
            return;
        }
        if let Some(t) = part.get("text") {
            self.gather(t, text);
        }
        if kind == "tool_use" {
            if let Some(name) = part.get("name").and_then(Value::as_str) {
                push_line(text, name);
            }
            if let Some(input) = part.get("input") {
                push_line(text, &input.to_string());
            }
        }
        if let Some(content) = part.get("content") {
            // Anthropic `tool_result` blocks, Responses `message` items.
            self.gather(content, text);
        }
    }
}

fn push_line(text: &mut String, s: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: ApiFormat, body: &str) -> ChatRequest {
        ChatRequest::from_json(format, body.as_bytes()).expect("a model call")
    }

    #[test]
    fn chat_completions_parts_tools_and_choices() {
        let chat = read(
            ApiFormat::ChatCompletions,
            r#"{"model": "gpt-4o", "n": 2, "max_tokens": 50, "max_completion_tokens": 100,
               "messages": [
                 {"role": "system", "content": "Be brief."},
                 {"role": "user", "name": "ada", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}}]},
                 {"role": "assistant", "content": null, "tool_calls": [
                    {"type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]}],
               "tools": [{"type": "function", "function": {"name": "lookup"}}]}"#,
        );
        assert_eq!(chat.max_output_tokens, Some(200));
        assert_eq!(chat.messages.len(), 3);
        assert_eq!(chat.messages[1].text, "Look:");
        assert_eq!(chat.messages[1].name.as_deref(), Some("ada"));
        assert_eq!(chat.messages[2].text, "lookup\n{\"q\":1}");
        assert_eq!(chat.extra_tokens, IMAGE_TOKENS);
        assert!(chat.extra_text.contains("lookup"));
        assert!(!chat.stream);
    }

    #[test]
    fn responses_instructions_and_items() {
        let chat = read(
            ApiFormat::Responses,
            r#"{"model": "gpt-4.1", "instructions": "Be brief.", "max_output_tokens": 300, "stream": true,
               "input": [
                 {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                 {"type": "function_call_output", "call_id": "c1", "output": "42"}]}"#,
        );
        let texts: Vec<_> = chat.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["Be brief.", "Hi", "42"]);
        assert_eq!(chat.messages[2].role, "function_call_output");
        assert_eq!(chat.max_output_tokens, Some(300));
        assert!(chat.stream);
        let plain = read(
            ApiFormat::Responses,
            r#"{"model": "gpt-4.1", "input": "Hi"}"#,
        );
        assert_eq!(plain.messages[0].text, "Hi");
        assert_eq!(plain.max_output_tokens, None);
    }

    #[test]
    fn anthropic_system_blocks_and_tool_results() {
        let chat = read(
            ApiFormat::AnthropicMessages,
            r#"{"model": "claude-haiku-4-5", "max_tokens": 512,
               "system": [{"type": "text", "text": "Rules."}],
               "messages": [
                 {"role": "user", "content": "Weather?"},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "Sunny"}]},
                                              {"type": "image", "source": {"type": "base64", "data": "..."}}]}]}"#,
        );
        let texts: Vec<_> = chat.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Rules.",
                "Weather?",
                "weather\n{\"city\":\"Oslo\"}",
                "Sunny"
            ]
        );
        assert_eq!(chat.extra_tokens, IMAGE_TOKENS);
        assert_eq!(chat.max_output_tokens, Some(512));
    }

    #[test]
    fn embeddings_and_token_prompts() {
        let chat = read(
            ApiFormat::Embeddings,
            r#"{"model": "text-embedding-3-small", "input": ["one", "two"]}"#,
        );
        assert_eq!(chat.extra_text, "one\ntwo");
        assert_eq!(chat.max_output_tokens, Some(0));
        let estimate = chat.estimate(&Estimator::new());
        assert_eq!(estimate.output.tokens, 0);
        // No chat framing for embeddings: just the text.
        assert_eq!(
            estimate.input.tokens,
            Estimator::new()
                .count_text("text-embedding-3-small", "one\ntwo")
                .tokens
        );
        let tokens = read(
            ApiFormat::Completions,
            r#"{"model": "gpt-3.5-turbo-instruct", "prompt": [1, 2, 3], "max_tokens": 7, "n": 3}"#,
        );
        assert_eq!(tokens.extra_tokens, 3);
        assert_eq!(tokens.max_output_tokens, Some(21));
        assert_eq!(tokens.estimate(&Estimator::new()).input.tokens, 3);
    }

    #[test]
    fn not_model_calls() {
        for (format, body) in [
            (ApiFormat::ChatCompletions, "not json"),
            (ApiFormat::ChatCompletions, "[1, 2]"),
            (ApiFormat::ChatCompletions, r#"{"model": "gpt-4o"}"#),
            (
                ApiFormat::AnthropicMessages,
                r#"{"role": "user", "content": "hi"}"#,
            ),
            (ApiFormat::Responses, r#"{"model": "gpt-4o", "input": 3}"#),
        ] {
            assert_eq!(
                ChatRequest::from_json(format, body.as_bytes()),
                None,
                "{body}"
            );
        }
    }
}

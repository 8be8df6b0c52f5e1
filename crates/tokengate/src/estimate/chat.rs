//! Chat messages, and the tokens their framing adds.

/// Tokens that frame every message (`<|start|>{role/name}\n{content}<|end|>\n`), per OpenAI's
/// cookbook ("How to count tokens with tiktoken") for every current chat model.
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens a message's `name` adds on top of the name's own tokens.
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens that prime the reply (`<|start|>assistant<|message|>`), once per request.
pub const REPLY_PRIMING: u64 = 3;

/// One message of a chat request, as sent: its text only (borrowed, never copied).
///
/// Counted as OpenAI's cookbook counts it: [`TOKENS_PER_MESSAGE`], plus the tokens of the role,
/// of the content, and of the name with [`TOKENS_PER_NAME`] when there is one; the request adds
/// [`REPLY_PRIMING`] once. Images, audio, tool definitions and tool calls are not counted: add
/// them to the estimate yourself (or settle with the usage the provider reports).
///
/// # Examples
/// ```
/// use tokengate::estimate::ChatMessage;
/// let messages = [
///     ChatMessage::system("You are terse."),
///     ChatMessage::user("Hi!").with_name("ada"),
/// ];
/// assert_eq!(messages[1].role, "user");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatMessage<'a> {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// The text of the message.
    pub content: &'a str,
    /// The participant's name, if given.
    pub name: Option<&'a str>,
}

impl<'a> ChatMessage<'a> {
    /// A message with this role and content, and no name.
    pub fn new(role: &'a str, content: &'a str) -> Self {
        Self {
            role,
            content,
            name: None,
        }
    }

    /// A `system` message.
    pub fn system(content: &'a str) -> Self {
        Self::new("system", content)
    }

    /// A `developer` message (what the o-series models read in place of `system`).
    pub fn developer(content: &'a str) -> Self {
        Self::new("developer", content)
    }

    /// A `user` message.
    pub fn user(content: &'a str) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: &'a str) -> Self {
        Self::new("assistant", content)
    }

    /// Sets the participant's name.
    pub fn with_name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }
}

/// The tokens of `messages`, counting each piece of text with `count`.
pub(crate) fn count_messages(messages: &[ChatMessage<'_>], count: impl Fn(&str) -> u64) -> u64 {
    messages.iter().fold(REPLY_PRIMING, |total, m| {
        let name = m
            .name
            .map_or(0, |n| count(n).saturating_add(TOKENS_PER_NAME));
        total
            .saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(count(m.role))
            .saturating_add(count(m.content))
            .saturating_add(name)
    })
}

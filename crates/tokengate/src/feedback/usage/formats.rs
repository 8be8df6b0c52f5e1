//! Where each provider format keeps its figures, and reading them from a `usage` object
//! into a [`ReplyUsage`].

use serde_json::{Map, Value};

use super::fields::{count, object_field_at, required};
use super::{ReplyFormat, ReplyUsage, UsageError};

/// Where a format's figures are; each path ends with the field's key.
pub(super) struct Paths {
    input: &'static str,
    output: &'static str,
    /// The object that holds `cached`, or "" when `cached` is in the usage object itself.
    details: &'static str,
    cached: &'static str,
    /// Anthropic's cache writes ("" for OpenAI).
    creation: &'static str,
}

pub(super) const CHAT: Paths = Paths {
    input: "usage.prompt_tokens",
    output: "usage.completion_tokens",
    details: "usage.prompt_tokens_details",
    cached: "usage.prompt_tokens_details.cached_tokens",
    creation: "",
};
pub(super) const RESPONSES: Paths = Paths {
    input: "usage.input_tokens",
    output: "usage.output_tokens",
    details: "usage.input_tokens_details",
    cached: "usage.input_tokens_details.cached_tokens",
    creation: "",
};
pub(super) const RESPONSES_STREAM: Paths = Paths {
    input: "response.usage.input_tokens",
    output: "response.usage.output_tokens",
    details: "response.usage.input_tokens_details",
    cached: "response.usage.input_tokens_details.cached_tokens",
    creation: "",
};
pub(super) const ANTHROPIC: Paths = Paths {
    input: "usage.input_tokens",
    output: "usage.output_tokens",
    details: "",
    cached: "usage.cache_read_input_tokens",
    creation: "usage.cache_creation_input_tokens",
};
pub(super) const ANTHROPIC_START: Paths = Paths {
    input: "message.usage.input_tokens",
    output: "message.usage.output_tokens",
    details: "",
    cached: "message.usage.cache_read_input_tokens",
    creation: "message.usage.cache_creation_input_tokens",
};

/// OpenAI's usage (Chat Completions or Responses): cached tokens are part of the input.
pub(super) fn read_openai(
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
pub(super) struct AnthropicParts {
    input: u64,
    creation: u64,
    read: u64,
    output: u64,
}

impl AnthropicParts {
    pub(super) fn reply(self, complete: bool) -> Result<ReplyUsage, UsageError> {
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
pub(super) fn read_anthropic(
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

#[cfg(test)]
mod tests {
    use super::super::fields::key;
    use super::*;

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
}

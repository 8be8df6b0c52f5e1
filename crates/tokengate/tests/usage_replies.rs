//! Reading what a call used from providers' replies ([`tokengate::feedback::usage`]): whole
//! replies of OpenAI Chat Completions, OpenAI Responses and Anthropic Messages as the APIs send
//! them; streamed transcripts of each, split at every byte boundary (the result never depends
//! on where the chunks end: not inside a line, a CRLF or a UTF-8 character); streams without
//! usage, cut short or ending in an error; malformed replies and counts, each an error that
//! names the field; counts at and beyond `u64::MAX` (an error, never a wrapped figure);
//! settling a limiter's permit with what was read; and properties: any bytes, in any chunks,
//! never panic and give the same result as in one piece, and counts written into a reply come
//! back exactly.
//!
//! Run: `cargo test -p tokengate --test usage_replies` (256 cases per property, or
//! `PROPTEST_CASES`). Failures are persisted to
//! `crates/tokengate/proptest-regressions/usage_replies.txt` and replayed first.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use tokengate::feedback::usage::{
    CachedInput, IgnoredLine, ReplyFormat, ReplyUsage, StreamUsage, UsageError,
    DEFAULT_MAX_LINE_BYTES,
};
use tokengate::{Cost, Dimension, Limiter, ManualClock, Policy};

mod common;

// ---------------------------------------------------------------------------------------------
// Replies as the providers send them.
// ---------------------------------------------------------------------------------------------

/// `POST /v1/chat/completions`, a prompt of 1,117 tokens of which 1,024 came from the cache.
const OPENAI_CHAT: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The image shows a wooden boardwalk extending through a lush green marshland.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {
      "cached_tokens": 1024,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

/// `POST /v1/responses` with a reasoning model: reasoning tokens are part of the output.
const OPENAI_RESPONSES: &str = r#"{
  "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
  "object": "response",
  "created_at": 1741476777,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "o4-mini-2025-04-16",
  "output": [
    {"type": "reasoning", "id": "rs_67ccd3a9f4c08190", "summary": []},
    {
      "type": "message",
      "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
      "status": "completed",
      "role": "assistant",
      "content": [
        {"type": "output_text", "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.", "annotations": []}
      ]
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {"effort": "medium", "summary": null},
  "store": true,
  "temperature": 1.0,
  "text": {"format": {"type": "text"}},
  "tool_choice": "auto",
  "tools": [],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 2328,
    "input_tokens_details": {"cached_tokens": 2048},
    "output_tokens": 1152,
    "output_tokens_details": {"reasoning_tokens": 1024},
    "total_tokens": 3480
  },
  "user": null,
  "metadata": {}
}"#;

/// `POST /v1/messages` reading a cached prefix of 1,800 tokens and writing 248 more.
const ANTHROPIC_MESSAGE: &str = r#"{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [
    {"type": "text", "text": "Hi! My name is Claude. Grüße aus dem Cache."}
  ],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 2095,
    "cache_creation_input_tokens": 248,
    "cache_read_input_tokens": 1800,
    "cache_creation": {"ephemeral_5m_input_tokens": 248, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 503,
    "service_tier": "standard"
  }
}"#;

/// Chat Completions streamed with `"stream_options": {"include_usage": true}`: every chunk
/// has `"usage": null` but the last, whose `choices` is empty. The content has two- three- and
/// four-byte UTF-8 characters, for the splits to cut.
const OPENAI_CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Grüße, \"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"世界 👋\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],\"usage\":{\"prompt_tokens\":1290,\"completion_tokens\":12,\"total_tokens\":1302,\"prompt_tokens_details\":{\"cached_tokens\":1152,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n",
    "\n",
    "data: [DONE]\n",
    "\n",
);

/// The same stream without `include_usage`: no chunk carries usage.
const OPENAI_CHAT_STREAM_NO_USAGE: &str = concat!(
    "data: {\"id\":\"chatcmpl-124\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-124\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello!\"},\"logprobs\":null,\"finish_reason\":null}]}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-124\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n",
    "\n",
    "data: [DONE]\n",
    "\n",
);

/// `POST /v1/responses` with `"stream": true`: usage is null until `response.completed`.
const OPENAI_RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"error\":null,\"incomplete_details\":null,\"instructions\":\"You are a helpful assistant.\",\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":null,\"user\":null,\"metadata\":{}}}\n",
    "\n",
    "event: response.in_progress\n",
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n",
    "\n",
    "event: response.output_item.added\n",
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n",
    "\n",
    "event: response.content_part.added\n",
    "data: {\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}\n",
    "\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi \"}\n",
    "\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_index\":0,\"delta\":\"thére ✓\"}\n",
    "\n",
    "event: response.output_text.done\n",
    "data: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_index\":0,\"text\":\"Hi thére ✓\"}\n",
    "\n",
    "event: response.content_part.done\n",
    "data: {\"type\":\"response.content_part.done\",\"sequence_number\":7,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"Hi thére ✓\",\"annotations\":[]}}\n",
    "\n",
    "event: response.output_item.done\n",
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":8,\"output_index\":0,\"item\":{\"id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi thére ✓\",\"annotations\":[]}]}}\n",
    "\n",
    "event: response.completed\n",
    "data: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"completed\",\"error\":null,\"incomplete_details\":null,\"instructions\":\"You are a helpful assistant.\",\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi thére ✓\",\"annotations\":[]}]}],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48},\"user\":null,\"metadata\":{}}}\n",
    "\n",
);

/// `POST /v1/messages` with `"stream": true`: input figures and an initial output count in
/// `message_start`, the cumulative output count in `message_delta`.
const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":2,\"service_tier\":\"standard\"}}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
    "\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hallo, schöne \"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Grüße 🌍!\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
    "\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":86}}\n",
    "\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n",
    "\n",
);

/// Anthropic with a server tool (web search): the final `message_delta` carries cumulative
/// input figures as well, which replace those of `message_start`.
const ANTHROPIC_TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01G\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1-20250805\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":2679,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":3}}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_014hJH82Qum7Td6UV8gDXThB\",\"name\":\"web_search\",\"input\":{}}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"query\\\": \\\"weather NYC today\\\"}\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
    "\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":10682,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":510,\"server_tool_use\":{\"web_search_requests\":1}}}\n",
    "\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n",
    "\n",
);

/// Anthropic overloaded mid-stream: input was counted, the output is unknown.
const ANTHROPIC_OVERLOADED_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1500,\"output_tokens\":1}}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
    "\n",
    "event: error\n",
    "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n",
    "\n",
);

/// SSE as the specification allows it, not as the providers write it: a comment, an event
/// whose JSON has no `type` (the `event:` name stands in), data split over two lines (joined
/// with a line feed), `id:` and `retry:` fields, a field without a colon, and a bad event.
const UNUSUAL_SSE: &str = concat!(
    ": connected\n",
    "retry: 3000\n",
    "\n",
    "event: message_start\n",
    "id: 1\n",
    "data: {\"message\":{\"usage\":{\"input_tokens\":4,\n",
    "data:\"output_tokens\":1}}}\n",
    "\n",
    "data: {oops}\n",
    "heartbeat\n",
    "\n",
    "event: message_delta\n",
    "data: {\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":64}}\n",
    "\n",
);

fn reply(
    format: ReplyFormat,
    input: u64,
    cached: u64,
    creation: u64,
    output: u64,
    complete: bool,
) -> ReplyUsage {
    ReplyUsage {
        format,
        input_tokens: input,
        cached_input_tokens: cached,
        cache_creation_input_tokens: creation,
        output_tokens: output,
        complete,
    }
}

/// Everything a stream reader reports, for comparing ways of feeding it.
#[derive(Debug, PartialEq)]
struct Outcome {
    current: Option<ReplyUsage>,
    ignored: Vec<IgnoredLine>,
    ignored_total: u64,
    provider_error: Option<String>,
    finished: Result<ReplyUsage, UsageError>,
}

fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, max_line: usize) -> Outcome {
    let mut meter = StreamUsage::with_max_line_bytes(max_line);
    for chunk in chunks {
        meter.push(chunk);
    }
    Outcome {
        current: meter.current(),
        ignored: meter.ignored().to_vec(),
        ignored_total: meter.ignored_total(),
        provider_error: meter.provider_error().map(str::to_owned),
        finished: meter.try_finish(),
    }
}

fn whole(bytes: &[u8]) -> Outcome {
    feed([bytes], DEFAULT_MAX_LINE_BYTES)
}

/// The bytes cut at the given points (any order, duplicates allowed).
fn cut(bytes: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
    points.iter_mut().for_each(|p| *p = (*p).min(bytes.len()));
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points {
        chunks.push(&bytes[start..p]);
        start = p;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// Splitting the transcript in two at every byte, or into single bytes, or into chunks of
/// 2..=7 bytes, changes nothing.
fn assert_split_invariant(transcript: &[u8]) -> Outcome {
    let expected = whole(transcript);
    for at in 0..=transcript.len() {
        let (a, b) = transcript.split_at(at);
        assert_eq!(
            feed([a, b], DEFAULT_MAX_LINE_BYTES),
            expected,
            "split at byte {at}"
        );
    }
    assert_eq!(
        feed(transcript.chunks(1), DEFAULT_MAX_LINE_BYTES),
        expected,
        "byte by byte"
    );
    for size in 2..=7 {
        assert_eq!(
            feed(transcript.chunks(size), DEFAULT_MAX_LINE_BYTES),
            expected,
            "chunks of {size}"
        );
    }
    expected
}

fn with_line_ends(transcript: &str, end: &str) -> String {
    transcript.replace('\n', end)
}

// ---------------------------------------------------------------------------------------------
// Whole replies.
// ---------------------------------------------------------------------------------------------

#[test]
fn openai_chat_completion() {
    let got = ReplyUsage::from_json(OPENAI_CHAT.as_bytes()).unwrap();
    assert_eq!(
        got,
        reply(ReplyFormat::ChatCompletions, 1117, 1024, 0, 46, true)
    );
    // OpenAI counts cached prompt tokens against TPM: the default charges them.
    let usage = got.usage(CachedInput::default());
    assert_eq!(
        (usage.input_tokens(), usage.output_tokens()),
        (Some(1117), Some(46))
    );
    assert_eq!(got.charged_input_tokens(CachedInput::Count), 1117);
    assert_eq!(got.charged_input_tokens(CachedInput::Exclude), 93);
}

#[test]
fn openai_responses() {
    let got = ReplyUsage::from_json(OPENAI_RESPONSES.as_bytes()).unwrap();
    assert_eq!(
        got,
        reply(ReplyFormat::Responses, 2328, 2048, 0, 1152, true)
    );
    assert_eq!(got.charged_input_tokens(CachedInput::default()), 2328);
    assert_eq!(got.charged_input_tokens(CachedInput::Exclude), 280);
}

#[test]
fn anthropic_message() {
    let got = ReplyUsage::from_json(ANTHROPIC_MESSAGE.as_bytes()).unwrap();
    // 2,095 uncached + 248 written to the cache + 1,800 read from it.
    assert_eq!(
        got,
        reply(ReplyFormat::AnthropicMessages, 4143, 1800, 248, 503, true)
    );
    // Anthropic's ITPM leaves cache reads out; cache writes count.
    let usage = got.usage(CachedInput::ProviderDefault);
    assert_eq!(
        (usage.input_tokens(), usage.output_tokens()),
        (Some(2343), Some(503))
    );
    assert_eq!(got.charged_input_tokens(CachedInput::Count), 4143);
}

#[test]
fn shapes_are_told_apart_without_type_or_object() {
    let cases = [
        (
            r#"{"usage": {"prompt_tokens": 5, "completion_tokens": 7}}"#,
            ReplyFormat::ChatCompletions,
        ),
        (
            r#"{"usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}"#,
            ReplyFormat::Responses,
        ),
        (
            r#"{"usage": {"input_tokens": 5, "output_tokens": 7, "input_tokens_details": null, "output_tokens_details": {"reasoning_tokens": 0}}}"#,
            ReplyFormat::Responses,
        ),
        (
            r#"{"usage": {"input_tokens": 5, "output_tokens": 7}}"#,
            ReplyFormat::AnthropicMessages,
        ),
        (
            r#"{"usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": null}}"#,
            ReplyFormat::AnthropicMessages,
        ),
        // The legacy completions endpoint has the chat usage.
        (
            r#"{"object": "text_completion", "usage": {"prompt_tokens": 5, "completion_tokens": 7}}"#,
            ReplyFormat::ChatCompletions,
        ),
    ];
    for (body, format) in cases {
        let got = ReplyUsage::from_json(body.as_bytes()).unwrap();
        assert_eq!(got, reply(format, 5, 0, 0, 7, true), "{body}");
    }
}

#[test]
fn embeddings_have_no_output() {
    let body = r#"{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093]}],
        "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}"#;
    assert_eq!(
        ReplyUsage::from_json(body.as_bytes()),
        Ok(reply(ReplyFormat::ChatCompletions, 8, 0, 0, 0, true))
    );
    // A chat completion without `completion_tokens` is not taken for 0.
    let body = r#"{"object": "chat.completion", "usage": {"prompt_tokens": 8, "total_tokens": 8}}"#;
    assert_eq!(
        ReplyUsage::from_json(body.as_bytes()),
        Err(UsageError::MissingField {
            path: "usage.completion_tokens"
        })
    );
}

#[test]
fn settling_a_permit_with_the_reply() {
    let clock = ManualClock::new();
    let policy = Policy::builder()
        .input_tokens_per_minute(10_000)
        .output_tokens_per_minute(2_000)
        // Exact windows: a minute later the first admission has left them (no safety margin).
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, clock.clone());
    let used = |dimension: Dimension| {
        limiter
            .stats()
            .limits
            .iter()
            .find(|l| l.dimension == dimension)
            .map(|l| l.used)
            .unwrap()
    };
    let got = ReplyUsage::from_json(ANTHROPIC_MESSAGE.as_bytes()).unwrap();

    // Reserve 3,000 input and 800 output; the reply says 2,343 input counted, 503 output.
    let permit = limiter
        .try_acquire(Cost::request().input(3_000).output(800))
        .unwrap();
    assert_eq!(
        (used(Dimension::InputTokens), used(Dimension::OutputTokens)),
        (3_000, 800)
    );
    permit.settle(got.usage(CachedInput::default()));
    assert_eq!(
        (used(Dimension::InputTokens), used(Dimension::OutputTokens)),
        (2_343, 503)
    );

    // A minute later, with cache reads counted: 4,143, above the 3,000 reserved.
    clock.advance(Duration::from_secs(60));
    let permit = limiter
        .try_acquire(Cost::request().input(3_000).output(800))
        .unwrap();
    permit.settle(got.usage(CachedInput::Count));
    assert_eq!(
        (used(Dimension::InputTokens), used(Dimension::OutputTokens)),
        (4_143, 503)
    );
}

// ---------------------------------------------------------------------------------------------
// Streams.
// ---------------------------------------------------------------------------------------------

#[test]
fn openai_chat_stream_at_every_split() {
    let outcome = assert_split_invariant(OPENAI_CHAT_STREAM.as_bytes());
    let expected = reply(ReplyFormat::ChatCompletions, 1290, 1152, 0, 12, true);
    assert_eq!(outcome.finished, Ok(expected));
    assert_eq!(outcome.current, Some(expected));
    assert!(outcome.ignored.is_empty(), "{:?}", outcome.ignored);
    assert_eq!(outcome.provider_error, None);
}

#[test]
fn openai_responses_stream_at_every_split() {
    let outcome = assert_split_invariant(OPENAI_RESPONSES_STREAM.as_bytes());
    assert_eq!(
        outcome.finished,
        Ok(reply(ReplyFormat::Responses, 37, 0, 0, 11, true))
    );
    assert!(outcome.ignored.is_empty(), "{:?}", outcome.ignored);
}

#[test]
fn anthropic_stream_at_every_split() {
    let outcome = assert_split_invariant(ANTHROPIC_STREAM.as_bytes());
    let expected = reply(ReplyFormat::AnthropicMessages, 2520, 2048, 0, 86, true);
    assert_eq!(outcome.finished, Ok(expected));
    assert!(outcome.ignored.is_empty(), "{:?}", outcome.ignored);
    assert_eq!(expected.charged_input_tokens(CachedInput::default()), 472);
}

#[test]
fn anthropic_delta_replaces_the_input_figures() {
    let outcome = assert_split_invariant(ANTHROPIC_TOOL_STREAM.as_bytes());
    assert_eq!(
        outcome.finished,
        Ok(reply(
            ReplyFormat::AnthropicMessages,
            10682,
            0,
            0,
            510,
            true
        ))
    );
}

#[test]
fn unusual_but_valid_sse() {
    let outcome = assert_split_invariant(UNUSUAL_SSE.as_bytes());
    assert_eq!(
        outcome.finished,
        Ok(reply(ReplyFormat::AnthropicMessages, 4, 0, 0, 64, true))
    );
    let ignored: Vec<_> = outcome.ignored.iter().map(|i| (i.line, i.reason)).collect();
    assert_eq!(ignored, [(9, "malformed JSON")]);
}

#[test]
fn crlf_and_cr_line_ends_read_the_same() {
    for transcript in [
        UNUSUAL_SSE,
        OPENAI_CHAT_STREAM,
        OPENAI_RESPONSES_STREAM,
        ANTHROPIC_STREAM,
        ANTHROPIC_TOOL_STREAM,
    ] {
        let lf = whole(transcript.as_bytes());
        assert!(lf.finished.is_ok());
        for end in ["\r\n", "\r"] {
            let other = with_line_ends(transcript, end);
            assert_eq!(assert_split_invariant(other.as_bytes()), lf, "{end:?}");
        }
    }
}

#[test]
fn streams_read_by_from_sse_and_stream_usage_agree() {
    for transcript in [
        OPENAI_CHAT_STREAM,
        OPENAI_CHAT_STREAM_NO_USAGE,
        OPENAI_RESPONSES_STREAM,
        ANTHROPIC_STREAM,
        ANTHROPIC_OVERLOADED_STREAM,
    ] {
        assert_eq!(
            ReplyUsage::from_sse(transcript.as_bytes()),
            whole(transcript.as_bytes()).finished
        );
    }
}

#[test]
fn chat_stream_without_include_usage_says_so() {
    let outcome = assert_split_invariant(OPENAI_CHAT_STREAM_NO_USAGE.as_bytes());
    assert_eq!(outcome.current, None);
    let err = outcome.finished.unwrap_err();
    assert!(
        matches!(err, UsageError::NoUsage { expected } if expected.contains("stream_options") && expected.contains("include_usage")),
        "{err}"
    );
    let mut meter = StreamUsage::new();
    meter.push(OPENAI_CHAT_STREAM_NO_USAGE.as_bytes());
    assert_eq!(meter.finish(), None);
}

#[test]
fn streams_cut_short_yield_what_they_had() {
    // Anthropic cut after message_start: the input is known, the output only a lower bound.
    let end = ANTHROPIC_STREAM.find("event: message_delta").unwrap();
    let cut_short = &ANTHROPIC_STREAM.as_bytes()[..end];
    let outcome = assert_split_invariant(cut_short);
    let partial = reply(ReplyFormat::AnthropicMessages, 2520, 2048, 0, 2, false);
    assert_eq!(outcome.finished, Ok(partial));
    let usage = partial.usage(CachedInput::default());
    assert_eq!(
        (usage.input_tokens(), usage.output_tokens()),
        (Some(472), None)
    );

    // Cut after the final message_delta, before message_stop: the figures are final.
    let end = ANTHROPIC_STREAM.find("event: message_stop").unwrap();
    assert_eq!(
        whole(&ANTHROPIC_STREAM.as_bytes()[..end]).finished,
        Ok(reply(
            ReplyFormat::AnthropicMessages,
            2520,
            2048,
            0,
            86,
            true
        ))
    );

    // Cut in the middle of the usage line: the line is incomplete JSON, ignored; no usage.
    let end = ANTHROPIC_STREAM.find("\"output_tokens\":2,").unwrap();
    let outcome = whole(&ANTHROPIC_STREAM.as_bytes()[..end]);
    assert_eq!(outcome.current, None);
    assert!(
        matches!(&outcome.finished, Err(UsageError::Ignored(line)) if line.line == 2 && line.reason == "malformed JSON"),
        "{:?}",
        outcome.finished
    );

    // The last line without its line end, and the last event without its blank line, are
    // read at the end.
    let trimmed = OPENAI_CHAT_STREAM.trim_end_matches('\n');
    let trimmed = trimmed.strip_suffix("data: [DONE]").unwrap().trim_end();
    let outcome = assert_split_invariant(trimmed.as_bytes());
    assert_eq!(outcome.current, None); // before the end: the line is not complete
    assert_eq!(
        outcome.finished,
        Ok(reply(ReplyFormat::ChatCompletions, 1290, 1152, 0, 12, true))
    );

    // Responses cut before response.completed.
    let end = OPENAI_RESPONSES_STREAM
        .find("event: response.completed")
        .unwrap();
    let err = whole(&OPENAI_RESPONSES_STREAM.as_bytes()[..end])
        .finished
        .unwrap_err();
    assert!(
        matches!(err, UsageError::NoUsage { expected } if expected.contains("response.completed")),
        "{err}"
    );
}

#[test]
fn error_events_are_reported() {
    let outcome = assert_split_invariant(ANTHROPIC_OVERLOADED_STREAM.as_bytes());
    assert_eq!(
        outcome.provider_error.as_deref(),
        Some("overloaded_error: Overloaded")
    );
    // The input was counted before the error: settle it; the output stays as reserved.
    let got = outcome.finished.unwrap();
    assert_eq!(
        got,
        reply(ReplyFormat::AnthropicMessages, 1500, 0, 0, 1, false)
    );
    assert_eq!(got.usage(CachedInput::default()).output_tokens(), None);

    // An error before any usage is the error.
    for transcript in [
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n",
        "data: {\"error\":{\"message\":\"Internal server error\",\"type\":\"api_error\",\"param\":null,\"code\":null}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"code\":\"api_error\",\"message\":\"Internal server error\",\"param\":null,\"sequence_number\":4}\n\n",
    ] {
        assert_eq!(
            ReplyUsage::from_sse(transcript.as_bytes()),
            Err(UsageError::ProviderError {
                message: "api_error: Internal server error".to_owned()
            }),
            "{transcript}"
        );
    }

    // A failed response carries its error, and its usage when it has one.
    let failed = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The model failed\"},\"usage\":null}}\n\n";
    assert_eq!(
        ReplyUsage::from_sse(failed.as_bytes()),
        Err(UsageError::ProviderError {
            message: "server_error: The model failed".to_owned()
        })
    );
    let failed = failed.replace(
        "\"usage\":null",
        "\"usage\":{\"input_tokens\":40,\"output_tokens\":3,\"total_tokens\":43}",
    );
    assert_eq!(
        ReplyUsage::from_sse(failed.as_bytes()),
        Ok(reply(ReplyFormat::Responses, 40, 0, 0, 3, true))
    );
}

#[test]
fn a_bad_event_is_skipped_and_the_stream_read_on() {
    // A malformed line, a non-UTF-8 line and an invalid usage between good events.
    let mut transcript = Vec::new();
    transcript.extend_from_slice(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]\n\n");
    transcript.extend_from_slice(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n");
    transcript.extend_from_slice(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":-4,\"completion_tokens\":1}}\n\n");
    transcript.extend_from_slice(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n");
    let outcome = assert_split_invariant(&transcript);
    assert_eq!(
        outcome.finished,
        Ok(reply(ReplyFormat::ChatCompletions, 4, 0, 0, 1, true))
    );
    let ignored: Vec<_> = outcome.ignored.iter().map(|i| (i.line, i.reason)).collect();
    assert_eq!(
        ignored,
        [
            (1, "malformed JSON"),
            (3, "malformed JSON"),
            (5, "invalid usage")
        ]
    );
    assert!(
        outcome.ignored[2]
            .detail
            .contains("`usage.prompt_tokens` is -4"),
        "{}",
        outcome.ignored[2]
    );

    // A bad update leaves the usage as it was.
    let mut meter = StreamUsage::new();
    meter.push(
        ANTHROPIC_STREAM
            .split("event: message_delta")
            .next()
            .unwrap()
            .as_bytes(),
    );
    meter.push(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1.5}}\n\n");
    assert_eq!(
        meter.current(),
        Some(reply(
            ReplyFormat::AnthropicMessages,
            2520,
            2048,
            0,
            2,
            false
        ))
    );
    assert_eq!(meter.ignored()[0].reason, "invalid usage");
}

#[test]
fn chat_usage_on_every_chunk_is_final_at_done() {
    // Some OpenAI-compatible servers send a running count on every chunk: the last one wins,
    // and it is final at `[DONE]` (or a chunk without choices).
    let transcript = concat!(
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n",
    );
    let partial = whole(transcript.as_bytes()).finished;
    assert_eq!(
        partial,
        Ok(reply(ReplyFormat::ChatCompletions, 7, 0, 0, 2, false))
    );
    let done = format!("{transcript}data: [DONE]\n\n");
    assert_eq!(
        whole(done.as_bytes()).finished,
        Ok(reply(ReplyFormat::ChatCompletions, 7, 0, 0, 2, true))
    );
}

#[test]
fn long_lines_are_skipped_and_reported() {
    // The response.completed line, the longest, above the cap: skipped, and said to be the
    // reason there is no usage.
    let lines: Vec<&str> = OPENAI_RESPONSES_STREAM.lines().collect();
    let longest = lines.iter().map(|l| l.len()).max().unwrap();
    let completed = 1 + lines
        .iter()
        .position(|l| l.starts_with("data: {\"type\":\"response.completed\""))
        .unwrap();
    assert_eq!(lines[completed - 1].len(), longest);
    for chunk in [1, 13, 4_096] {
        let outcome = feed(
            OPENAI_RESPONSES_STREAM.as_bytes().chunks(chunk),
            longest - 1,
        );
        assert_eq!(outcome.current, None);
        let expected = IgnoredLine {
            line: completed as u64,
            reason: "line longer than the cap",
            detail: format!("more than {} bytes", longest - 1),
        };
        assert_eq!(outcome.ignored, std::slice::from_ref(&expected));
        assert_eq!(outcome.finished, Err(UsageError::Ignored(expected)));
        // With the cap at the longest line, it is read.
        let outcome = feed(OPENAI_RESPONSES_STREAM.as_bytes().chunks(chunk), longest);
        assert!(outcome.finished.is_ok() && outcome.ignored.is_empty());
    }

    // A long content line among short ones costs nothing but its report.
    let padded =
        OPENAI_CHAT_STREAM.replacen("Grüße, ", &format!("Grüße, {}", "blah ".repeat(1_000)), 1);
    let outcome = feed(padded.as_bytes().chunks(64), 2_000);
    assert_eq!(
        outcome.finished,
        Ok(reply(ReplyFormat::ChatCompletions, 1290, 1152, 0, 12, true))
    );
    assert_eq!(
        outcome
            .ignored
            .iter()
            .map(|i| (i.line, i.reason))
            .collect::<Vec<_>>(),
        [(3, "line longer than the cap")]
    );
}

#[test]
fn ignored_lines_are_counted_beyond_those_kept() {
    let transcript = "data: {oops}\n\n".repeat(1_000);
    let outcome = whole(transcript.as_bytes());
    assert_eq!(outcome.ignored.len(), 16);
    assert_eq!(outcome.ignored_total, 1_000);
    assert_eq!(outcome.ignored[15].line, 31);
}

// ---------------------------------------------------------------------------------------------
// Missing usage, malformed replies, huge numbers.
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_usage_says_what_was_expected() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"object": "chat.completion", "choices": []}"#,
            "prompt_tokens",
        ),
        (
            r#"{"object": "response", "status": "in_progress", "usage": null}"#,
            "null until the response is done",
        ),
        (
            r#"{"type": "message", "content": []}"#,
            "Anthropic Messages",
        ),
        (r#"{}"#, "OpenAI Chat Completions"),
        (r#"{"usage": {}}"#, "OpenAI Chat Completions"),
        (
            r#"{"usage": {"total_tokens": null}}"#,
            "OpenAI Chat Completions",
        ),
        (r#"[1, 2]"#, "a JSON object"),
        (r#""usage""#, "a JSON object"),
        (r#"null"#, "a JSON object"),
    ];
    for &(body, hint) in cases {
        let err = ReplyUsage::from_json(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, UsageError::NoUsage { expected } if expected.contains(hint)),
            "{body}: {err}"
        );
        assert!(err
            .to_string()
            .starts_with("no usage in the reply: expected "));
    }
}

#[test]
fn error_replies_are_provider_errors() {
    let cases = [
        (
            r#"{"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
            "invalid_request_error: This model's maximum context length is 128000 tokens.",
        ),
        (
            r#"{"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
            "rate_limit_error: Number of request tokens has exceeded your per-minute rate limit",
        ),
    ];
    for (body, message) in cases {
        assert_eq!(
            ReplyUsage::from_json(body.as_bytes()),
            Err(UsageError::ProviderError {
                message: message.to_owned()
            })
        );
    }
    // Long messages are shortened.
    let body = json!({"error": {"type": "x", "message": "m".repeat(10_000)}}).to_string();
    let Err(UsageError::ProviderError { message }) = ReplyUsage::from_json(body.as_bytes()) else {
        panic!("an error reply")
    };
    assert!(message.len() < 200 && message.ends_with("..."), "{message}");
}

#[test]
fn malformed_replies_say_where() {
    let err = ReplyUsage::from_json(b"{\"usage\": {\"prompt_tokens\": 5,").unwrap_err();
    assert_eq!(
        err,
        UsageError::Json {
            reason: "EOF while parsing a value at line 1 column 30".to_owned()
        }
    );
    for body in [
        &b""[..],
        b"   ",
        b"usage",
        b"{\"usage\": \xff}",
        b"{'usage': 1}",
    ] {
        assert!(
            matches!(ReplyUsage::from_json(body), Err(UsageError::Json { .. })),
            "{body:?}"
        );
    }
    // A stream given to from_json is pointed to from_sse.
    let err = ReplyUsage::from_json(ANTHROPIC_STREAM.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("ReplyUsage::from_sse"), "{err}");
    // Nesting deeper than serde_json's limit is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        ReplyUsage::from_json(deep.as_bytes()),
        Err(UsageError::Json { .. })
    ));
}

#[test]
fn malformed_counts_name_the_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            r#"{"usage": {"prompt_tokens": "12", "completion_tokens": 1}}"#,
            "usage.prompt_tokens",
            "not a number",
            "\"12\"",
        ),
        (
            r#"{"usage": {"prompt_tokens": 12.5, "completion_tokens": 1}}"#,
            "usage.prompt_tokens",
            "not an integer",
            "12.5",
        ),
        (
            r#"{"usage": {"prompt_tokens": 12.0, "completion_tokens": 1}}"#,
            "usage.prompt_tokens",
            "not an integer",
            "12.0",
        ),
        (
            r#"{"usage": {"prompt_tokens": 12, "completion_tokens": -1}}"#,
            "usage.completion_tokens",
            "negative number",
            "-1",
        ),
        (
            r#"{"usage": {"prompt_tokens": 12, "completion_tokens": true}}"#,
            "usage.completion_tokens",
            "not a number",
            "true",
        ),
        (
            r#"{"usage": {"prompt_tokens": 12, "completion_tokens": 1, "prompt_tokens_details": 5}}"#,
            "usage.prompt_tokens_details",
            "not an object",
            "5",
        ),
        (
            r#"{"usage": {"prompt_tokens": 12, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": [1]}}}"#,
            "usage.prompt_tokens_details.cached_tokens",
            "not a number",
            "[1]",
        ),
        (
            r#"{"object": "response", "usage": {"input_tokens": 1, "output_tokens": 1, "input_tokens_details": {"cached_tokens": -3}}}"#,
            "usage.input_tokens_details.cached_tokens",
            "negative number",
            "-3",
        ),
        (
            r#"{"type": "message", "usage": {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 1e3}}"#,
            "usage.cache_read_input_tokens",
            "not an integer",
            "1000.0",
        ),
        (
            r#"{"usage": ["prompt_tokens", 1]}"#,
            "usage",
            "not an object",
            "[\"prompt_tokens\",1]",
        ),
    ];
    for &(body, path, reason, found) in cases {
        assert_eq!(
            ReplyUsage::from_json(body.as_bytes()),
            Err(UsageError::InvalidField {
                path,
                reason,
                found: found.to_owned()
            }),
            "{body}"
        );
    }
    let missing: &[(&str, &str)] = &[
        (
            r#"{"usage": {"completion_tokens": 3}}"#,
            "usage.prompt_tokens",
        ),
        (
            r#"{"object": "response", "usage": {"input_tokens": 3}}"#,
            "usage.output_tokens",
        ),
        (
            r#"{"type": "message", "usage": {"input_tokens": null, "output_tokens": 3}}"#,
            "usage.input_tokens",
        ),
    ];
    for &(body, path) in missing {
        assert_eq!(
            ReplyUsage::from_json(body.as_bytes()),
            Err(UsageError::MissingField { path }),
            "{body}"
        );
    }
    // Cached tokens are part of the prompt: more of them is inconsistent.
    let err = ReplyUsage::from_json(
        br#"{"usage": {"prompt_tokens": 40, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`usage.prompt_tokens_details.cached_tokens` (50) is more than `usage.prompt_tokens` (40), of which it is a part"
    );
}

#[test]
fn huge_numbers_are_errors_not_wrapped() {
    let max = u64::MAX;
    // u64::MAX itself is a count.
    let body = format!(
        r#"{{"usage": {{"prompt_tokens": {max}, "completion_tokens": {max}, "prompt_tokens_details": {{"cached_tokens": {max}}}}}}}"#
    );
    assert_eq!(
        ReplyUsage::from_json(body.as_bytes()),
        Ok(reply(ReplyFormat::ChatCompletions, max, max, 0, max, true))
    );
    // One more is too large, however it is written.
    for too_large in [
        "18446744073709551616",
        "99999999999999999999999999999999",
        "1e30",
    ] {
        let body =
            format!(r#"{{"usage": {{"prompt_tokens": 1, "completion_tokens": {too_large}}}}}"#);
        let err = ReplyUsage::from_json(body.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                UsageError::InvalidField {
                    path: "usage.completion_tokens",
                    reason: "number too large",
                    ..
                }
            ),
            "{too_large}: {err}"
        );
    }
    // Beyond f64: the JSON parser refuses it.
    let body = r#"{"usage": {"prompt_tokens": 1, "completion_tokens": 1e400}}"#;
    assert!(matches!(
        ReplyUsage::from_json(body.as_bytes()),
        Err(UsageError::Json { .. })
    ));
    // Anthropic's input fields add up: a sum beyond u64::MAX is an overflow.
    let body = format!(
        r#"{{"type": "message", "usage": {{"input_tokens": {max}, "cache_read_input_tokens": 1, "output_tokens": 1}}}}"#
    );
    assert_eq!(
        ReplyUsage::from_json(body.as_bytes()),
        Err(UsageError::Overflow {
            sum: "input_tokens + cache_creation_input_tokens + cache_read_input_tokens"
        })
    );
    let body = format!(
        r#"{{"type": "message", "usage": {{"input_tokens": {}, "cache_creation_input_tokens": 1, "cache_read_input_tokens": 1, "output_tokens": 1}}}}"#,
        max - 2
    );
    assert_eq!(
        ReplyUsage::from_json(body.as_bytes()).map(|r| r.input_tokens),
        Ok(max)
    );
    // In a stream, an overflowing update is skipped and the figures before it stand.
    let mut meter = StreamUsage::new();
    meter.push(b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n");
    meter.push(format!("data: {{\"type\":\"message_delta\",\"usage\":{{\"cache_read_input_tokens\":{max},\"output_tokens\":5}}}}\n\n").as_bytes());
    assert_eq!(meter.ignored()[0].reason, "invalid usage");
    assert_eq!(
        meter.finish(),
        Some(reply(ReplyFormat::AnthropicMessages, 10, 0, 0, 1, false))
    );
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

fn transcripts() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        OPENAI_CHAT_STREAM,
        OPENAI_CHAT_STREAM_NO_USAGE,
        OPENAI_RESPONSES_STREAM,
        ANTHROPIC_STREAM,
        ANTHROPIC_TOOL_STREAM,
        ANTHROPIC_OVERLOADED_STREAM,
    ])
}

/// A transcript with bytes overwritten, inserted and removed at random places.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        transcripts(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..8),
    )
        .prop_map(|(transcript, edits)| {
            let mut bytes = transcript.as_bytes().to_vec();
            for (at, kind, byte) in edits {
                let at = at.index(bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

/// JSON values built from the keys and values that matter, nested anyhow.
fn json_values() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "usage",
        "type",
        "object",
        "message",
        "response",
        "error",
        "delta",
        "choices",
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "output_tokens_details",
        "total_tokens",
        "cached_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "stop_reason",
        "code",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..5_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "message",
            "response",
            "chat.completion",
            "chat.completion.chunk",
            "list",
            "error",
            "message_start",
            "message_delta",
            "message_stop",
            "response.completed",
            "end_turn",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|entries| Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            )),
        ]
    })
}

fn assert_consistent(reply: &ReplyUsage) {
    let parts = reply
        .cached_input_tokens
        .checked_add(reply.cache_creation_input_tokens)
        .unwrap();
    assert!(parts <= reply.input_tokens, "{reply:?}");
    assert!(reply.charged_input_tokens(CachedInput::Exclude) <= reply.input_tokens);
}

proptest! {
    #![proptest_config(common::properties::config(256, "usage_replies"))]

    /// Any bytes: `from_json` and `from_sse` never panic, and whatever they read is consistent.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(reply) = ReplyUsage::from_json(&bytes) {
            assert_consistent(&reply);
        }
        if let Ok(reply) = ReplyUsage::from_sse(&bytes) {
            assert_consistent(&reply);
        }
    }

    /// Any bytes in any chunks read the same as in one piece, with any cap.
    #[test]
    fn arbitrary_bytes_in_any_chunks(
        bytes in prop::collection::vec(prop_oneof![
            4 => any::<u8>(),
            1 => prop::sample::select(b"\r\n:{}\"data event".to_vec()),
        ], 0..512),
        points in prop::collection::vec(0usize..512, 0..12),
        max_line in prop_oneof![Just(DEFAULT_MAX_LINE_BYTES), 0usize..64],
    ) {
        let expected = feed([&bytes[..]], max_line);
        prop_assert_eq!(feed(cut(&bytes, points), max_line), expected);
    }

    /// Real transcripts, damaged anywhere and cut anywhere: no panic, and the chunks never
    /// change the result.
    #[test]
    fn damaged_transcripts_in_any_chunks(
        bytes in mutated(),
        points in prop::collection::vec(0usize..4_000, 0..24),
    ) {
        let expected = whole(&bytes);
        if let Ok(reply) = &expected.finished {
            assert_consistent(reply);
        }
        prop_assert_eq!(feed(cut(&bytes, points), DEFAULT_MAX_LINE_BYTES), expected);
        let _ = ReplyUsage::from_json(&bytes);
    }

    /// Intact transcripts cut at many points at once read as in one piece.
    #[test]
    fn transcripts_in_any_chunks(
        transcript in transcripts(),
        points in prop::collection::vec(0usize..4_000, 0..64),
        crlf in any::<bool>(),
    ) {
        let text = if crlf { with_line_ends(transcript, "\r\n") } else { transcript.to_owned() };
        let expected = whole(text.as_bytes());
        prop_assert_eq!(feed(cut(text.as_bytes(), points), DEFAULT_MAX_LINE_BYTES), expected);
    }

    /// JSON of any shape built from the keys that matter: never a panic; a reply read is
    /// consistent, as a body and as a stream event.
    #[test]
    fn json_of_any_shape(value in json_values()) {
        let body = value.to_string();
        if let Ok(reply) = ReplyUsage::from_json(body.as_bytes()) {
            assert_consistent(&reply);
        }
        let event = format!("data: {body}\n\n");
        if let Ok(reply) = ReplyUsage::from_sse(event.as_bytes()) {
            assert_consistent(&reply);
        }
    }

    /// Counts written into each format come back exactly, or as the overflow they are.
    #[test]
    fn counts_round_trip(
        input in prop_oneof![any::<u64>(), 0u64..1_000_000],
        cached_share in any::<prop::sample::Index>(),
        output in prop_oneof![any::<u64>(), 0u64..100_000],
        creation in prop_oneof![any::<u64>(), 0u64..1_000_000],
        read in prop_oneof![any::<u64>(), 0u64..1_000_000],
    ) {
        let cached = if input == 0 { 0 } else { cached_share.index(usize::try_from(input).unwrap_or(usize::MAX)) as u64 };
        let chat = json!({"object": "chat.completion", "usage": {"prompt_tokens": input, "completion_tokens": output, "prompt_tokens_details": {"cached_tokens": cached}}});
        let expected = reply(ReplyFormat::ChatCompletions, input, cached, 0, output, true);
        prop_assert_eq!(ReplyUsage::from_json(chat.to_string().as_bytes()), Ok(expected));
        let chunk = json!({"object": "chat.completion.chunk", "choices": [], "usage": chat["usage"]});
        prop_assert_eq!(ReplyUsage::from_sse(format!("data: {chunk}\n\ndata: [DONE]\n\n").as_bytes()), Ok(expected));
        prop_assert_eq!(expected.charged_input_tokens(CachedInput::Exclude), input - cached);

        let responses = json!({"object": "response", "usage": {"input_tokens": input, "output_tokens": output, "input_tokens_details": {"cached_tokens": cached}}});
        let expected = reply(ReplyFormat::Responses, input, cached, 0, output, true);
        prop_assert_eq!(ReplyUsage::from_json(responses.to_string().as_bytes()), Ok(expected));
        let event = json!({"type": "response.completed", "response": responses});
        prop_assert_eq!(ReplyUsage::from_sse(format!("event: response.completed\ndata: {event}\n\n").as_bytes()), Ok(expected));

        let usage = json!({"input_tokens": input, "cache_creation_input_tokens": creation, "cache_read_input_tokens": read, "output_tokens": output});
        let message = json!({"type": "message", "usage": usage});
        let total = input.checked_add(creation).and_then(|s| s.checked_add(read));
        let got = ReplyUsage::from_json(message.to_string().as_bytes());
        match total {
            Some(total) => {
                let expected = reply(ReplyFormat::AnthropicMessages, total, read, creation, output, true);
                prop_assert_eq!(got, Ok(expected));
                prop_assert_eq!(expected.charged_input_tokens(CachedInput::default()), input + creation);
                let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": input, "cache_creation_input_tokens": creation, "cache_read_input_tokens": read, "output_tokens": 1}}});
                let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}});
                let stream = format!("event: message_start\ndata: {start}\n\nevent: message_delta\ndata: {delta}\n\n");
                prop_assert_eq!(ReplyUsage::from_sse(stream.as_bytes()), Ok(expected));
            }
            None => prop_assert!(matches!(got, Err(UsageError::Overflow { .. })), "{:?}", got),
        }
    }
}

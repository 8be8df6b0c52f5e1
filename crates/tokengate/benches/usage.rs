//! Reading what a call used from the provider's reply: a whole JSON reply, and an SSE stream fed
//! in 64-byte chunks as a network would deliver it. Prints microseconds per reply and MB/s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use tokengate::feedback::usage::{ReplyUsage, StreamUsage};

/// An OpenAI Chat Completions reply with a short answer.
const CHAT_REPLY: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"The image shows a wooden boardwalk path running through a lush green field or meadow. The sky is bright blue with some scattered clouds, giving the scene a serene and peaceful atmosphere. Trees and shrubs are visible in the background.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;

/// An Anthropic Messages stream: 60 text deltas between message_start and message_stop.
fn anthropic_stream() -> String {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":2}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    for i in 0..60 {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word {i} \"}}}}\n\n"
        ));
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":183}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    s
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let stream = anthropic_stream();
    // The figures must be right before they are timed.
    let whole = ReplyUsage::from_json(CHAT_REPLY.as_bytes()).expect("a chat reply");
    assert_eq!((whole.input_tokens, whole.output_tokens), (1_117, 46));
    let mut meter = StreamUsage::new();
    for chunk in stream.as_bytes().chunks(64) {
        meter.push(chunk);
    }
    let streamed = meter.finish().expect("a stream with usage");
    assert_eq!((streamed.input_tokens, streamed.output_tokens), (472, 183));

    let mut g = c.benchmark_group("usage");
    g.throughput(Throughput::Bytes(CHAT_REPLY.len() as u64));
    g.bench_function("chat_completions_json", |b| {
        b.iter(|| ReplyUsage::from_json(black_box(CHAT_REPLY.as_bytes())))
    });
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("anthropic_stream_64_byte_chunks", |b| {
        b.iter(|| {
            let mut meter = StreamUsage::new();
            for chunk in black_box(stream.as_bytes()).chunks(64) {
                meter.push(chunk);
            }
            meter.finish()
        })
    });
    g.finish();
    c.final_summary();
    println!(
        "\n== usage summary: a {} B chat reply and a {} B Anthropic stream (see the times above; MB/s in criterion's thrpt)",
        CHAT_REPLY.len(),
        stream.len()
    );
}

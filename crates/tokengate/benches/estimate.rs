//! Counting input tokens before a request is sent (`tokengate::estimate`): nanoseconds per
//! 1,000 input tokens, with OpenAI's tokenizers (the `tiktoken` feature) and with the heuristic.
//!
//! Run: `cargo bench -p tokengate --features tiktoken --bench estimate`.
//!
//! The input is English prose with some code and JSON, as prompts are, repeated to about 2,000
//! tokens (the same text for every case). Cases, each timing one count of the whole text:
//! - `o200k`: `Encoding::O200kBase.count` (gpt-4o, gpt-4.1, gpt-5, o-series).
//! - `cl100k`: `Encoding::Cl100kBase.count` (gpt-4, gpt-3.5-turbo).
//! - `heuristic`: `heuristic_tokens`, no tokenizer.
//! - `chat_o200k`: `Estimator::estimate_chat` on the same text as one user message after a
//!   short system message, for `gpt-4o` with `max_tokens`: framing and `Cost` included.
//!
//! The encoders are built before timing (`Estimator::preload_encoders`): the first count in a
//! process pays for that once (printed too). The summary divides each case's mean time per
//! count by the text's tokens in its own encoding (`o200k_base` for the heuristic and the chat
//! case), times 1,000.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tokengate::estimate::{heuristic_tokens, ChatMessage, Encoding, Estimator};

const GROUP: &str = "estimate";
const SAMPLES: usize = 50;
/// The input's size, in o200k_base tokens (at least).
const TARGET_TOKENS: u64 = 2_000;

const PARAGRAPH: &str = "Rate limiting for programs that call LLM APIs: stay under every limit \
a provider sets (requests, input and output tokens, requests in flight, per minute and per day) \
while using as much of the quota as possible. A denial carries the exact time to wait; waiters \
are admitted in arrival order.\n\
```rust\nlet permit = limiter.acquire(Cost::request().input(1_200).output(800)).await?;\n\
permit.settle(Usage::new().input(1_180).output(312));\n```\n\
{\"model\":\"gpt-4o-mini\",\"usage\":{\"prompt_tokens\":1180,\"completion_tokens\":312}}\n\n";

/// The benchmark's input: `PARAGRAPH` repeated to at least `TARGET_TOKENS` o200k tokens.
fn input() -> String {
    let mut text = String::new();
    while Encoding::O200kBase.count(&text) < TARGET_TOKENS {
        text.push_str(PARAGRAPH);
    }
    text
}

/// Times `iters` calls of `count` on `text`.
fn timed(iters: u64, text: &str, count: impl Fn(&str) -> u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(count(black_box(text)));
    }
    start.elapsed()
}

fn main() {
    let started = Instant::now();
    let estimator = Estimator::new();
    estimator.preload_encoders();
    let preload = started.elapsed();

    let text = input();
    let o200k_tokens = Encoding::O200kBase.count(&text);
    let cl100k_tokens = Encoding::Cl100kBase.count(&text);
    let heuristic = heuristic_tokens(&text);
    let messages = [
        ChatMessage::system("You are a concise technical assistant."),
        ChatMessage::user(&text),
    ];

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .sample_size(SAMPLES);
    {
        let mut g = c.benchmark_group(GROUP);
        common::bench(&mut g, GROUP, "o200k", |iters| {
            timed(iters, &text, |t| Encoding::O200kBase.count(t))
        });
        common::bench(&mut g, GROUP, "cl100k", |iters| {
            timed(iters, &text, |t| Encoding::Cl100kBase.count(t))
        });
        common::bench(&mut g, GROUP, "heuristic", |iters| {
            timed(iters, &text, heuristic_tokens)
        });
        common::bench(&mut g, GROUP, "chat_o200k", |iters| {
            timed(iters, &text, |_| {
                estimator
                    .estimate_chat("gpt-4o", &messages, Some(800))
                    .input_tokens()
            })
        });
        g.finish();
    }
    c.final_summary();

    println!(
        "\n== estimate summary (ns per 1,000 input tokens, mean of the measured samples; \
         input {} bytes: {o200k_tokens} o200k_base tokens, {cl100k_tokens} cl100k_base, \
         heuristic {heuristic})",
        text.len()
    );
    println!(
        "encoders built in {:.1} ms (once per process, before timing)",
        preload.as_secs_f64() * 1e3
    );
    for (label, id, tokens) in [
        ("o200k", "o200k", o200k_tokens),
        ("cl100k", "cl100k", cl100k_tokens),
        ("heuristic", "heuristic", o200k_tokens),
        ("chat estimate (o200k)", "chat_o200k", o200k_tokens),
    ] {
        match common::ns_per_iter(&format!("{GROUP}/{id}"), SAMPLES) {
            Some(ns) => println!(
                "{label}: {:.0} ns per 1,000 input tokens",
                ns * 1_000.0 / tokens as f64
            ),
            None => println!("{label}: not measured in this run (filtered out or --test mode)"),
        }
    }
}

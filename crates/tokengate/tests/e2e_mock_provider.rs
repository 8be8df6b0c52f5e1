//! End to end: concurrent chat calls through `reqwest` + the tokengate middleware against a
//! mock provider on a loopback port, which enforces its own limits the way providers do and
//! answers with their real header formats and `usage` (some replies streamed, the usage in the
//! final chunk). Under a saturating load: no 429, at least 95% of the binding limit used, and
//! the mock's admission log passes `shared/tools/check-admissions` (when the tool is there).
//!
//! # Time: tokio's paused clock, not real time
//! The limiter runs on [`TokioClock`] and the mock measures its limits on `tokio::time::Instant`,
//! both under tokio's paused clock on one current-thread runtime, so ten virtual minutes run in
//! about a second and the figures do not depend on the machine's load. This works with real
//! loopback TCP because tokio advances paused time only when every task is idle *and* a
//! zero-timeout poll of the I/O driver finds nothing ready; on Linux, loopback data written by
//! one task is readable before `write` returns, so an admission and the mock's receipt of the
//! request happen at the same virtual instant. The mock's refill is continuous (token buckets
//! in exact integer arithmetic) and independent of tokengate's algorithms; no sleep in the
//! test is real. Checked: 10 consecutive runs on the shared 2-core machine (see the report).
//!
//! # The mock provider
//! - `POST /v1/chat/completions` (OpenAI): a token bucket per dimension, each with a minute's
//!   capacity refilling continuously: requests per minute and tokens per minute (input plus
//!   output). It charges the prompt (counted as the client's estimator counts it: see
//!   `mock_input_tokens`) and `max_tokens` at admission, and gives back the unused output when the reply is done,
//!   as providers that pre-charge `max_tokens` do. Headers: `x-ratelimit-{limit,remaining,
//!   reset}-{requests,tokens}` with Go-style durations; a 429 carries `retry-after-ms` and
//!   `retry-after`.
//! - `POST /v1/messages` (Anthropic): requests, input tokens and output tokens per minute,
//!   `anthropic-ratelimit-*` headers with RFC 3339 resets, `retry-after` in seconds on a 429.
//! - Each admission is logged as a JSON line `{"t": secs, "requests": 1, "input_tokens": n,
//!   "output_tokens": m}` with the tokens the call really used.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokengate::estimate::{ChatMessage, Estimator};
use tokengate::reqwest::TokenGateMiddleware;
use tokengate::{Dimension, Limit, Limiter, Policy, TokioClock};
use tokio::net::TcpListener;
use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The mock provider.

/// A token bucket of `amount` per `period`, capacity `amount`, refilling continuously. Exact:
/// the level is kept in units x period-nanoseconds, so a refill of `dt` ns adds `dt * amount`.
struct Bucket {
    amount: u128,
    period: u128,
    /// units * period, at most amount * period.
    level: u128,
    last: Instant,
}

impl Bucket {
    fn new(amount: u64, period: Duration, now: Instant) -> Self {
        let period = period.as_nanos();
        Self {
            amount: amount.into(),
            period,
            level: u128::from(amount) * period,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos();
        self.level = (self.level + dt * self.amount).min(self.amount * self.period);
        self.last = now;
    }

    /// How long until `units` are available (zero if they are).
    fn wait_for(&self, units: u64) -> Duration {
        let need = u128::from(units) * self.period;
        if need <= self.level {
            return Duration::ZERO;
        }
        let ns = (need - self.level).div_ceil(self.amount);
        Duration::from_nanos(ns as u64)
    }

    fn take(&mut self, units: u64) {
        self.level -= u128::from(units) * self.period;
    }

    fn give_back(&mut self, units: u64) {
        self.level = (self.level + u128::from(units) * self.period).min(self.amount * self.period);
    }

    fn remaining(&self) -> u64 {
        (self.level / self.period) as u64
    }

    /// Until the bucket is full again.
    fn reset(&self) -> Duration {
        let missing = self.amount * self.period - self.level;
        Duration::from_nanos(missing.div_ceil(self.amount) as u64)
    }
}

/// OpenAI's reset format: Go's `time.Duration.String()`, e.g. `6m0s`, `1.5s`, `12ms`.
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let ms = ns as f64 / 1e6;
        return format!("{}ms", trim(ms));
    }
    let secs = ns as f64 / 1e9;
    let (h, m) = ((secs / 3600.0) as u64, ((secs % 3600.0) / 60.0) as u64);
    let s = secs - (h * 3600 + m * 60) as f64;
    let mut out = String::new();
    if h > 0 {
        write!(out, "{h}h").unwrap();
    }
    if h > 0 || m > 0 {
        write!(out, "{m}m").unwrap();
    }
    write!(out, "{}s", trim(s)).unwrap();
    out
}

fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    OpenAi,
    Anthropic,
}

/// The mock's limits for one API.
#[derive(Clone, Copy, Debug)]
struct MockLimits {
    requests: u64,
    /// OpenAI: input plus output. Anthropic: none.
    tokens: Option<u64>,
    /// Anthropic only.
    input: Option<u64>,
    output: Option<u64>,
}

struct Buckets {
    requests: Bucket,
    tokens: Option<Bucket>,
    input: Option<Bucket>,
    output: Option<Bucket>,
}

struct MockState {
    buckets: Buckets,
    limits: MockLimits,
    start: Instant,
    log: String,
    admitted: u64,
    throttled: u64,
    seed: u64,
}

type Shared = Arc<Mutex<MockState>>;

/// What the mock counts as a prompt's tokens: what the client's estimator counts for the same
/// messages. A provider counts with its own tokenizer; with the `tiktoken` feature, the
/// estimator's count for an OpenAI model is exactly that, and without it the estimator's
/// heuristic stands in for both sides. Either way this test holds the middleware and the
/// limiter to the provider's count; how close the estimate is to a real tokenizer is
/// tests/estimate.rs's business.
fn mock_input_tokens(api: Api, body: &Value) -> u64 {
    let text = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    };
    let mut owned: Vec<(String, String)> = Vec::new();
    if api == Api::Anthropic {
        if let Some(system) = body.get("system") {
            owned.push(("system".into(), text(system)));
        }
    }
    for m in body["messages"].as_array().expect("messages") {
        let role = m["role"].as_str().unwrap_or("user").to_owned();
        owned.push((role, text(&m["content"])));
    }
    let messages: Vec<ChatMessage<'_>> = owned
        .iter()
        .map(|(role, content)| ChatMessage::new(role, content))
        .collect();
    let model = body["model"].as_str().unwrap_or_default();
    Estimator::new().count_chat(model, &messages).tokens
}

fn next_random(seed: &mut u64) -> u64 {
    // xorshift64*
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

type ResponseBody = Either<Full<Bytes>, Channel<Bytes>>;

fn headers(
    api: Api,
    state: &MockState,
    builder: http::response::Builder,
) -> http::response::Builder {
    let b = &state.buckets;
    match api {
        Api::OpenAi => {
            let tokens = b.tokens.as_ref().expect("tokens bucket");
            builder
                .header("x-ratelimit-limit-requests", state.limits.requests)
                .header("x-ratelimit-remaining-requests", b.requests.remaining())
                .header(
                    "x-ratelimit-reset-requests",
                    go_duration(b.requests.reset()),
                )
                .header("x-ratelimit-limit-tokens", state.limits.tokens.unwrap())
                .header("x-ratelimit-remaining-tokens", tokens.remaining())
                .header("x-ratelimit-reset-tokens", go_duration(tokens.reset()))
        }
        Api::Anthropic => {
            let now = SystemTime::now();
            let at = |d: Duration| {
                humantime::format_rfc3339_seconds(now + d + Duration::from_millis(999)).to_string()
            };
            let (input, output) = (b.input.as_ref().unwrap(), b.output.as_ref().unwrap());
            // `tokens-*`: the most restrictive of the token limits.
            let tightest = if input.remaining() <= output.remaining() {
                input
            } else {
                output
            };
            builder
                .header("anthropic-ratelimit-requests-limit", state.limits.requests)
                .header(
                    "anthropic-ratelimit-requests-remaining",
                    b.requests.remaining(),
                )
                .header("anthropic-ratelimit-requests-reset", at(b.requests.reset()))
                .header(
                    "anthropic-ratelimit-input-tokens-limit",
                    state.limits.input.unwrap(),
                )
                .header(
                    "anthropic-ratelimit-input-tokens-remaining",
                    input.remaining(),
                )
                .header("anthropic-ratelimit-input-tokens-reset", at(input.reset()))
                .header(
                    "anthropic-ratelimit-output-tokens-limit",
                    state.limits.output.unwrap(),
                )
                .header(
                    "anthropic-ratelimit-output-tokens-remaining",
                    output.remaining(),
                )
                .header(
                    "anthropic-ratelimit-output-tokens-reset",
                    at(output.reset()),
                )
                .header("anthropic-ratelimit-tokens-remaining", tightest.remaining())
                .header("anthropic-ratelimit-tokens-reset", at(tightest.reset()))
        }
    }
}

async fn handle(
    state: Shared,
    request: http::Request<Incoming>,
) -> Result<http::Response<ResponseBody>, Infallible> {
    let api = match request.uri().path() {
        "/v1/chat/completions" => Api::OpenAi,
        "/v1/messages" => Api::Anthropic,
        _ => {
            return Ok(http::Response::builder()
                .status(404)
                .body(Either::Left(Full::new(Bytes::from_static(b"{}"))))
                .unwrap())
        }
    };
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    let input = mock_input_tokens(api, &body);
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .expect("max_tokens");
    let stream = body["stream"].as_bool() == Some(true);
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);

    // Admission: all or nothing across the buckets.
    let now = Instant::now();
    let (output, wait) = {
        let mut st = state.lock().unwrap();
        let st = &mut *st;
        let b = &mut st.buckets;
        let mut wait = Duration::ZERO;
        b.requests.refill(now);
        wait = wait.max(b.requests.wait_for(1));
        for (bucket, units) in [
            (b.tokens.as_mut(), input + max_tokens),
            (b.input.as_mut(), input),
            (b.output.as_mut(), max_tokens),
        ] {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                wait = wait.max(bucket.wait_for(units));
            }
        }
        if wait > Duration::ZERO {
            st.throttled += 1;
            (0, Some(wait))
        } else {
            b.requests.take(1);
            if let Some(t) = b.tokens.as_mut() {
                t.take(input + max_tokens);
            }
            if let Some(t) = b.input.as_mut() {
                t.take(input);
            }
            if let Some(t) = b.output.as_mut() {
                t.take(max_tokens);
            }
            // The reply's length: from a quarter of max_tokens to all of it.
            let output =
                max_tokens / 4 + next_random(&mut st.seed) % (max_tokens - max_tokens / 4 + 1);
            st.admitted += 1;
            let t = now.duration_since(st.start).as_secs_f64();
            writeln!(
                st.log,
                r#"{{"t": {t:.9}, "requests": 1, "input_tokens": {input}, "output_tokens": {output}}}"#
            )
            .unwrap();
            (output, None)
        }
    };
    if let Some(wait) = wait {
        let st = state.lock().unwrap();
        let mut builder = http::Response::builder()
            .status(429)
            .header("content-type", "application/json");
        builder = match api {
            Api::OpenAi => builder
                .header("retry-after-ms", wait.as_millis().max(1).to_string())
                .header("retry-after", wait.as_secs_f64().ceil().to_string()),
            Api::Anthropic => builder.header("retry-after", wait.as_secs_f64().ceil().to_string()),
        };
        let builder = headers(api, &st, builder);
        let body = r#"{"error": {"type": "rate_limit_error", "message": "Rate limit reached"}}"#;
        return Ok(builder
            .body(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))))
            .unwrap());
    }

    // The output is "generated" at 2 ms a token after 200 ms of prompt processing.
    let generation = Duration::from_millis(200 + 2 * output);
    let finish = move |state: &Shared| {
        let mut st = state.lock().unwrap();
        let now = Instant::now();
        let b = &mut st.buckets;
        for bucket in [b.tokens.as_mut(), b.output.as_mut()].into_iter().flatten() {
            bucket.refill(now);
            bucket.give_back(max_tokens - output);
        }
    };
    if !stream {
        tokio::time::sleep(generation).await;
        finish(&state);
        let reply = match api {
            Api::OpenAi => json!({
                "id": "chatcmpl-mock", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
            }),
            Api::Anthropic => json!({
                "id": "msg_mock", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": input, "output_tokens": output}
            }),
        };
        let st = state.lock().unwrap();
        let builder = headers(
            api,
            &st,
            http::Response::builder()
                .status(200)
                .header("content-type", "application/json"),
        );
        return Ok(builder
            .body(Either::Left(Full::new(Bytes::from(reply.to_string()))))
            .unwrap());
    }

    // Streamed: headers at once (the state at the start), events as the output is generated.
    let (mut tx, body) = Channel::<Bytes>::new(4);
    let response = {
        let st = state.lock().unwrap();
        headers(
            api,
            &st,
            http::Response::builder()
                .status(200)
                .header("content-type", "text/event-stream"),
        )
        .body(Either::Right(body))
        .unwrap()
    };
    tokio::spawn(async move {
        let mut events = Vec::new();
        if api == Api::Anthropic {
            events.push(format!(
                "event: message_start\ndata: {}\n\n",
                json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}})
            ));
        }
        for part in 0..4 {
            tokio::time::sleep(generation / 5).await;
            events.push(match api {
                Api::OpenAi => format!(
                    "data: {}\n\n",
                    json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("part {part} ")}}]})
                ),
                Api::Anthropic => format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("part {part} ")}})
                ),
            });
            for event in events.drain(..) {
                if tx.send_data(Bytes::from(event)).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(generation / 5).await;
        finish(&state);
        let last = match api {
            Api::OpenAi if include_usage => format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})
            ),
            Api::OpenAi => "data: [DONE]\n\n".to_owned(),
            Api::Anthropic => format!(
                "event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}})
            ),
        };
        let _ = tx.send_data(Bytes::from(last)).await;
    });
    Ok(response)
}

/// Starts the mock on a free loopback port: its address and state.
async fn start_mock(limits: MockLimits) -> (String, Shared, tokio::task::JoinHandle<()>) {
    let now = Instant::now();
    let bucket = |amount: u64| Bucket::new(amount, MINUTE, now);
    let state = Arc::new(Mutex::new(MockState {
        buckets: Buckets {
            requests: bucket(limits.requests),
            tokens: limits.tokens.map(bucket),
            input: limits.input.map(bucket),
            output: limits.output.map(bucket),
        },
        limits,
        start: now,
        log: String::new(),
        admitted: 0,
        throttled: 0,
        seed: 0x9E37_79B9_7F4A_7C15,
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::clone(&state);
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let state = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(Arc::clone(&state), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, state, server)
}

// ---------------------------------------------------------------------------------------------
// The load.

const WORDS: &[&str] = &[
    "the",
    "model",
    "answers",
    "questions",
    "about",
    "rate",
    "limits",
    "tokens",
    "every",
    "minute",
    "provider",
    "request",
    "budget",
    "window",
    "bucket",
    "refill",
    "steady",
    "queue",
    "order",
    "fair",
];

fn prompt(seed: &mut u64, words: usize) -> String {
    let mut text = String::new();
    for i in 0..words {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[(next_random(seed) % WORDS.len() as u64) as usize]);
    }
    text
}

struct Outcome {
    /// Units of the binding dimension the mock admitted before the load stopped, per its log.
    binding_used: u64,
    responses: u64,
    client_429s: u64,
    mock_throttled: u64,
    log: String,
    /// The limiter's stats at the end.
    stats: tokengate::Stats,
}

/// Runs `workers` concurrent callers for `duration` of (virtual) time.
async fn run_load(
    api: Api,
    policy: Policy,
    limits: MockLimits,
    workers: usize,
    duration: Duration,
    binding: &'static str,
) -> Outcome {
    let (addr, state, server) = start_mock(limits).await;
    let limiter = Limiter::with_clock(policy, TokioClock::new());
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(TokenGateMiddleware::new(limiter.clone()))
    .build();
    let start = Instant::now();
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, addr, counts) = (client.clone(), addr.clone(), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let mut seed = 0xD1B5_4A32_D192_ED03 ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9);
            let mut n = 0u64;
            while start.elapsed() < duration {
                n += 1;
                let max_tokens = [200u64, 400, 800][(next_random(&mut seed) % 3) as usize];
                let words = 60 + (next_random(&mut seed) % 240) as usize;
                let stream = (n + w as u64) % 3 == 0;
                let (url, body) = match api {
                    Api::OpenAi => (
                        format!("{addr}/v1/chat/completions"),
                        json!({
                            "model": "gpt-4o-mini",
                            "max_tokens": max_tokens,
                            "stream": stream,
                            "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                            "messages": [
                                {"role": "system", "content": "You are a terse assistant."},
                                {"role": "user", "content": prompt(&mut seed, words)}
                            ]
                        }),
                    ),
                    Api::Anthropic => (
                        format!("{addr}/v1/messages"),
                        json!({
                            "model": "claude-haiku-4-5",
                            "max_tokens": max_tokens,
                            "stream": stream,
                            "system": [{"type": "text", "text": "You are a terse assistant."}],
                            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt(&mut seed, words)}]}]
                        }),
                    ),
                };
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("the call went through");
                let status = response.status();
                let text = response.text().await.expect("the whole body");
                let mut counts = counts.lock().unwrap();
                counts.0 += 1;
                if status == 429 {
                    counts.1 += 1;
                } else {
                    assert_eq!(status, 200, "{text}");
                    assert!(text.contains("usage") || text.contains("[DONE]"), "{text}");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.abort();
    let (responses, client_429s) = *counts.lock().unwrap();
    let st = state.lock().unwrap();
    let binding_used = st
        .log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|r| r["t"].as_f64().unwrap() < duration.as_secs_f64())
        .map(|r| match binding {
            "tokens" => r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap(),
            dim => r[dim].as_u64().unwrap(),
        })
        .sum();
    let stats = limiter.stats();
    // Every reply's headers were read: the limiter knows the provider's own limits.
    for limit in &stats.limits {
        let expected = match limit.dimension {
            tokengate::Dimension::Requests => limits.requests,
            tokengate::Dimension::Tokens => limits.tokens.unwrap(),
            tokengate::Dimension::InputTokens => limits.input.unwrap(),
            tokengate::Dimension::OutputTokens => limits.output.unwrap(),
            ref other => panic!("unexpected dimension {other}"),
        };
        assert_eq!(limit.reported_amount, Some(expected), "{}", limit.dimension);
    }
    println!(
        "{api:?}: {} responses, {} admitted by the mock, {} 429s; limiter: admitted {}, waited {}, lowered {:?}",
        responses,
        st.admitted,
        st.throttled,
        stats.admitted,
        stats.waits.count,
        stats.limits.iter().map(|l| (l.dimension.to_string(), l.lowered)).collect::<Vec<_>>()
    );
    Outcome {
        binding_used,
        responses,
        client_429s,
        mock_throttled: st.throttled,
        log: st.log.clone(),
        stats,
    }
}

/// `shared/tools/check-admissions`, found from the crate directory (`../../../shared` from
/// `crates/tokengate` in a work tree beside `shared/`), if it is there.
fn check_admissions_tool() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        dir.join("../../../shared/tools/check-admissions"),
        dir.join("../../shared/tools/check-admissions"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn check_log(name: &str, log: &str, limits: &[&str], weights: &[&str]) {
    let Some(tool) = check_admissions_tool() else {
        println!("note: shared/tools/check-admissions not found beside the work tree: the admission log of {name} is not checked by it");
        return;
    };
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("admissions-{name}-{}.jsonl", std::process::id()));
    std::fs::write(&path, log).unwrap();
    let mut command = std::process::Command::new("python3");
    command.arg(&tool).arg(&path);
    for limit in limits {
        command.arg("--limit").arg(limit);
    }
    for weight in weights {
        command.arg("--weights").arg(weight);
    }
    let output = command.output().expect("python3 runs check-admissions");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!(
        "check-admissions ({name}):\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "check-admissions failed for {name}: {stdout}"
    );
    assert!(stdout.contains("violations: 0"), "{stdout}");
    let _ = std::fs::remove_file(&path);
}

const RUN: Duration = Duration::from_secs(600);

/// What every saturating run must show: no 429 on either side, the limiter setting the pace
/// (at least 90% of admissions waited), and at least 95% (never more than 100%) of the
/// binding limit of `per_minute` used over the run.
fn assert_saturated_without_429s(api: &str, binding: &str, outcome: &Outcome, per_minute: u64) {
    let allowed = per_minute * RUN.as_secs() / 60;
    let utilisation = outcome.binding_used as f64 / allowed as f64;
    println!(
        "{api}: {binding} used {} of {} allowed in {:?}: {:.2}%",
        outcome.binding_used,
        allowed,
        RUN,
        utilisation * 100.0
    );
    assert_eq!(
        (outcome.client_429s, outcome.mock_throttled),
        (0, 0),
        "no 429"
    );
    assert_eq!(outcome.stats.throttled, 0);
    assert!(outcome.responses > 100);
    // Saturated: the limiter, not the callers, set the pace.
    assert!(outcome.stats.waits.count * 10 >= outcome.stats.admitted * 9);
    assert!(
        utilisation >= 0.95,
        "{binding} per minute used: {:.2}%",
        utilisation * 100.0
    );
    assert!(utilisation <= 1.0 + 1e-9);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn openai_saturating_load_no_429_and_tokens_per_minute_used() {
    let (rpm, tpm) = (300, 40_000);
    // This mock's token buckets hold a whole minute's tokens, and say so: the limiter is told
    // (a burst of the whole amount, an explicit choice; the default holds one second's worth).
    let policy = Policy::builder()
        .requests_per_minute(rpm)
        .limit(Dimension::Tokens, Limit::per_minute(tpm).burst(tpm))
        .build()
        .unwrap();
    let limits = MockLimits {
        requests: rpm,
        tokens: Some(tpm),
        input: None,
        output: None,
    };
    let outcome = run_load(Api::OpenAi, policy, limits, 24, RUN, "tokens").await;
    assert_saturated_without_429s("OpenAI", "tokens", &outcome, tpm);
    check_log(
        "openai",
        &outcome.log,
        &[&format!("requests={rpm}/60"), &format!("tokens={tpm}/60")],
        &["tokens=input_tokens:1,output_tokens:1"],
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn anthropic_saturating_load_no_429_and_output_tokens_per_minute_used() {
    let (rpm, itpm, otpm) = (200, 30_000, 16_000);
    // A whole minute's tokens at once, as this mock's buckets hold (see the OpenAI test).
    let policy = Policy::builder()
        .requests_per_minute(rpm)
        .limit(Dimension::InputTokens, Limit::per_minute(itpm).burst(itpm))
        .limit(Dimension::OutputTokens, Limit::per_minute(otpm).burst(otpm))
        .build()
        .unwrap();
    let limits = MockLimits {
        requests: rpm,
        tokens: None,
        input: Some(itpm),
        output: Some(otpm),
    };
    let outcome = run_load(Api::Anthropic, policy, limits, 16, RUN, "output_tokens").await;
    assert_saturated_without_429s("Anthropic", "output tokens", &outcome, otpm);
    check_log(
        "anthropic",
        &outcome.log,
        &[
            &format!("requests={rpm}/60"),
            &format!("input_tokens={itpm}/60"),
            &format!("output_tokens={otpm}/60"),
        ],
        &[],
    );
}

#[test]
fn the_mock_writes_go_durations_as_openai_does() {
    for (d, text) in [
        (Duration::from_secs(360), "6m0s"),
        (Duration::from_millis(12), "12ms"),
        (Duration::from_millis(1_500), "1.5s"),
        (Duration::from_millis(179_560), "2m59.56s"),
        (Duration::ZERO, "0s"),
    ] {
        assert_eq!(go_duration(d), text);
        assert_eq!(
            tokengate::feedback::parse_go_duration(text),
            Some(d),
            "{text}"
        );
    }
}

/// A provider that allows less than the limiter thinks: its 429 (real headers over HTTP)
/// reaches the caller unchanged, and pauses the limiter for the retry-after.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_429_over_http_is_returned_and_pauses_the_limiter() {
    for api in [Api::OpenAi, Api::Anthropic] {
        let limits = match api {
            Api::OpenAi => MockLimits {
                requests: 1,
                tokens: Some(100_000),
                input: None,
                output: None,
            },
            Api::Anthropic => MockLimits {
                requests: 1,
                tokens: None,
                input: Some(100_000),
                output: Some(100_000),
            },
        };
        let (addr, state, server) = start_mock(limits).await;
        let policy = Policy::builder().requests_per_minute(600).build().unwrap();
        let limiter = Limiter::with_clock(policy, TokioClock::new());
        let client = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder().no_proxy().build().unwrap(),
        )
        .with(TokenGateMiddleware::new(limiter.clone()))
        .build();
        let path = if api == Api::OpenAi {
            "/v1/chat/completions"
        } else {
            "/v1/messages"
        };
        let body =
            r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}"#;
        let call = || client.post(format!("{addr}{path}")).body(body).send();
        assert_eq!(call().await.unwrap().status(), 200);
        let response = call().await.unwrap();
        assert_eq!(response.status(), 429, "{api:?}");
        let retry_after = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(response.text().await.unwrap().contains("rate_limit_error"));
        assert_eq!(state.lock().unwrap().throttled, 1);
        let stats = limiter.stats();
        assert_eq!(stats.throttled, 1, "{api:?}");
        // The provider's own limit (1 a minute) is surfaced; both calls are counted here.
        assert_eq!(
            (stats.limits[0].reported_amount, stats.limits[0].used),
            (Some(1), 2)
        );
        match limiter.try_acquire(tokengate::Cost::zero()) {
            Err(tokengate::Denied::Paused { wait }) => {
                // About a minute: the time the mock's bucket needs for one request.
                assert!(
                    wait > Duration::from_secs(55) && wait <= Duration::from_secs(61),
                    "{api:?}: {wait:?} ({retry_after})"
                );
            }
            other => panic!("{api:?}: expected a pause, got {other:?}"),
        }
        server.abort();
    }
}

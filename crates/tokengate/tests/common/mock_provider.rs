//! A mock LLM provider on a loopback port, which enforces its own limits the way providers do
//! and answers with their real header formats and `usage` (some replies streamed, the usage in
//! the final event).
//!
//! # Time
//! It measures its limits on `tokio::time::Instant`, so under tokio's paused clock (a
//! current-thread runtime with `start_paused`) ten virtual minutes run in about a second. This
//! works with real loopback TCP because tokio advances paused time only when every task is
//! idle *and* a zero-timeout poll of the I/O driver finds nothing ready; on Linux, loopback data
//! written by one task is readable before `write` returns, so an admission by the client and
//! the mock's receipt of the request happen at the same virtual instant.
//!
//! # What it serves
//! - `POST /v1/chat/completions` (OpenAI): requests and tokens (input plus output) per minute.
//!   Headers `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` with Go-style durations.
//! - `POST /v1/messages` (Anthropic): requests, input tokens and output tokens per minute,
//!   `anthropic-ratelimit-*` headers with RFC 3339 resets; its token `remaining` figures are
//!   rounded to the nearest thousand, as Anthropic's are.
//!
//! Both count the prompt (as the client's estimator counts it: see [`input_tokens`]) and
//! `max_tokens` when a request is admitted, all or nothing across the dimensions
//! ([`meters`](super::meters) says how each is enforced). At the end of a call, with
//! [`OutputCount::Produced`] the output is corrected to what was produced; with
//! [`OutputCount::Reserved`] `max_tokens` stays counted. A request it refuses is counted
//! nothing and answered 429 with `retry-after-ms` and `retry-after`.
//!
//! Each admission is logged as a JSON line `{"t": secs, "requests": 1, "input_tokens": n,
//! "output_tokens": m, "tokens": n + m, "produced_output_tokens": p}` with what the provider
//! counted in the end.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokengate::estimate::{ChatMessage, Estimator};
use tokengate::OutputCount;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::meters::{Enforcement, Meter};
use super::rng::next_random;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::OpenAi => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }
}

/// The mock's limits per minute.
#[derive(Clone, Copy, Debug)]
pub struct MockLimits {
    pub requests: u64,
    /// OpenAI: input plus output. Anthropic: none.
    pub tokens: Option<u64>,
    /// Anthropic only.
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl MockLimits {
    /// OpenAI's shape: requests and combined tokens.
    pub fn openai(requests: u64, tokens: u64) -> Self {
        Self {
            requests,
            tokens: Some(tokens),
            input: None,
            output: None,
        }
    }

    /// Anthropic's shape: requests, input and output tokens.
    pub fn anthropic(requests: u64, input: u64, output: u64) -> Self {
        Self {
            requests,
            tokens: None,
            input: Some(input),
            output: Some(output),
        }
    }
}

/// What the mock enforces, and how.
#[derive(Clone, Copy, Debug)]
pub struct MockSpec {
    pub limits: MockLimits,
    pub enforcement: Enforcement,
    /// How output tokens count once a call ends.
    pub output: OutputCount,
    /// Prompt processing before the first output token.
    pub first_token: Duration,
    /// Generation time per output token.
    pub per_token: Duration,
}

impl MockSpec {
    pub fn new(limits: MockLimits, enforcement: Enforcement, output: OutputCount) -> Self {
        Self {
            limits,
            enforcement,
            output,
            first_token: Duration::from_millis(200),
            per_token: Duration::from_millis(2),
        }
    }
}

struct Meters {
    requests: Meter,
    tokens: Option<Meter>,
    input: Option<Meter>,
    output: Option<Meter>,
}

/// One admission, as the provider counts it in the end.
struct Admitted {
    t: f64,
    input: u64,
    counted_output: u64,
    produced: u64,
}

impl Admitted {
    /// What it counts on `dimension` ("requests", "tokens", "input_tokens",
    /// "output_tokens").
    fn on(&self, dimension: &str) -> u64 {
        match dimension {
            "requests" => 1,
            "tokens" => self.input + self.counted_output,
            "input_tokens" => self.input,
            "output_tokens" => self.counted_output,
            other => panic!("no dimension {other}"),
        }
    }
}

pub struct MockState {
    meters: Meters,
    spec: MockSpec,
    start: Instant,
    log: Vec<Admitted>,
    /// When each 429 was answered, seconds from the start.
    throttled_at: Vec<f64>,
    pub admitted: u64,
    pub throttled: u64,
    seed: u64,
}

pub type Shared = Arc<Mutex<MockState>>;

impl MockState {
    /// The admission log, a JSON line per admission, in admission order.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for a in &self.log {
            writeln!(
                out,
                r#"{{"t": {:.9}, "requests": 1, "input_tokens": {}, "output_tokens": {}, "tokens": {}, "produced_output_tokens": {}}}"#,
                a.t,
                a.input,
                a.counted_output,
                a.input + a.counted_output,
                a.produced
            )
            .unwrap();
        }
        out
    }

    /// The units counted on `dimension` ("requests", "tokens", "input_tokens",
    /// "output_tokens") by admissions before `until` (seconds from the start).
    pub fn counted(&self, dimension: &str, until: f64) -> u64 {
        self.counted_between(dimension, 0.0, until)
    }

    /// The same for admissions in `[from, until)`.
    pub fn counted_between(&self, dimension: &str, from: f64, until: f64) -> u64 {
        self.log
            .iter()
            .filter(|a| a.t >= from && a.t < until)
            .map(|a| a.on(dimension))
            .sum()
    }

    /// 429s answered in `[from, until)` (seconds from the start).
    pub fn throttled_between(&self, from: f64, until: f64) -> u64 {
        self.throttled_at
            .iter()
            .filter(|&&t| t >= from && t < until)
            .count() as u64
    }

    /// Admissions in `[from, until)`.
    pub fn admitted_between(&self, from: f64, until: f64) -> u64 {
        self.counted_between("requests", from, until)
    }

    /// The largest amount one admission counted on `dimension`.
    pub fn largest(&self, dimension: &str) -> u64 {
        self.log.iter().map(|a| a.on(dimension)).max().unwrap_or(0)
    }
}

/// What the mock counts as a prompt's tokens: what the client's estimator counts for the same
/// messages. A provider counts with its own tokenizer; with the `tiktoken` feature, the
/// estimator's count for an OpenAI model is exactly that, and without it the estimator's
/// heuristic stands in for both sides. Either way the tests hold the limiter to the
/// provider's count; how close the estimate is to a real tokenizer is tests/estimate.rs's
/// business.
pub fn input_tokens(api: Api, body: &Value) -> u64 {
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

/// OpenAI's reset format: Go's `time.Duration.String()`, e.g. `6m0s`, `1.5s`, `12ms`.
pub fn go_duration(d: Duration) -> String {
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

type ResponseBody = Either<Full<Bytes>, Channel<Bytes>>;

/// Anthropic rounds its token `remaining` figures to the nearest thousand.
fn nearest_thousand(n: u64) -> u64 {
    (n + 500) / 1_000 * 1_000
}

fn headers(
    api: Api,
    state: &mut MockState,
    builder: http::response::Builder,
) -> http::response::Builder {
    let now = Instant::now();
    let limits = state.spec.limits;
    let m = &mut state.meters;
    match api {
        Api::OpenAi => {
            let tokens = m.tokens.as_mut().expect("a tokens limit");
            builder
                .header("x-ratelimit-limit-requests", limits.requests)
                .header("x-ratelimit-remaining-requests", m.requests.remaining(now))
                .header(
                    "x-ratelimit-reset-requests",
                    go_duration(m.requests.reset(now)),
                )
                .header("x-ratelimit-limit-tokens", limits.tokens.unwrap())
                .header("x-ratelimit-remaining-tokens", tokens.remaining(now))
                .header("x-ratelimit-reset-tokens", go_duration(tokens.reset(now)))
        }
        Api::Anthropic => {
            let wall = SystemTime::now();
            let at = |d: Duration| {
                humantime::format_rfc3339_seconds(wall + d + Duration::from_millis(999)).to_string()
            };
            let input = m.input.as_mut().expect("an input limit");
            let (input_left, input_reset) = (input.remaining(now), input.reset(now));
            let output = m.output.as_mut().expect("an output limit");
            let (output_left, output_reset) = (output.remaining(now), output.reset(now));
            // `tokens-*`: the most restrictive of the token limits.
            let (tightest_left, tightest_reset) = if input_left <= output_left {
                (input_left, input_reset)
            } else {
                (output_left, output_reset)
            };
            builder
                .header("anthropic-ratelimit-requests-limit", limits.requests)
                .header(
                    "anthropic-ratelimit-requests-remaining",
                    m.requests.remaining(now),
                )
                .header(
                    "anthropic-ratelimit-requests-reset",
                    at(m.requests.reset(now)),
                )
                .header(
                    "anthropic-ratelimit-input-tokens-limit",
                    limits.input.unwrap(),
                )
                .header(
                    "anthropic-ratelimit-input-tokens-remaining",
                    nearest_thousand(input_left),
                )
                .header("anthropic-ratelimit-input-tokens-reset", at(input_reset))
                .header(
                    "anthropic-ratelimit-output-tokens-limit",
                    limits.output.unwrap(),
                )
                .header(
                    "anthropic-ratelimit-output-tokens-remaining",
                    nearest_thousand(output_left),
                )
                .header("anthropic-ratelimit-output-tokens-reset", at(output_reset))
                .header(
                    "anthropic-ratelimit-tokens-remaining",
                    nearest_thousand(tightest_left),
                )
                .header("anthropic-ratelimit-tokens-reset", at(tightest_reset))
        }
    }
}

/// Admits the request now, all or nothing: `Ok((id, output))` with the output it will
/// produce, or `Err(wait)` until it would fit.
fn admit(st: &mut MockState, input: u64, max_tokens: u64) -> Result<(u64, u64), Duration> {
    let now = Instant::now();
    let m = &mut st.meters;
    let mut wait = m.requests.wait_for(now, 1);
    for (meter, units) in [
        (m.tokens.as_mut(), input + max_tokens),
        (m.input.as_mut(), input),
        (m.output.as_mut(), max_tokens),
    ] {
        if let Some(meter) = meter {
            wait = wait.max(meter.wait_for(now, units));
        }
    }
    if wait > Duration::ZERO {
        st.throttled += 1;
        let t = now.duration_since(st.start).as_secs_f64();
        st.throttled_at.push(t);
        return Err(wait);
    }
    let id = st.log.len() as u64;
    m.requests.take(now, id, 1);
    for (meter, units) in [
        (m.tokens.as_mut(), input + max_tokens),
        (m.input.as_mut(), input),
        (m.output.as_mut(), max_tokens),
    ] {
        if let Some(meter) = meter {
            meter.take(now, id, units);
        }
    }
    // The reply's length: from a quarter of max_tokens to all of it.
    let output = max_tokens / 4 + next_random(&mut st.seed) % (max_tokens - max_tokens / 4 + 1);
    st.admitted += 1;
    st.log.push(Admitted {
        t: now.duration_since(st.start).as_secs_f64(),
        input,
        counted_output: max_tokens,
        produced: output,
    });
    Ok((id, output))
}

/// The call `id` ends having produced `output` of `max_tokens`.
fn finish(state: &Shared, id: u64, max_tokens: u64, output: u64) {
    let mut st = state.lock().unwrap();
    if st.spec.output != OutputCount::Produced {
        return;
    }
    let now = Instant::now();
    let unused = max_tokens - output;
    let m = &mut st.meters;
    for meter in [m.tokens.as_mut(), m.output.as_mut()].into_iter().flatten() {
        meter.give_back(now, id, unused);
    }
    st.log[id as usize].counted_output = output;
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
    let input = input_tokens(api, &body);
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .expect("max_tokens");
    let stream = body["stream"].as_bool() == Some(true);
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);

    let admitted = admit(&mut state.lock().unwrap(), input, max_tokens);
    let (id, output) = match admitted {
        Ok(admitted) => admitted,
        Err(wait) => {
            let mut st = state.lock().unwrap();
            let builder = http::Response::builder()
                .status(429)
                .header("content-type", "application/json")
                .header("retry-after-ms", wait.as_millis().max(1).to_string())
                .header("retry-after", wait.as_secs_f64().ceil().to_string());
            let builder = headers(api, &mut st, builder);
            let body =
                r#"{"error": {"type": "rate_limit_error", "message": "Rate limit reached"}}"#;
            return Ok(builder
                .body(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))))
                .unwrap());
        }
    };

    let spec = state.lock().unwrap().spec;
    let generation = spec.first_token + spec.per_token * output as u32;
    if !stream {
        tokio::time::sleep(generation).await;
        finish(&state, id, max_tokens, output);
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
        let mut st = state.lock().unwrap();
        let builder = headers(
            api,
            &mut st,
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
        let mut st = state.lock().unwrap();
        headers(
            api,
            &mut st,
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
        finish(&state, id, max_tokens, output);
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

/// A mock provider serving on a loopback port until dropped.
pub struct MockProvider {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    pub state: Shared,
    server: Server,
}

/// Where the mock's server runs.
enum Server {
    /// A task of the caller's runtime.
    Task(tokio::task::JoinHandle<()>),
    /// A thread of its own, with its own runtime, stopped by this sender.
    Thread(Option<tokio::sync::oneshot::Sender<()>>),
}

impl MockProvider {
    /// Starts a mock enforcing `spec` on a free loopback port.
    pub async fn start(spec: MockSpec) -> Self {
        let now = Instant::now();
        let meter = |amount: u64| Meter::new(spec.enforcement, amount, now);
        let limits = spec.limits;
        let state = Arc::new(Mutex::new(MockState {
            meters: Meters {
                requests: meter(limits.requests),
                tokens: limits.tokens.map(meter),
                input: limits.input.map(meter),
                output: limits.output.map(meter),
            },
            spec,
            start: now,
            log: Vec::new(),
            throttled_at: Vec::new(),
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
        Self {
            addr,
            state,
            server: Server::Task(server),
        }
    }

    /// Starts a mock on a thread of its own, with a runtime of its own, as a provider on
    /// another machine would be: its work does not delay the client's tasks, nor theirs its.
    pub fn start_on_its_own_thread(spec: MockSpec) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the mock");
            runtime.block_on(async move {
                let mock = MockProvider::start(spec).await;
                ready_tx
                    .send((mock.addr.clone(), Arc::clone(&mock.state)))
                    .expect("the test waits for the mock");
                let _ = stop_rx.await;
                drop(mock);
            });
        });
        let (addr, state) = ready_rx.recv().expect("the mock started");
        Self {
            addr,
            state,
            server: Server::Thread(Some(stop_tx)),
        }
    }

    /// The URL of `api`'s endpoint.
    pub fn url(&self, api: Api) -> String {
        format!("{}{}", self.addr, api.path())
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        match &mut self.server {
            Server::Task(task) => task.abort(),
            Server::Thread(stop) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}

/// A chat request body for `api`: a system prompt and `user`, `max_tokens`, streamed or not
/// (an OpenAI stream asks for its usage in the last chunk).
pub fn chat_body(api: Api, model: &str, max_tokens: u64, stream: bool, user: &str) -> Value {
    match api {
        Api::OpenAi => json!({
            "model": model,
            "max_tokens": max_tokens,
            "stream": stream,
            "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": user}
            ]
        }),
        Api::Anthropic => json!({
            "model": model,
            "max_tokens": max_tokens,
            "stream": stream,
            "system": [{"type": "text", "text": "You are a terse assistant."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": user}]}]
        }),
    }
}

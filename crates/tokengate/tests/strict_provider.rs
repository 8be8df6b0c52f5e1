//! The promise of the defaults, end to end: with only the limits a provider states, written as
//! it states them, a provider that enforces them strictly sends no 429, and nearly all of the
//! quota is used.
//!
//! The provider is `common::mock_provider` in its strict mode: every per-minute limit is held
//! both ways a provider may read it, the sliding 60 s window of N **and** a token bucket of
//! N/60 refilling at N/60 a second (a request larger than that bucket waits for a full bucket
//! and drives it into debt), on every dimension; a rejected request counts nothing and is
//! answered 429 with `retry-after-ms` and `retry-after`. The OpenAI shape counts input plus
//! `max_tokens` against tokens per minute and keeps it; the Anthropic shape counts input and
//! output tokens apart, output from `max_tokens` at admission, corrected at the end, and
//! rounds its token `remaining` to thousands.
//!
//! The matrix: {a `Limiter` used directly, `Key::run`, `TokenGateMiddleware`} x {a 429 retried
//! straight to the provider, as an SDK's own retries do; retried through the limiter} x
//! {provider feedback off, on} x {OpenAI shape, Anthropic shape with half the calls streamed}.
//! 24 concurrent workers for 10 minutes of tokio's virtual time (about a second each), prompts
//! of 200-3,000 tokens with `max_tokens` 256 (costs up to 3.3 times the one-second bucket),
//! limits of 600 requests and 60,000 tokens a minute from a limits file. Every cell: 0 429s,
//! at least 95% of the binding limit used, and the provider's admission log within the window
//! and the bucket by `check-admissions` (`--limit`, `--bucket`: the bucket's burst is the
//! largest single request where that is larger, as such a request goes alone into debt).

mod common;

use std::fmt::Write as _;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::check_admissions;
use common::meters::Enforcement;
use common::mock_provider::{chat_body, Api, MockLimits, MockProvider, MockSpec, MockState};
use common::rng::{between, prompt};
use http::Extensions;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use serde_json::Value;
use tokengate::call::{ModelReply, Retry};
use tokengate::config::Config;
use tokengate::estimate::{ChatMessage, ChatRequest, Estimator};
use tokengate::feedback::usage::{CachedInput, ReplyUsage};
use tokengate::feedback::ProviderReport;
use tokengate::reqwest::{GateConfig, TokenGateMiddleware};
use tokengate::{Key, Limiter, OutputCount, TokioClock, Usage};
use tokio::time::Instant;

const WORKERS: u64 = 24;
const RUN: Duration = Duration::from_secs(600);
const REQUESTS_PER_MINUTE: u64 = 600;
const TOKENS_PER_MINUTE: u64 = 60_000;
const MAX_TOKENS: u64 = 256;
/// Prompt sizes, in tokens as the estimator counts them.
const PROMPT_TOKENS: (u64, u64) = (200, 3_000);
/// Attempts of one call before it gives up (none does here: there are no 429s).
const ATTEMPTS: u32 = 10;

/// The real-time cell runs alone: the virtual-time tests of this file keep both cores busy,
/// and their load would be jitter on its clock. It takes this lock to write, they to read.
static REAL_TIME: RwLock<()> = RwLock::new(());

/// Runs a virtual-time test on tokio's paused clock (a current-thread runtime), beside the
/// others of this file but not beside the real-time cell.
fn in_virtual_time<F: std::future::Future>(test: F) -> F::Output {
    let _beside_others = REAL_TIME.read().unwrap_or_else(PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(test)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrontEnd {
    Direct,
    Run,
    Middleware,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retries {
    /// The caller's SDK retries a 429 itself, straight to the provider.
    Straight,
    /// Every retry waits for the limiter again.
    ThroughLimiter,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    front: FrontEnd,
    retries: Retries,
    feedback: bool,
    api: Api,
    /// The provider's limits per minute.
    limits: MockLimits,
    /// The client's limits file, when it is one of the shipped examples (its path under
    /// `examples/limits/`); else the provider's limits as it states them.
    example: Option<&'static str>,
    /// How long the workers send.
    run: Duration,
}

impl Cell {
    /// A cell of the matrix: the limits of the module docs, 10 minutes.
    fn new(front: FrontEnd, retries: Retries, feedback: bool, api: Api) -> Self {
        Self {
            front,
            retries,
            feedback,
            api,
            limits: Self::matrix_limits(api, 1),
            example: None,
            run: RUN,
        }
    }

    /// The matrix's limits (600 requests and 60,000 tokens a minute), `scale` times.
    fn matrix_limits(api: Api, scale: u64) -> MockLimits {
        let (rpm, tpm) = (REQUESTS_PER_MINUTE * scale, TOKENS_PER_MINUTE * scale);
        match api {
            Api::OpenAi => MockLimits::openai(rpm, tpm),
            Api::Anthropic => MockLimits::anthropic(rpm, tpm, tpm),
        }
    }

    /// The provider's limit per minute on `dimension`.
    fn amount(&self, dimension: &str) -> u64 {
        let l = &self.limits;
        match dimension {
            "requests" => Some(l.requests),
            "tokens" => l.tokens,
            "input_tokens" => l.input,
            "output_tokens" => l.output,
            _ => None,
        }
        .unwrap_or_else(|| panic!("no limit on {dimension}"))
    }

    fn model(&self) -> &'static str {
        match self.api {
            Api::OpenAi => "gpt-4o-mini",
            Api::Anthropic => "claude-haiku-4-5",
        }
    }

    /// The client's limits file: a shipped example, or the provider's limits written as it
    /// states them: nothing else tuned.
    fn limits_file(&self) -> String {
        if let Some(name) = self.example {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/limits")
                .join(name);
            return std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let l = &self.limits;
        match self.api {
            Api::OpenAi => format!(
                "[models.\"gpt-4o-mini\"]\nrequests_per_minute = {}\ntokens_per_minute = {}\n",
                l.requests,
                self.amount("tokens")
            ),
            Api::Anthropic => format!(
                "[models.\"claude-haiku-4-5\"]\nrequests_per_minute = {}\ninput_tokens_per_minute = {}\noutput_tokens_per_minute = {}\n",
                l.requests,
                self.amount("input_tokens"),
                self.amount("output_tokens")
            ),
        }
    }

    fn mock(&self) -> MockSpec {
        let output = match self.api {
            Api::OpenAi => OutputCount::Reserved,
            Api::Anthropic => OutputCount::Produced,
        };
        MockSpec::new(self.limits, Enforcement::Strict, output)
    }

    /// The dimension that binds: the prompts' tokens.
    fn binding(&self) -> &'static str {
        match self.api {
            Api::OpenAi => "tokens",
            Api::Anthropic => "input_tokens",
        }
    }

    fn dimensions(&self) -> &'static [&'static str] {
        match self.api {
            Api::OpenAi => &["requests", "tokens"],
            Api::Anthropic => &["requests", "input_tokens", "output_tokens"],
        }
    }

    fn name(&self) -> String {
        format!(
            "{:?} {:?} feedback-{} {:?}",
            self.front,
            self.retries,
            if self.feedback { "on" } else { "off" },
            self.api
        )
    }
}

/// How long a 429 asks to wait: `retry-after-ms`, else `retry-after` in seconds.
fn retry_after(headers: &http::HeaderMap) -> Duration {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
    };
    get("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1_000.0))
        .or_else(|| get("retry-after").map(Duration::from_secs_f64))
        .unwrap_or(Duration::from_secs(1))
}

/// Retries a 429 after its `retry-after`, up to [`ATTEMPTS`] attempts in all: placed inside
/// the tokengate middleware, it retries straight to the provider, as an SDK's own retries do.
struct Retry429;

#[async_trait::async_trait]
impl Middleware for Retry429 {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut attempt = 1;
        loop {
            let copy = request.try_clone().expect("a body in memory");
            let response = next.clone().run(copy, extensions).await?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS || attempt == ATTEMPTS {
                return Ok(response);
            }
            attempt += 1;
            tokio::time::sleep(retry_after(response.headers())).await;
        }
    }
}

/// A plain HTTP client: no proxy (the mock is on loopback).
fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn send(http: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// The usage a reply reports: a JSON body, or a stream's events.
fn reply_usage(bytes: &Bytes, stream: bool) -> ReplyUsage {
    if stream {
        ReplyUsage::from_sse(bytes).expect("the stream's usage")
    } else {
        ReplyUsage::from_json(bytes).expect("the reply's usage")
    }
}

/// The words per token of the prompts `prompt` writes, as the estimator counts them for
/// `model` (and so the mock provider), measured once.
fn words_per_token(model: &str) -> f64 {
    let mut seed = 7;
    let text = prompt(&mut seed, 10_000);
    let tokens = Estimator::new()
        .count_chat(model, &[ChatMessage::user(&text)])
        .tokens;
    10_000.0 / tokens as f64
}

/// One worker's calls, one after the other, until the run ends.
async fn worker(
    cell: Cell,
    w: u64,
    limiter: Limiter<TokioClock>,
    url: String,
    client: Option<ClientWithMiddleware>,
    words_per_token: f64,
    start: Instant,
) {
    let http = http();
    let key = limiter.model(cell.model());
    let estimator = limiter.estimator();
    let mut seed = 0xD1B5_4A32_D192_ED03 ^ (w + 1).wrapping_mul(0x9E37_79B9);
    let mut n = 0u64;
    while start.elapsed() < cell.run {
        n += 1;
        let tokens = between(&mut seed, PROMPT_TOKENS.0, PROMPT_TOKENS.1);
        let words = (tokens as f64 * words_per_token) as usize;
        let stream = cell.api == Api::Anthropic && (n + w).is_multiple_of(2);
        let body = chat_body(
            cell.api,
            cell.model(),
            MAX_TOKENS,
            stream,
            &prompt(&mut seed, words),
        );
        match cell.front {
            FrontEnd::Direct => direct(cell, &key, &estimator, &http, &url, &body, stream).await,
            FrontEnd::Run => run(cell, &key, &http, &url, &body, stream).await,
            FrontEnd::Middleware => {
                let client = client.as_ref().unwrap();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("the call went through");
                assert!(response.status() == 200 || response.status() == 429);
                // Read to the end: a stream settles when it ends.
                let _ = response.bytes().await;
            }
        }
    }
}

/// A user's own code around a `Limiter`: price, acquire, call, observe, settle from the reply.
async fn direct(
    cell: Cell,
    key: &Key<'_, TokioClock>,
    estimator: &Estimator,
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    stream: bool,
) {
    let cost = ChatRequest::from_value(None, body)
        .expect("a chat request")
        .cost(estimator);
    let mut attempt = 0;
    'acquire: loop {
        let permit = key.acquire(cost.clone()).await.expect("admitted");
        loop {
            attempt += 1;
            let response = send(http, url, body).send().await.expect("sent");
            let report = ProviderReport::from_headers(response.headers(), SystemTime::now());
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(response.headers());
                if cell.retries == Retries::ThroughLimiter || attempt == ATTEMPTS {
                    // The provider did not run it: give the tokens back (before the 429 is
                    // observed: a limit it lowers takes nothing back from earlier permits).
                    permit.settle(Usage::new().input(0).output(0));
                    if cell.feedback {
                        key.observe_throttled(&report);
                    }
                    if attempt == ATTEMPTS {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    continue 'acquire;
                }
                if cell.feedback {
                    key.observe_throttled(&report);
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            if cell.feedback {
                key.observe(&report);
            }
            let bytes = response.bytes().await.expect("the body");
            permit.settle(reply_usage(&bytes, stream).usage(CachedInput::ProviderDefault));
            return;
        }
    }
}

/// What a `Key::run` closure returns: the reply's usage, or the provider's refusal.
struct RunReply {
    usage: Option<ReplyUsage>,
    throttled: Option<ProviderReport>,
}

impl ModelReply for RunReply {
    fn usage(&self) -> Option<Usage> {
        self.usage
            .as_ref()
            .map(|u| u.usage(CachedInput::ProviderDefault))
    }

    fn throttled(&self) -> Option<ProviderReport> {
        self.throttled.clone()
    }
}

/// `Key::run`: the closure sends the call once, and `run` settles and retries a 429 through
/// the limiter (`Limiter::set_retry`); or the closure retries it straight to the provider
/// itself, as an SDK does, and `run` retries nothing. `run` tells the limiter of every 429 it
/// is handed; feedback off, the closure observes nothing of its own.
async fn run(
    cell: Cell,
    key: &Key<'_, TokioClock>,
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    stream: bool,
) {
    key.run(body, |_| async move {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = send(http, url, body).send().await.expect("sent");
            let report = ProviderReport::from_headers(response.headers(), SystemTime::now());
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                if cell.retries == Retries::ThroughLimiter || attempt == ATTEMPTS {
                    return RunReply {
                        usage: None,
                        throttled: Some(report),
                    };
                }
                if cell.feedback {
                    key.observe_throttled(&report);
                }
                tokio::time::sleep(retry_after(response.headers())).await;
                continue;
            }
            if cell.feedback {
                key.observe(&report);
            }
            let bytes = response.bytes().await.expect("the body");
            return RunReply {
                usage: Some(reply_usage(&bytes, stream)),
                throttled: None,
            };
        }
    })
    .await
    .expect("admitted");
}

/// What one cell measured.
struct Outcome {
    cell: Cell,
    successes: u64,
    throttled: u64,
    /// The binding limit's share used over the run, from the provider's own count.
    used: f64,
    log: String,
    /// The largest single request on each dimension, for the bucket check.
    largest: Vec<(&'static str, u64)>,
    lowered: u64,
}

impl Outcome {
    /// What the provider of `cell` counted (`st`), with the units `limiter` lowered.
    fn of(cell: Cell, st: &MockState, limiter: &Limiter<TokioClock>) -> Self {
        let run = cell.run.as_secs_f64();
        let allowed = cell.amount(cell.binding()) as f64 * run / 60.0;
        Outcome {
            cell,
            successes: st.admitted,
            throttled: st.throttled,
            used: st.counted(cell.binding(), run) as f64 / allowed,
            log: st.log(),
            largest: cell
                .dimensions()
                .iter()
                .map(|&d| (d, st.largest(d)))
                .collect(),
            lowered: limiter
                .model(cell.model())
                .stats()
                .iter()
                .flat_map(|s| s.limits.iter())
                .map(|l| l.lowered)
                .sum(),
        }
    }
}

async fn run_cell(cell: Cell, words_per_token: f64) -> Outcome {
    let mock = MockProvider::start(cell.mock()).await;
    let config = Config::from_toml_str(&cell.limits_file(), "limits.toml").unwrap();
    let limiter = Limiter::from_config_with_clock(config, TokioClock::new());
    limiter.set_retry(match cell.retries {
        Retries::Straight => Retry::none(),
        Retries::ThroughLimiter => Retry::new().with_retries(ATTEMPTS - 1),
    });
    let url = mock.url(cell.api);
    let client = (cell.front == FrontEnd::Middleware).then(|| {
        let config = GateConfig::new().with_feedback(cell.feedback);
        let builder = reqwest_middleware::ClientBuilder::new(http());
        match cell.retries {
            // An SDK's own retries, inside the middleware (which then retries nothing).
            Retries::Straight => builder
                .with(TokenGateMiddleware::new(limiter.clone()).with_config(config.with_retries(0)))
                .with(Retry429),
            // The middleware's own retries.
            Retries::ThroughLimiter => {
                builder.with(TokenGateMiddleware::new(limiter.clone()).with_config(config))
            }
        }
        .build()
    });
    join(spawn_workers(
        cell,
        0..WORKERS,
        &limiter,
        &url,
        client.as_ref(),
        words_per_token,
    ))
    .await;
    let st = mock.state.lock().unwrap();
    Outcome::of(cell, &st, &limiter)
}

/// Starts workers `ids` of `cell`, each sending calls one after the other until the run ends.
fn spawn_workers(
    cell: Cell,
    ids: std::ops::Range<u64>,
    limiter: &Limiter<TokioClock>,
    url: &str,
    client: Option<&ClientWithMiddleware>,
    words_per_token: f64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let start = Instant::now();
    ids.map(|w| {
        tokio::spawn(worker(
            cell,
            w,
            limiter.clone(),
            url.to_owned(),
            client.cloned(),
            words_per_token,
            start,
        ))
    })
    .collect()
}

/// Waits for every worker to end.
async fn join(workers: Vec<tokio::task::JoinHandle<()>>) {
    for worker in workers {
        worker.await.unwrap();
    }
}

/// Checks the provider's admission log of `o` with `check-admissions`: every dimension within
/// the 60 s window and the bucket of a sixtieth (its burst the largest single request where
/// that is larger: such a request goes alone, into debt).
fn check_log(o: &Outcome) {
    let mut args = Vec::new();
    for &(dimension, largest) in &o.largest {
        let amount = o.cell.amount(dimension);
        args.push("--limit".to_owned());
        args.push(format!("{dimension}={amount}/60"));
        args.push("--bucket".to_owned());
        args.push(format!(
            "{dimension}={}:{}",
            amount as f64 / 60.0,
            (amount / 60).max(largest)
        ));
    }
    check_admissions::check(&o.cell.name().replace(' ', "-"), &o.log, &args);
}

/// Runs every cell of `front`, prints the table, and holds each cell to the promise.
async fn matrix(front: FrontEnd) {
    let mut outcomes = Vec::new();
    for api in [Api::OpenAi, Api::Anthropic] {
        for retries in [Retries::Straight, Retries::ThroughLimiter] {
            for feedback in [false, true] {
                let cell = Cell::new(front, retries, feedback, api);
                outcomes.push(run_cell(cell, words_per_token(cell.model())).await);
            }
        }
    }
    let mut table = String::from(
        "| front end | retries | feedback | shape | successes | 429s | 429s per 1,000 | binding limit used | units lowered |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in &outcomes {
        writeln!(
            table,
            "| {:?} | {:?} | {} | {:?} | {} | {} | {:.1} | {} {:.1}% | {} |",
            o.cell.front,
            o.cell.retries,
            if o.cell.feedback { "on" } else { "off" },
            o.cell.api,
            o.successes,
            o.throttled,
            o.throttled as f64 * 1_000.0 / o.successes.max(1) as f64,
            o.cell.binding(),
            o.used * 100.0,
            o.lowered,
        )
        .unwrap();
    }
    println!("{table}");
    for o in &outcomes {
        let name = o.cell.name();
        check_log(o);
        assert_eq!(o.throttled, 0, "{name}: 429s");
        assert!(o.successes > 100, "{name}: {} calls", o.successes);
        assert!(
            o.used >= 0.95 && o.used <= 1.0 + 1e-9,
            "{name}: {} used {:.2}%",
            o.cell.binding(),
            o.used * 100.0
        );
    }
}

#[test]
fn a_limiter_used_directly_gets_no_429_and_uses_the_quota() {
    in_virtual_time(async {
        matrix(FrontEnd::Direct).await;
    });
}

#[test]
fn key_run_gets_no_429_and_uses_the_quota() {
    in_virtual_time(async {
        matrix(FrontEnd::Run).await;
    });
}

#[test]
fn the_middleware_gets_no_429_and_uses_the_quota() {
    in_virtual_time(async {
        matrix(FrontEnd::Middleware).await;
    });
}

/// The measured workload is what the module docs say: prompts of 200-3,000 tokens, as the
/// provider counts them, for either model.
#[test]
fn prompts_span_what_the_docs_say() {
    let estimator = Estimator::new();
    let mut seed = 11;
    for model in ["gpt-4o-mini", "claude-haiku-4-5"] {
        let wpt = words_per_token(model);
        for tokens in [PROMPT_TOKENS.0, PROMPT_TOKENS.1] {
            let text = prompt(&mut seed, (tokens as f64 * wpt) as usize);
            let counted = estimator
                .count_chat(model, &[ChatMessage::user(&text)])
                .tokens;
            assert!(
                counted.abs_diff(tokens) * 20 <= tokens,
                "{model}: {tokens} asked, {counted} counted"
            );
        }
    }
}

/// Two clients on one provider key, each configured with the whole of its limits (as when a
/// second process starts with the same limits file), through the middleware with provider
/// feedback on and each retry through the limiter: the provider's 429s and its `remaining`
/// figures teach both to share. Reports the 429s per 1,000 calls and the share of the binding
/// limit used, in the first minute and after it.
#[test]
fn two_clients_on_one_key_learn_to_share() {
    in_virtual_time(async {
        let cell = Cell::new(
            FrontEnd::Middleware,
            Retries::ThroughLimiter,
            true,
            Api::OpenAi,
        );
        let mock = MockProvider::start(cell.mock()).await;
        let url = mock.url(cell.api);
        let words_per_token = words_per_token(cell.model());
        let mut tasks = Vec::new();
        let mut limiters = Vec::new();
        for client in 0..2 {
            let config = Config::from_toml_str(&cell.limits_file(), "limits.toml").unwrap();
            let limiter = Limiter::from_config_with_clock(config, TokioClock::new());
            // Its own retries, through the limiter.
            let gate = TokenGateMiddleware::new(limiter.clone());
            let http = reqwest_middleware::ClientBuilder::new(http())
                .with(gate)
                .build();
            let ids = client * 100..client * 100 + WORKERS / 2;
            tasks.extend(spawn_workers(
                cell,
                ids,
                &limiter,
                &url,
                Some(&http),
                words_per_token,
            ));
            limiters.push(limiter);
        }
        join(tasks).await;
        let st = mock.state.lock().unwrap();
        let end = cell.run.as_secs_f64();
        let per_1000 = |from: f64, until: f64| {
            st.throttled_between(from, until) as f64 * 1_000.0
                / st.admitted_between(from, until).max(1) as f64
        };
        let used = |from: f64, until: f64| {
            st.counted_between(cell.binding(), from, until) as f64
                / (cell.amount(cell.binding()) as f64 * (until - from) / 60.0)
        };
        let decreases: Vec<u64> = limiters
            .iter()
            .map(|l| {
                l.model(cell.model())
                    .stats()
                    .iter()
                    .flat_map(|s| s.limits.iter().map(|l| l.decreases))
                    .sum()
            })
            .collect();
        println!(
        "two clients, one key: first minute {} calls, {} 429s ({:.1} per 1,000), {} used {:.1}%; \
         after it {} calls, {} 429s ({:.1} per 1,000), {} used {:.1}%; decreases per client {:?}",
        st.admitted_between(0.0, 60.0),
        st.throttled_between(0.0, 60.0),
        per_1000(0.0, 60.0),
        cell.binding(),
        used(0.0, 60.0) * 100.0,
        st.admitted_between(60.0, end),
        st.throttled_between(60.0, end),
        per_1000(60.0, end),
        cell.binding(),
        used(60.0, end) * 100.0,
        decreases,
    );
        // Measured: 33.6 per 1,000 and 95.9% (without what 429s teach: 1,092.9 per 1,000).
        assert!(used(60.0, end) >= 0.90, "{:.3}", used(60.0, end));
        assert!(per_1000(60.0, end) <= 100.0, "{:.1}", per_1000(60.0, end));
        assert!(decreases.iter().sum::<u64>() > 0, "the 429s taught");
    });
}

/// One cell in real time, for a minute, on loopback: the limiter on the system clock, the
/// provider on a thread and runtime of its own, real sockets and their jitter. The limits are
/// 40 times the matrix's (24,000 requests and 2,400,000 tokens a minute: a one-second bucket of
/// 40,000 tokens), so that a minute holds about 1,200 calls.
///
/// Measured in release builds: 0 429s in 1,305 and 1,306 calls (two runs, every feature), and
/// in 1,312 with the default features and reqwest, the limiter's lock-free lane open; on
/// earlier builds 1, 2, 2 and 0 in 1,199-1,306 calls, all in the first two seconds, none after: the first requests wait for their connections and reach the provider about
/// 65 ms after their admission, more than the safety margin of 50 ms, while the requests after
/// them, on connections made by then, arrive at once. Each is retried through the limiter.
///
/// Timing is what it measures, so it runs in a release build, as users run clients (`.ci/run`:
/// `cargo test --release -p tokengate --features reqwest --test strict_provider -- --ignored`). A
/// debug build's client on two cores is slow enough to miss its own pacing (1,040 calls where a
/// release build makes 1,300, 80% of the tokens instead of 100%) and measures the build, not
/// the limiter.
#[test]
#[ignore = "real time, timing-sensitive: run in a release build with --ignored (.ci/run does)"]
fn a_minute_in_real_time_on_loopback() {
    let _alone = REAL_TIME.write().unwrap_or_else(PoisonError::into_inner);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(real_time_minute());
}

async fn real_time_minute() {
    let cell = Cell {
        limits: Cell::matrix_limits(Api::OpenAi, 40),
        run: Duration::from_secs(60),
        ..Cell::new(
            FrontEnd::Middleware,
            Retries::ThroughLimiter,
            true,
            Api::OpenAi,
        )
    };
    let mut mock_spec = cell.mock();
    // Calls of 20-70 ms, so that 24 workers can keep the limiter busy.
    mock_spec.first_token = Duration::from_millis(20);
    mock_spec.per_token = Duration::from_micros(200);
    let mock = MockProvider::start_on_its_own_thread(mock_spec);
    let config = Config::from_toml_str(&cell.limits_file(), "limits.toml").unwrap();
    let limiter = Limiter::from_config_with_clock(config, TokioClock::new());
    let gate = TokenGateMiddleware::new(limiter.clone());
    let client = reqwest_middleware::ClientBuilder::new(http())
        .with(gate)
        .build();
    let words_per_token = words_per_token(cell.model());
    join(spawn_workers(
        cell,
        0..WORKERS,
        &limiter,
        &mock.url(cell.api),
        Some(&client),
        words_per_token,
    ))
    .await;
    let st = mock.state.lock().unwrap();
    let run = cell.run.as_secs_f64();
    let o = Outcome::of(cell, &st, &limiter);
    let per_1000 = o.throttled as f64 * 1_000.0 / o.successes.max(1) as f64;
    let warm = st.throttled_between(2.0, run);
    println!(
        "real time, a minute: {} calls, {} 429s ({per_1000:.2} per 1,000; {warm} after the first \
         two seconds), {} used {:.1}%",
        o.successes,
        o.throttled,
        cell.binding(),
        o.used * 100.0
    );
    check_log(&o);
    assert!(o.successes >= 1_000, "{} calls", o.successes);
    assert_eq!(warm, 0, "429s once the connections are made");
    assert!(per_1000 <= 2.5, "{per_1000:.2} 429s per 1,000 calls");
}

/// The shipped example limits files, used as they are, through the middleware, against a
/// strict provider enforcing the same figures for the model called (OpenAI's `gpt-4o-mini`
/// family: 500 requests and 200,000 tokens a minute; Anthropic's default model: 50 requests,
/// 20,000 input and 4,000 output tokens a minute): no 429. Measured: OpenAI 98.9% of its
/// tokens, Anthropic 90.0% of its input tokens. The Anthropic figure is the provider's own
/// bound: its output limit holds 66 tokens at once, so the 256 reserved for each call go
/// alone, one call per 3.9 s at most, near the 12.5 calls a minute its input allows, and a
/// run of short prompts waits on output.
#[test]
fn the_example_limits_files_get_no_429_from_a_strict_provider() {
    in_virtual_time(async {
        let cells = [
            Cell {
                limits: MockLimits::openai(500, 200_000),
                example: Some("openai-tier1.toml"),
                ..Cell::new(
                    FrontEnd::Middleware,
                    Retries::ThroughLimiter,
                    true,
                    Api::OpenAi,
                )
            },
            Cell {
                limits: MockLimits::anthropic(50, 20_000, 4_000),
                example: Some("anthropic-tier1.toml"),
                ..Cell::new(
                    FrontEnd::Middleware,
                    Retries::ThroughLimiter,
                    true,
                    Api::Anthropic,
                )
            },
        ];
        for cell in cells {
            let o = run_cell(cell, words_per_token(cell.model())).await;
            println!(
                "{}: {} calls, {} 429s, {} used {:.1}%",
                cell.example.unwrap_or_default(),
                o.successes,
                o.throttled,
                cell.binding(),
                o.used * 100.0
            );
            check_log(&o);
            assert_eq!(o.throttled, 0, "{:?}: 429s", cell.example);
            let least = match cell.api {
                Api::OpenAi => 0.95,
                Api::Anthropic => 0.85,
            };
            assert!(o.used >= least, "{:?}: {:.3}", cell.example, o.used);
        }
    });
}

//! The reqwest middleware against a fake provider: a second middleware that answers in place of
//! the network, so every figure is exact (a manual clock that never moves). What is checked:
//! the cost read from OpenAI and Anthropic request bodies, settlement from whole and streamed
//! replies (including a body dropped half-way), 429 handling, header observation, timeouts,
//! refused connections, pass-through of other requests, tenants and the cost function.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Extensions;
use http_body_util::Channel;
use reqwest::{Body, Request, Response, ResponseBuilderExt};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokengate::call::{Refused, Retry};
use tokengate::estimate::{ChatMessage, Estimator};
use tokengate::reqwest::{acquire_error, GateConfig, Tenant, TokenGateMiddleware};
use tokengate::{AcquireError, Cost, Denied, Dimension, Limiter, ManualClock, Policy, Stats};

type Answer = dyn Fn(&Request) -> http::Response<Body> + Send + Sync;

/// Answers every request with `answer`, recording what it was sent and the limiter's stats at
/// that moment (what the call had reserved).
struct FakeProvider {
    answer: Box<Answer>,
    limiter: Limiter<ManualClock>,
    seen: Arc<Mutex<Vec<(Request, Stats)>>>,
}

#[async_trait::async_trait]
impl Middleware for FakeProvider {
    async fn handle(
        &self,
        request: Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let response = (self.answer)(&request);
        let stats = self.limiter.stats();
        self.seen
            .lock()
            .unwrap()
            .push((request.try_clone().unwrap(), stats));
        Ok(Response::from(response))
    }
}

struct Setup {
    client: ClientWithMiddleware,
    limiter: Limiter<ManualClock>,
    seen: Arc<Mutex<Vec<(Request, Stats)>>>,
}

impl Setup {
    /// Sends [`OPENAI_BODY`] to the Chat Completions path; the response, whatever its status.
    async fn send_openai(&self) -> Response {
        self.client
            .post("http://localhost/v1/chat/completions")
            .body(OPENAI_BODY)
            .send()
            .await
            .expect("the call went through")
    }

    fn new(
        policy: Policy,
        gate: impl FnOnce(TokenGateMiddleware<ManualClock>) -> TokenGateMiddleware<ManualClock>,
        answer: impl Fn(&Request) -> http::Response<Body> + Send + Sync + 'static,
    ) -> Self {
        let limiter = Limiter::with_clock(policy, ManualClock::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = ClientBuilder::new(reqwest::Client::new())
            .with(gate(TokenGateMiddleware::new(limiter.clone())))
            .with(FakeProvider {
                answer: Box::new(answer),
                limiter: limiter.clone(),
                seen: Arc::clone(&seen),
            })
            .build();
        Self {
            client,
            limiter,
            seen,
        }
    }

    /// The stats the provider saw during call `i` (what the call had reserved).
    fn reserved(&self, i: usize) -> Stats {
        self.seen.lock().unwrap()[i].1.clone()
    }
}

fn used(stats: &Stats, dimension: Dimension) -> u64 {
    stats
        .limits
        .iter()
        .find(|l| l.dimension == dimension)
        .unwrap_or_else(|| panic!("no {dimension} limit"))
        .used
}

fn json(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Body> {
    let mut builder = http::Response::builder()
        .status(status)
        .url(
            "https://api.example.invalid/v1/chat/completions"
                .parse()
                .unwrap(),
        )
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn policy() -> Policy {
    Policy::builder()
        .requests_per_minute(600)
        .input_tokens_per_minute(100_000)
        .output_tokens_per_minute(100_000)
        .max_in_flight(10)
        .build()
        .unwrap()
}

const OPENAI_BODY: &str = r#"{"model": "gpt-4o-mini", "max_completion_tokens": 700,
    "messages": [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": [{"type": "text", "text": "Name three prime numbers."}]}]}"#;

const OPENAI_REPLY: &str = r#"{"id": "chatcmpl-1", "object": "chat.completion", "choices": [],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
              "prompt_tokens_details": {"cached_tokens": 8}}}"#;

#[tokio::test]
async fn openai_body_is_estimated_and_the_reply_settles() {
    let setup = Setup::new(
        policy(),
        |gate| gate,
        |_| json(200, &[("x-request-id", "req_1")], OPENAI_REPLY),
    );
    let response = setup
        .client
        .post("https://api.example.invalid/v1/chat/completions")
        .body(OPENAI_BODY)
        .send()
        .await
        .unwrap();

    // Reserved: the messages as the estimator counts them, and max_completion_tokens.
    let expected = Estimator::new().estimate_chat(
        "gpt-4o-mini",
        &[
            ChatMessage::system("You are terse."),
            ChatMessage::user("Name three prime numbers."),
        ],
        Some(700),
    );
    let during = setup.reserved(0);
    assert_eq!(used(&during, Dimension::Requests), 1);
    assert_eq!(
        used(&during, Dimension::InputTokens),
        expected.input_tokens()
    );
    assert_eq!(used(&during, Dimension::OutputTokens), 700);
    assert_eq!(during.in_flight, 1);

    // Settled from the usage before the caller sees the response, as OpenAI counts: cached
    // input tokens count, and the output reservation (max_completion_tokens) stays charged.
    // The caller gets the same status, headers and body.
    let after = setup.limiter.stats();
    assert_eq!(used(&after, Dimension::InputTokens), 19);
    assert_eq!(used(&after, Dimension::OutputTokens), 700);
    assert_eq!((after.in_flight, after.settled), (0, 1));
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req_1");
    assert_eq!(
        response.url().as_str(),
        "https://api.example.invalid/v1/chat/completions"
    );
    assert_eq!(response.text().await.unwrap(), OPENAI_REPLY);
}

#[tokio::test]
async fn anthropic_body_is_estimated_and_cache_reads_are_not_charged() {
    let body = r#"{"model": "claude-sonnet-4-5", "max_tokens": 1024,
        "system": [{"type": "text", "text": "You answer in one word."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
                     {"role": "assistant", "content": "Paris."},
                     {"role": "user", "content": "And of Spain?"}]}"#;
    let reply = r#"{"id": "msg_01", "type": "message", "role": "assistant", "content": [],
        "usage": {"input_tokens": 30, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 5, "output_tokens": 3}}"#;
    let setup = Setup::new(policy(), |gate| gate, move |_| json(200, &[], reply));
    setup
        .client
        .post("https://api.anthropic.example.invalid/v1/messages")
        .body(body)
        .send()
        .await
        .unwrap();
    let expected = Estimator::new().estimate_chat(
        "claude-sonnet-4-5",
        &[
            ChatMessage::system("You answer in one word."),
            ChatMessage::user("Capital of France?"),
            ChatMessage::assistant("Paris."),
            ChatMessage::user("And of Spain?"),
        ],
        Some(1_024),
    );
    let during = setup.reserved(0);
    assert_eq!(
        used(&during, Dimension::InputTokens),
        expected.input_tokens()
    );
    assert_eq!(used(&during, Dimension::OutputTokens), 1_024);
    let after = setup.limiter.stats();
    // Anthropic leaves cache reads out of its input-token limit: 30 + 5 written.
    assert_eq!(used(&after, Dimension::InputTokens), 35);
    assert_eq!(used(&after, Dimension::OutputTokens), 3);
}

#[tokio::test]
async fn cached_input_policy_is_configurable() {
    let reply = r#"{"type": "message", "usage": {"input_tokens": 30, "cache_read_input_tokens": 1000, "output_tokens": 3}}"#;
    let setup = Setup::new(
        policy(),
        |gate| {
            gate.with_config(
                GateConfig::new().with_cached_input(tokengate::feedback::usage::CachedInput::Count),
            )
        },
        move |_| json(200, &[], reply),
    );
    setup
        .client
        .post("http://localhost/v1/messages")
        .body(r#"{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(used(&setup.limiter.stats(), Dimension::InputTokens), 1_030);
}

#[tokio::test]
async fn other_requests_pass_through_or_pay_the_default_cost() {
    let answer = |_: &Request| json(200, &[], r#"{"object": "list", "data": []}"#);
    let setup = Setup::new(policy(), |gate| gate, answer);
    for request in [
        setup.client.get("http://localhost/v1/models"),
        // Not JSON.
        setup
            .client
            .post("http://localhost/v1/chat/completions")
            .body("hello"),
        // Not a model endpoint.
        setup
            .client
            .post("http://localhost/v1/files")
            .body(r#"{"model": "gpt-4o", "input": "x"}"#),
    ] {
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    let stats = setup.limiter.stats();
    assert_eq!((stats.admitted, used(&stats, Dimension::Requests)), (0, 0));

    let setup = Setup::new(
        policy(),
        |gate| gate.with_config(GateConfig::new().with_default_cost(Cost::request())),
        answer,
    );
    setup
        .client
        .get("http://localhost/v1/models")
        .send()
        .await
        .unwrap();
    let stats = setup.limiter.stats();
    assert_eq!(used(&stats, Dimension::Requests), 1);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn a_cost_function_replaces_the_estimate() {
    let setup = Setup::new(
        policy(),
        |gate| {
            gate.with_cost_fn(|request, chat| {
                assert_eq!(request.url().path(), "/v1/chat/completions");
                let chat = chat.expect("a model call");
                Some(Cost::request().input(1).output(chat.max_output_tokens? / 7))
            })
        },
        |_| json(200, &[], r#"{"object": "chat.completion"}"#),
    );
    setup.send_openai().await;
    let during = setup.reserved(0);
    assert_eq!(used(&during, Dimension::InputTokens), 1);
    assert_eq!(used(&during, Dimension::OutputTokens), 100);
    // No usage in the reply: the reservation stands.
    assert_eq!(used(&setup.limiter.stats(), Dimension::OutputTokens), 100);
}

#[tokio::test]
async fn a_429_pauses_the_limiter_and_is_returned_unchanged() {
    let setup = Setup::new(
        policy(),
        // Not retried: the 429 itself is the subject.
        |gate| gate.with_config(GateConfig::new().with_retries(0)),
        |_| {
            json(
                429,
                &[
                    ("retry-after-ms", "1500"),
                    ("retry-after", "2"),
                    ("x-ratelimit-limit-requests", "600"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1.5s"),
                ],
                r#"{"error": {"type": "rate_limit_exceeded", "message": "Slow down"}}"#,
            )
        },
    );
    let response = setup.send_openai().await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error": {"type": "rate_limit_exceeded", "message": "Slow down"}}"#
    );
    assert_eq!(setup.seen.lock().unwrap().len(), 1, "no retry");

    let stats = setup.limiter.stats();
    assert_eq!(stats.throttled, 1);
    // Nothing was processed: tokens back; the provider's count of requests (all 600) adopted.
    assert_eq!(used(&stats, Dimension::InputTokens), 0);
    assert_eq!(used(&stats, Dimension::OutputTokens), 0);
    assert_eq!(used(&stats, Dimension::Requests), 600);
    assert_eq!(stats.in_flight, 0);
    // Paused for the retry-after (the finer header).
    let denied = setup.limiter.try_acquire(Cost::zero()).unwrap_err();
    assert_eq!(
        denied,
        Denied::Paused {
            wait: Duration::from_millis(1_500)
        }
    );
}

#[tokio::test]
async fn headers_of_every_reply_lower_the_limiter() {
    let policy = Policy::builder()
        .requests_per_minute(500)
        .tokens_per_minute(30_000)
        .build()
        .unwrap();
    let setup = Setup::new(
        policy,
        |gate| gate,
        |_| {
            json(
                200,
                &[
                    ("x-ratelimit-limit-requests", "500"),
                    ("x-ratelimit-remaining-requests", "480"),
                    ("x-ratelimit-reset-requests", "2m24s"),
                    ("x-ratelimit-limit-tokens", "30000"),
                    ("x-ratelimit-remaining-tokens", "oops"),
                ],
                OPENAI_REPLY,
            )
        },
    );
    setup.send_openai().await;
    let stats = setup.limiter.stats();
    let requests = &stats.limits[0];
    assert_eq!(requests.dimension, Dimension::Requests);
    // Another client used 19 more requests than we did: the limiter counts them too.
    assert_eq!((requests.used, requests.reported_amount), (20, Some(500)));
    // The malformed header changed nothing; the tokens settled from the usage: 19 input, and
    // the 700 reserved for output, which OpenAI keeps.
    assert_eq!(stats.limits[1].used, 719);
}

#[tokio::test]
async fn a_timeout_or_an_impossible_cost_is_a_middleware_error() {
    let policy = Policy::builder()
        .output_tokens_per_minute(1_000)
        .build()
        .unwrap();
    let setup = Setup::new(
        policy,
        |gate| gate.with_timeout(Duration::from_secs(5)),
        |_| json(200, &[], r#"{"object": "chat.completion"}"#),
    );
    let call = |max_tokens: u64| {
        setup
            .client
            .post("http://localhost/v1/chat/completions")
            .body(format!(
                r#"{{"model": "gpt-4o", "max_tokens": {max_tokens}, "messages": [{{"role": "user", "content": "Hi"}}]}}"#
            ))
            .send()
    };
    // No usage in the reply: 900 of the 1,000 stay reserved.
    call(900).await.unwrap();
    let err = call(500).await.unwrap_err();
    assert!(err.is_middleware());
    match acquire_error(&err) {
        Some(AcquireError::Timeout {
            dimension,
            cost,
            timeout,
            ..
        }) => {
            assert_eq!(dimension, &Dimension::OutputTokens);
            assert_eq!((*cost, *timeout), (500, Duration::from_secs(5)));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("500 output_tokens"), "{err}");
    let err = call(5_000).await.unwrap_err();
    assert!(matches!(
        acquire_error(&err),
        Some(AcquireError::Exceeds {
            cost: 5_000,
            capacity: 1_000,
            ..
        })
    ));
    assert_eq!(
        setup.seen.lock().unwrap().len(),
        1,
        "refused calls are not sent"
    );
}

#[tokio::test]
async fn a_refused_connection_gives_the_tokens_back() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let limiter = Limiter::with_clock(policy(), ManualClock::new());
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(TokenGateMiddleware::new(limiter.clone()))
        .build();
    let err = client
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .body(OPENAI_BODY)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let stats = limiter.stats();
    assert_eq!(used(&stats, Dimension::Requests), 1);
    assert_eq!(used(&stats, Dimension::InputTokens), 0);
    assert_eq!(used(&stats, Dimension::OutputTokens), 0);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn the_tenant_header_is_read_and_not_sent() {
    let setup = Setup::new(
        policy(),
        |gate| {
            gate.with_config(
                GateConfig::new().with_tenant_header(http::HeaderName::from_static("x-tenant")),
            )
        },
        |request| {
            assert!(request.headers().get("x-tenant").is_none());
            json(200, &[], OPENAI_REPLY)
        },
    );
    setup
        .client
        .post("http://localhost/v1/chat/completions")
        .header("x-tenant", "acme")
        .body(OPENAI_BODY)
        .with_extension(Tenant::new("acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(setup.limiter.stats().settled, 1);
}

/// A streamed reply whose chunks the test sends one by one.
fn sse(receiver: Arc<Mutex<Option<Channel<Bytes>>>>) -> http::Response<Body> {
    let body = receiver.lock().unwrap().take().expect("one call");
    http::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::wrap(body))
        .unwrap()
}

const ANTHROPIC_STREAM_BODY: &str = r#"{"model": "claude-haiku-4-5", "max_tokens": 400, "stream": true,
    "messages": [{"role": "user", "content": "Tell me a story."}]}"#;

#[tokio::test]
async fn a_streamed_reply_settles_when_it_ends() {
    let (mut tx, body) = Channel::<Bytes>::new(8);
    let body = Arc::new(Mutex::new(Some(body)));
    let setup = Setup::new(policy(), |gate| gate, move |_| sse(Arc::clone(&body)));
    let mut response = setup
        .client
        .post("http://localhost/v1/chat/completions")
        .body(
            r#"{"model": "gpt-4o", "max_tokens": 300, "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let chunks = [
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,",
        "\"completion_tokens\":42}}\n\ndata: [DONE]\n\n",
    ];
    let mut received = String::new();
    for chunk in chunks {
        tx.send_data(Bytes::from(chunk)).await.unwrap();
        received.push_str(std::str::from_utf8(&response.chunk().await.unwrap().unwrap()).unwrap());
        // Not settled while the stream runs.
        let stats = setup.limiter.stats();
        assert_eq!((stats.in_flight, stats.settled), (1, 0));
        assert_eq!(used(&stats, Dimension::OutputTokens), 300);
    }
    drop(tx);
    assert!(response.chunk().await.unwrap().is_none());
    assert_eq!(received, chunks.concat());
    let stats = setup.limiter.stats();
    assert_eq!((stats.in_flight, stats.settled), (0, 1));
    assert_eq!(used(&stats, Dimension::InputTokens), 9);
    // OpenAI keeps max_tokens charged: so does the limiter.
    assert_eq!(used(&stats, Dimension::OutputTokens), 300);
}

#[tokio::test]
async fn a_stream_dropped_half_way_keeps_the_output_reservation() {
    let (mut tx, body) = Channel::<Bytes>::new(8);
    let body = Arc::new(Mutex::new(Some(body)));
    let setup = Setup::new(policy(), |gate| gate, move |_| sse(Arc::clone(&body)));
    let mut response = setup
        .client
        .post("http://localhost/v1/messages")
        .body(ANTHROPIC_STREAM_BODY)
        .send()
        .await
        .unwrap();
    tx.send_data(Bytes::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    ))
    .await
    .unwrap();
    tx.send_data(Bytes::from("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Once\"}}\n\n"))
        .await
        .unwrap();
    response.chunk().await.unwrap().unwrap();
    assert_eq!(setup.limiter.stats().settled, 0);
    drop(response);
    let stats = setup.limiter.stats();
    assert_eq!((stats.in_flight, stats.settled), (0, 1));
    // The input is known; the output is not (the provider may still be writing): kept.
    assert_eq!(used(&stats, Dimension::InputTokens), 25);
    assert_eq!(used(&stats, Dimension::OutputTokens), 400);
}

#[tokio::test]
async fn an_anthropic_stream_read_to_the_end_settles_its_final_usage() {
    let (mut tx, body) = Channel::<Bytes>::new(8);
    let body = Arc::new(Mutex::new(Some(body)));
    let setup = Setup::new(policy(), |gate| gate, move |_| sse(Arc::clone(&body)));
    let response = setup
        .client
        .post("http://localhost/v1/messages")
        .body(ANTHROPIC_STREAM_BODY)
        .send()
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for event in [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":77}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ] {
            tx.send_data(Bytes::from(event)).await.unwrap();
        }
    });
    let text = response.text().await.unwrap();
    sender.await.unwrap();
    assert!(text.ends_with("{\"type\":\"message_stop\"}\n\n"));
    let stats = setup.limiter.stats();
    assert_eq!(stats.settled, 1);
    assert_eq!(used(&stats, Dimension::InputTokens), 25);
    assert_eq!(used(&stats, Dimension::OutputTokens), 77);
}

#[tokio::test]
async fn a_stream_without_usage_keeps_the_whole_reservation() {
    let (mut tx, body) = Channel::<Bytes>::new(8);
    let body = Arc::new(Mutex::new(Some(body)));
    let setup = Setup::new(policy(), |gate| gate, move |_| sse(Arc::clone(&body)));
    let response = setup
        .client
        .post("http://localhost/v1/chat/completions")
        .body(r#"{"model": "gpt-4o", "max_tokens": 300, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}"#)
        .send()
        .await
        .unwrap();
    tx.send_data(Bytes::from(
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n",
    ))
    .await
    .unwrap();
    drop(tx);
    response.text().await.unwrap();
    let stats = setup.limiter.stats();
    assert_eq!((stats.in_flight, stats.settled), (0, 0));
    assert_eq!(used(&stats, Dimension::OutputTokens), 300);
    assert!(used(&stats, Dimension::InputTokens) > 0);
}

/// Answers the first call 429 (retry after 800 ms), every later one 200 with its usage, and
/// notes when each call came.
struct ThrottledOnce {
    calls: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl ThrottledOnce {
    /// A client whose calls pass `gate`, then reach a `ThrottledOnce`; and when each came.
    fn behind(
        gate: TokenGateMiddleware<tokengate::TokioClock>,
    ) -> (ClientWithMiddleware, Arc<Mutex<Vec<tokio::time::Instant>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let client = ClientBuilder::new(reqwest::Client::new())
            .with(gate)
            .with(ThrottledOnce {
                calls: Arc::clone(&calls),
            })
            .build();
        (client, calls)
    }
}

#[async_trait::async_trait]
impl Middleware for ThrottledOnce {
    async fn handle(
        &self,
        _: Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(tokio::time::Instant::now());
        let response = if calls.len() == 1 {
            json(
                429,
                &[
                    ("retry-after-ms", "800"),
                    ("x-ratelimit-remaining-tokens", "0"),
                ],
                r#"{"error": {"type": "rate_limit_exceeded"}}"#,
            )
        } else {
            json(200, &[], OPENAI_REPLY)
        };
        Ok(Response::from(response))
    }
}

/// A 429 is retried through the limiter after its `retry-after` (and a tenth at most more):
/// the caller sees the reply; the refused attempt gave its tokens back, the retry settled.
#[tokio::test(start_paused = true)]
async fn a_429_is_retried_through_the_limiter_after_its_retry_after() {
    let limiter = Limiter::with_clock(policy(), tokengate::TokioClock::new());
    let (client, calls) = ThrottledOnce::behind(TokenGateMiddleware::new(limiter.clone()));
    let start = tokio::time::Instant::now();
    let response = client
        .post("http://localhost/v1/chat/completions")
        .body(OPENAI_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let waited = calls[1] - calls[0];
    // The response says what the limiter did: two attempts, the wait between them.
    let admission = response
        .extensions()
        .get::<tokengate::reqwest::Admission>()
        .cloned()
        .expect("an Admission");
    assert_eq!(admission.attempts, 2);
    assert_eq!(admission.waited, waited);
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(880),
        "{waited:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(800));
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.settled, stats.throttled), (2, 2, 1));
    // Two requests counted (a refused one counts, as OpenAI says); the tokens are the reply's.
    assert_eq!(used(&stats, Dimension::Requests), 2);
    assert_eq!(used(&stats, Dimension::InputTokens), 19);
}

/// A provider that counts nothing of a refused request (`Refused::Nothing`): the refused
/// attempt gives its request back too.
#[tokio::test(start_paused = true)]
async fn a_refusal_the_provider_does_not_count_gives_the_request_back() {
    let limiter = Limiter::with_clock(policy(), tokengate::TokioClock::new());
    let retry = Retry::new().with_refused(Refused::Nothing);
    let (client, calls) = ThrottledOnce::behind(
        TokenGateMiddleware::new(limiter.clone()).with_config(GateConfig::new().with_retry(retry)),
    );
    let response = client
        .post("http://localhost/v1/chat/completions")
        .body(OPENAI_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.lock().unwrap().len(), 2);
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.throttled), (2, 1));
    assert_eq!(used(&stats, Dimension::Requests), 1);
    assert_eq!(used(&stats, Dimension::InputTokens), 19);
}

/// A body naming a model the limits file does not cover is refused before it is sent.
#[tokio::test(start_paused = true)]
async fn a_model_the_limits_file_does_not_cover_is_not_sent() {
    let config = tokengate::config::Config::from_toml_str(
        "[models.gpt-4o-mini]\nrequests_per_minute = 500",
        "limits.toml",
    )
    .unwrap();
    let limiter = Limiter::from_config_with_clock(config, tokengate::TokioClock::new());
    let (client, calls) = ThrottledOnce::behind(TokenGateMiddleware::new(limiter.clone()));
    let error = client
        .post("http://localhost/v1/chat/completions")
        .body(OPENAI_BODY.replace("gpt-4o-mini", "gpt4o-mini"))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(acquire_error(&error), Some(AcquireError::UnknownModel { model, .. }) if model == "gpt4o-mini"),
        "{error:?}"
    );
    assert!(calls.lock().unwrap().is_empty());
}

/// The timeout is one deadline for the call: a retry whose `retry-after` would pass it is
/// not made, and the 429 is returned.
#[tokio::test(start_paused = true)]
async fn a_retry_past_the_timeout_is_not_made() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let setup = Setup::new(
        policy(),
        |gate| gate.with_timeout(Duration::from_millis(500)),
        move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            json(429, &[("retry-after-ms", "800")], "{}")
        },
    );
    let start = tokio::time::Instant::now();
    let response = setup.send_openai().await;
    assert_eq!(response.status(), 429);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert!(start.elapsed() < Duration::from_millis(500));
}

/// With retries set to 0, or a wait above a minute, the 429 is returned at once.
#[tokio::test(start_paused = true)]
async fn a_429_is_not_retried_when_told_not_to_or_asked_to_wait_too_long() {
    for (retries, retry_after) in [(0, "1"), (2, "61")] {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let setup = Setup::new(
            policy(),
            |gate| gate.with_config(GateConfig::new().with_retries(retries)),
            move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
                json(429, &[("retry-after", retry_after)], "{}")
            },
        );
        let response = setup.send_openai().await;
        assert_eq!(response.status(), 429);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "{retries} {retry_after}");
        let admission = response.extensions().get::<tokengate::reqwest::Admission>();
        assert_eq!(admission.map(|a| a.attempts), Some(1));
    }
}

//! A 429 retried through the limiter by `Key::run` and by tower's `RetryLayer` with
//! `RetryThrottled`: after the provider's `retry-after` (a tenth more at most), a bounded number
//! of times, each refused attempt settled as the provider counts it (`Refused`) and told to the
//! limiter; not retried with `Retry::none`, nor after a wait above the longest allowed.
//! Virtual time (tokio's paused clock, `TokioClock`).
//!
//! Run with `cargo test -p tokengate --features reqwest,tower --test retry`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokengate::call::{Refused, Retry};
use tokengate::{Limiter, Policy, TokioClock};
use tokio::time::Instant;

const REQUEST: &str = r#"{"model": "m", "max_tokens": 100,
    "messages": [{"role": "user", "content": "Name three prime numbers."}]}"#;
const REPLY: &str =
    r#"{"object": "chat.completion", "usage": {"prompt_tokens": 9, "completion_tokens": 30}}"#;

/// 600 requests and 60,000 tokens a minute; exact instants (no safety margin).
fn limiter() -> Limiter<TokioClock> {
    let policy = Policy::builder()
        .requests_per_minute(600)
        .tokens_per_minute(60_000)
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    Limiter::with_clock(policy, TokioClock::new())
}

/// A provider that refuses the first `refusals` calls with `refusal` and then answers
/// [`REPLY`]; it notes when each call came.
struct Provider {
    refusals: usize,
    calls: Mutex<Vec<Instant>>,
}

impl Provider {
    fn new(refusals: usize) -> Arc<Self> {
        Arc::new(Self {
            refusals,
            calls: Mutex::new(Vec::new()),
        })
    }

    /// The next reply, `refusal` while refusing.
    fn answer<T>(&self, refusal: impl FnOnce() -> T, reply: impl FnOnce() -> T) -> T {
        let mut calls = self.calls.lock().unwrap();
        calls.push(Instant::now());
        if calls.len() <= self.refusals {
            refusal()
        } else {
            reply()
        }
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

/// `(requests, tokens)` used on the limiter's own budget.
fn used(limiter: &Limiter<TokioClock>) -> (u64, u64) {
    let stats = limiter.stats();
    (stats.limits[0].used, stats.limits[1].used)
}

mod run {
    use super::*;

    fn refused_after(ms: &str) -> http::Response<Value> {
        http::Response::builder()
            .status(429)
            .header("retry-after-ms", ms)
            .body(Value::Null)
            .unwrap()
    }

    fn answered() -> http::Response<Value> {
        http::Response::builder()
            .body(serde_json::from_str(REPLY).unwrap())
            .unwrap()
    }

    /// Two refusals, then the reply: three calls, each retry after the 429's 500 ms and at
    /// most a tenth more; the refused attempts keep their request counted and give their
    /// tokens back; the limiter was told of both (paused, and counted as throttled).
    #[tokio::test(start_paused = true)]
    async fn a_429_is_retried_after_its_retry_after_and_settled_as_refused() {
        let limiter = limiter();
        let provider = Provider::new(2);
        let request: Value = serde_json::from_str(REQUEST).unwrap();
        let reply = limiter
            .model("m")
            .run(&request, |_| {
                let reply = provider.answer(|| refused_after("500"), answered);
                async move { reply }
            })
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        let calls = provider.calls();
        assert_eq!(calls.len(), 3);
        for pair in calls.windows(2) {
            let waited = pair[1] - pair[0];
            assert!(
                waited >= Duration::from_millis(500) && waited <= Duration::from_millis(550),
                "{waited:?}"
            );
        }
        // Three requests counted (OpenAI counts refused ones); the tokens of the reply alone,
        // counted as OpenAI counts them (input + max_tokens).
        assert_eq!(used(&limiter), (3, 9 + 100));
        assert_eq!(limiter.stats().throttled, 2);
    }

    /// `Refused::Nothing`: the refused attempts count nothing, requests included.
    #[tokio::test(start_paused = true)]
    async fn a_provider_that_counts_nothing_of_a_refusal_gets_the_request_back() {
        let limiter = limiter();
        limiter.set_retry(Retry::new().with_refused(Refused::Nothing));
        let provider = Provider::new(1);
        let request: Value = serde_json::from_str(REQUEST).unwrap();
        limiter
            .model("m")
            .run(&request, |_| {
                let reply = provider.answer(|| refused_after("100"), answered);
                async move { reply }
            })
            .await
            .unwrap();
        assert_eq!(used(&limiter), (1, 109));
    }

    /// `Retry::none()`, or more refusals than retries, or a wait above the longest allowed:
    /// the last 429 is returned, and every refused attempt settled.
    #[tokio::test(start_paused = true)]
    async fn the_429_is_returned_when_no_retry_is_left() {
        for (retry, refusals, retry_after_ms, calls) in [
            (Retry::none(), 1, "100", 1),
            (Retry::new(), 5, "100", 3),
            (Retry::new(), 1, "61000", 1),
            (
                Retry::new().with_max_wait(Duration::from_secs(120)),
                1,
                "61000",
                2,
            ),
        ] {
            let limiter = limiter();
            limiter.set_retry(retry);
            let provider = Provider::new(refusals);
            let request: Value = serde_json::from_str(REQUEST).unwrap();
            let reply = limiter
                .model("m")
                .run(&request, |_| {
                    let reply = provider.answer(|| refused_after(retry_after_ms), answered);
                    async move { reply }
                })
                .await
                .unwrap();
            let case = format!("{retry:?} {refusals} {retry_after_ms}");
            assert_eq!(provider.calls().len(), calls, "{case}");
            let refused = calls.min(refusals) as u64;
            let answered = calls as u64 - refused;
            assert_eq!(reply.status() == 200, answered == 1, "{case}");
            // Every attempt admitted (the window has let go of the first after a minute's
            // wait: admissions, not the window, count them), the tokens of the reply alone.
            let stats = limiter.stats();
            assert_eq!(
                (stats.admitted, stats.limits[1].used),
                (calls as u64, answered * 109),
                "{case}"
            );
        }
    }

    /// `run_timeout`: one deadline for the admissions and the waits before retries. A retry
    /// whose wait would pass it is not made; an admission that cannot come in time fails.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_bounds_admissions_and_retries_together() {
        for (timeout, calls) in [
            (Duration::from_millis(1_500), 1),
            (Duration::from_secs(10), 2),
        ] {
            let limiter = limiter();
            let provider = Provider::new(1);
            let request: Value = serde_json::from_str(REQUEST).unwrap();
            let start = Instant::now();
            let reply = limiter
                .model("m")
                .run_timeout(&request, timeout, |_| {
                    let reply = provider.answer(|| refused_after("2000"), answered);
                    async move { reply }
                })
                .await
                .unwrap();
            assert_eq!(provider.calls().len(), calls, "{timeout:?}");
            assert_eq!(reply.status() == 200, calls == 2, "{timeout:?}");
            assert!(start.elapsed() <= timeout, "{timeout:?}");
        }
        // Paused beyond the deadline by a 429 seen elsewhere: fails at once, nothing sent.
        let limiter = limiter();
        limiter.pause(Duration::from_secs(30));
        let provider = Provider::new(0);
        let request: Value = serde_json::from_str(REQUEST).unwrap();
        let error = limiter
            .model("m")
            .run_timeout(&request, Duration::from_secs(5), |_| {
                let reply = provider.answer(|| refused_after("0"), answered);
                async move { reply }
            })
            .await
            .unwrap_err();
        assert!(
            matches!(error, tokengate::AcquireError::Paused { .. }),
            "{error}"
        );
        assert!(provider.calls().is_empty());
    }

    /// A rate-limit error body (no headers: a second's wait) is a refusal too, in either
    /// provider's shape; an `Err` is never retried.
    #[tokio::test(start_paused = true)]
    async fn rate_limit_error_bodies_are_refusals() {
        let openai = json!({"error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}});
        let anthropic = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}});
        for refusal in [openai, anthropic] {
            let limiter = limiter();
            let provider = Provider::new(1);
            let request: Value = serde_json::from_str(REQUEST).unwrap();
            let start = Instant::now();
            let reply = limiter
                .model("m")
                .run(&request, |_| {
                    let reply = provider.answer(
                        || Ok::<_, std::io::Error>(refusal.clone()),
                        || Ok(serde_json::from_str(REPLY).unwrap()),
                    );
                    async move { reply }
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply["usage"]["completion_tokens"], 30);
            assert_eq!(provider.calls().len(), 2);
            assert!(start.elapsed() >= Duration::from_secs(1));
        }
        let limiter = limiter();
        let failed: Result<Value, &str> = limiter
            .model("m")
            .run(
                &serde_json::from_str::<Value>(REQUEST).unwrap(),
                |_| async { Err("connection reset") },
            )
            .await
            .unwrap();
        assert_eq!(failed, Err("connection reset"));
    }
}

mod tower_retry {
    use tokengate::feedback::ProviderReport;
    use tokengate::tower::{RetryThrottled, TokenGateError, TokenGateLayer};
    use tokengate::{Cost, Usage};
    use tower::retry::RetryLayer;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;

    /// A reply: 429 with a `retry-after`, or the tokens used.
    #[derive(Debug, Clone, PartialEq)]
    enum Reply {
        Refused(Duration),
        Used(u64),
    }

    /// `RetryLayer` outside the gate: each retry admitted again after the `retry-after`; the
    /// refused attempts settled by the gate's `usage_of`; the last 429 returned when no retry
    /// is left.
    #[tokio::test(start_paused = true)]
    async fn retries_pass_the_limiter_again_and_stop_when_none_is_left() {
        for (refusals, calls) in [(2, 3), (4, 3)] {
            let limiter = limiter();
            let provider = Provider::new(refusals);
            let model = {
                let provider = Arc::clone(&provider);
                service_fn(move |tokens: u64| {
                    let reply = provider.answer(
                        || Reply::Refused(Duration::from_millis(300)),
                        || Reply::Used(tokens / 2),
                    );
                    async move { Ok::<_, std::io::Error>(reply) }
                })
            };
            let retry = Retry::new();
            // Behind the gate, an error is the gate's error.
            let throttled = |r: &Result<Reply, TokenGateError<std::io::Error>>| match r {
                Ok(Reply::Refused(wait)) => Some(ProviderReport {
                    retry_after: Some(*wait),
                    ..Default::default()
                }),
                _ => None,
            };
            let client = ServiceBuilder::new()
                .layer(RetryLayer::new(RetryThrottled::new(
                    limiter.clone(),
                    retry,
                    throttled,
                )))
                .layer(TokenGateLayer::new(
                    limiter.clone(),
                    |tokens: &u64| Cost::request().input(*tokens),
                    move |r: &Result<Reply, std::io::Error>| match r.as_ref().ok()? {
                        Reply::Refused(_) => retry.refused().usage(),
                        Reply::Used(tokens) => Some(Usage::new().input(*tokens)),
                    },
                ))
                .service(model);
            let reply = client.oneshot(1_000).await.unwrap();
            let times = provider.calls();
            assert_eq!(times.len(), calls, "{refusals}");
            for pair in times.windows(2) {
                let waited = pair[1] - pair[0];
                assert!(
                    waited >= Duration::from_millis(300) && waited <= Duration::from_millis(330),
                    "{waited:?}"
                );
            }
            let answered = refusals < calls;
            assert_eq!(reply == Reply::Used(500), answered, "{refusals}");
            let tokens = if answered { 500 } else { 0 };
            assert_eq!(used(&limiter), (calls as u64, tokens), "{refusals}");
            assert_eq!(limiter.stats().throttled, calls.min(refusals) as u64);
        }
    }
}

//! End to end: concurrent chat calls through `reqwest` + the tokengate middleware against the
//! mock provider of `common::mock_provider` on a loopback port, in tokio's virtual time, when
//! the provider's buckets hold a whole minute's tokens (a provider documented so; the limiter
//! is told, with a burst of the whole amount on its token limits). Under a saturating load: no
//! 429, at least 95% of the binding limit used, and the mock's admission log passes
//! `shared/tools/check-admissions` (when the tool is there). The strict provider, which
//! enforces a sixtieth of each per-minute limit at once as well, and the defaults that match
//! it are tests/strict_provider.rs's.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::check_admissions;
use common::meters::Enforcement;
use common::mock_provider::{chat_body, go_duration, Api, MockLimits, MockProvider, MockSpec};
use common::rng::{next_random, prompt};
use tokengate::reqwest::TokenGateMiddleware;
use tokengate::{Dimension, Limit, Limiter, OutputCount, Policy, TokioClock};
use tokio::time::Instant;

struct Outcome {
    /// Units of the binding dimension the mock counted for admissions before the load
    /// stopped.
    binding_used: u64,
    responses: u64,
    client_429s: u64,
    mock_throttled: u64,
    log: String,
    /// The limiter's stats at the end.
    stats: tokengate::Stats,
}

/// Runs `workers` concurrent callers for `duration` of (virtual) time against a mock with a
/// minute's buckets, which counts output as OpenAI or Anthropic does.
async fn run_load(
    api: Api,
    policy: Policy,
    limits: MockLimits,
    workers: usize,
    duration: Duration,
    binding: &'static str,
) -> Outcome {
    let output = match api {
        Api::OpenAi => OutputCount::Reserved,
        Api::Anthropic => OutputCount::Produced,
    };
    let mock = MockProvider::start(MockSpec::new(limits, Enforcement::MinuteBucket, output)).await;
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
        let (client, url, counts) = (client.clone(), mock.url(api), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let mut seed = 0xD1B5_4A32_D192_ED03 ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9);
            let mut n = 0u64;
            while start.elapsed() < duration {
                n += 1;
                let max_tokens = [200u64, 400, 800][(next_random(&mut seed) % 3) as usize];
                let words = 60 + (next_random(&mut seed) % 240) as usize;
                let stream = (n + w as u64).is_multiple_of(3);
                let model = match api {
                    Api::OpenAi => "gpt-4o-mini",
                    Api::Anthropic => "claude-haiku-4-5",
                };
                let body = chat_body(api, model, max_tokens, stream, &prompt(&mut seed, words));
                let response = client
                    .post(&url)
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
    let (responses, client_429s) = *counts.lock().unwrap();
    let st = mock.state.lock().unwrap();
    let binding_used = st.counted(binding, duration.as_secs_f64());
    let stats = limiter.stats();
    // Every reply's headers were read: the limiter knows the provider's own limits.
    for limit in &stats.limits {
        let expected = match limit.dimension {
            Dimension::Requests => limits.requests,
            Dimension::Tokens => limits.tokens.unwrap(),
            Dimension::InputTokens => limits.input.unwrap(),
            Dimension::OutputTokens => limits.output.unwrap(),
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
        log: st.log(),
        stats,
    }
}

fn args(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|a| {
            let (flag, value) = a.split_once(' ').unwrap();
            [flag.to_owned(), value.to_owned()]
        })
        .collect()
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
    check_admissions::check(
        "openai",
        &outcome.log,
        &args(&[
            format!("--limit requests={rpm}/60"),
            format!("--limit tokens={tpm}/60"),
        ]),
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
    check_admissions::check(
        "anthropic",
        &outcome.log,
        &args(&[
            format!("--limit requests={rpm}/60"),
            format!("--limit input_tokens={itpm}/60"),
            format!("--limit output_tokens={otpm}/60"),
        ]),
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
            Api::OpenAi => MockLimits::openai(1, 100_000),
            Api::Anthropic => MockLimits::anthropic(1, 100_000, 100_000),
        };
        let mock = MockProvider::start(MockSpec::new(
            limits,
            Enforcement::MinuteBucket,
            OutputCount::Produced,
        ))
        .await;
        let policy = Policy::builder().requests_per_minute(600).build().unwrap();
        let limiter = Limiter::with_clock(policy, TokioClock::new());
        // Not retried: the 429 itself is the subject (tests/reqwest_middleware.rs retries).
        let gate = TokenGateMiddleware::new(limiter.clone())
            .with_config(tokengate::reqwest::GateConfig::new().with_retries(0));
        let client = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder().no_proxy().build().unwrap(),
        )
        .with(gate)
        .build();
        let body =
            r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}"#;
        let call = || client.post(mock.url(api)).body(body).send();
        assert_eq!(call().await.unwrap().status(), 200);
        let response = call().await.unwrap();
        assert_eq!(response.status(), 429, "{api:?}");
        let retry_after = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(response.text().await.unwrap().contains("rate_limit_error"));
        assert_eq!(mock.state.lock().unwrap().throttled, 1);
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
        };
    }
}

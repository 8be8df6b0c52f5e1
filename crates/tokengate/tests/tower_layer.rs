//! The tower middleware (`tokengate::tower`, feature `tower`) under tokio's paused time with
//! `TokioClock`: requests admitted in FIFO order at the exact instants the limits allow,
//! settlement from the usage the response reports, errors that keep the reservation, cancel
//! safety of the response future (in-flight slot freed, queued acquisition withdrawn),
//! impossible costs and timeouts as errors without calling the inner service, readiness
//! delegated to the inner service, and a `Send + 'static` response future.
//!
//! Run with `cargo test -p tokengate --features tower --test tower_layer`.
#![cfg(feature = "tower")]

mod common;

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokengate::tower::{
    ResponseFuture, TokenGate, TokenGateConfig, TokenGateError, TokenGateLayer,
};
use tokengate::{
    AcquireError, Algorithm, Cost, Dimension, Limit, LimitStats, Limiter, PolicyBuilder,
    TokioClock, Usage,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A limiter of `builder`'s policy on tokio's clock, exact: these tests check exact waits and
/// order.
fn tokio_limiter(builder: PolicyBuilder) -> Limiter<TokioClock> {
    common::limiters::exact_tokio_limiter(builder)
}

fn limit_stats(limiter: &Limiter<TokioClock>, dimension: Dimension) -> LimitStats {
    limiter
        .stats()
        .limits
        .into_iter()
        .find(|l| l.dimension == dimension)
        .expect("the policy limits this dimension")
}

/// One call to the model: what it reserves, what it will report, and how it ends.
#[derive(Debug, Clone, Default)]
struct Prompt {
    id: usize,
    input: u64,
    max_output: u64,
    /// Output tokens the reply reports.
    used_output: u64,
    /// The model answers with an error.
    fail: bool,
    /// The model never answers.
    hang: bool,
}

fn prompt(id: usize) -> Prompt {
    Prompt {
        id,
        ..Prompt::default()
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Reply {
    id: usize,
    output: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ModelError(usize);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the model failed on request {}", self.0)
    }
}

impl std::error::Error for ModelError {}

fn cost_of(p: &Prompt) -> Cost {
    Cost::request().input(p.input).output(p.max_output)
}

/// The usage a reply reports; `None` for an error (the reservation stays).
fn usage_of(r: &Result<Reply, ModelError>) -> Option<Usage> {
    r.as_ref()
        .ok()
        .map(|reply| Usage::new().output(reply.output))
}

type CostFn = fn(&Prompt) -> Cost;
type UsageFn = fn(&Result<Reply, ModelError>) -> Option<Usage>;
type Gate = TokenGate<Model, CostFn, UsageFn, TokioClock>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    NotReady,
    Broken,
}

/// A stand-in for the model's client: logs which request it was called with and when.
#[derive(Debug, Clone)]
struct Model {
    start: Instant,
    calls: Arc<Mutex<Vec<(usize, Duration)>>>,
    readiness: Arc<Mutex<Readiness>>,
}

impl Model {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            calls: Arc::default(),
            readiness: Arc::new(Mutex::new(Readiness::Ready)),
        }
    }

    /// The requests called so far, with the time since the model was made.
    fn calls(&self) -> Vec<(usize, Duration)> {
        self.calls.lock().unwrap().clone()
    }

    fn set_readiness(&self, readiness: Readiness) {
        *self.readiness.lock().unwrap() = readiness;
    }
}

impl Service<Prompt> for Model {
    type Response = Reply;
    type Error = ModelError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, ModelError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ModelError>> {
        match *self.readiness.lock().unwrap() {
            Readiness::Ready => Poll::Ready(Ok(())),
            Readiness::NotReady => Poll::Pending,
            Readiness::Broken => Poll::Ready(Err(ModelError(usize::MAX))),
        }
    }

    fn call(&mut self, p: Prompt) -> Self::Future {
        self.calls
            .lock()
            .unwrap()
            .push((p.id, self.start.elapsed()));
        Box::pin(async move {
            if p.hang {
                std::future::pending::<()>().await;
            }
            if p.fail {
                Err(ModelError(p.id))
            } else {
                Ok(Reply {
                    id: p.id,
                    output: p.used_output,
                })
            }
        })
    }
}

fn layer(limiter: &Limiter<TokioClock>) -> TokenGateLayer<CostFn, UsageFn, TokioClock> {
    TokenGateLayer::new(limiter.clone(), cost_of as CostFn, usage_of as UsageFn)
}

fn gate(limiter: &Limiter<TokioClock>, model: &Model) -> Gate {
    layer(limiter).layer(model.clone())
}

/// Polls `fut` once, with the calling task's waker.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// Readies `gate` and calls it, without polling the response future.
async fn call(gate: &mut Gate, p: Prompt) -> ResponseFuture<Reply, ModelError> {
    gate.ready().await.expect("the model is ready").call(p)
}

#[tokio::test(start_paused = true)]
async fn requests_are_admitted_in_order_one_per_second() {
    // 60 a minute: a burst of 1, then one a second.
    let limiter = tokio_limiter(PolicyBuilder::default().requests_per_minute(60));
    let model = Model::new();
    // Two services from one layer share the limiter.
    let layer = layer(&limiter);
    let a = ServiceBuilder::new()
        .layer(layer.clone())
        .service(model.clone());
    let b = layer.layer(model.clone());

    let mut tasks = Vec::new();
    for id in 0..5 {
        let svc = if id % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(svc.oneshot(prompt(id))));
        tokio::task::yield_now().await;
        // The first is admitted at once; each later one has joined the queue behind the others.
        assert_eq!(limiter.stats().waiters, id);
    }
    assert_eq!(model.calls(), vec![(0, Duration::ZERO)]);

    for (id, task) in tasks.into_iter().enumerate() {
        let reply = task.await.expect("no panic").expect("admitted");
        assert_eq!(reply.id, id);
    }
    let expected: Vec<_> = (0..5).map(|i| (i, Duration::from_secs(i as u64))).collect();
    assert_eq!(model.calls(), expected);
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.settled, stats.waiters), (5, 5, 0));
}

#[tokio::test(start_paused = true)]
async fn each_request_waits_exactly_for_its_tokens() {
    // 1,000 input tokens a second, bucket of 1,000: a cost of n waits n ms once it is empty.
    let bucket = Limit::per_second(1_000)
        .algorithm(Algorithm::TokenBucket)
        .burst(1_000);
    let limiter = tokio_limiter(PolicyBuilder::default().limit(Dimension::InputTokens, bucket));
    let model = Model::new();
    let svc = gate(&limiter, &model);

    let mut tasks = Vec::new();
    for (id, input) in [(0, 1_000), (1, 250), (2, 500), (3, 1)].into_iter() {
        let p = Prompt {
            input,
            ..prompt(id)
        };
        tasks.push(tokio::spawn(svc.clone().oneshot(p)));
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.expect("no panic").expect("admitted");
    }
    // Each at the instant its tokens are back: 250 ms, then 500 ms more, then 1 ms more.
    assert_eq!(
        model.calls(),
        vec![(0, ms(0)), (1, ms(250)), (2, ms(750)), (3, ms(751))]
    );
    // All four arrived at 0: the waits are the admission instants.
    let waits = limiter.stats().waits;
    assert_eq!((waits.count, waits.waited), (4, 3));
    assert_eq!((waits.max, waits.total), (ms(751), ms(250 + 750 + 751)));
}

#[tokio::test(start_paused = true)]
async fn settling_refunds_what_the_response_did_not_use() {
    let limiter = tokio_limiter(
        PolicyBuilder::default()
            .requests_per_minute(500)
            .output_tokens_per_minute(8_000)
            .max_in_flight(4),
    );
    let model = Model::new();
    let p = Prompt {
        max_output: 800,
        used_output: 312,
        ..prompt(7)
    };
    let reply = gate(&limiter, &model).oneshot(p).await.expect("admitted");
    assert_eq!(reply, Reply { id: 7, output: 312 });

    let output = limit_stats(&limiter, Dimension::OutputTokens);
    assert_eq!(
        (output.used, output.charged, output.refunded),
        (312, 800, 488)
    );
    assert_eq!(limit_stats(&limiter, Dimension::Requests).used, 1);
    let stats = limiter.stats();
    assert_eq!((stats.settled, stats.in_flight), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_usage_above_the_reservation_is_charged() {
    let limiter = tokio_limiter(PolicyBuilder::default().output_tokens_per_minute(8_000));
    let model = Model::new();
    let p = Prompt {
        max_output: 100,
        used_output: 900,
        ..prompt(1)
    };
    gate(&limiter, &model).oneshot(p).await.expect("admitted");
    let output = limit_stats(&limiter, Dimension::OutputTokens);
    assert_eq!(
        (output.used, output.charged, output.refunded),
        (900, 900, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_keeps_the_reservation_and_frees_the_slot() {
    let limiter = tokio_limiter(
        PolicyBuilder::default()
            .requests_per_minute(500)
            // A second's worth (1,000) holds the 800 reserved: only the slot is in question.
            .output_tokens_per_minute(60_000)
            .max_in_flight(1),
    );
    let model = Model::new();
    let p = Prompt {
        max_output: 800,
        fail: true,
        ..prompt(3)
    };
    let err = gate(&limiter, &model).oneshot(p).await.unwrap_err();
    assert_eq!(err, TokenGateError::Inner(ModelError(3)));
    assert_eq!(err.to_string(), "the model failed on request 3");

    let output = limit_stats(&limiter, Dimension::OutputTokens);
    assert_eq!((output.used, output.refunded), (800, 0));
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.settled, stats.in_flight), (1, 0, 0));
    // The slot is free: the next request runs at once.
    gate(&limiter, &model)
        .oneshot(prompt(4))
        .await
        .expect("admitted");
    assert_eq!(model.calls(), vec![(3, ms(0)), (4, ms(0))]);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_response_future_mid_call_frees_its_slot() {
    let limiter = tokio_limiter(
        PolicyBuilder::default()
            .requests_per_minute(6_000)
            .max_in_flight(1),
    );
    let model = Model::new();
    let mut svc = gate(&limiter, &model);

    let mut first = call(
        &mut svc,
        Prompt {
            hang: true,
            ..prompt(1)
        },
    )
    .await;
    assert!(poll_once(&mut first).await.is_pending());
    assert_eq!(model.calls(), vec![(1, ms(0))]);
    assert_eq!(limiter.stats().in_flight, 1);

    // The second waits for the slot, not for time.
    let mut second = call(&mut svc, prompt(2)).await;
    assert!(poll_once(&mut second).await.is_pending());
    assert_eq!(limiter.stats().waiters, 1);

    drop(first);
    // The freed slot admitted the second on its behalf: it completes at its next poll.
    let Poll::Ready(reply) = poll_once(&mut second).await else {
        panic!("the freed slot should have admitted the queued request");
    };
    assert_eq!(reply.expect("admitted").id, 2);
    assert_eq!(model.calls(), vec![(1, ms(0)), (2, ms(0))]);
    let stats = limiter.stats();
    assert_eq!((stats.in_flight, stats.waiters, stats.admitted), (0, 0, 2));
    // The dropped call keeps its reservation: both requests count.
    assert_eq!(limit_stats(&limiter, Dimension::Requests).used, 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_response_future_withdraws_it() {
    let limiter = tokio_limiter(
        PolicyBuilder::default()
            .requests_per_minute(6_000)
            .max_in_flight(1),
    );
    let model = Model::new();
    let mut svc = gate(&limiter, &model);

    let mut first = call(
        &mut svc,
        Prompt {
            hang: true,
            ..prompt(1)
        },
    )
    .await;
    assert!(poll_once(&mut first).await.is_pending());
    let mut queued = call(&mut svc, prompt(2)).await;
    assert!(poll_once(&mut queued).await.is_pending());
    assert_eq!(limiter.stats().waiters, 1);

    drop(queued);
    let stats = limiter.stats();
    assert_eq!((stats.waiters, stats.cancelled, stats.admitted), (0, 1, 1));
    assert_eq!(limit_stats(&limiter, Dimension::Requests).used, 1);

    drop(first);
    assert_eq!(limiter.stats().in_flight, 0);
    let mut third = call(&mut svc, prompt(3)).await;
    assert!(matches!(
        poll_once(&mut third).await,
        Poll::Ready(Ok(Reply { id: 3, .. }))
    ));
    // The withdrawn request never reached the model.
    assert_eq!(model.calls(), vec![(1, ms(0)), (3, ms(0))]);
}

#[tokio::test(start_paused = true)]
async fn an_impossible_cost_fails_at_once_without_calling_the_model() {
    let limiter = tokio_limiter(PolicyBuilder::default().input_tokens_per_minute(1_000));
    let model = Model::new();
    let mut svc = gate(&limiter, &model);

    let mut fut = call(
        &mut svc,
        Prompt {
            input: 5_000,
            ..prompt(1)
        },
    )
    .await;
    let Poll::Ready(Err(err)) = poll_once(&mut fut).await else {
        panic!("an impossible cost should fail at the first poll");
    };
    match err.limit() {
        Some(AcquireError::Exceeds {
            dimension,
            cost,
            capacity,
            ..
        }) => assert_eq!(
            (dimension, *cost, *capacity),
            (&Dimension::InputTokens, 5_000, 1_000)
        ),
        other => panic!("expected Exceeds, got {other:?}"),
    }
    assert!(err.to_string().contains("can never be admitted"), "{err}");
    assert!(model.calls().is_empty());
    let stats = limiter.stats();
    assert_eq!((stats.rejected, stats.admitted, stats.in_flight), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_the_timeout_fails_at_once() {
    let limiter = tokio_limiter(PolicyBuilder::default().requests_per_minute(60));
    let model = Model::new();
    let start = Instant::now();
    let mut short = gate(&limiter, &model).with_timeout(ms(500));
    assert_eq!(short.config().timeout(), Some(ms(500)));

    short
        .ready()
        .await
        .unwrap()
        .call(prompt(1))
        .await
        .expect("admitted at once");
    let err = short
        .ready()
        .await
        .unwrap()
        .call(prompt(2))
        .await
        .unwrap_err();
    match &err {
        TokenGateError::Limit(AcquireError::Timeout {
            dimension,
            wait,
            timeout,
            ..
        }) => {
            assert_eq!(dimension, &Dimension::Requests);
            assert_eq!((*wait, *timeout), (Some(Duration::from_secs(1)), ms(500)));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // Known to be too long: no sleeping first.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limiter.stats().timed_out, 1);

    // A timeout long enough waits the exact second.
    let long = TokenGateConfig::new().with_timeout(Duration::from_secs(2));
    let reply = gate(&limiter, &model)
        .with_config(long)
        .oneshot(prompt(3))
        .await
        .expect("admitted within the timeout");
    assert_eq!(reply.id, 3);
    assert_eq!(model.calls(), vec![(1, ms(0)), (3, Duration::from_secs(1))]);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reports_the_inner_services_readiness() {
    let limiter = tokio_limiter(PolicyBuilder::default().requests_per_minute(60));
    let model = Model::new();
    let mut svc = gate(&limiter, &model);

    // Readiness ignores the limiter: ready although the limit is spent.
    svc.ready().await.unwrap().call(prompt(1)).await.unwrap();
    assert!(poll_fn(|cx| Poll::Ready(svc.poll_ready(cx)))
        .await
        .is_ready());

    model.set_readiness(Readiness::NotReady);
    assert!(poll_fn(|cx| Poll::Ready(svc.poll_ready(cx)))
        .await
        .is_pending());

    model.set_readiness(Readiness::Broken);
    let ready = poll_fn(|cx| svc.poll_ready(cx)).await;
    assert_eq!(ready, Err(TokenGateError::Inner(ModelError(usize::MAX))));
    // Nothing was acquired for readiness.
    assert_eq!(limiter.stats().admitted, 1);
}

fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_send_sync_clone<T: Send + Sync + Clone>(_: &T) {}

#[tokio::test(start_paused = true)]
async fn the_response_future_is_send_and_runs_on_other_threads() {
    let limiter = tokio_limiter(PolicyBuilder::default().requests_per_minute(60));
    let model = Model::new();
    let layer = layer(&limiter);
    assert_send_sync_clone(&layer);
    let mut svc = layer.layer(model.clone());
    assert_send_sync_clone(&svc);

    let fut = call(&mut svc, prompt(1)).await;
    assert_send_static(&fut);
    // Spawned (Send + 'static required) and awaited elsewhere.
    let reply = tokio::spawn(fut)
        .await
        .expect("no panic")
        .expect("admitted");
    assert_eq!(reply.id, 1);
    // The error converts into tower's boxed error.
    let boxed: tower::BoxError = TokenGateError::<ModelError>::Inner(ModelError(9)).into();
    assert_eq!(boxed.to_string(), "the model failed on request 9");
}

//! The `tracing` events and `metrics` counters of the in-memory limiter (features `tracing` and
//! `metrics`): each outcome (denial, wait, admission after a wait, timeout, cancellation,
//! settlement, pause, lowering) is reported once, with the right values. Events are captured by a
//! minimal `tracing::Subscriber`, metrics by a minimal `metrics::Recorder`, both installed for
//! the test's thread only; time is tokio's paused clock.
#![cfg(all(feature = "tracing", feature = "metrics"))]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
    SharedString, Unit,
};
use tokengate::feedback::ProviderReport;
use tokengate::{AcquireError, Cost, Denied, Limiter, Policy, PolicyBuilder, TokioClock, Usage};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata as TraceMetadata, Subscriber};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Capturing events.

#[derive(Debug, Clone, PartialEq)]
enum Value {
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, Value>,
}

impl Captured {
    fn get(&self, name: &str) -> &Value {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("event {:?} has no field {name}: {self:?}", self.message))
    }
    fn u64(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::U64(v) => *v,
            Value::F64(_) | Value::Bool(_) | Value::Str(_) => {
                panic!("{name} is not a u64: {self:?}")
            }
        }
    }
    fn f64(&self, name: &str) -> f64 {
        match self.get(name) {
            Value::F64(v) => *v,
            _ => panic!("{name} is not an f64: {self:?}"),
        }
    }
    fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Value::Str(v) => v,
            _ => panic!("{name} is not a string: {self:?}"),
        }
    }
    fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Bool(v) => *v,
            _ => panic!("{name} is not a bool: {self:?}"),
        }
    }
}

struct Visitor<'a>(&'a mut Captured);

impl Visit for Visitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.fields.insert(field.name().into(), Value::U64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        let value = u64::try_from(value).expect("no negative fields");
        self.0.fields.insert(field.name().into(), Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.fields.insert(field.name().into(), Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0
            .fields
            .insert(field.name().into(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .fields
            .insert(field.name().into(), Value::Str(value.into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.0
                .fields
                .insert(field.name().into(), Value::Str(format!("{value:?}")));
        }
    }
}

/// Records every event from tokengate.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Captured>>>);

impl Events {
    /// The events with this message.
    fn named(&self, message: &str) -> Vec<Captured> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|e| e.message == message)
            .cloned()
            .collect()
    }
    /// The one event with this message.
    fn one(&self, message: &str) -> Captured {
        let named = self.named(message);
        assert_eq!(
            named.len(),
            1,
            "events {message:?}: {:?}",
            self.0.lock().unwrap()
        );
        named.into_iter().next().unwrap()
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &TraceMetadata<'_>) -> bool {
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        if !meta.target().starts_with("tokengate") {
            return;
        }
        let mut captured = Captured {
            level: *meta.level(),
            target: meta.target().into(),
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut Visitor(&mut captured));
        self.0.lock().unwrap().push(captured);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

// ---------------------------------------------------------------------------------------------
// Capturing metrics.

type MetricKey = (String, Vec<(String, String)>);

#[derive(Default)]
struct Store {
    counters: Mutex<BTreeMap<MetricKey, Arc<AtomicU64>>>,
    /// Each gauge's last value, as the bits of an `f64`.
    gauges: Mutex<BTreeMap<MetricKey, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<MetricKey, Arc<Mutex<Vec<f64>>>>>,
}

#[derive(Clone, Default)]
struct Metrics(Arc<Store>);

fn metric_key(key: &Key) -> MetricKey {
    let labels = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    (key.name().to_owned(), labels)
}

fn key_of(name: &str, labels: &[(&str, &str)]) -> MetricKey {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (name.to_owned(), labels)
}

struct CounterCell(Arc<AtomicU64>);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

struct GaugeCell(Arc<AtomicU64>);

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        let now = f64::from_bits(self.0.load(Ordering::Relaxed));
        self.set(now + value);
    }
    fn decrement(&self, value: f64) {
        self.increment(-value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

struct HistogramCell(Arc<Mutex<Vec<f64>>>);

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl Metrics {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .counters
            .lock()
            .unwrap()
            .get(&key_of(name, labels))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .gauges
            .lock()
            .unwrap()
            .get(&key_of(name, labels))
            .map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
    }
    fn histogram(&self, name: &str) -> Vec<f64> {
        self.0
            .histograms
            .lock()
            .unwrap()
            .get(&key_of(name, &[LIMITER]))
            .map_or_else(Vec::new, |h| h.lock().unwrap().clone())
    }
    /// Every counter recorded, by name and labels.
    fn counters(&self) -> BTreeMap<MetricKey, u64> {
        let counters = self.0.counters.lock().unwrap();
        counters
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

impl metrics::Recorder for Metrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.0.counters.lock().unwrap();
        let cell = counters.entry(metric_key(key)).or_default();
        Counter::from_arc(Arc::new(CounterCell(Arc::clone(cell))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.0.gauges.lock().unwrap();
        let cell = gauges.entry(metric_key(key)).or_default();
        Gauge::from_arc(Arc::new(GaugeCell(Arc::clone(cell))))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.0.histograms.lock().unwrap();
        let cell = histograms.entry(metric_key(key)).or_default();
        Histogram::from_arc(Arc::new(HistogramCell(Arc::clone(cell))))
    }
}

/// Installs both capturers for this thread (the tests run on tokio's current-thread runtime).
macro_rules! observe {
    ($events:ident, $metrics:ident) => {
        let $events = Events::default();
        let $metrics = Metrics::default();
        let _tracing = tracing::subscriber::set_default($events.clone());
        let _metrics = metrics::set_default_local_recorder(&$metrics);
    };
}

/// A limiter of `builder`'s policy on tokio's clock, exact: the events and metrics carry exact
/// waits.
fn limiter(builder: PolicyBuilder) -> Limiter<TokioClock> {
    common::limiters::exact_tokio_limiter(builder)
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

const ADMITTED: &str = "tokengate_admitted_total";
/// The label of a limiter's own budget (a key's model budget is `model NAME`).
const LIMITER: (&str, &str) = ("budget", "limiter");
const DENIED: &str = "tokengate_denied_total";
const TIMED_OUT: &str = "tokengate_timed_out_total";
const CANCELLED: &str = "tokengate_cancelled_total";
const THROTTLED: &str = "tokengate_throttled_total";
const CHARGED: &str = "tokengate_units_charged_total";
const REFUNDED: &str = "tokengate_units_refunded_total";
const LOWERED: &str = "tokengate_units_lowered_total";
const WAIT: &str = "tokengate_wait_seconds";
const DECREASES: &str = "tokengate_rate_decreases_total";
const AMOUNT: &str = "tokengate_limit_amount";

// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn denials_are_traced_and_counted() {
    observe!(events, metrics);
    // One a second (burst 1), one in flight.
    let limiter = limiter(Policy::builder().requests_per_minute(60).max_in_flight(1));
    let permit = limiter.try_acquire(Cost::request()).unwrap();
    assert!(events.named("denied").is_empty());
    assert_eq!(metrics.counter(ADMITTED, &[LIMITER]), 1);

    // Rate-limited for a second.
    let denied = limiter.try_acquire(Cost::request()).unwrap_err();
    assert!(matches!(denied, Denied::RateLimited { .. }));
    let e = events.one("denied");
    assert_eq!(
        (e.level, e.target.as_str()),
        (Level::TRACE, "tokengate::limiter")
    );
    assert_eq!(e.str("reason"), "rate_limited");
    assert_eq!(e.str("dimension"), "requests");
    assert_eq!(e.u64("cost"), 1);
    assert_eq!(e.f64("wait_secs"), 1.0);
    assert_eq!(metrics.counter(DENIED, &[]), 1);

    // In-flight full a second later.
    tokio::time::advance(ms(1_000)).await;
    assert!(matches!(
        limiter.try_acquire(Cost::request()),
        Err(Denied::InFlightFull { max: 1 })
    ));
    drop(permit);
    // Paused.
    limiter.pause(ms(250));
    assert!(matches!(
        limiter.try_acquire(Cost::request()),
        Err(Denied::Paused { .. })
    ));
    // Never: above capacity; a rejection, not counted as a denial.
    assert!(matches!(
        limiter.try_acquire(Cost::request().with_requests(61)),
        Err(Denied::Never(_))
    ));
    let denials = events.named("denied");
    let reasons: Vec<_> = denials.iter().map(|e| e.str("reason").to_owned()).collect();
    assert_eq!(reasons, ["rate_limited", "in_flight", "paused", "never"]);
    assert_eq!(denials[1].u64("max"), 1);
    assert_eq!(denials[2].f64("wait_secs"), 0.25);
    assert!(denials[3].str("error").contains("61"), "{:?}", denials[3]);
    assert_eq!(metrics.counter(DENIED, &[]), 3);
    assert_eq!(metrics.counter(DENIED, &[]), limiter.stats().denied);
    assert_eq!(metrics.counter(ADMITTED, &[LIMITER]), 1);
    assert!(events.named("waiting").is_empty());
}

#[tokio::test(start_paused = true)]
async fn waits_and_waited_admissions() {
    observe!(events, metrics);
    let limiter = limiter(
        Policy::builder()
            .requests_per_minute(60)
            .input_tokens_per_minute(6_000),
    );
    let _first = limiter.try_acquire(Cost::request().input(100)).unwrap();
    let second = limiter.acquire(Cost::request().input(200)).await.unwrap();
    assert_eq!(second.admitted_at(), 1_000_000_000);

    let waiting = events.one("waiting");
    assert_eq!(waiting.level, Level::DEBUG);
    assert_eq!(waiting.str("reason"), "rate_limited");
    assert_eq!(waiting.str("dimension"), "requests");
    assert_eq!(waiting.u64("cost"), 1);
    assert_eq!(waiting.f64("wait_secs"), 1.0);
    let admitted = events.one("admitted after waiting");
    assert_eq!(admitted.level, Level::DEBUG);
    assert_eq!(admitted.f64("waited_secs"), 1.0);

    assert_eq!(metrics.counter(ADMITTED, &[LIMITER]), 2);
    assert_eq!(metrics.histogram(WAIT), [1.0]);
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "requests"), LIMITER]),
        2
    );
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "input_tokens"), LIMITER]),
        300
    );
    // An immediate admission records no wait.
    assert!(events.named("denied").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_behind_others_says_so() {
    observe!(events, metrics);
    let limiter = limiter(Policy::builder().requests_per_minute(60));
    let _first = limiter.try_acquire(Cost::request()).unwrap();
    let (a, b) = tokio::join!(
        limiter.acquire(Cost::request()),
        limiter.acquire(Cost::request())
    );
    assert_eq!(
        (a.unwrap().admitted_at(), b.unwrap().admitted_at()),
        (1_000_000_000, 2_000_000_000)
    );
    let waiting = events.named("waiting");
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(waiting[1].str("reason"), "waiters_ahead");
    assert_eq!(waiting[1].u64("waiters"), 1);
    let waited: Vec<_> = events
        .named("admitted after waiting")
        .iter()
        .map(|e| e.f64("waited_secs"))
        .collect();
    assert_eq!(waited, [1.0, 2.0]);
    assert_eq!(metrics.histogram(WAIT), [1.0, 2.0]);
    assert_eq!(metrics.counter(ADMITTED, &[LIMITER]), 3);
}

#[tokio::test(start_paused = true)]
async fn timeouts_at_once_in_the_queue_and_at_the_head() {
    observe!(events, metrics);
    let limiter = limiter(Policy::builder().requests_per_minute(60));
    let _first = limiter.try_acquire(Cost::request()).unwrap();

    // Known at once: a 1 s wait against a 500 ms timeout.
    let err = limiter
        .acquire_timeout(Cost::request(), ms(500))
        .await
        .unwrap_err();
    assert!(matches!(err, AcquireError::Timeout { .. }));
    let e = events.one("timed out");
    assert_eq!(e.level, Level::DEBUG);
    assert_eq!(e.str("error"), err.to_string());
    assert_eq!(e.f64("waited_secs"), 0.0);
    assert_eq!(metrics.counter(TIMED_OUT, &[]), 1);

    // Behind another waiter at its deadline.
    let (head, behind) = tokio::join!(
        limiter.acquire(Cost::request()),
        limiter.acquire_timeout(Cost::request(), ms(300))
    );
    assert!(head.is_ok());
    let err = behind.unwrap_err();
    assert!(matches!(err, AcquireError::QueueTimeout { .. }));
    let timed_out = events.named("timed out");
    assert_eq!(timed_out.len(), 2);
    assert_eq!(timed_out[1].str("error"), err.to_string());
    assert_eq!(timed_out[1].f64("waited_secs"), 0.3);
    assert_eq!(metrics.counter(TIMED_OUT, &[]), 2);

    // At the head when a pause pushes its wait past its deadline: failed by the engine on its
    // behalf, reported when it picks up the error.
    let start = tokio::time::Instant::now();
    let mut fut = pin!(limiter.acquire_timeout(Cost::request(), ms(2_000)));
    assert!(poll_once(fut.as_mut()).is_pending());
    tokio::time::advance(ms(100)).await;
    limiter.pause(ms(5_000));
    let err = fut.await.unwrap_err();
    assert!(matches!(err, AcquireError::Paused { .. }), "{err:?}");
    assert_eq!(start.elapsed(), ms(100));
    let timed_out = events.named("timed out");
    assert_eq!(timed_out.len(), 3);
    assert_eq!(timed_out[2].f64("waited_secs"), 0.1);
    assert_eq!(metrics.counter(TIMED_OUT, &[]), 3);
    assert_eq!(metrics.counter(TIMED_OUT, &[]), limiter.stats().timed_out);
    assert!(metrics.counters().keys().all(|(name, _)| name != CANCELLED));
}

#[tokio::test(start_paused = true)]
async fn cancellation_while_queued_and_after_the_grant() {
    observe!(events, metrics);
    let limiter = limiter(
        Policy::builder()
            .requests_per_minute(600)
            // A second's worth (1,000) holds both: only the slot is in question.
            .output_tokens_per_minute(60_000)
            .max_in_flight(1),
    );
    let permit = limiter.try_acquire(Cost::request().output(100)).unwrap();

    // Queued for the slot, dropped 250 ms later.
    {
        let mut fut = pin!(limiter.acquire(Cost::request().output(10)));
        assert!(poll_once(fut.as_mut()).is_pending());
        tokio::time::advance(ms(250)).await;
    }
    let e = events.one("cancelled");
    assert_eq!(e.level, Level::DEBUG);
    assert_eq!(e.f64("waited_secs"), 0.25);
    assert!(!e.bool("revoked"));
    assert_eq!(metrics.counter(CANCELLED, &[]), 1);

    // Admitted on its behalf when the permit goes, then dropped before it picks up the permit.
    {
        let mut fut = pin!(limiter.acquire(Cost::request().output(10)));
        assert!(poll_once(fut.as_mut()).is_pending());
        drop(permit);
        assert_eq!(limiter.stats().in_flight, 1);
    }
    let cancelled = events.named("cancelled");
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled[1].bool("revoked"));
    assert_eq!(metrics.counter(CANCELLED, &[]), 2);
    assert_eq!(metrics.counter(CANCELLED, &[]), limiter.stats().cancelled);
    // The taken-back admission counts nowhere, nor does its wait.
    assert_eq!(limiter.stats().waits.count, limiter.stats().admitted);
    assert_eq!(metrics.counter(ADMITTED, &[LIMITER]), 1);
    assert_eq!(
        metrics.counter(ADMITTED, &[LIMITER]),
        limiter.stats().admitted
    );
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "output_tokens"), LIMITER]),
        100
    );
    assert!(events.named("admitted after waiting").is_empty());
    assert!(metrics.histogram(WAIT).is_empty());
    assert_eq!(limiter.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn settlements_refund_and_charge_per_dimension() {
    observe!(events, metrics);
    let limiter = limiter(
        Policy::builder()
            .requests_per_minute(500)
            .requests_per_day(10_000)
            // Seconds' worth (2,000 and 1,000) that hold both requests at once.
            .input_tokens_per_minute(120_000)
            .output_tokens_per_minute(60_000),
    );
    let permit = limiter
        .try_acquire(Cost::request().input(1_200).output(800))
        .unwrap();
    permit.settle(Usage::new().input(1_180).output(312));

    let settled = events.named("settled");
    // One event per dimension: requests counted once though two limits count them.
    let dims: Vec<_> = settled
        .iter()
        .map(|e| e.str("dimension").to_owned())
        .collect();
    assert_eq!(dims, ["requests", "input_tokens", "output_tokens"]);
    assert!(settled.iter().all(|e| e.level == Level::TRACE));
    let out = &settled[2];
    assert_eq!(
        (
            out.u64("reserved"),
            out.u64("used"),
            out.u64("refunded"),
            out.u64("charged")
        ),
        (800, 312, 488, 0)
    );
    assert_eq!(
        (settled[1].u64("refunded"), settled[0].u64("refunded")),
        (20, 0)
    );
    assert_eq!(
        metrics.counter(REFUNDED, &[("dimension", "output_tokens"), LIMITER]),
        488
    );
    assert_eq!(
        metrics.counter(REFUNDED, &[("dimension", "input_tokens"), LIMITER]),
        20
    );
    assert_eq!(
        metrics.counter(REFUNDED, &[("dimension", "requests"), LIMITER]),
        0
    );

    // Used beyond the reservation: charged the excess.
    let permit = limiter
        .try_acquire(Cost::request().input(100).output(100))
        .unwrap();
    permit.settle(Usage::new().input(100).output(350));
    let out = events.named("settled").pop().unwrap();
    assert_eq!((out.u64("refunded"), out.u64("charged")), (0, 250));
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "requests"), LIMITER]),
        2
    );
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "input_tokens"), LIMITER]),
        1_300
    );
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "output_tokens"), LIMITER]),
        800 + 100 + 250
    );
    let stats = limiter.stats();
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "output_tokens"), LIMITER]),
        stats.limits[3].charged
    );
    assert_eq!(
        metrics.counter(REFUNDED, &[("dimension", "output_tokens"), LIMITER]),
        stats.limits[3].refunded
    );
}

#[tokio::test(start_paused = true)]
async fn pauses_from_the_provider() {
    observe!(events, metrics);
    let limiter = limiter(Policy::builder().requests_per_minute(500));
    limiter.pause(ms(2_000));
    let e = events.one("paused");
    assert_eq!(e.level, Level::INFO);
    assert_eq!(e.f64("retry_after_secs"), 2.0);
    assert!(e.bool("throttled"));
    assert_eq!(e.f64("paused_for_secs"), 2.0);
    assert_eq!(metrics.counter(THROTTLED, &[]), 1);

    // A retry-after on a response that is not a 429: ignored, no pause and no event.
    tokio::time::advance(ms(500)).await;
    let report = ProviderReport::from_headers([("retry-after", "1")], SystemTime::now());
    assert_eq!(report.retry_after, Some(ms(1_000)));
    limiter.observe(&report);
    assert_eq!(events.named("paused").len(), 1);
    assert_eq!(limiter.stats().paused_for, Some(ms(1_500)));

    // A 429: one pause, counted once.
    limiter.observe_throttled(&ProviderReport::from_headers(
        [("retry-after", "3")],
        SystemTime::now(),
    ));
    let paused = events.named("paused");
    assert_eq!(paused.len(), 2);
    assert_eq!(
        (
            paused[1].f64("retry_after_secs"),
            paused[1].bool("throttled")
        ),
        (3.0, true)
    );
    assert_eq!(metrics.counter(THROTTLED, &[]), 2);
    assert_eq!(metrics.counter(THROTTLED, &[]), limiter.stats().throttled);

    // A 429 asking for 584 years: cut to the longest pause, with a warning and a count.
    limiter.observe_throttled(&ProviderReport::from_headers(
        [("retry-after", "99999999999")],
        SystemTime::now(),
    ));
    let e = events
        .named("a pause longer than the longest allowed was cut to it (Limiter::set_max_pause)")
        .pop()
        .unwrap();
    assert_eq!(e.level, Level::WARN);
    assert_eq!(e.f64("paused_for_secs"), 300.0);
    assert_eq!(metrics.counter("tokengate_pauses_clamped_total", &[]), 1);
    assert_eq!(limiter.stats().pauses_clamped, 1);
}

#[tokio::test(start_paused = true)]
async fn observe_lowering_a_limit() {
    observe!(events, metrics);
    let limiter = limiter(
        Policy::builder()
            .requests_per_minute(500)
            .input_tokens_per_minute(30_000),
    );
    let _permit = limiter.try_acquire(Cost::request().input(1_000)).unwrap();
    // Another process shares the key: the provider has 480 requests left where we see 499,
    // and as many tokens as we see.
    let report = ProviderReport::from_headers(
        [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "480"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29000"),
        ],
        SystemTime::now(),
    );
    assert_eq!(limiter.observe(&report), 19);
    let e = events.one("lowered");
    assert_eq!(e.level, Level::DEBUG);
    assert_eq!((e.str("dimension"), e.u64("units")), ("requests", 19));
    assert_eq!(metrics.counter(LOWERED, &[("dimension", "requests")]), 19);
    assert_eq!(
        metrics.counter(LOWERED, &[("dimension", "input_tokens")]),
        0
    );
    assert_eq!(limiter.stats().limits[0].lowered, 19);
    // No pause without a retry-after.
    assert!(events.named("paused").is_empty());
}

/// A 429 that lowers a limit, and the steps that raise it back: an event each, a counter of
/// decreases and a gauge of the amount in force.
#[tokio::test(start_paused = true)]
async fn a_429_lowering_a_limit_and_time_raising_it() {
    observe!(events, metrics);
    let limiter = limiter(Policy::builder().tokens_per_minute(60_000));
    limiter.observe_throttled(&ProviderReport::from_headers(
        [("x-ratelimit-remaining-tokens", "0")],
        SystemTime::now(),
    ));
    let e = events.one("lowered after a 429");
    assert_eq!(e.level, Level::INFO);
    assert_eq!(
        (e.str("dimension"), e.u64("amount"), e.u64("configured")),
        ("tokens", 42_000, 60_000)
    );
    let tokens = [("dimension", "tokens")];
    assert_eq!(metrics.counter(DECREASES, &tokens), 1);
    assert_eq!(metrics.gauge(AMOUNT, &tokens), Some(42_000.0));
    tokio::time::advance(ms(5_000)).await;
    limiter.observe(&ProviderReport::default());
    let e = events.one("raised a step");
    assert_eq!((e.level, e.u64("amount")), (Level::DEBUG, 45_000));
    assert_eq!(metrics.gauge(AMOUNT, &tokens), Some(45_000.0));
    assert_eq!(metrics.counter(DECREASES, &tokens), 1);
    assert_eq!(limiter.stats().limits[0].decreases, 1);
}

#[tokio::test(start_paused = true)]
async fn a_key_reports_under_its_model_budget_not_its_tenant() {
    observe!(events, metrics);
    let config = tokengate::config::Config::from_toml_str(
        "[models.gpt-4o]\noutput_tokens_per_minute = 8_000\n[defaults.tenant]\nrequests_per_minute = 60\n",
        "limits.toml",
    )
    .unwrap();
    let limiter = Limiter::from_config_with_clock(config, TokioClock::new());
    let key = limiter.key("acme", "gpt-4o");
    key.try_acquire(Cost::request().output(800))
        .unwrap()
        .settle(tokengate::Usage::new().output(300));
    let model = ("budget", "model gpt-4o");
    assert_eq!(metrics.counter(ADMITTED, &[model]), 1);
    assert_eq!(metrics.counter(ADMITTED, &[LIMITER]), 0);
    assert_eq!(
        metrics.counter(CHARGED, &[("dimension", "output_tokens"), model]),
        800
    );
    assert_eq!(
        metrics.counter(REFUNDED, &[("dimension", "output_tokens"), model]),
        500
    );
    let settled = events.named("settled");
    assert!(settled.iter().all(|e| e.str("budget") == "model gpt-4o"));
    assert!(!settled.is_empty());
}

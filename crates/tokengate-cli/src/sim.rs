//! The simulation: the workload's requests go through the real limiter ([`Gate`]) to the
//! simulated [`Provider`], in tokio's virtual time (paused clock, so an hour of traffic runs in
//! a fraction of a second) or against the wall clock.
//!
//! Each request is a tokio task: it arrives, waits for one of the client's `concurrency`
//! slots, waits for admission by the limiter (reserving its prompt and `max_tokens`), calls
//! the provider, which either answers 429 (the limiter is told, with the response's headers,
//! and pauses; the request retries) or runs the call for its latency, and settles the permit
//! with the tokens really produced.
//!
//! With a store ([`SimOptions::store`], `--redis`) the limiter keeps its state in Redis. A run
//! split over several processes ([`SimOptions::share`], `--processes`; see
//! [`fleet`](crate::fleet)) runs one share of the requests here, cannot ask a provider shared
//! with the other processes, and so logs each call it sends (assumed accepted) for the
//! provider to be replayed on the merged log afterwards ([`Provider::replay`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokengate::config::Config;
use tokengate::feedback::ProviderReport;
use tokengate::redis::{RedisStore, DEFAULT_PREFIX};
use tokengate::{AcquireError, Clock, Cost, OutputCount, StoreStats, TokioClock};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::bounds::{self, DurationFrom};
use crate::error::Error;
use crate::gate::{Gate, KeyLimit, NotAdmitted, Route, Scope};
use crate::input;
use crate::interrupt::Interrupt;
use crate::provider::{Answer, Provider, ProviderSpec};
use crate::refusal::{Reason, Refusals};
use crate::report::{self, Parts, Report, Requests, ScopeCounts, StoreReport};
use crate::workload::{nanos, Arrival, Workload};

/// The shipped example's limits (`examples/limits.toml`).
pub const EXAMPLE_LIMITS: &str = include_str!("../examples/limits.toml");
/// The shipped example's workload (`examples/workload.toml`).
pub const EXAMPLE_WORKLOAD: &str = include_str!("../examples/workload.toml");
/// The shipped example's provider (`examples/provider.toml`).
pub const EXAMPLE_PROVIDER: &str = include_str!("../examples/provider.toml");

/// What a simulation runs: the client's limits, the workload and the provider.
#[derive(Debug, Clone)]
pub struct SimInput {
    /// The client's limits.
    pub limits: Config,
    /// The traffic.
    pub workload: Workload,
    /// The provider's limits and enforcement.
    pub provider: ProviderSpec,
    /// The names of the three sources, for the report.
    pub names: [String; 3],
}

impl SimInput {
    /// The shipped example.
    ///
    /// # Errors
    /// Never in a released build (the example is checked by the tests).
    pub fn example() -> Result<Self, Error> {
        Self::load(None, None, None)
    }

    /// Reads the files given; each one missing is the shipped example's. Without `--provider`,
    /// the provider enforces the shipped example's provider limits, or, when `--limits` is
    /// given, the same limits as the client, both ways a provider may read them.
    ///
    /// # Errors
    /// A file that cannot be read or is invalid, named with its line and field.
    pub fn load(
        limits: Option<&Path>,
        workload: Option<&Path>,
        provider: Option<&Path>,
    ) -> Result<Self, Error> {
        let example = |name: &str| format!("<example {name}>");
        let (limits_config, limits_name) = match limits {
            Some(p) => {
                let config = input::read_limits(p)?;
                input::refuse_store(&config, &p.display().to_string())?;
                (config, p.display().to_string())
            }
            None => (
                Config::from_toml_str(EXAMPLE_LIMITS, &example("limits.toml"))?,
                example("limits.toml"),
            ),
        };
        let (workload, workload_name) = match workload {
            Some(p) => (Workload::from_file(p)?, p.display().to_string()),
            None => (
                Workload::from_toml_str(EXAMPLE_WORKLOAD, &example("workload.toml"))?,
                example("workload.toml"),
            ),
        };
        let (provider, provider_name) = match (provider, limits) {
            (Some(p), _) => (ProviderSpec::from_file(p)?, p.display().to_string()),
            (None, Some(_)) => (
                ProviderSpec::enforcing(limits_config.clone()),
                format!("the limits of {limits_name}, as a strict provider enforces them"),
            ),
            (None, None) => (
                ProviderSpec::from_toml_str(EXAMPLE_PROVIDER, &example("provider.toml"))?,
                example("provider.toml"),
            ),
        };
        Ok(Self {
            limits: limits_config,
            workload,
            provider,
            names: [limits_name, workload_name, provider_name],
        })
    }
}

/// How to run a simulation.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// The seed of every draw; else the workload's, else one chosen from the system time.
    pub seed: Option<u64>,
    /// Against the wall clock, on a multi-thread runtime, instead of virtual time.
    pub realtime: bool,
    /// Overrides the workload's duration.
    pub duration: Option<Duration>,
    /// Shows a progress bar with live figures (real time only).
    pub progress: bool,
    /// Keeps the client's limiter's state in this store (real time only).
    pub store: Option<StoreOptions>,
    /// Runs one share of the requests, from a start instant common to every process of the
    /// run (real time only).
    pub share: Option<Share>,
}

/// The Redis a run's client limiter keeps its state in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Its URL: `redis://[user:password@]host:port/db`.
    pub url: String,
    /// The namespace of the run's keys: its own, so that runs at the same time never share
    /// limits.
    pub namespace: String,
}

impl StoreOptions {
    /// The Redis at `url`, in a namespace made for this run (from the time and the process).
    pub fn for_run(url: &str) -> Self {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            url: url.to_owned(),
            namespace: format!("simulate-{}-{}", now.as_micros(), std::process::id()),
        }
    }

    /// The URL with its password hidden, for reports.
    pub fn shown_url(&self) -> String {
        hide_password(&self.url)
    }
}

/// `url` with the password of its user info, if any, written `***`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            let hidden = if user_info.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://password@host`: a lone user info is a password to redis-rs.
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// One process's share of a run split over several: the requests `index`, `index + of`,
/// `index + 2 * of`, ... of the workload (every process draws the same requests from the
/// seed), with `1/of` of its concurrency, on a clock whose origin is `start` for every
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This process, from 0.
    pub index: u32,
    /// How many processes share the run (at least 1).
    pub of: u32,
    /// The run's start on the wall clock, common to every process.
    pub start: SystemTime,
}

impl Share {
    /// Whether this share sends the request drawn `n`th.
    pub fn sends(&self, n: usize) -> bool {
        n % self.of.max(1) as usize == self.index as usize
    }

    /// This share of `concurrency` slots: the same for every process to within one (the
    /// first ones take the remainder), and at least 1.
    pub fn concurrency(&self, concurrency: u64) -> u64 {
        let of = u64::from(self.of.max(1));
        let extra = u64::from(u64::from(self.index) < concurrency % of);
        (concurrency / of + extra).max(1)
    }
}

/// One admission by the client's limiter.
#[derive(Debug, Clone)]
pub struct Record {
    /// The admission instant, ns from the start.
    pub t: u64,
    /// The client's key (budget) it was charged to.
    pub key: Arc<str>,
    /// The provider's budget it went to.
    pub provider_key: Arc<str>,
    /// The model.
    pub model: Arc<str>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// Input tokens as settled (0 when the provider answered 429).
    pub input: u64,
    /// Output tokens produced (0 when the provider answered 429).
    pub output: u64,
    /// Output tokens as the provider counts them, and the call settled: those produced, or
    /// `max_tokens` when the provider keeps it counted (0 when it answered 429).
    pub counted_output: u64,
    /// Input tokens reserved.
    pub reserved_input: u64,
    /// Output tokens reserved (`max_tokens`).
    pub reserved_output: u64,
    /// How long it waited for this admission, ns (from arrival, or from the 429 it retries).
    pub wait: u64,
    /// 200, or 429 when the provider refused it.
    pub status: u16,
    /// 0 for the first attempt, then 1, 2, ... for retries after a 429.
    pub attempt: u32,
    /// Whether the call ended. `false` for a call still running when Ctrl-C ended a real-time
    /// run: it is recorded as the provider counted it then (its input and `max_tokens`), with
    /// no output produced.
    pub ended: bool,
    /// When the call ended, ns from the start (`t` for a 429, or a call that has not ended).
    pub ended_at: u64,
}

/// The queue and the calls in flight at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The instant, ns from the start.
    pub t: u64,
    /// Requests arrived and waiting (for a client slot, or for admission).
    pub queued: u64,
    /// Calls running at the provider.
    pub in_flight: u64,
}

/// Totals kept while the simulation runs.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) arrived: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) gave_up: AtomicU64,
    pub(crate) unfinished: AtomicU64,
    pub(crate) refused: Refusals,
    pub(crate) queued: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Counters {
    /// The totals as they stand.
    pub(crate) fn requests(&self) -> Requests {
        let load = |a: &AtomicU64| a.load(Relaxed);
        Requests {
            arrived: load(&self.arrived),
            admitted: load(&self.admitted),
            completed: load(&self.completed),
            throttled: load(&self.throttled),
            retried: load(&self.retried),
            gave_up: load(&self.gave_up),
            unfinished: load(&self.unfinished),
            refused: self.refused.total(),
            refused_reasons: self.refused.by_reason(),
        }
    }
}

/// What a simulation produced.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The figures (printed as a table, written by `--json`).
    pub report: Report,
    /// Every admission, in admission order (written by `--log`).
    pub records: Vec<Record>,
    /// The queue over time.
    pub samples: Vec<Sample>,
    /// The client's limits per budget (the models', the account's, the tenants'), with what a
    /// request counts on each.
    pub client_limits: Vec<(Scope, Vec<KeyLimit>)>,
}

/// Runs a simulation.
///
/// # Errors
/// An impossible workload (a model without limits, a request above a limit's capacity), or a
/// runtime that cannot be built; with a store, a Redis that does not answer.
pub fn simulate(input: &SimInput, options: &SimOptions) -> Result<Simulation, Error> {
    let run = execute(input, options)?;
    let mut report = report::build(
        input,
        Parts {
            workload: &run.workload,
            seed: run.seed,
            realtime: options.realtime,
            client_limits: &run.client_limits,
            client_counts: &run.client_counts,
            provider: &run.provider,
            replayed: false,
            requests: run.requests.clone(),
            records: &run.records,
            samples: &run.samples,
            every: run.every,
            processes: 1,
            store: store_report(options.store.as_ref(), run.store_stats.as_ref()),
        },
    );
    report.wall_secs = run.wall_secs;
    report.interrupted = run.interrupted;
    Ok(Simulation {
        report,
        records: run.records,
        samples: run.samples,
        client_limits: run.client_limits,
    })
}

/// How a run's report names its store.
pub(crate) fn store_report(
    store: Option<&StoreOptions>,
    stats: Option<&StoreStats>,
) -> StoreReport {
    match store {
        Some(s) => StoreReport {
            kind: "redis",
            url: Some(s.shown_url()),
            namespace: Some(s.namespace.clone()),
            calls: stats.map_or(0, |s| s.calls),
            errors: stats.map_or(0, |s| s.errors),
            in_flight_polls: stats.map_or(0, |s| s.in_flight_polls),
        },
        None => StoreReport::memory(),
    }
}

/// What one process's run produced, before its report: the whole run, or one share of it.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) seed: u64,
    /// The workload as run: an interrupted run's shortened to the time it ran.
    pub(crate) workload: Workload,
    /// Every admission of this process, in admission order, on its clock.
    pub(crate) records: Vec<Record>,
    pub(crate) samples: Vec<Sample>,
    /// ns between samples.
    pub(crate) every: u64,
    pub(crate) requests: Requests,
    pub(crate) interrupted: bool,
    /// When the run stopped, on its clock.
    pub(crate) stopped_at: u64,
    /// ns the clock's origin lies after the share's common start (0 for a whole run): a time
    /// on this process's clock plus `skew` is a time from the start.
    pub(crate) skew: u64,
    pub(crate) client_limits: Vec<(Scope, Vec<KeyLimit>)>,
    pub(crate) client_counts: Vec<ScopeCounts>,
    /// The live provider (unused by a share of a run over several processes).
    pub(crate) provider: Provider,
    pub(crate) store_stats: Option<StoreStats>,
    pub(crate) wall_secs: f64,
}

/// Runs a simulation, or one share of it, up to its report.
pub(crate) fn execute(input: &SimInput, options: &SimOptions) -> Result<Run, Error> {
    if !options.realtime && (options.store.is_some() || options.share.is_some()) {
        return Err(Error::new(
            "a run with a store, or split over processes, runs in real time only: the store decides on its own clock, the wall clock",
        ));
    }
    let seed = seed_of(input, options);
    // Every limit of a run is checked before any work: a workload built in code (not read
    // from a file) is checked here too.
    let workload = match options.duration {
        Some(d) => input.workload.with_duration(d)?,
        None => {
            bounds::check(&input.workload, DurationFrom::Workload)?;
            input.workload.clone()
        }
    };
    let runtime = if options.realtime {
        // I/O for the Ctrl-C handler, and for Redis.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .enable_io()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
    }
    .map_err(|e| Error::new(format!("cannot start the tokio runtime: {e}")))?;
    let wall = Instant::now();
    let mut run = runtime.block_on(run(input, &workload, seed, options))?;
    run.wall_secs = wall.elapsed().as_secs_f64();
    Ok(run)
}

/// The seed of a run of `input`: the one `options` give, else the workload's, else one from
/// the system time.
pub(crate) fn seed_of(input: &SimInput, options: &SimOptions) -> u64 {
    options
        .seed
        .or(input.workload.seed)
        .unwrap_or_else(random_seed)
}

/// A seed from the system time, for runs that name none.
fn random_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // Keep it short enough to type back.
    (now.as_nanos() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44
}

/// Everything the request tasks share.
struct Shared {
    gate: Gate,
    /// `routes[model][tenant]`.
    routes: Vec<Vec<Route>>,
    /// The provider's budget of each model.
    provider_budget: Vec<usize>,
    provider_keys: Vec<Arc<str>>,
    provider: Mutex<Provider>,
    /// Whether the provider answers each call as it comes; otherwise (a share of a run over
    /// several processes) every call is sent as if accepted and logged, for the provider to
    /// be replayed on the merged log afterwards.
    live: bool,
    /// How the provider counts output tokens, as its replies would say.
    output_count: OutputCount,
    slots: Semaphore,
    clock: TokioClock,
    end: u64,
    max_wait: Option<u64>,
    retries: u32,
    max_tokens: u64,
    records: Mutex<Vec<Record>>,
    samples: Mutex<Vec<Sample>>,
    counters: Counters,
    names: Names,
}

/// Interned names for records.
struct Names {
    keys: Vec<Arc<str>>,
    models: Vec<Arc<str>>,
    tenants: Vec<Arc<str>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The instant rate-limit headers are read at (only HTTP-dates and RFC 3339 resets use it; the
/// simulated provider sends neither).
fn wall_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

async fn run(
    input: &SimInput,
    workload: &Workload,
    seed: u64,
    options: &SimOptions,
) -> Result<Run, Error> {
    let share = options.share;
    // The first process of a run split over several speaks for it on stderr.
    let speaks = share.is_none_or(|s| s.index == 0);
    let mut gate = Gate::new(TokioClock::new());
    let mut provider = Provider::new(input.provider.clone())?;
    let mut routes = Vec::new();
    let mut provider_budget = Vec::new();
    let mut keys = Vec::new();
    for (m, model) in workload.models.iter().enumerate() {
        let mut row = Vec::new();
        for tenant in &workload.tenants {
            row.push(gate.route(&input.limits, &tenant.name, &model.name)?);
        }
        let b = provider.budget_of(&model.name)?;
        let line = workload.places.models.get(m).copied().unwrap_or(0);
        check_possible(&gate, &row, &provider, b, workload, line, speaks)?;
        keys.push(Arc::<str>::from(row[0].key.as_str()));
        provider_budget.push(b);
        routes.push(row);
    }
    let provider_keys = provider
        .budgets()
        .iter()
        .map(|b| Arc::<str>::from(b.name.as_str()))
        .collect();
    // Every process of a split run draws the same requests, and sends its share of them.
    let arrivals = match share {
        Some(share) => workload
            .draw(seed)
            .into_iter()
            .enumerate()
            .filter(|&(n, _)| share.sends(n))
            .map(|(_, a)| a)
            .collect(),
        None => workload.draw(seed),
    };
    if let Some(store) = &options.store {
        let redis = RedisStore::connect(&store.url).await.map_err(|e| {
            Error::new(format!(
                "--redis {}: cannot use it as the limiter's store: {e}",
                store.shown_url()
            ))
        })?;
        gate.use_store(Arc::new(redis.namespace(DEFAULT_PREFIX, &store.namespace)));
    }
    let skew = match share {
        Some(share) => wait_for_start(share).await,
        None => 0,
    };
    // The run's clock starts now: every time below is from here.
    let clock = TokioClock::new();
    let origin = tokio::time::Instant::now();
    gate.start(clock);
    let end = nanos(workload.duration);
    let concurrency = share.map_or(workload.concurrency, |s| {
        s.concurrency(workload.concurrency)
    });
    let output_count = provider.output_count();
    let shared = Arc::new(Shared {
        gate,
        routes,
        provider_budget,
        provider_keys,
        provider: Mutex::new(provider),
        live: share.is_none_or(|s| s.of <= 1),
        output_count,
        slots: Semaphore::new(
            usize::try_from(concurrency)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
        ),
        clock,
        end,
        max_wait: workload.max_wait.map(nanos),
        retries: workload.retries,
        max_tokens: workload.max_tokens,
        records: Mutex::new(Vec::with_capacity(arrivals.len())),
        samples: Mutex::new(Vec::with_capacity(362)),
        counters: Counters::default(),
        names: Names {
            keys,
            models: workload
                .models
                .iter()
                .map(|m| Arc::from(m.name.as_str()))
                .collect(),
            tenants: workload
                .tenants
                .iter()
                .map(|t| Arc::from(t.name.as_str()))
                .collect(),
        },
    });

    // The queue over time: 360 samples over the run, and live figures in real time.
    let every = (end / 360).max(1_000_000);
    let sampler = tokio::spawn(sample(Arc::clone(&shared), origin, every));
    // In real time, Ctrl-C ends the run early with the report so far.
    let mut interrupt = Interrupt::arm(options.realtime).await;
    if interrupt.armed() && options.progress {
        eprintln!(
            "tokengate: running {} in real time{}; Ctrl-C stops the run and prints the report so far",
            bounds::go_duration(workload.duration),
            match share {
                Some(s) if s.of > 1 => format!(
                    " in {} processes (the progress shown is this one's share)",
                    s.of
                ),
                _ => String::new(),
            }
        );
    }
    let progress = (options.realtime && options.progress)
        .then(|| tokio::spawn(live_progress(Arc::clone(&shared), workload.duration)));

    let mut tasks = JoinSet::new();
    let mut interrupted = false;
    for a in arrivals {
        let at = origin + Duration::from_nanos(a.at);
        if interrupt.armed() {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = interrupt.wait() => {
                    interrupted = true;
                    break;
                }
            }
        } else {
            tokio::time::sleep_until(at).await;
        }
        shared.counters.arrived.fetch_add(1, Relaxed);
        tasks.spawn(request(Arc::clone(&shared), a));
        while tasks.try_join_next().is_some() {}
    }
    while !interrupted {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = interrupt.wait() => interrupted = true,
        }
    }
    let stopped_at = shared.clock.now();
    if interrupted {
        stop(&shared, &mut tasks, sampler, stopped_at).await;
    } else {
        let _ = sampler.await;
    }
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
    }
    let samples = std::mem::take(&mut *lock(&shared.samples));
    let mut records = std::mem::take(&mut *lock(&shared.records));
    records.sort_by_key(|r| r.t);
    // An interrupted run reports the time it ran.
    let ran = if interrupted {
        Workload {
            duration: Duration::from_nanos(stopped_at.clamp(1, end)),
            ..workload.clone()
        }
    } else {
        workload.clone()
    };
    let client_limits = shared.gate.limits();
    // A limiter keeping its state in a store counts nothing in the process.
    let client_counts = if shared.gate.has_store() {
        report::counts_from_records(&client_limits, &records)
    } else {
        report::counts_from_stats(shared.gate.stats())
    };
    let provider = lock(&shared.provider).clone();
    Ok(Run {
        seed,
        workload: ran,
        records,
        samples,
        every,
        requests: shared.counters.requests(),
        interrupted,
        stopped_at,
        skew,
        client_limits,
        client_counts,
        provider,
        store_stats: shared.gate.store_stats(),
        wall_secs: 0.0,
    })
}

/// Sleeps until `share`'s start; returns how long after the start it woke, in ns (the
/// clock made then has its origin that much after the start). A process that starts late
/// (its setup took longer than the allowance the run gave it) says so.
async fn wait_for_start(share: Share) -> u64 {
    if let Ok(left) = share.start.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let late = SystemTime::now()
        .duration_since(share.start)
        .map_or(0, nanos);
    if late > LATE_START {
        eprintln!(
            "tokengate: note: process {} of {} started {} ms after the run's start: its first requests arrive late",
            share.index + 1,
            share.of,
            late / 1_000_000
        );
    }
    late
}

/// How late a process may start before it says so.
const LATE_START: u64 = 250_000_000;

/// A progress bar over the run's duration, with live figures, redrawn five times a second.
async fn live_progress(shared: Arc<Shared>, duration: Duration) {
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let c = &shared.counters;
    loop {
        let now = shared.clock.now();
        bar.set_position(now / 1_000_000);
        bar.set_message(format!(
            "admitted {} · completed {} · 429s {} · queued {} · in flight {}",
            c.admitted.load(Relaxed),
            c.completed.load(Relaxed),
            c.throttled.load(Relaxed),
            c.queued.load(Relaxed),
            c.in_flight.load(Relaxed),
        ));
        if now >= shared.end {
            bar.finish();
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Refuses a workload whose largest request to a model can never be admitted by the client,
/// whichever tenant sends it (`routes`: the model's, one a tenant), or accepted by the
/// provider. When only some tenants' budgets can never hold it, the run goes on (their largest
/// requests are refused at once, counted as `never_fits`) and a note on stderr names them.
fn check_possible(
    gate: &Gate,
    routes: &[Route],
    provider: &Provider,
    budget: usize,
    workload: &Workload,
    model_line: usize,
    speaks: bool,
) -> Result<(), Error> {
    let (input, output) = (workload.input_tokens.max(), workload.max_tokens);
    let cost = Cost::request().input(input).output(output);
    let explain = |route: &Route, from: &str| {
        format!(
            "a request to {:?} ({}){from} can reserve {input} input tokens (the largest of input_tokens, {}) and {output} output tokens (max_tokens, {})",
            route.model,
            workload.place(model_line),
            workload.place(workload.places.input_tokens),
            workload.place(workload.places.max_tokens),
        )
    };
    let never: Vec<(&Route, AcquireError)> = routes
        .iter()
        .filter_map(|r| gate.impossible(r, &cost).map(|e| (r, e)))
        .collect();
    let tenants = |list: &[(&Route, AcquireError)]| -> String {
        let names: Vec<String> = list
            .iter()
            .map(|(r, _)| format!("{:?}", r.tenant))
            .collect();
        names.join(", ")
    };
    match never.first() {
        Some((route, e)) if never.len() == routes.len() => {
            let from = if routes.len() > 1 {
                " from any tenant".to_owned()
            } else {
                String::new()
            };
            return Err(Error::new(format!(
                "impossible workload: {}, but the client's limits can never admit it: {e}. Lower input_tokens' max or max_tokens in the workload, or raise the limit.",
                explain(route, &from)
            )));
        }
        Some((route, e)) if speaks => eprintln!(
            "tokengate: note: {}, which the budgets of tenants {} can never admit ({e}): their largest requests will be refused at once (never_fits)",
            explain(route, ""),
            tenants(&never)
        ),
        _ => {}
    }
    let Some(route) = routes.first() else {
        return Ok(());
    };
    let explain = explain(route, "");
    if let Some(m) = provider.impossible(budget, input, output) {
        return Err(Error::new(format!(
            "impossible workload: {explain}, but the provider would never accept it: {m}. Lower input_tokens' max or max_tokens in the workload, or raise the provider's limit."
        )));
    }
    Ok(())
}

/// Samples the queue every `every` ns until the end of the run.
async fn sample(shared: Arc<Shared>, origin: tokio::time::Instant, every: u64) {
    let mut t = 0;
    loop {
        tokio::time::sleep_until(origin + Duration::from_nanos(t)).await;
        take_sample(&shared, t);
        if t >= shared.end {
            return;
        }
        t = t.saturating_add(every).min(shared.end);
    }
}

fn take_sample(shared: &Shared, t: u64) {
    lock(&shared.samples).push(Sample {
        t,
        queued: shared.counters.queued.load(Relaxed),
        in_flight: shared.counters.in_flight.load(Relaxed),
    });
}

/// Ends an interrupted run at `now`: the queue's last sample, and every request not yet ended
/// (waiting, or in a call) counted as still waiting.
async fn stop(
    shared: &Shared,
    tasks: &mut JoinSet<()>,
    sampler: tokio::task::JoinHandle<()>,
    now: u64,
) {
    sampler.abort();
    let _ = sampler.await;
    take_sample(shared, now);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let c = &shared.counters;
    let ended = c.completed.load(Relaxed)
        + c.gave_up.load(Relaxed)
        + c.unfinished.load(Relaxed)
        + c.refused.total();
    let open = c.arrived.load(Relaxed).saturating_sub(ended);
    c.unfinished.fetch_add(open, Relaxed);
}

/// One request, from arrival to its last answer.
async fn request(shared: Arc<Shared>, a: Arrival) {
    let c = &shared.counters;
    let arrived = shared.clock.now();
    let deadline = shared
        .max_wait
        .map_or(shared.end, |w| shared.end.min(arrived.saturating_add(w)));
    // Gives up at the deadline: the run's end, or max_wait.
    let give_up = |c: &Counters| {
        c.queued.fetch_sub(1, Relaxed);
        if deadline >= shared.end {
            c.unfinished.fetch_add(1, Relaxed);
        } else {
            c.gave_up.fetch_add(1, Relaxed);
        }
    };
    c.queued.fetch_add(1, Relaxed);
    let wait_for_slot = Duration::from_nanos(deadline.saturating_sub(arrived));
    let _slot = match tokio::time::timeout(wait_for_slot, shared.slots.acquire()).await {
        Ok(Ok(slot)) => slot,
        _ => return give_up(c),
    };
    let route = &shared.routes[a.model][a.tenant];
    let budget = shared.provider_budget[a.model];
    let mut waiting_since = arrived;
    let mut attempt = 0;
    loop {
        let now = shared.clock.now();
        let cost = Cost::request().input(a.input).output(shared.max_tokens);
        let timeout = Duration::from_nanos(deadline.saturating_sub(now));
        let permit = match shared.gate.acquire(route, cost, timeout).await {
            Ok(permit) => permit,
            // Never waited: neither gave up nor still waiting.
            Err(NotAdmitted::AtOnce(e)) => {
                c.queued.fetch_sub(1, Relaxed);
                c.refused.record(Reason::of(&e, deadline >= shared.end), &e);
                return;
            }
            Err(NotAdmitted::AfterWaiting(_)) => return give_up(c),
        };
        c.queued.fetch_sub(1, Relaxed);
        c.admitted.fetch_add(1, Relaxed);
        let t = permit.admitted_at();
        let record = Record {
            t,
            key: Arc::clone(&shared.names.keys[a.model]),
            provider_key: Arc::clone(&shared.provider_keys[budget]),
            model: Arc::clone(&shared.names.models[a.model]),
            tenant: Arc::clone(&shared.names.tenants[a.tenant]),
            input: 0,
            output: 0,
            counted_output: 0,
            reserved_input: a.input,
            reserved_output: shared.max_tokens,
            wait: t.saturating_sub(waiting_since),
            status: 429,
            attempt,
            ended: true,
            ended_at: t,
        };
        // A share of a run over several processes asks no provider: the call is sent as if
        // accepted, and the replay decides.
        let answer = shared
            .live
            .then(|| lock(&shared.provider).call(budget, a.input, shared.max_tokens, t));
        let ticket = match answer {
            Some(Answer::Throttled(headers)) => {
                let report = ProviderReport::from_headers(
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    wall_now(),
                );
                shared.gate.observe_throttled(route, &report);
                // The call did not run: nothing but the request itself was used.
                permit.settle(0, 0, OutputCount::Produced);
                lock(&shared.records).push(record);
                c.throttled.fetch_add(1, Relaxed);
                attempt += 1;
                if attempt > shared.retries {
                    c.gave_up.fetch_add(1, Relaxed);
                    return;
                }
                c.retried.fetch_add(1, Relaxed);
                c.queued.fetch_add(1, Relaxed);
                waiting_since = shared.clock.now();
                continue;
            }
            Some(Answer::Accepted(ticket)) => Some(ticket),
            None => None,
        };
        c.in_flight.fetch_add(1, Relaxed);
        // Recorded now, as the provider counts a running call: a run that Ctrl-C ends during
        // the call keeps it.
        let slot = {
            let mut records = lock(&shared.records);
            records.push(Record {
                input: a.input,
                counted_output: shared.max_tokens,
                status: 200,
                ended: false,
                ..record
            });
            records.len() - 1
        };
        tokio::time::sleep(Duration::from_nanos(a.latency)).await;
        let now = shared.clock.now();
        let (headers, count) = match ticket {
            Some(ticket) => {
                let mut provider = lock(&shared.provider);
                (
                    Some(provider.finish(ticket, a.output, now)),
                    provider.output_count(),
                )
            }
            None => (None, shared.output_count),
        };
        // As the reply's format says the provider counts its output.
        permit.settle(a.input, a.output, count);
        if let Some(headers) = headers {
            let report = ProviderReport::from_headers(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                wall_now(),
            );
            shared.gate.observe(route, &report);
        }
        c.in_flight.fetch_sub(1, Relaxed);
        c.completed.fetch_add(1, Relaxed);
        if let Some(record) = lock(&shared.records).get_mut(slot) {
            record.output = a.output;
            record.counted_output = match count {
                OutputCount::Reserved => a.output.max(shared.max_tokens),
                _ => a.output,
            };
            record.ended = true;
            record.ended_at = now;
        }
        return;
    }
}

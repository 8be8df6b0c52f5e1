//! A run split over several processes (`simulate --realtime --redis URL --processes N`): one
//! set of limits, kept in Redis, shared by N client processes, as N replicas of a service
//! share one provider account.
//!
//! The command spawns N-1 copies of itself (the same binary), each told by a hidden argument
//! (`--worker`, [`Worker`]) which process of how many it is, the run's namespace in Redis and
//! the instant it starts on the wall clock; it runs the share of process 0 itself. Every
//! process draws the same requests from the seed and sends its share of them: the requests
//! `i`, `i + N`, `i + 2N`, ... ([`Share`]), with `1/N` of the workload's concurrency, so the N
//! processes together send exactly the requests one process would, at the same instants.
//!
//! The provider cannot be one object across processes. Each process logs every call it sends
//! (sent as if accepted: it runs for its latency and is settled as the provider would count
//! it), on a clock whose origin is the common start; the parent merges the logs, sorts them by
//! time and replays them through the same provider model a single process asks live
//! ([`Provider::replay`]), which gives the 429s and the utilisation a live provider enforcing
//! those limits would have given. A 429 found so cannot flow back to the client that sent the
//! call (it did not pause, nor retry): the report says so. Its call counts as a 429 with no
//! tokens in the log, and its request as given up.
//!
//! The parent waits for every worker, within the run's length and a generous margin
//! ([`grace`]): a worker still running then is killed, and the run fails.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokengate::redis::RedisStore;

use crate::error::Error;
use crate::provider::{Call, Provider};
use crate::refusal::{self, Refused};
use crate::report::{self, Parts, Requests};
use crate::sim::{
    execute, seed_of, Record, Run, Sample, Share, SimInput, SimOptions, Simulation, StoreOptions,
};
use crate::workload::{nanos, Workload};

/// What a worker is told: which process of how many it is, the run's start and its
/// namespace in Redis. Written as the hidden argument `--worker INDEX/OF,START,NAMESPACE`
/// (`START` in ns since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Its share of the run: its index (from 1: process 0 is the parent), the processes, the
    /// start.
    pub share: Share,
    /// The run's namespace in Redis.
    pub namespace: String,
}

impl Worker {
    /// The argument that tells it.
    pub fn arg(&self) -> String {
        let start = self
            .share
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "{}/{},{start},{}",
            self.share.index, self.share.of, self.namespace
        )
    }

    /// Reads the argument.
    ///
    /// # Errors
    /// When it is not `INDEX/OF,START,NAMESPACE` with `0 < INDEX < OF`.
    pub fn parse(arg: &str) -> Result<Self, Error> {
        let bad = || {
            Error::new(format!(
                "--worker {arg:?}: expected INDEX/OF,START,NAMESPACE (the command gives it to the processes it starts for --processes; it is not for use by hand)"
            ))
        };
        let mut parts = arg.splitn(3, ',');
        let (Some(which), Some(start), Some(namespace)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (index, of) = which.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.parse().map_err(|_| bad())?;
        let of: u32 = of.parse().map_err(|_| bad())?;
        let start: u64 = start.parse().map_err(|_| bad())?;
        if index == 0 || index >= of || namespace.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            share: Share {
                index,
                of,
                start: SystemTime::UNIX_EPOCH + Duration::from_nanos(start),
            },
            namespace: namespace.to_owned(),
        })
    }
}

/// One call of a process's log, as a worker sends it to the parent (times in ns from the
/// run's start).
#[derive(Debug, Serialize, Deserialize)]
struct WireRecord {
    t: u64,
    ended_at: u64,
    key: String,
    provider_key: String,
    model: String,
    tenant: String,
    input: u64,
    output: u64,
    counted_output: u64,
    reserved_input: u64,
    reserved_output: u64,
    wait: u64,
    status: u16,
    attempt: u32,
    ended: bool,
}

/// A refusal reason's count, as a worker sends it.
#[derive(Debug, Serialize, Deserialize)]
struct WireRefused {
    reason: String,
    requests: u64,
    message: String,
}

/// What one process's share produced, as a worker writes it on its stdout (JSON) for the
/// parent.
#[derive(Debug, Serialize, Deserialize)]
struct ShareOut {
    index: u32,
    of: u32,
    seed: u64,
    interrupted: bool,
    /// When it stopped, ns from the run's start.
    stopped_at: u64,
    arrived: u64,
    admitted: u64,
    completed: u64,
    throttled: u64,
    retried: u64,
    gave_up: u64,
    unfinished: u64,
    refused: Vec<WireRefused>,
    /// `(t, queued, in_flight)`, t on the process's clock.
    samples: Vec<(u64, u64, u64)>,
    calls: Vec<WireRecord>,
    store_calls: u64,
    store_errors: u64,
    store_in_flight_polls: u64,
}

impl ShareOut {
    fn of_run(run: &Run, share: Share) -> Self {
        let r = &run.requests;
        let skew = run.skew;
        Self {
            index: share.index,
            of: share.of,
            seed: run.seed,
            interrupted: run.interrupted,
            stopped_at: run.stopped_at.saturating_add(skew),
            arrived: r.arrived,
            admitted: r.admitted,
            completed: r.completed,
            throttled: r.throttled,
            retried: r.retried,
            gave_up: r.gave_up,
            unfinished: r.unfinished,
            refused: r
                .refused_reasons
                .iter()
                .map(|x| WireRefused {
                    reason: x.reason.to_owned(),
                    requests: x.requests,
                    message: x.message.clone(),
                })
                .collect(),
            samples: run
                .samples
                .iter()
                .map(|s| (s.t, s.queued, s.in_flight))
                .collect(),
            calls: run
                .records
                .iter()
                .map(|c| WireRecord {
                    t: c.t.saturating_add(skew),
                    ended_at: c.ended_at.saturating_add(skew),
                    key: c.key.to_string(),
                    provider_key: c.provider_key.to_string(),
                    model: c.model.to_string(),
                    tenant: c.tenant.to_string(),
                    input: c.input,
                    output: c.output,
                    counted_output: c.counted_output,
                    reserved_input: c.reserved_input,
                    reserved_output: c.reserved_output,
                    wait: c.wait,
                    status: c.status,
                    attempt: c.attempt,
                    ended: c.ended,
                })
                .collect(),
            store_calls: run.store_stats.map_or(0, |s| s.calls),
            store_errors: run.store_stats.map_or(0, |s| s.errors),
            store_in_flight_polls: run.store_stats.map_or(0, |s| s.in_flight_polls),
        }
    }

    fn requests(&self) -> Requests {
        Requests {
            arrived: self.arrived,
            admitted: self.admitted,
            completed: self.completed,
            throttled: self.throttled,
            retried: self.retried,
            gave_up: self.gave_up,
            unfinished: self.unfinished,
            refused: self.refused.iter().map(|r| r.requests).sum(),
            refused_reasons: self
                .refused
                .iter()
                .filter_map(|r| {
                    Some(Refused {
                        reason: refusal::reason_name(&r.reason)?,
                        requests: r.requests,
                        message: r.message.clone(),
                    })
                })
                .collect(),
        }
    }
}

/// Runs a worker's share of a run over several processes (`--worker`), and writes what it
/// produced on stdout for the parent. Returns whether Ctrl-C ended it early.
///
/// # Errors
/// As [`simulate`](crate::simulate); or stdout cannot be written.
pub fn run_worker(input: &SimInput, options: &SimOptions) -> Result<bool, Error> {
    let share = options
        .share
        .ok_or_else(|| Error::new("a worker runs a share of a run"))?;
    let run = execute(input, options)?;
    let out = ShareOut::of_run(&run, share);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &out)
        .map_err(std::io::Error::other)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            Error::new(format!(
                "cannot write this process's share for the parent: {e}"
            ))
        })?;
    Ok(run.interrupted)
}

/// How long after the run's start the workers start: their setup (reading the inputs,
/// drawing the requests, connecting to Redis) must fit before it. A second, and a second
/// more for every million requests drawn.
fn startup_allowance(workload: &Workload) -> Duration {
    let millions = workload.expected_requests() / 1e6;
    Duration::from_secs(1) + Duration::try_from_secs_f64(millions).unwrap_or(Duration::MAX)
}

/// How long past the run's length (its duration and its longest call) the parent waits for
/// a worker before killing it: 30 s and half the run's length.
pub fn grace(run_length: Duration) -> Duration {
    Duration::from_secs(30).saturating_add(run_length / 2)
}

/// A worker process the parent started, and the thread reading its stdout.
struct Spawned {
    index: u32,
    child: Child,
    reader: Option<JoinHandle<std::io::Result<Vec<u8>>>>,
}

/// The workers started: any still running when this is dropped (the parent failed, or gave
/// up on them) are killed and reaped.
struct Workers(Vec<Spawned>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
    }
}

/// The exit status of a worker that Ctrl-C ended, after it wrote its share.
const INTERRUPTED: i32 = 130;

/// Runs a simulation split over `processes` processes sharing one set of limits in the Redis
/// of `options.store` (see the module's documentation): starts `processes - 1` copies of the
/// running binary with `args` (the `simulate` arguments that choose the inputs, the
/// duration, `--realtime` and `--redis`; the seed and `--worker` are added here), runs share
/// 0 here, waits for the others, merges the logs and counts, and replays the provider on
/// the merged log.
///
/// # Errors
/// As [`simulate`](crate::simulate); a worker that cannot be started, fails, or overruns the
/// run's length by [`grace`] (it is killed).
pub fn simulate_processes(
    input: &SimInput,
    options: &SimOptions,
    processes: u32,
    args: &[OsString],
) -> Result<Simulation, Error> {
    let wall = Instant::now();
    let Some(store) = options.store.clone() else {
        return Err(Error::new(
            "a run over several processes shares its limits through a store: give it --redis URL",
        ));
    };
    let seed = seed_of(input, options);
    let workload = match options.duration {
        Some(d) => input.workload.with_duration(d)?,
        None => input.workload.clone(),
    };
    // A Redis that does not answer fails the run here, before any process starts.
    check_store(&store)?;
    let start = SystemTime::now() + startup_allowance(&workload);
    let run_length = workload.duration.saturating_add(workload.longest_call());
    let exe = std::env::current_exe().map_err(|e| {
        Error::new(format!(
            "cannot find this program to start its workers: {e}"
        ))
    })?;
    let mut workers = Workers(Vec::new());
    for index in 1..processes {
        let worker = Worker {
            share: Share {
                index,
                of: processes,
                start,
            },
            namespace: store.namespace.clone(),
        };
        let mut child = Command::new(&exe)
            .args(args)
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--worker")
            .arg(worker.arg())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::new(format!(
                    "cannot start process {} of {processes} ({}): {e}",
                    index + 1,
                    exe.display()
                ))
            })?;
        let reader = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                out.read_to_end(&mut buf).map(|_| buf)
            })
        });
        workers.0.push(Spawned {
            index,
            child,
            reader,
        });
    }
    let own_share = Share {
        index: 0,
        of: processes,
        start,
    };
    let own_options = SimOptions {
        seed: Some(seed),
        share: Some(own_share),
        ..options.clone()
    };
    // Failing here drops `workers`, which kills them.
    let own = execute(input, &own_options)?;
    let deadline = start + run_length.saturating_add(grace(run_length));
    let mut shares = vec![ShareOut::of_run(&own, own_share)];
    for w in &mut workers.0 {
        let status = loop {
            match w.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if SystemTime::now() >= deadline => {
                    return Err(Error::new(format!(
                        "process {} of {processes} (pid {}) was still running {} s after the run's end (its duration and its longest call, {} s): it and every other still running were killed",
                        w.index + 1,
                        w.child.id(),
                        grace(run_length).as_secs(),
                        run_length.as_secs_f64().ceil()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    return Err(Error::new(format!(
                        "cannot wait for process {} of {processes}: {e}",
                        w.index + 1
                    )))
                }
            }
        };
        let ok = status.success() || status.code() == Some(INTERRUPTED);
        if !ok {
            // A process that fails says why on stderr, which it shares with this one; one
            // killed by a signal cannot.
            let why = if status.code().is_some() {
                "; its error is above"
            } else {
                ""
            };
            return Err(Error::new(format!(
                "process {} of {processes} (pid {}) failed ({status}){why}",
                w.index + 1,
                w.child.id()
            )));
        }
        let bytes = match w.reader.take().map(JoinHandle::join) {
            Some(Ok(Ok(bytes))) => bytes,
            _ => {
                return Err(Error::new(format!(
                    "cannot read the share of process {} of {processes}",
                    w.index + 1
                )))
            }
        };
        let share: ShareOut = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(format!(
                "process {} of {processes} sent an unreadable share: {e}",
                w.index + 1
            ))
        })?;
        if (share.index, share.of, share.seed) != (w.index, processes, seed) {
            return Err(Error::new(format!(
                "process {} of {processes} ran another share (process {} of {}, seed {})",
                w.index + 1,
                share.index + 1,
                share.of,
                share.seed
            )));
        }
        shares.push(share);
    }
    let mut sim = merge(input, options, &workload, &own, shares, processes)?;
    sim.report.wall_secs = wall.elapsed().as_secs_f64();
    Ok(sim)
}

/// Connects to the run's Redis once, to fail at once when it does not answer.
fn check_store(store: &StoreOptions) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the tokio runtime: {e}")))?;
    runtime
        .block_on(RedisStore::connect(&store.url))
        .map(drop)
        .map_err(|e| {
            Error::new(format!(
                "--redis {}: cannot use it as the limiter's store: {e}",
                store.shown_url()
            ))
        })
}

/// One report from the shares of every process: their logs merged in time order, their
/// counts summed, the client's budgets counted on the merged log, and the provider replayed
/// on it.
fn merge(
    input: &SimInput,
    options: &SimOptions,
    workload: &Workload,
    own: &Run,
    shares: Vec<ShareOut>,
    processes: u32,
) -> Result<Simulation, Error> {
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |s: String| -> Arc<str> {
        Arc::clone(names.entry(s).or_insert_with_key(|k| Arc::from(k.as_str())))
    };
    let mut records: Vec<Record> = Vec::new();
    let mut requests = Requests {
        arrived: 0,
        admitted: 0,
        completed: 0,
        throttled: 0,
        retried: 0,
        gave_up: 0,
        unfinished: 0,
        refused: 0,
        refused_reasons: Vec::new(),
    };
    let mut refused = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let (mut calls, mut errors, mut polls) = (0, 0, 0);
    let (mut stopped_at, mut interrupted) = (0, false);
    for share in shares {
        let r = share.requests();
        requests.arrived += r.arrived;
        requests.admitted += r.admitted;
        requests.completed += r.completed;
        requests.throttled += r.throttled;
        requests.retried += r.retried;
        requests.gave_up += r.gave_up;
        requests.unfinished += r.unfinished;
        requests.refused += r.refused;
        refused.push(r.refused_reasons);
        // Every process samples at the same instants from the start: their queues add up.
        for (i, &(t, queued, in_flight)) in share.samples.iter().enumerate() {
            match samples.get_mut(i) {
                Some(s) => {
                    s.queued += queued;
                    s.in_flight += in_flight;
                    s.t = s.t.max(t);
                }
                None => samples.push(Sample {
                    t,
                    queued,
                    in_flight,
                }),
            }
        }
        calls += share.store_calls;
        errors += share.store_errors;
        polls += share.store_in_flight_polls;
        stopped_at = stopped_at.max(share.stopped_at);
        interrupted |= share.interrupted;
        records.extend(share.calls.into_iter().map(|c| Record {
            t: c.t,
            key: intern(c.key),
            provider_key: intern(c.provider_key),
            model: intern(c.model),
            tenant: intern(c.tenant),
            input: c.input,
            output: c.output,
            counted_output: c.counted_output,
            reserved_input: c.reserved_input,
            reserved_output: c.reserved_output,
            wait: c.wait,
            status: c.status,
            attempt: c.attempt,
            ended: c.ended,
            ended_at: c.ended_at,
        }));
    }
    requests.refused_reasons = refusal::merge(&refused);
    // Stable: at one instant, process 0's calls first, then process 1's, ...
    records.sort_by_key(|r| r.t);
    // The client's budgets as the clients charged them: every call as sent.
    let client_counts = report::counts_from_records(&own.client_limits, &records);
    // The provider, replayed on the merged log: its budgets in the order a live run makes
    // them, the workload's models in order.
    let mut provider = Provider::new(input.provider.clone())?;
    for model in &workload.models {
        provider.budget_of(&model.name)?;
    }
    let mut replayed = Vec::with_capacity(records.len());
    for r in &records {
        replayed.push(Call {
            budget: provider.budget_of(&r.model)?,
            at: r.t,
            end: r.ended.then_some(r.ended_at),
            input: r.reserved_input,
            max_tokens: r.reserved_output,
            output: r.output,
        });
    }
    let accepted = provider.replay(&replayed);
    for (r, accepted) in records.iter_mut().zip(accepted) {
        if accepted {
            continue;
        }
        // A 429, which the client never heard of: no retry followed.
        requests.throttled += 1;
        if r.ended {
            requests.completed = requests.completed.saturating_sub(1);
            requests.gave_up += 1;
        }
        r.status = 429;
        r.input = 0;
        r.output = 0;
        r.counted_output = 0;
        r.ended_at = r.t;
    }
    let end = nanos(workload.duration);
    let ran = if interrupted {
        Workload {
            duration: Duration::from_nanos(stopped_at.clamp(1, end)),
            ..workload.clone()
        }
    } else {
        workload.clone()
    };
    let mut store = crate::sim::store_report(options.store.as_ref(), None);
    store.calls = calls;
    store.errors = errors;
    store.in_flight_polls = polls;
    let mut report = report::build(
        input,
        Parts {
            workload: &ran,
            seed: own.seed,
            realtime: true,
            client_limits: &own.client_limits,
            client_counts: &client_counts,
            provider: &provider,
            replayed: true,
            requests,
            records: &records,
            samples: &samples,
            every: own.every,
            processes,
            store,
        },
    );
    report.interrupted = interrupted;
    Ok(Simulation {
        report,
        records,
        samples,
        client_limits: own.client_limits.clone(),
    })
}

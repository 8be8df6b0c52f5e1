//! The figures of a simulation: built from the limiter's stats, the provider's counters and
//! the admissions; printed as a table, written as JSON (field names documented in README), and
//! the admission log.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokengate::core::LimitRule;
use tokengate::{Algorithm, Dimension, Limit, OutputCount, Stats};

use crate::audit::readings::worst_window;
use crate::error::Error;
use crate::gate::{KeyLimit, Scope, Weights};
use crate::provider::Provider;
use crate::refusal::{self, Refused};
use crate::sim::{Record, Sample, SimInput};
use crate::workload::{nanos, Workload};

/// Everything a simulation measured. Field names are stable (see README).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed of every draw.
    pub seed: u64,
    /// `virtual` or `realtime`.
    pub mode: &'static str,
    /// How long requests arrived, in seconds.
    pub duration_secs: f64,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Whether Ctrl-C ended the run early (`duration_secs` is then the time it ran).
    pub interrupted: bool,
    /// The processes that ran the client, each with its share of the workload (1 unless
    /// `--processes`).
    pub processes: u32,
    /// Where the client's limiter kept its state.
    pub store: StoreReport,
    /// The inputs, by name.
    pub inputs: Inputs,
    /// Request totals.
    pub requests: Requests,
    /// Token totals.
    pub tokens: Tokens,
    /// Waits for admission.
    pub waits: Waits,
    /// The queue over time.
    pub queue: Queue,
    /// The client's keys, each with its limits.
    pub client: Vec<KeyReport>,
    /// The provider's budgets, each with its limits.
    pub provider: ProviderSide,
    /// The limit with the highest utilisation, the client's or the provider's (on a tie, the
    /// provider's), among those whose period fits in the run.
    pub binding: Option<Binding>,
}

/// Where the client's limiter kept its state: in the process (`memory`), or in Redis
/// (`simulate --redis`), shared by every process of the run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoreReport {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// The Redis URL, its password hidden (`null` in memory).
    pub url: Option<String>,
    /// The run's namespace in Redis, its own (`null` in memory).
    pub namespace: Option<String>,
    /// Calls to the store, over every process (0 in memory).
    pub calls: u64,
    /// Calls that failed, over every process (0 in memory).
    pub errors: u64,
    /// Times an acquisition found an in-flight cap full and asked again after a backoff,
    /// over every process (0 in memory).
    pub in_flight_polls: u64,
}

impl StoreReport {
    /// The in-process limiter's.
    pub fn memory() -> Self {
        Self {
            kind: "memory",
            url: None,
            namespace: None,
            calls: 0,
            errors: 0,
            in_flight_polls: 0,
        }
    }
}

/// The names of the inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    /// The client's limits.
    pub limits: String,
    /// The workload.
    pub workload: String,
    /// The provider.
    pub provider: String,
}

/// Request totals. Each request that arrived ends as one of `completed`, `gave_up`,
/// `unfinished` and `refused`.
#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    /// Requests that arrived.
    pub arrived: u64,
    /// Admissions by the client's limiter (a request retried after a 429 is admitted again).
    pub admitted: u64,
    /// Calls the provider ran to the end.
    pub completed: u64,
    /// 429s from the provider.
    pub throttled: u64,
    /// Attempts after a 429.
    pub retried: u64,
    /// Requests that gave up: waited `max_wait`, or were refused more than `retries` times.
    pub gave_up: u64,
    /// Requests still waiting when arrivals ended.
    pub unfinished: u64,
    /// Requests the client's limiter refused at once, never waiting in its queue (a cost that
    /// can never fit, a wait known at once to outlast `max_wait` or the run).
    pub refused: u64,
    /// The refusals by reason, with the limiter's message for the first of each.
    pub refused_reasons: Vec<Refused>,
}

/// Token totals of the calls completed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tokens {
    /// Input tokens.
    pub input: u64,
    /// Output tokens produced.
    pub output: u64,
    /// Output tokens reserved (`max_tokens` per admission).
    pub reserved_output: u64,
}

/// Waits for admission: from arrival (or from the 429 a retry follows) to admission by the
/// limiter, over every admission.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Waits {
    /// Admissions.
    pub count: u64,
    /// Admissions that waited at all.
    pub waited: u64,
    /// Mean wait.
    pub mean_secs: f64,
    /// Median.
    pub p50_secs: f64,
    /// 95th percentile.
    pub p95_secs: f64,
    /// 99th percentile.
    pub p99_secs: f64,
    /// Longest.
    pub max_secs: f64,
}

/// The queue: requests arrived and not yet admitted (waiting for a client slot or for the
/// limiter), and calls in flight.
#[derive(Debug, Clone, Serialize)]
pub struct Queue {
    /// Longest queue sampled.
    pub max: u64,
    /// Mean of the samples.
    pub mean: f64,
    /// Seconds between samples.
    pub every_secs: f64,
    /// The samples.
    pub samples: Vec<QueueSample>,
}

/// One sample of the queue.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueSample {
    /// Seconds from the start.
    pub t: f64,
    /// Requests waiting.
    pub queued: u64,
    /// Calls running.
    pub in_flight: u64,
}

/// A key (budget) of the client or the provider.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The budget's name: a model's, or its family's.
    pub key: String,
    /// Admissions (client) or calls accepted (provider).
    pub admitted: u64,
    /// 429s answered for this key.
    pub throttled: u64,
    /// Its rate limits.
    pub limits: Vec<LimitReport>,
}

/// One rate limit and what passed it.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    /// `requests`, `input_tokens`, `output_tokens`, `tokens`, or a name of one's own.
    pub dimension: String,
    /// As written: `500 per minute`.
    pub limit: String,
    /// Units per period.
    pub amount: u64,
    /// The period, in seconds.
    pub period_secs: f64,
    /// The algorithm enforcing it.
    pub algorithm: String,
    /// Its bucket's capacity, for the bucket algorithms.
    pub burst: Option<u64>,
    /// Units counted over the run (settled amounts; for a provider counting `max_tokens`, the
    /// reservations).
    pub used: u64,
    /// `used` per period: `used * period / duration`.
    pub rate_per_period: f64,
    /// `rate_per_period / amount`, in percent.
    pub utilisation_pct: f64,
    /// The most counted in any window of one period.
    pub worst_window: u64,
    /// `worst_window / amount`, in percent.
    pub worst_window_pct: f64,
    /// Units reserved and charged, all told.
    pub charged: u64,
    /// Units given back when calls used less than reserved.
    pub refunded: u64,
}

/// The provider's side.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderSide {
    /// The algorithm of limits that name none.
    pub algorithm: String,
    /// `usage` or `max_tokens`.
    pub output_tokens: &'static str,
    /// 429s answered.
    pub throttled: u64,
    /// Whether its answers come from a replay of the processes' merged log after the run
    /// (`--processes` above 1): its 429s could not reach the clients, which sent every call
    /// as if accepted.
    pub replayed: bool,
    /// Its budgets in use.
    pub keys: Vec<KeyReport>,
}

/// The limit that binds.
#[derive(Debug, Clone, Serialize)]
pub struct Binding {
    /// `client` (a budget of the client's limiter) or `provider`.
    pub side: &'static str,
    /// The budget: a model's (or family's) key, `account`, or `tenant NAME`.
    pub key: String,
    /// The dimension.
    pub dimension: String,
    /// The limit.
    pub limit: String,
    /// Its utilisation, in percent.
    pub utilisation_pct: f64,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The algorithm and the burst of a limit as a policy applies it (the burst given, or the
/// algorithm's default).
pub fn algorithm_and_burst(limit: &Limit) -> (Algorithm, Option<u64>) {
    match LimitRule::new(limit) {
        Ok(rule) => (rule.algorithm(), rule.burst()),
        Err(_) => (Algorithm::default(), None),
    }
}

#[allow(clippy::too_many_arguments)]
fn limit_report(
    dimension: &Dimension,
    limit: &Limit,
    algorithm: Algorithm,
    burst: Option<u64>,
    points: &[(u64, u64)],
    duration: Duration,
    charged: u64,
    refunded: u64,
) -> LimitReport {
    let used: u64 = points.iter().map(|p| p.1).sum();
    let period = limit.period().as_secs_f64();
    // A limit whose period is longer than the run (a daily cap): the share of one period's
    // amount the run used.
    let rate = used as f64 * period / duration.as_secs_f64().max(period);
    let worst = worst_window(points, nanos(limit.period())).sum;
    let amount = limit.amount();
    LimitReport {
        dimension: dimension.name().to_owned(),
        limit: per_period(amount, limit.period()),
        amount,
        period_secs: period,
        algorithm: algorithm.to_string(),
        burst,
        used,
        rate_per_period: rate,
        utilisation_pct: 100.0 * rate / amount as f64,
        worst_window: worst,
        worst_window_pct: 100.0 * worst as f64 / amount as f64,
        charged,
        refunded,
    }
}

/// What each record counts on a limit of `weights`, as the provider counts it (the client
/// settles so).
fn points(records: &[&Record], weights: Weights) -> Vec<(u64, u64)> {
    records
        .iter()
        .map(|r| {
            // A 429 counted the request on the client (it was admitted), nothing else.
            let amount = if r.status == 200 {
                weights.amount(r.input, r.counted_output)
            } else {
                weights.requests
            };
            (r.t, amount)
        })
        .collect()
}

/// What a budget of the client's limiter counted over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeCounts {
    /// Admissions.
    pub admitted: u64,
    /// 429s the limiter was told of.
    pub throttled: u64,
    /// `(charged, refunded)` of each limit, in the order of its limits.
    pub limits: Vec<(u64, u64)>,
}

/// The counts of each budget from the in-process limiter's own stats.
pub(crate) fn counts_from_stats(stats: Vec<(Scope, Stats)>) -> Vec<ScopeCounts> {
    stats
        .into_iter()
        .map(|(_, s)| ScopeCounts {
            admitted: s.admitted,
            throttled: s.throttled,
            limits: s.limits.iter().map(|l| (l.charged, l.refunded)).collect(),
        })
        .collect()
}

/// The counts of each budget of `limits` from the admissions: a limiter keeping its state in
/// a store counts none in the process. Each admission is charged what it reserved, then
/// settled as logged (a 429, the request alone): `charged` adds what a call used beyond its
/// reservation, `refunded` what it used less. A 429 counts as told to the budget that
/// mirrors the provider: the model's, else the account's.
pub(crate) fn counts_from_records(
    limits: &[(Scope, Vec<KeyLimit>)],
    records: &[Record],
) -> Vec<ScopeCounts> {
    let has_model = |key: &str| {
        limits
            .iter()
            .any(|(s, _)| matches!(s, Scope::Model(k) if k == key))
    };
    limits
        .iter()
        .map(|(scope, kls)| {
            let mut counts = ScopeCounts {
                limits: vec![(0, 0); kls.len()],
                ..ScopeCounts::default()
            };
            for r in records.iter().filter(|r| scope.counts(&r.key, &r.tenant)) {
                counts.admitted += 1;
                let told = match scope {
                    Scope::Model(_) => true,
                    Scope::Account => !has_model(&r.key),
                    Scope::Tenant(_) => false,
                };
                if r.status != 200 && told {
                    counts.throttled += 1;
                }
                for (kl, (charged, refunded)) in kls.iter().zip(&mut counts.limits) {
                    let w = kl.weights;
                    let reserved = w.amount(r.reserved_input, r.reserved_output);
                    let settled = if r.status == 200 {
                        w.amount(r.input, r.counted_output)
                    } else {
                        w.requests
                    };
                    *charged = charged
                        .saturating_add(reserved)
                        .saturating_add(settled.saturating_sub(reserved));
                    *refunded = refunded.saturating_add(reserved.saturating_sub(settled));
                }
            }
            counts
        })
        .collect()
}

/// Everything a report is built from.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    /// The workload as run (an interrupted run's, shortened to the time it ran).
    pub(crate) workload: &'a Workload,
    pub(crate) seed: u64,
    pub(crate) realtime: bool,
    /// The client's budgets, with their limits.
    pub(crate) client_limits: &'a [(Scope, Vec<KeyLimit>)],
    /// What each of them counted, in the same order.
    pub(crate) client_counts: &'a [ScopeCounts],
    pub(crate) provider: &'a Provider,
    /// Whether the provider's answers were replayed after the run.
    pub(crate) replayed: bool,
    pub(crate) requests: Requests,
    pub(crate) records: &'a [Record],
    pub(crate) samples: &'a [Sample],
    /// ns between samples.
    pub(crate) every: u64,
    pub(crate) processes: u32,
    pub(crate) store: StoreReport,
}

/// Builds the report.
pub(crate) fn build(input: &SimInput, parts: Parts<'_>) -> Report {
    let Parts {
        workload,
        seed,
        realtime,
        client_limits,
        client_counts,
        provider,
        replayed,
        requests,
        records,
        samples,
        every,
        processes,
        store,
    } = parts;
    let duration = workload.duration;
    // Calls the provider accepted (counted on its limits), and those that ended.
    let accepted: Vec<&Record> = records.iter().filter(|r| r.status == 200).collect();
    let completed: Vec<&Record> = accepted.iter().copied().filter(|r| r.ended).collect();
    let mut waits: Vec<u64> = records.iter().map(|r| r.wait).collect();
    waits.sort_unstable();
    let client: Vec<KeyReport> = client_limits
        .iter()
        .zip(client_counts)
        .map(|((scope, limits), counts)| {
            let mine: Vec<&Record> = records
                .iter()
                .filter(|r| scope.counts(&r.key, &r.tenant))
                .collect();
            let limits = limits
                .iter()
                .zip(&counts.limits)
                .map(|(kl, &(charged, refunded))| {
                    let (alg, burst) = algorithm_and_burst(&kl.limit);
                    limit_report(
                        &kl.dimension,
                        &kl.limit,
                        alg,
                        burst,
                        &points(&mine, kl.weights),
                        duration,
                        charged,
                        refunded,
                    )
                })
                .collect();
            KeyReport {
                key: scope.name(),
                admitted: counts.admitted,
                throttled: counts.throttled,
                limits,
            }
        })
        .collect();
    // The model budgets, each counting its model's calls, then the account, counting every
    // call.
    let account = provider.account().map(|a| (a, true));
    let provider_keys: Vec<KeyReport> = provider
        .budgets()
        .iter()
        .map(|b| (b, false))
        .chain(account)
        .map(|(b, every_call)| {
            let mine: Vec<&Record> = accepted
                .iter()
                .copied()
                .filter(|r| every_call || *r.provider_key == *b.name)
                .collect();
            let limits = b
                .limits
                .iter()
                .map(|l| {
                    limit_report(
                        &l.dimension,
                        &l.limit,
                        l.rule.algorithm(),
                        l.rule.burst(),
                        &points(&mine, l.weights),
                        duration,
                        l.charged,
                        l.refunded,
                    )
                })
                .collect();
            KeyReport {
                key: b.name.clone(),
                admitted: b.accepted,
                throttled: b.throttled,
                limits,
            }
        })
        .collect();
    // Over every budget, the client's and the provider's; on a tie (a client that mirrors its
    // provider), the provider's, which comes last.
    let sides = [("client", &client), ("provider", &provider_keys)];
    let binding = sides
        .iter()
        .flat_map(|&(side, keys)| keys.iter().map(move |k| (side, k)))
        .flat_map(|(side, k)| k.limits.iter().map(move |l| (side, k, l)))
        .filter(|(_, _, l)| l.period_secs <= duration.as_secs_f64())
        .max_by(|a, b| a.2.utilisation_pct.total_cmp(&b.2.utilisation_pct))
        .map(|(side, k, l)| Binding {
            side,
            key: k.key.clone(),
            dimension: l.dimension.clone(),
            limit: l.limit.clone(),
            utilisation_pct: l.utilisation_pct,
        });
    let queued: Vec<u64> = samples.iter().map(|s| s.queued).collect();
    Report {
        seed,
        mode: if realtime { "realtime" } else { "virtual" },
        duration_secs: duration.as_secs_f64(),
        wall_secs: 0.0,
        interrupted: false,
        processes,
        store,
        inputs: Inputs {
            limits: input.names[0].clone(),
            workload: input.names[1].clone(),
            provider: input.names[2].clone(),
        },
        requests,
        tokens: Tokens {
            input: completed.iter().map(|r| r.input).sum(),
            output: completed.iter().map(|r| r.output).sum(),
            reserved_output: records.iter().map(|r| r.reserved_output).sum(),
        },
        waits: Waits {
            count: waits.len() as u64,
            waited: waits.iter().filter(|&&w| w > 0).count() as u64,
            mean_secs: secs(waits.iter().sum::<u64>()) / waits.len().max(1) as f64,
            p50_secs: secs(quantile(&waits, 0.50)),
            p95_secs: secs(quantile(&waits, 0.95)),
            p99_secs: secs(quantile(&waits, 0.99)),
            max_secs: secs(waits.last().copied().unwrap_or(0)),
        },
        queue: Queue {
            max: queued.iter().copied().max().unwrap_or(0),
            mean: queued.iter().sum::<u64>() as f64 / queued.len().max(1) as f64,
            every_secs: secs(every),
            samples: samples
                .iter()
                .map(|s| QueueSample {
                    t: secs(s.t),
                    queued: s.queued,
                    in_flight: s.in_flight,
                })
                .collect(),
        },
        client,
        provider: ProviderSide {
            algorithm: input.provider.algorithm.to_string(),
            output_tokens: match provider.output_count() {
                OutputCount::Reserved => "max_tokens",
                _ => "usage",
            },
            throttled: provider.budgets().iter().map(|b| b.throttled).sum(),
            replayed,
            keys: provider_keys,
        },
        binding,
    }
}

/// `500 per minute`, `30000 per 90 s`.
pub fn per_period(amount: u64, period: Duration) -> String {
    let unit = match (period.as_secs(), period.subsec_nanos()) {
        (1, 0) => "second".to_owned(),
        (60, 0) => "minute".to_owned(),
        (3_600, 0) => "hour".to_owned(),
        (86_400, 0) => "day".to_owned(),
        _ => fmt_duration(period),
    };
    format!("{amount} per {unit}")
}

/// A clock time from the start: `0:20:00`.
fn clock_time(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3_600, s / 60 % 60, s % 60)
}

/// A duration as people write it: `60 s` is `1 min`, `3600 s` is `1 h`; below a second in
/// the largest unit it fills, `1.5 ms`, `250 µs`, `100 ns` (three decimals at most).
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    let whole = d.subsec_nanos() == 0;
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if whole && secs > 0 && secs.is_multiple_of(86_400) {
        format!("{} d", secs / 86_400)
    } else if whole && secs > 0 && secs.is_multiple_of(3_600) {
        format!("{} h", secs / 3_600)
    } else if whole && secs > 0 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else if s >= 1.0 {
        format!("{} s", trim(s))
    } else if nanos >= 1_000_000 {
        format!("{} ms", trim(f64::from(nanos) / 1e6))
    } else if nanos >= 1_000 {
        format!("{} µs", trim(f64::from(nanos) / 1e3))
    } else if nanos > 0 {
        format!("{nanos} ns")
    } else {
        "0 s".to_owned()
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A wait in seconds, readable.
fn fmt_secs(s: f64) -> String {
    if s == 0.0 {
        "0".to_owned()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A count with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The report as the table the command prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let r = &self.requests;
        let _ = writeln!(
            out,
            "tokengate simulate: {} time, seed {} (reproduce with --seed {})",
            self.mode, self.seed, self.seed
        );
        let _ = writeln!(
            out,
            "  limits: {}\n  workload: {}\n  provider: {} ({}; output tokens counted as {})",
            self.inputs.limits,
            self.inputs.workload,
            self.inputs.provider,
            self.provider.algorithm,
            self.provider.output_tokens
        );
        let _ = writeln!(
            out,
            "  {} of traffic in {:.2} s of wall-clock time",
            fmt_duration(Duration::from_secs_f64(self.duration_secs)),
            self.wall_secs
        );
        if let Some(url) = &self.store.url {
            let _ = writeln!(
                out,
                "  store: redis at {url}, namespace {} ({} calls, {} failed, {} asked again for an in-flight slot); {}",
                self.store.namespace.as_deref().unwrap_or("?"),
                thousands(self.store.calls),
                thousands(self.store.errors),
                thousands(self.store.in_flight_polls),
                match self.processes {
                    1 => "1 process".to_owned(),
                    n => format!(
                        "{n} processes sharing it, each sending one request in {n} of the workload"
                    ),
                }
            );
        }
        if self.provider.replayed {
            let _ = writeln!(
                out,
                "  provider answers replayed from the processes' merged log after the run: its 429s could not reach the clients ({} here)",
                thousands(self.provider.throttled)
            );
        }
        if self.interrupted {
            let _ = writeln!(
                out,
                "  interrupted by Ctrl-C: the report covers the run until then; requests not ended count as still waiting"
            );
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "requests  {} arrived, {} admitted, {} completed, {} throttled by the provider (429), {} retried, {} gave up, {} still waiting at the end, {} refused at once",
            thousands(r.arrived),
            thousands(r.admitted),
            thousands(r.completed),
            thousands(r.throttled),
            thousands(r.retried),
            thousands(r.gave_up),
            thousands(r.unfinished),
            thousands(r.refused)
        );
        for refused in &r.refused_reasons {
            let _ = writeln!(
                out,
                "refused   {} {}: {} (the first: {})",
                thousands(refused.requests),
                refused.reason,
                refusal::meaning(refused.reason),
                refused.message
            );
        }
        let t = &self.tokens;
        let _ = writeln!(
            out,
            "tokens    {} input, {} output ({} reserved as max_tokens)",
            thousands(t.input),
            thousands(t.output),
            thousands(t.reserved_output)
        );
        let w = &self.waits;
        let _ = writeln!(
            out,
            "waits     p50 {}, p95 {}, p99 {}, max {}, mean {} ({} of {} admissions waited)",
            fmt_secs(w.p50_secs),
            fmt_secs(w.p95_secs),
            fmt_secs(w.p99_secs),
            fmt_secs(w.max_secs),
            fmt_secs(w.mean_secs),
            thousands(w.waited),
            thousands(w.count)
        );
        let _ = writeln!(
            out,
            "queue     max {}, mean {:.1} (requests arrived and not yet admitted, sampled every {})",
            self.queue.max,
            self.queue.mean,
            fmt_secs(self.queue.every_secs)
        );
        let _ = writeln!(
            out,
            "\n{:<14} {:<9} {:<14} {:<26} {:<23} {:>12} {:>14} {:>7} {:>8} {:>12}",
            "key",
            "side",
            "dimension",
            "limit",
            "algorithm",
            "used",
            "per period",
            "util",
            "worst",
            "refunded"
        );
        let sides = [("client", &self.client), ("provider", &self.provider.keys)];
        for (side, keys) in sides {
            for k in keys.iter() {
                for l in &k.limits {
                    let alg = match l.burst {
                        Some(b) => format!("{} (burst {})", l.algorithm, b),
                        None => l.algorithm.clone(),
                    };
                    let _ = writeln!(
                        out,
                        "{:<14} {:<9} {:<14} {:<26} {:<23} {:>12} {:>14} {:>6.1}% {:>7.1}% {:>12}",
                        k.key,
                        side,
                        l.dimension,
                        l.limit,
                        alg,
                        thousands(l.used),
                        thousands(l.rate_per_period.round() as u64),
                        l.utilisation_pct,
                        l.worst_window_pct,
                        thousands(l.refunded)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\n(util: the rate achieved over the run against the limit, or for a limit longer than the run, the share of it used; worst: the most in any one window of the limit's period)"
        );
        let _ = writeln!(out, "\nqueue over time:");
        let rows = 12usize.min(self.queue.samples.len().max(1));
        let chunk = self.queue.samples.len().div_ceil(rows).max(1);
        for part in self.queue.samples.chunks(chunk) {
            let (Some(first), Some(last)) = (part.first(), part.last()) else {
                continue;
            };
            let max = part.iter().map(|s| s.queued).max().unwrap_or(0);
            let flight = part.iter().map(|s| s.in_flight).max().unwrap_or(0);
            let bar =
                "#".repeat(((max as f64 / self.queue.max.max(1) as f64) * 30.0).round() as usize);
            let _ = writeln!(
                out,
                "  {} - {}  queued max {:>6}  in flight max {:>5}  {bar}",
                clock_time(first.t),
                clock_time(last.t),
                max,
                flight
            );
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// The report in one line (the table's last, and all `-q` prints): the binding limit, or
    /// why none was measured, the 429s and what became of the requests.
    pub fn summary(&self) -> String {
        let r = &self.requests;
        let binding = match &self.binding {
            Some(b) => format!(
                "binding limit: {} {} {} at {:.1}% utilisation ({})",
                b.key, b.dimension, b.limit, b.utilisation_pct, b.side
            ),
            None => {
                let shortest = self
                    .client
                    .iter()
                    .chain(&self.provider.keys)
                    .flat_map(|k| &k.limits)
                    .map(|l| l.period_secs)
                    .min_by(f64::total_cmp);
                let run = fmt_duration(Duration::from_secs_f64(self.duration_secs));
                match shortest {
                    Some(p) => {
                        let period = Duration::from_secs_f64(p);
                        format!(
                            "binding limit: none measured, no limit's period fits in the {run} run (the shortest is {}): run --duration {} or longer",
                            fmt_duration(period),
                            crate::bounds::go_duration(period)
                        )
                    }
                    None => "binding limit: none, no budget has a rate limit".to_owned(),
                }
            }
        };
        format!(
            "{binding}; {} 429s from the provider; {} of {} requests completed, {} gave up, {} still waiting, {} refused{}",
            thousands(r.throttled),
            thousands(r.completed),
            thousands(r.arrived),
            thousands(r.gave_up),
            thousands(r.unfinished),
            thousands(r.refused),
            if self.interrupted {
                " (interrupted by Ctrl-C)"
            } else {
                ""
            }
        )
    }

    /// Writes the report as JSON.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_json(&self, path: &Path) -> Result<(), Error> {
        let fail = |e: std::io::Error| {
            Error::new(format!(
                "{}: cannot write the JSON report: {e}",
                path.display()
            ))
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
        self.write_json_to(&mut out).map_err(fail)?;
        out.flush().map_err(fail)
    }

    /// Writes the report as JSON to `out`.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn write_json_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self).map_err(std::io::Error::other)?;
        writeln!(out)
    }
}

/// Writes one JSON line per admission, in the form `tokengate audit` reads.
///
/// # Errors
/// When the file cannot be written.
pub fn write_log(path: &Path, records: &[Record]) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::new(format!(
            "{}: cannot write the admission log: {e}",
            path.display()
        ))
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    write_log_to(&mut out, records).map_err(fail)?;
    out.flush().map_err(fail)
}

/// Writes one JSON line per admission to `out` (see [`write_log`]).
///
/// # Errors
/// When `out` fails.
pub fn write_log_to(out: &mut dyn std::io::Write, records: &[Record]) -> std::io::Result<()> {
    for r in records {
        // Strings go through serde_json for escaping.
        let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".to_owned());
        writeln!(
            out,
            "{{\"t\": {:.9}, \"key\": {}, \"provider_key\": {}, \"model\": {}, \"tenant\": {}, \"status\": {}, \"attempt\": {}, \"requests\": 1, \"input_tokens\": {}, \"output_tokens\": {}, \"tokens\": {}, \"produced_output_tokens\": {}, \"reserved_input_tokens\": {}, \"reserved_output_tokens\": {}, \"wait\": {:.9}, \"ended\": {}}}",
            secs(r.t),
            s(&r.key),
            s(&r.provider_key),
            s(&r.model),
            s(&r.tenant),
            r.status,
            r.attempt,
            r.input,
            r.counted_output,
            r.input + r.counted_output,
            r.output,
            r.reserved_input,
            r.reserved_output,
            secs(r.wait),
            r.ended,
        )?;
    }
    Ok(())
}

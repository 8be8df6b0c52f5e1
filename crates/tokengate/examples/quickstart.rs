//! Quick start: one policy with limits on requests, input tokens, output tokens and requests in
//! flight, driven by hundreds of concurrent tokio tasks through [`Limiter::acquire_timeout`].
//! Each task reserves its prompt and `max_tokens`, "calls the model" (a short sleep), and settles
//! with the usage the provider reports, which is lower than the reservation.
//!
//! By default it runs three minutes of traffic in tokio's virtual time (a paused current-thread
//! runtime and [`TokioClock`]), so it takes a fraction of a second; `--realtime` runs the same
//! traffic on the system clock at a smaller scale (limits per second, three seconds of traffic).
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --log /tmp/quickstart.jsonl
//! cargo run --release --example quickstart -- --realtime --log /tmp/quickstart-rt.jsonl
//! ```
//!
//! With `--log PATH` it writes one JSON line per admission, and prints the
//! `check-admissions` command line that checks the log against the policy.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokengate::core::Nanos;
use tokengate::{
    AcquireError, Clock, Cost, Dimension, Limit, Limiter, Policy, Stats, TokioClock, Usage,
};

/// One run's shape: the policy (amounts per `period`), the traffic, and how it is shown.
#[derive(Debug)]
struct Scenario {
    name: &'static str,
    /// The period of every rate limit.
    period: Duration,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    max_in_flight: u64,
    /// How long traffic is sent.
    run: Duration,
    /// Width of one line of the timeline.
    bin: Duration,
    /// Concurrent tasks, each sending one request after another.
    tasks: u64,
    /// Model latency, uniform in this range (milliseconds).
    latency_ms: (u64, u64),
    /// Prompt tokens, uniform in this range...
    input: (u64, u64),
    /// ...except for this percentage of long prompts, above the input limit's burst.
    long_prompt_percent: u64,
    long_input: (u64, u64),
    /// Output tokens reserved (`max_tokens`) and really produced.
    output_reserved: u64,
    output_used: (u64, u64),
}

/// Three minutes of a 500 RPM / 40k ITPM / 16k OTPM key, in virtual time.
const VIRTUAL: Scenario = Scenario {
    name: "virtual time (tokio paused clock)",
    period: Duration::from_secs(60),
    requests: 500,
    input_tokens: 40_000,
    output_tokens: 16_000,
    max_in_flight: 24,
    run: Duration::from_secs(180),
    bin: Duration::from_secs(10),
    tasks: 300,
    latency_ms: (200, 3_000),
    input: (10, 110),
    long_prompt_percent: 2,
    long_input: (1_000, 2_000),
    output_reserved: 32,
    output_used: (2, 30),
};

/// The same shape per second, for three seconds of the system clock.
const REALTIME: Scenario = Scenario {
    name: "real time (system clock)",
    period: Duration::from_secs(1),
    requests: 100,
    input_tokens: 8_000,
    output_tokens: 1_600,
    max_in_flight: 24,
    run: Duration::from_secs(3),
    bin: Duration::from_millis(250),
    tasks: 200,
    latency_ms: (5, 60),
    input: (10, 110),
    long_prompt_percent: 2,
    long_input: (200, 400),
    output_reserved: 64,
    output_used: (2, 30),
};

impl Scenario {
    fn policy(&self) -> Policy {
        Policy::builder()
            .limit(Dimension::Requests, Limit::new(self.requests, self.period))
            .limit(
                Dimension::InputTokens,
                Limit::new(self.input_tokens, self.period),
            )
            .limit(
                Dimension::OutputTokens,
                Limit::new(self.output_tokens, self.period),
            )
            .max_in_flight(self.max_in_flight)
            .build()
            .expect("the scenario's limits are valid")
    }

    /// The policy's rate limits as `check-admissions` arguments.
    fn check_args(&self) -> String {
        let p = self.period.as_secs_f64();
        self.limits()
            .iter()
            .map(|(name, amount)| format!(" --limit {name}={amount}/{p}"))
            .collect()
    }

    /// `(name, amount per period)` of each rate limit, in the order of [`Record::amounts`].
    fn limits(&self) -> [(&'static str, u64); 3] {
        [
            ("requests", self.requests),
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
        ]
    }
}

/// One admission, as the provider would count it.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Admission instant, ns on the limiter's clock.
    at: Nanos,
    input_reserved: u64,
    output_reserved: u64,
    input_used: u64,
    output_used: u64,
}

impl Record {
    /// Settled amounts per limit, in the order of [`Scenario::limits`].
    fn amounts(&self) -> [u64; 3] {
        [1, self.input_used, self.output_used]
    }

    /// Reserved amounts per limit.
    fn reserved(&self) -> [u64; 3] {
        [1, self.input_reserved, self.output_reserved]
    }
}

/// Deterministic pseudo-random numbers (splitmix64): the example needs no `rand`.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One client task: request after request until the run ends.
async fn client<C: Clock>(
    limiter: Limiter<C>,
    sc: &'static Scenario,
    seed: u64,
    end: Nanos,
    records: Arc<Mutex<Vec<Record>>>,
) {
    let mut rng = Rng(seed);
    loop {
        let now = limiter.clock().now();
        if now >= end {
            break;
        }
        let input = if rng.range((1, 100)) <= sc.long_prompt_percent {
            rng.range(sc.long_input)
        } else {
            rng.range(sc.input)
        };
        let cost = Cost::request().input(input).output(sc.output_reserved);
        // Give up when the run is over: fails at once when the wait is known to be longer.
        let permit = match limiter
            .acquire_timeout(cost, Duration::from_nanos(end - now))
            .await
        {
            Ok(permit) => permit,
            Err(AcquireError::Timeout { .. } | AcquireError::QueueTimeout { .. }) => break,
            Err(e) => panic!("the scenario's costs are all admissible: {e}"),
        };
        let at = permit.admitted_at();
        // "Call the model".
        tokio::time::sleep(Duration::from_millis(rng.range(sc.latency_ms))).await;
        // The provider counts a little less input than estimated, and far less output than
        // max_tokens.
        let input_used = input - input * rng.range((0, 5)) / 100;
        let output_used = rng.range(sc.output_used);
        permit.settle(Usage::new().input(input_used).output(output_used));
        records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Record {
                at,
                input_reserved: input,
                output_reserved: sc.output_reserved,
                input_used,
                output_used,
            });
    }
}

/// Runs the scenario's tasks to the end and returns what was admitted, sorted by time.
async fn run<C: Clock>(sc: &'static Scenario, limiter: Limiter<C>) -> (Vec<Record>, Stats) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let end = limiter.clock().now() + u64::try_from(sc.run.as_nanos()).unwrap_or(u64::MAX);
    let tasks: Vec<_> = (0..sc.tasks)
        .map(|i| {
            tokio::spawn(client(
                limiter.clone(),
                sc,
                0x5EED ^ i,
                end,
                Arc::clone(&records),
            ))
        })
        .collect();
    for task in tasks {
        task.await.expect("a client task panicked");
    }
    let stats = limiter.stats();
    let mut records = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    records.sort_by_key(|r| r.at);
    (records, stats)
}

fn secs(ns: Nanos) -> f64 {
    ns as f64 / 1e9
}

fn print_timeline(sc: &Scenario, records: &[Record]) {
    let bin = u64::try_from(sc.bin.as_nanos()).unwrap_or(u64::MAX);
    let bins = sc.run.as_nanos().div_ceil(sc.bin.as_nanos()) as usize;
    let mut sums = vec![[0u64; 3]; bins];
    for r in records {
        let i = ((r.at / bin) as usize).min(bins - 1);
        for (sum, a) in sums[i].iter_mut().zip(r.amounts()) {
            *sum += a;
        }
    }
    let pace = sc.bin.as_secs_f64() / sc.period.as_secs_f64();
    println!(
        "\nTimeline: admitted per {:?} (settled amounts), against the limit's pace for {:?}",
        sc.bin, sc.bin
    );
    let mut header = format!("{:>15}", "time");
    for (name, amount) in sc.limits() {
        header += &format!(
            " | {:>24}",
            format!("{name} (pace {:.0})", amount as f64 * pace)
        );
    }
    println!("{header}");
    for (i, sum) in sums.iter().enumerate() {
        let from = sc.bin.as_secs_f64() * i as f64;
        let mut line = format!("{:>6.2}-{:>6.2} s", from, from + sc.bin.as_secs_f64());
        for ((_, amount), &got) in sc.limits().iter().zip(sum) {
            let share = got as f64 / (*amount as f64 * pace);
            let bar = "#".repeat((share * 10.0).round().clamp(0.0, 12.0) as usize);
            let _ = write!(line, " | {got:>7} {:>4.0}% {bar:<12}", share * 100.0);
        }
        println!("{line}");
    }
    let period = u64::try_from(sc.period.as_nanos()).unwrap_or(u64::MAX);
    println!("\nLargest amount in any window of {:?}:", sc.period);
    for (k, (name, amount)) in sc.limits().iter().enumerate() {
        let settled: Vec<_> = records.iter().map(|r| (r.at, r.amounts()[k])).collect();
        let reserved: Vec<_> = records.iter().map(|r| (r.at, r.reserved()[k])).collect();
        let (s, r) = (
            common::largest_window(&settled, period),
            common::largest_window(&reserved, period),
        );
        println!(
            "  {name:<14} settled {s:>7} of {amount} ({:>5.1}%)   reserved {r:>7} ({:.1}%)",
            100.0 * s as f64 / *amount as f64,
            100.0 * r as f64 / *amount as f64
        );
    }
}

fn print_stats(sc: &Scenario, stats: &Stats) {
    let w = &stats.waits;
    println!("\nStats snapshot at the end of the run:");
    println!(
        "  admitted {}, settled {}, gave up when the run ended {}, cancelled {}, in flight now {}",
        stats.admitted, stats.settled, stats.timed_out, stats.cancelled, stats.in_flight
    );
    println!(
        "  waits: {} of {} admissions waited; p50 <= {:.3?}, p99 <= {:.3?}, max {:.3?}, mean {:.3?}",
        w.waited,
        w.count,
        w.p50,
        w.p99,
        w.max,
        Duration::from_secs_f64(w.total.as_secs_f64() / w.count.max(1) as f64)
    );
    let periods = sc.run.as_secs_f64() / sc.period.as_secs_f64();
    println!(
        "  {:<34} {:>9} {:>9} {:>9}  utilisation over {:?}",
        "limit", "charged", "refunded", "net", sc.run
    );
    for l in &stats.limits {
        let net = l.charged - l.refunded;
        println!(
            "  {:<34} {:>9} {:>9} {:>9}  {:>5.1}% of {} x {:.0} periods",
            format!("{} {}", l.dimension, l.limit),
            l.charged,
            l.refunded,
            net,
            100.0 * net as f64 / (l.amount as f64 * periods),
            l.amount,
            periods
        );
    }
}

// Which amounts the log holds.
//
// The limiter admits a request at `t` against its reservation; `settle` then gives the unused
// part back to the record of `t` (the sliding window's entry at `t` shrinks to the usage), and
// later requests use the room that frees. What the limiter guarantees is therefore: the
// *settled* amounts, placed at their admission instants, never exceed a limit in any window.
// (Take a window's last admission: it was checked against the amounts of every earlier
// admission in the window as they stood then, each at least its final amount, plus its own
// reservation, at least its own usage.) The reserved amounts do not keep that, by design: output
// tokens reserved as `max_tokens` and never produced come back so others can use them, and the
// provider counts the tokens produced, not `max_tokens`. So `input_tokens` and `output_tokens`
// are the settled amounts at the admission instant, as the provider counts them; the
// reservations are written too, as `reserved_input_tokens` and `reserved_output_tokens`, so
// check-admissions can show how far above a limit the reservations alone would go.
// Two caveats. A provider that counts the reservation (max_tokens) against a limit is served by
// not settling that dimension lower; then both readings coincide. And a provider counts output
// when it is produced, up to one call's latency after `t`: no client-side limiter can see that
// shift; the log places the tokens at `t`, where the limiter accounted them.
fn write_log(path: &str, records: &[Record]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        writeln!(
            out,
            "{{\"t\": {:.9}, \"key\": \"quickstart\", \"requests\": 1, \"input_tokens\": {}, \"output_tokens\": {}, \"reserved_input_tokens\": {}, \"reserved_output_tokens\": {}}}",
            secs(r.at),
            r.input_used,
            r.output_used,
            r.input_reserved,
            r.output_reserved
        )?;
    }
    out.flush()
}

#[derive(Debug, Default)]
struct Args {
    realtime: bool,
    log: Option<String>,
    print_limits: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--realtime" => args.realtime = true,
            "--print-limits" => args.print_limits = true,
            "--log" => args.log = Some(it.next().ok_or("--log needs a path")?),
            s if s.starts_with("--log=") => args.log = Some(s["--log=".len()..].to_owned()),
            "-h" | "--help" => {
                return Err(String::from(
                    "usage: quickstart [--realtime] [--log PATH] [--print-limits]\n  \
                     --realtime      run on the system clock (a few seconds) instead of virtual time\n  \
                     --log PATH      write one JSON line per admission, for check-admissions\n  \
                     --print-limits  print the policy as check-admissions arguments and exit",
                ))
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let sc: &'static Scenario = if args.realtime { &REALTIME } else { &VIRTUAL };
    if args.print_limits {
        println!("{}", sc.check_args().trim_start());
        return ExitCode::SUCCESS;
    }
    println!(
        "tokengate quickstart, {}: {}, {} tasks, {:?} of traffic",
        sc.name,
        sc.policy()
            .limits()
            .map(|(d, l)| format!("{d} {l}"))
            .chain(std::iter::once(format!(
                "max {} in flight",
                sc.max_in_flight
            )))
            .collect::<Vec<_>>()
            .join(", "),
        sc.tasks,
        sc.run
    );
    let wall = Instant::now();
    let (records, stats) = if args.realtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("a tokio runtime")
            .block_on(run(sc, Limiter::new(sc.policy())))
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime")
            // The clock is made inside the runtime, so it reads the paused clock.
            .block_on(async { run(sc, Limiter::with_clock(sc.policy(), TokioClock::new())).await })
    };
    let wall = wall.elapsed();

    print_timeline(sc, &records);
    print_stats(sc, &stats);
    println!(
        "\n{} admissions; took {wall:.2?} of wall-clock time",
        records.len()
    );

    if let Some(path) = &args.log {
        if let Err(e) = write_log(path, &records) {
            eprintln!("cannot write the log {path}: {e}");
            return ExitCode::FAILURE;
        }
        println!(
            "wrote {path}; check it with:\n  python3 check-admissions {path}{}",
            sc.check_args()
        );
    }
    ExitCode::SUCCESS
}

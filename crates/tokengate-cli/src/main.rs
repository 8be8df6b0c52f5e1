//! The `tokengate` command: `simulate` a workload against limits and a simulated provider, and
//! `check` a limits, provider or workload file. See `tokengate --help`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokengate_cli::output::Outputs;
use tokengate_cli::{
    audit, chart, check, fleet, report, simulate, workload, Error, SimInput, SimOptions,
    StoreOptions,
};

#[derive(Debug, Parser)]
#[command(
    name = "tokengate",
    version,
    about = "Rate limits for LLM API clients: simulate a workload, check a limits, provider or workload file, audit an admission log",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a workload through the limiter against a simulated provider (in virtual time unless
    /// --realtime) and reports what passed, what waited and what the provider refused. Without
    /// files it runs the shipped example.
    Simulate(SimulateArgs),
    /// Validates a limits file, a provider file or a workload file (told apart by their keys)
    /// and explains it: the effective limits of every model, family and tenant, their
    /// algorithms and worst-case bursts (a provider file's as the provider enforces them); a
    /// workload's traffic.
    Check {
        /// The limits, provider or workload file.
        file: PathBuf,
    },
    /// Checks an admission log (simulate --log) against every limit of a limits file (or a
    /// provider file), under both readings of "N per period": the sliding window of the period,
    /// and the token bucket refilled at N per period holding the limit's burst (a request
    /// larger than the burst only into a full bucket, into debt). Prints each limit's worst
    /// window and tightest admission; exits 2 when a limit was violated.
    Audit {
        /// The admission log: JSON Lines, as simulate --log writes it.
        log: PathBuf,
        /// The limits file (or provider file) the log was admitted under.
        #[arg(long, value_name = "FILE")]
        limits: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// The client's limits (default: the shipped example).
    #[arg(long, value_name = "FILE")]
    limits: Option<PathBuf>,
    /// The workload (default: the shipped example).
    #[arg(long, value_name = "FILE")]
    workload: Option<PathBuf>,
    /// The provider's limits and enforcement (default: the shipped example's, or with
    /// --limits, the same limits, enforced both ways a provider may read them).
    #[arg(long, value_name = "FILE")]
    provider: Option<PathBuf>,
    /// Writes the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Writes one JSON line per admission (for tokengate audit).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Writes an SVG chart: admitted requests and tokens per window against the limits, and
    /// the queue.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// The seed of every random draw (default: the workload's, else chosen and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Runs against the wall clock, with a progress bar, instead of in virtual time.
    #[arg(long)]
    realtime: bool,
    /// Overrides the workload's duration (as a limits file writes one: 30s, 1m30s, 10m, 1d,
    /// 2d12h).
    #[arg(long, value_name = "DURATION", value_parser = workload::parse_duration_arg)]
    duration: Option<Duration>,
    /// Prints only the report's one-line summary (its last line).
    #[arg(long, short)]
    quiet: bool,
    /// Keeps the client's limiter's state in this Redis (redis://host:port/db, or
    /// redis://user:password@host:port/db) instead of in the process, so that the run
    /// exercises the shared store end to end. Each run uses a namespace of its own (printed in
    /// the report), so runs at the same time never share limits. Needs --realtime: Redis's
    /// clock decides.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Runs the client in N processes (this one and N-1 copies of itself) whose limiters share
    /// one set of limits through --redis: process i sends requests i, i+N, i+2N, ... of the
    /// workload with 1/N of its concurrency, so together they send what one process would.
    /// The provider is replayed on their merged log after the run: its 429s cannot reach the
    /// clients. Needs --redis and --realtime.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_processes)]
    processes: u32,
    /// One process's share of a run over several: given by the command to the processes it
    /// starts for --processes.
    #[arg(long, hide = true, value_name = "INDEX/OF,START,NAMESPACE")]
    worker: Option<String>,
}

/// The most processes `--processes` starts.
const MAX_PROCESSES: u32 = 64;

/// Reads `--processes`: a whole number from 1 to [`MAX_PROCESSES`].
fn parse_processes(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=MAX_PROCESSES) => Ok(n),
        _ => Err(format!(
            "expected a number of processes from 1 to {MAX_PROCESSES}, found {s:?}"
        )),
    }
}

/// The arguments that need one another: `--redis` needs `--realtime`; `--processes` above 1
/// needs both; `--worker` is the command's own.
fn check_sharing(args: &SimulateArgs) -> Result<(), Error> {
    let n = args.processes;
    if n > 1 && (args.redis.is_none() || !args.realtime) {
        let missing = match (args.redis.is_none(), !args.realtime) {
            (true, true) => "--redis URL and --realtime",
            (true, false) => "--redis URL",
            _ => "--realtime",
        };
        return Err(Error::new(format!(
            "--processes {n} needs {missing}: the processes share their limits through Redis, which decides on the wall clock (add {missing}, or run one process)"
        )));
    }
    if args.redis.is_some() && !args.realtime {
        return Err(Error::new(
            "--redis needs --realtime: the Redis store decides on Redis's clock, the wall clock, which a run in virtual time does not follow (add --realtime)",
        ));
    }
    if args.worker.is_some()
        && (n < 2
            || args.redis.is_none()
            || args.json.is_some()
            || args.log.is_some()
            || args.chart.is_some())
    {
        return Err(Error::new(
            "--worker is given by the command to the processes it starts for --processes, with --redis and no outputs; it is not for use by hand",
        ));
    }
    Ok(())
}

/// The arguments a process started for `--processes` runs with (the seed and `--worker`
/// are added by [`fleet::simulate_processes`]): the same inputs, duration and Redis.
fn worker_args(args: &SimulateArgs) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["simulate".into(), "--realtime".into()];
    if let Some(url) = &args.redis {
        out.extend(["--redis".into(), url.into()]);
    }
    out.extend(["--processes".into(), args.processes.to_string().into()]);
    for (flag, path) in [
        ("--limits", &args.limits),
        ("--workload", &args.workload),
        ("--provider", &args.provider),
    ] {
        if let Some(path) = path {
            out.extend([flag.into(), path.clone().into_os_string()]);
        }
    }
    if let Some(d) = args.duration {
        out.extend(["--duration".into(), format!("{}ns", d.as_nanos()).into()]);
    }
    out
}

/// Runs one share of a run over several processes, as the parent asked (`--worker`).
fn run_worker(args: &SimulateArgs, spec: &str) -> Result<ExitCode, Error> {
    let worker = fleet::Worker::parse(spec)?;
    let share = worker.share;
    let within = |e: Error| Error::new(format!("process {} of {}: {e}", share.index + 1, share.of));
    let input = SimInput::load(
        args.limits.as_deref(),
        args.workload.as_deref(),
        args.provider.as_deref(),
    )
    .map_err(within)?;
    let options = SimOptions {
        seed: args.seed,
        realtime: true,
        duration: args.duration,
        progress: false,
        store: args.redis.as_ref().map(|url| StoreOptions {
            url: url.clone(),
            namespace: worker.namespace.clone(),
        }),
        share: Some(share),
    };
    let interrupted = fleet::run_worker(&input, &options).map_err(within)?;
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The exit statuses, for `--help`.
const EXIT_STATUS: &str = "Exit status: 0 on success; 1 on any error (a bad argument, an input \
that cannot be read or is invalid, an output that cannot be written), with one message on \
stderr; 2 when audit found a limit violated; 130 when Ctrl-C ends a --realtime run (after its \
report).";

/// The exit status of an audit that found a limit violated.
const VIOLATED: u8 = 2;

/// The exit status of a run that Ctrl-C ended early (128 + SIGINT), after its report.
const INTERRUPTED: u8 = 130;

fn run_simulate(args: &SimulateArgs) -> Result<ExitCode, Error> {
    check_sharing(args)?;
    if let Some(spec) = &args.worker {
        return run_worker(args, spec);
    }
    let input = SimInput::load(
        args.limits.as_deref(),
        args.workload.as_deref(),
        args.provider.as_deref(),
    )?;
    // Before the run: a path that cannot be written fails now, not after the run.
    let outputs = Outputs::open(
        &[
            ("json", args.json.as_deref()),
            ("log", args.log.as_deref()),
            ("chart", args.chart.as_deref()),
        ],
        &[
            ("limits", args.limits.as_deref()),
            ("workload", args.workload.as_deref()),
            ("provider", args.provider.as_deref()),
        ],
    )?;
    let options = SimOptions {
        seed: args.seed,
        realtime: args.realtime,
        duration: args.duration,
        progress: args.realtime,
        store: args.redis.as_deref().map(StoreOptions::for_run),
        share: None,
    };
    let sim = if args.processes > 1 {
        fleet::simulate_processes(&input, &options, args.processes, &worker_args(args))
    } else {
        simulate(&input, &options)
    };
    let sim = match sim {
        Ok(sim) => sim,
        Err(e) => {
            outputs.discard();
            return Err(e);
        }
    };
    if let Some(file) = outputs.get("json") {
        file.write("the JSON report", |w| sim.report.write_json_to(w))?;
    }
    if let Some(file) = outputs.get("log") {
        file.write("the admission log", |w| {
            report::write_log_to(w, &sim.records)
        })?;
    }
    if let Some(file) = outputs.get("chart") {
        file.write("the chart", |w| chart::write_svg_to(w, &sim))?;
    }
    if args.quiet {
        println!("{}", sim.report.summary());
    } else {
        print!("{}", sim.report.table());
    }
    for file in outputs.files() {
        println!("wrote {} ({})", file.path().display(), file.flag());
    }
    Ok(if sim.report.interrupted {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print on stdout and succeed; a bad argument fails as every
            // other error does, with status 1 (not clap's 2).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match &cli.command {
        Command::Simulate(args) => run_simulate(args),
        Command::Check { file } => check::check(file).map(|text| {
            print!("{text}");
            ExitCode::SUCCESS
        }),
        Command::Audit { log, limits } => audit::audit(log, limits).map(|found| {
            print!("{}", found.table());
            if found.violations() > 0 {
                ExitCode::from(VIOLATED)
            } else {
                ExitCode::SUCCESS
            }
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tokengate: error: {e}");
            ExitCode::FAILURE
        }
    }
}

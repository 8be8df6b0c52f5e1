//! The `tokengate` command: `simulate` a workload against limits and a simulated provider, and
//! `check` a limits, provider or workload file. See `tokengate --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokengate_cli::output::Outputs;
use tokengate_cli::{audit, chart, check, report, simulate, workload, Error, SimInput, SimOptions};

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
    };
    let sim = match simulate(&input, &options) {
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

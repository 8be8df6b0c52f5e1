//! A workload file explained: the traffic it sends, and the command that runs it.

use std::fmt::Write as _;

use crate::bounds::go_duration;
use crate::report::thousands;
use crate::workload::{Process, Weighted, Workload};

/// `name (weight), ...`.
fn weighted(list: &[Weighted]) -> String {
    let names: Vec<String> = list
        .iter()
        .map(|w| format!("{} (weight {})", w.name, w.weight))
        .collect();
    names.join(", ")
}

/// The explanation of a valid workload.
pub(super) fn explain(w: &Workload) -> String {
    let mut out = String::new();
    let file = &w.places.file;
    let _ = writeln!(
        out,
        "{file}: valid workload file: the traffic of a simulation; run it with tokengate simulate --workload {file} (with --limits and --provider for limits of your own)."
    );
    let _ = writeln!(
        out,
        "  duration      {} (about {} requests: the arrival rate over the run, and the bursts)",
        go_duration(w.duration),
        thousands(w.expected_requests().round() as u64)
    );
    let _ = writeln!(
        out,
        "  arrivals      {} a minute, {}",
        w.arrivals.rate_per_minute,
        match w.arrivals.process {
            Process::Poisson => "Poisson (independent requests)",
            Process::Uniform => "evenly spaced",
        }
    );
    for b in &w.arrivals.bursts {
        let _ = writeln!(
            out,
            "  burst         {} requests at once at {}{}",
            thousands(b.requests),
            go_duration(b.at),
            b.every
                .map(|e| format!(", then every {}", go_duration(e)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "  client        {} requests outstanding at once; a request waiting {} gives up; {} retries after a 429",
        w.concurrency,
        w.max_wait
            .map_or("until the run ends".to_owned(), |d| format!("longer than {}", go_duration(d))),
        w.retries
    );
    let _ = writeln!(out, "  input tokens  {}", w.input_tokens);
    let _ = writeln!(
        out,
        "  output tokens {}, capped by max_tokens = {} (reserved at admission)",
        w.output_tokens, w.max_tokens
    );
    let _ = writeln!(
        out,
        "  latency       {} ms + {} ms per output token",
        w.latency.base_ms, w.latency.per_output_token_ms
    );
    let _ = writeln!(out, "  models        {}", weighted(&w.models));
    let _ = writeln!(out, "  tenants       {}", weighted(&w.tenants));
    if let Some(seed) = w.seed {
        let _ = writeln!(out, "  seed          {seed} (--seed overrides it)");
    }
    out
}

//! What one simulation can run, checked before any work starts: its duration fits the
//! simulator's clock, and the requests it would send stay under a cap. Both checks are
//! closed-form arithmetic over the workload's figures (O(number of bursts)), overflow-safe, so
//! an absurd workload is refused at once rather than after minutes of drawing or running.

use std::time::Duration;

use crate::error::Error;
use crate::report::thousands;
use crate::workload::{nanos, Workload};

/// At most this many requests in one simulation (the arrival rate's mean over the run plus
/// every burst): a bigger workload is refused before it runs.
pub const MAX_REQUESTS: u64 = 20_000_000;

/// The longest run. The simulator counts nanoseconds from the start in 64 bits (about 584
/// years); arrivals may take half of that, so that what follows the last arrival (waits,
/// calls, retries) stays on the clock too.
pub const MAX_DURATION: Duration = Duration::from_nanos(u64::MAX / 2);

/// Where the run's duration was set, for messages: `--duration`, or the workload file's
/// `duration` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationFrom {
    /// The `--duration` flag (or [`SimOptions::duration`](crate::SimOptions::duration)).
    Flag,
    /// The workload's own `duration`.
    Workload,
}

/// A duration as it is written on the command line and in workload files: `1000h`, `1h30m`,
/// `90s`, `250ms`.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3_600, secs / 60 % 60, secs % 60);
    let sub = d.subsec_nanos();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sub == 0 {
        if s > 0 || out.is_empty() {
            out.push_str(&format!("{s}s"));
        }
    } else if s == 0 && sub.is_multiple_of(1_000_000) {
        out.push_str(&format!("{}ms", sub / 1_000_000));
    } else if s == 0 && sub.is_multiple_of(1_000) {
        out.push_str(&format!("{}us", sub / 1_000));
    } else if s == 0 {
        out.push_str(&format!("{sub}ns"));
    } else {
        let frac = format!("{sub:09}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    }
    out
}

/// `secs` rounded down to whole hours, minutes, seconds or milliseconds, whichever is the
/// largest unit it holds: `564h` for 564 h 58 min.
fn rounded_down(secs: f64) -> String {
    let d = Duration::from_secs_f64(secs.max(0.0));
    let s = d.as_secs();
    let whole = match s {
        3_600.. => Duration::from_secs(s / 3_600 * 3_600),
        60.. => Duration::from_secs(s / 60 * 60),
        1.. => Duration::from_secs(s),
        0 => Duration::from_millis(d.subsec_millis().into()),
    };
    go_duration(whole)
}

/// A count of requests, readable however large (a rate of 1e300 a minute is valid TOML).
fn about(n: f64) -> String {
    if n < 1e18 {
        thousands(n.round() as u64)
    } else {
        format!("{n:.1e}")
    }
}

/// The number of times `burst` fires before `end` (ns), in closed form.
pub(crate) fn burst_count(at: Duration, every: Option<Duration>, end: u64) -> u64 {
    let first = nanos(at);
    if first >= end {
        return 0;
    }
    match every.map(nanos).filter(|&e| e > 0) {
        Some(e) => (end - first).div_ceil(e),
        None => 1,
    }
}

/// What a workload would send over its duration: the rate's mean, and the bursts' requests
/// (saturating).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// Requests from the arrival rate (its mean).
    pub from_rate: f64,
    /// Requests from the bursts, all told.
    pub from_bursts: u64,
    /// The burst sending the most, if any: its index and its requests all told.
    pub largest_burst: Option<(usize, u64)>,
}

impl Expected {
    /// The total.
    pub fn total(&self) -> f64 {
        self.from_rate + self.from_bursts as f64
    }
}

/// What `workload` would send, in O(number of bursts).
pub fn expected(workload: &Workload) -> Expected {
    let end = nanos(workload.duration);
    let from_rate = workload.arrivals.rate_per_minute * workload.duration.as_secs_f64() / 60.0;
    let mut from_bursts = 0u64;
    let mut largest_burst: Option<(usize, u64)> = None;
    for (i, b) in workload.arrivals.bursts.iter().enumerate() {
        let n = burst_count(b.at, b.every, end).saturating_mul(b.requests);
        from_bursts = from_bursts.saturating_add(n);
        if n > 0 && largest_burst.is_none_or(|(_, m)| n > m) {
            largest_burst = Some((i, n));
        }
    }
    Expected {
        from_rate,
        from_bursts,
        largest_burst,
    }
}

/// Refuses a workload whose duration is beyond the simulator's clock, or which would send
/// more than [`MAX_REQUESTS`], saying which limit it hit and how to stay under it.
///
/// # Errors
/// The limit hit, naming `--duration` or the workload file's field.
pub fn check(workload: &Workload, from: DurationFrom) -> Result<(), Error> {
    let places = &workload.places;
    let duration = go_duration(workload.duration);
    // How the message names the duration, and where to change it.
    let (named, at) = match from {
        DurationFrom::Flag => (format!("--duration {duration}"), String::new()),
        DurationFrom::Workload => (
            duration.clone(),
            format!("{}: field `duration`: ", places.at(places.duration)),
        ),
    };
    let shorten = match from {
        DurationFrom::Flag => "--duration".to_owned(),
        DurationFrom::Workload => format!("`duration` ({})", places.at(places.duration)),
    };
    if workload.duration > MAX_DURATION {
        let hours = MAX_DURATION.as_secs() / 3_600;
        return Err(Error::new(format!(
            "{at}{named} is beyond the simulator's clock (at most {hours}h, about {} years): give a shorter {}",
            hours / 8_766,
            if from == DurationFrom::Flag { "--duration" } else { "duration" },
        )));
    }
    let e = expected(workload);
    let total = e.total();
    if total <= MAX_REQUESTS as f64 {
        return Ok(());
    }
    let rate = workload.arrivals.rate_per_minute;
    let how = match e.largest_burst {
        Some((i, n)) if n as f64 > e.from_rate => {
            let b = &workload.arrivals.bursts[i];
            let place = places.at(places.bursts.get(i).copied().unwrap_or_default());
            format!(
                "arrivals.bursts[{i}] ({place}) alone sends {} ({} at a time{}): lower its `requests`, give it a longer `every`, or shorten {shorten}",
                about(n as f64),
                thousands(b.requests),
                b.every
                    .map(|e| format!(", every {}", go_duration(e)))
                    .unwrap_or_default(),
            )
        }
        _ => {
            // The longest run at this rate, bursts aside.
            let secs = MAX_REQUESTS as f64 / rate * 60.0;
            let longest = if secs < MAX_DURATION.as_secs_f64() {
                format!(" to at most about {} at this rate", rounded_down(secs))
            } else {
                String::new()
            };
            format!(
                "shorten {shorten}{longest}, or lower arrivals.rate_per_minute ({})",
                places.at(places.rate_per_minute)
            )
        }
    };
    let at = match from {
        DurationFrom::Flag => String::new(),
        DurationFrom::Workload => format!("{}: ", places.file),
    };
    Err(Error::new(format!(
        "{at}the workload would send about {} requests over {named} ({} at {rate} a minute, {} in bursts), above the cap of {} requests a simulation runs: {how}",
        about(total),
        about(e.from_rate),
        about(e.from_bursts as f64),
        thousands(MAX_REQUESTS),
    )))
}

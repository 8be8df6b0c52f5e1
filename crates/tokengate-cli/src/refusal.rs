//! Requests the client's limiter refused at once: they never waited in its queue, so they are
//! counted apart from those that gave up after waiting or were still waiting at the end, each
//! with its reason and the limiter's own words for the first of them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokengate::AcquireError;

/// Why the limiter refused a request at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The cost can never fit a limit (above its capacity, or admitted never).
    NeverFits,
    /// The wait it needs, known at once, is longer than the workload's `max_wait`.
    WaitPastMaxWait,
    /// The wait it needs, known at once, goes past the end of the run.
    WaitPastEnd,
    /// The provider's pause (a 429's retry-after) outlasts `max_wait` or the run.
    Paused,
    /// Any other refusal.
    Other,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::NeverFits,
        Reason::WaitPastMaxWait,
        Reason::WaitPastEnd,
        Reason::Paused,
        Reason::Other,
    ];

    /// The reason of `error`, returned at once for a request whose deadline is `max_wait`
    /// after it arrived (`past_end`: the run ends first).
    pub fn of(error: &AcquireError, past_end: bool) -> Reason {
        match error {
            AcquireError::Exceeds { .. } | AcquireError::Overflow { .. } => Reason::NeverFits,
            AcquireError::Timeout { wait: Some(w), .. } if *w == Duration::MAX => Reason::NeverFits,
            AcquireError::Timeout { .. } | AcquireError::QueueTimeout { .. } if past_end => {
                Reason::WaitPastEnd
            }
            AcquireError::Timeout { .. } | AcquireError::QueueTimeout { .. } => {
                Reason::WaitPastMaxWait
            }
            AcquireError::Paused { .. } => Reason::Paused,
            _ => Reason::Other,
        }
    }

    /// Its stable name, in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NeverFits => "never_fits",
            Reason::WaitPastMaxWait => "wait_past_max_wait",
            Reason::WaitPastEnd => "wait_past_end",
            Reason::Paused => "paused",
            Reason::Other => "other",
        }
    }

    /// What it means, for the table.
    pub fn meaning(self) -> &'static str {
        match self {
            Reason::NeverFits => "the cost can never fit a limit",
            Reason::WaitPastMaxWait => "the wait needed was known at once to exceed max_wait",
            Reason::WaitPastEnd => "the wait needed was known at once to go past the run's end",
            Reason::Paused => "the provider's pause (a 429's retry-after) outlasted the time left",
            Reason::Other => "refused by the limiter",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

/// The refusals of a run, by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 5],
    /// The limiter's message for the first refusal of each reason.
    first: Mutex<[Option<String>; 5]>,
}

/// Refusals of one reason, in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refused {
    /// `never_fits`, `wait_past_max_wait`, `wait_past_end`, `paused` or `other`.
    pub reason: &'static str,
    /// Requests refused so.
    pub requests: u64,
    /// The limiter's message for the first of them.
    pub message: String,
}

impl Refusals {
    /// Counts one refusal.
    pub fn record(&self, reason: Reason, error: &AcquireError) {
        let i = reason.index();
        self.counts[i].fetch_add(1, Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first[i].get_or_insert_with(|| error.to_string());
    }

    /// Requests refused, all told.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Each reason with a refusal, in a fixed order.
    pub fn by_reason(&self) -> Vec<Refused> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        Reason::ALL
            .iter()
            .zip(&self.counts)
            .zip(first.iter())
            .filter_map(|((reason, count), message)| {
                let requests = count.load(Relaxed);
                (requests > 0).then(|| Refused {
                    reason: reason.name(),
                    requests,
                    message: message.clone().unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// The refusals of several runs (the processes of one), reason by reason in the fixed order,
/// each with the message of the first run that has it.
pub fn merge(runs: &[Vec<Refused>]) -> Vec<Refused> {
    Reason::ALL
        .iter()
        .filter_map(|reason| {
            let name = reason.name();
            let mut found = runs.iter().flatten().filter(|r| r.reason == name);
            let first = found.next()?;
            Some(Refused {
                reason: name,
                requests: first.requests + found.map(|r| r.requests).sum::<u64>(),
                message: first.message.clone(),
            })
        })
        .collect()
}

/// The stable name of the reason named `name`, if it is one.
pub fn reason_name(name: &str) -> Option<&'static str> {
    Reason::ALL.iter().map(|r| r.name()).find(|&n| n == name)
}

/// The meaning of a reason by its name, for the table.
pub fn meaning(name: &str) -> &'static str {
    Reason::ALL
        .iter()
        .find(|r| r.name() == name)
        .map_or("refused by the limiter", |r| r.meaning())
}

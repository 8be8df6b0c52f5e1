//! `tokengate audit LOG --limits FILE`: checks an admission log (`simulate --log`) against
//! every limit of a limits file (or a provider file), under both readings a provider may give
//! "N per period" ([`readings`]): the sliding window of the period, and the token bucket
//! refilled at N per period holding the limit's burst (the amount, for a limit without one).
//!
//! Each line counts on the budgets the file charges it to: its model's (or family's), its
//! tenant's and the `[account]`. Against a provider file, a line the provider refused (status
//! 429) counts on nothing, as the provider counted nothing; against a limits file, every line
//! counts, as the client's limiter admitted it.

mod log;
pub mod readings;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use tokengate::config::Config;
use tokengate::{Algorithm, Dimension, Limit, Policy};

use crate::check::{self, FileKind};
use crate::error::Error;
use crate::gate::{key_limits, KeyLimit};
use crate::provider::{self, ProviderSpec};
use crate::report::{algorithm_and_burst, fmt_duration, per_period, thousands};

pub use log::{Line, Log};
pub use readings::{Tightest, WorstWindow};

/// One limit of one budget, and what the log did against it.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The budget: `model gpt-4o`, `family gpt-4o-mini`, `tenant acme`, `account`.
    pub budget: String,
    /// The dimension.
    pub dimension: Dimension,
    /// The limit, as enforced (a provider's algorithm applied).
    pub limit: Limit,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// The bucket's capacity in the bucket reading: the limit's burst, else its amount.
    pub burst: u64,
    /// The most counted in any window of the period.
    pub window: WorstWindow,
    /// The admission that came closest to the bucket's level, if any counted.
    pub bucket: Option<Tightest>,
}

impl Finding {
    /// Whether a window held more than the amount.
    pub fn window_violated(&self) -> bool {
        self.window.sum > self.limit.amount()
    }

    /// Whether an admission found the bucket short.
    pub fn bucket_violated(&self) -> bool {
        self.bucket.is_some_and(|b| b.short > 0)
    }
}

/// What an audit found.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The log's name.
    pub log: String,
    /// The limits file's name.
    pub limits: String,
    /// Whether the limits are a provider's (its refusals then count on nothing).
    pub provider: bool,
    /// Lines read.
    pub lines: usize,
    /// Lines the provider refused, counted on nothing (provider files only).
    pub refused: usize,
    /// Models of the log the file does not cover, with their lines.
    pub uncovered: Vec<(String, usize)>,
    /// Every limit of every budget the log uses.
    pub findings: Vec<Finding>,
}

/// The limits to audit against: a limits file's, or a provider's as it enforces them.
struct Limits {
    config: Config,
    /// The provider's algorithm for limits that name none; `None` for a client's file.
    provider: Option<Algorithm>,
}

impl Limits {
    fn read(path: &Path) -> Result<Self, Error> {
        let text = crate::input::read_text(path, "limits file")?;
        let name = path.display().to_string();
        match check::kind(&text) {
            FileKind::Limits => Ok(Self {
                config: Config::from_toml_str(&text, &name)?,
                provider: None,
            }),
            FileKind::Provider => {
                let spec = ProviderSpec::from_toml_str(&text, &name)?;
                Ok(Self {
                    config: spec.config,
                    provider: Some(spec.algorithm),
                })
            }
            FileKind::Workload => Err(Error::new(format!(
                "{name}: this is a workload file: give --limits the limits file (or the provider file) the log was admitted under"
            ))),
        }
    }

    /// `policy`'s limits as they are enforced.
    fn enforced(&self, policy: &Policy, budget: &str) -> Result<Vec<KeyLimit>, Error> {
        let mut limits = key_limits(policy);
        if let Some(algorithm) = self.provider {
            for kl in &mut limits {
                kl.limit =
                    provider::effective(&kl.dimension, &kl.limit, algorithm).map_err(|m| {
                        Error::new(format!("{}: {budget}: {m}", self.config.source_name()))
                    })?;
            }
        }
        Ok(limits)
    }
}

/// A budget the log uses: its name, its policy, the lines that count on it.
struct Budget<'c> {
    name: String,
    policy: &'c Policy,
    lines: Vec<usize>,
}

/// Audits the admission log at `log` against the limits (or provider) file at `limits`.
///
/// # Errors
/// Either file cannot be read or is invalid: the message names the file, line and field.
pub fn audit(log: &Path, limits: &Path) -> Result<Audit, Error> {
    let file = Limits::read(limits)?;
    let config = &file.config;
    let all = [config.account()]
        .into_iter()
        .flatten()
        .chain(config.models().map(|(_, p)| p))
        .chain(config.families().map(|f| f.policy()))
        .chain(config.default_model())
        .chain(config.tenants().map(|(_, p)| p))
        .chain(config.default_tenant());
    let mut custom: Vec<String> = Vec::new();
    for policy in all {
        for (dimension, _) in policy.limits() {
            if let Dimension::Custom(name) = dimension {
                if !custom.iter().any(|c| **c == **name) {
                    custom.push(name.to_string());
                }
            }
        }
    }
    let read = log::read(log, &custom)?;
    let mut budgets: Vec<Budget<'_>> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut add = |name: String, policy, line: usize| {
        let i = *by_name.entry(name.clone()).or_insert_with(|| {
            budgets.push(Budget {
                name,
                policy,
                lines: Vec::new(),
            });
            budgets.len() - 1
        });
        budgets[i].lines.push(line);
    };
    let mut uncovered: Vec<(String, usize)> = Vec::new();
    let mut refused = 0;
    for (i, line) in read.lines.iter().enumerate() {
        if line.refused && file.provider.is_some() {
            refused += 1;
            continue;
        }
        if let Some(account) = config.account() {
            add("account".to_owned(), account, i);
        }
        if let Some(m) = line.model {
            let model = read.models[m].as_str();
            match config.model_policy(model) {
                Some((budget, policy)) => add(budget.to_string(), policy, i),
                None => match uncovered.iter_mut().find(|(name, _)| name == model) {
                    Some((_, n)) => *n += 1,
                    None => uncovered.push((model.to_owned(), 1)),
                },
            }
        }
        if let Some(t) = line.tenant {
            if let Some((name, policy)) = config.tenant_policy(&read.tenants[t]) {
                add(format!("tenant {name}"), policy, i);
            }
        }
    }
    // The account, the models' and families' budgets, then the tenants', each by name.
    budgets.sort_by_key(|b| {
        let rank = match b.name.split_once(' ') {
            None => 0,
            Some(("tenant", _)) => 2,
            Some(_) => 1,
        };
        (rank, b.name.clone())
    });
    let mut findings = Vec::new();
    for budget in &budgets {
        for kl in file.enforced(budget.policy, &budget.name)? {
            findings.push(finding(&budget.name, &kl, &read, &budget.lines, &custom));
        }
    }
    Ok(Audit {
        log: log.display().to_string(),
        limits: config.source_name().to_owned(),
        provider: file.provider.is_some(),
        lines: read.lines.len(),
        refused,
        uncovered,
        findings,
    })
}

/// What `lines` of `log` did against one limit.
fn finding(budget: &str, kl: &KeyLimit, log: &Log, lines: &[usize], custom: &[String]) -> Finding {
    let slot = match &kl.dimension {
        Dimension::Custom(name) => custom.iter().position(|c| **c == **name),
        _ => None,
    };
    let w = kl.weights;
    let points: Vec<(u64, u64)> = lines
        .iter()
        .map(|&i| {
            let l = &log.lines[i];
            let amount = match slot {
                Some(c) => l.custom[c],
                None => w
                    .requests
                    .saturating_mul(l.requests)
                    .saturating_add(w.input.saturating_mul(l.input))
                    .saturating_add(w.output.saturating_mul(l.output)),
            };
            (l.t, amount)
        })
        .collect();
    let (algorithm, burst) = algorithm_and_burst(&kl.limit);
    let amount = kl.limit.amount();
    let period = u64::try_from(kl.limit.period().as_nanos()).unwrap_or(u64::MAX);
    let burst = burst.unwrap_or(amount);
    Finding {
        budget: budget.to_owned(),
        dimension: kl.dimension.clone(),
        limit: kl.limit.clone(),
        algorithm,
        burst,
        window: readings::worst_window(&points, period),
        bucket: readings::tightest_bucket(&points, amount, period, burst),
    }
}

/// Seconds from the start, as the log writes them.
fn at(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// A number of units that may have a fraction.
fn units(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Audit {
    /// The limits violated under either reading, counted once for each reading.
    pub fn violations(&self) -> usize {
        self.findings
            .iter()
            .map(|f| usize::from(f.window_violated()) + usize::from(f.bucket_violated()))
            .sum()
    }

    /// The audit as the command prints it: every limit's worst window and tightest bucket
    /// admission, then the violations.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tokengate audit: {} ({} admissions) against {}{}",
            self.log,
            thousands(self.lines as u64),
            self.limits,
            if self.provider {
                format!(
                    " (a provider file: its limits as it enforces them; {} lines it refused with a 429 count on none)",
                    thousands(self.refused as u64)
                )
            } else {
                String::new()
            }
        );
        for (model, n) in &self.uncovered {
            let _ = writeln!(
                out,
                "note: {} lines for model {model:?}, which the file does not cover: counted on the account and tenant budgets only",
                thousands(*n as u64)
            );
        }
        for f in &self.findings {
            let amount = f.limit.amount();
            let period = f.limit.period();
            let _ = writeln!(
                out,
                "\n{} {} {} ({})",
                f.budget,
                f.dimension,
                per_period(amount, period),
                f.algorithm
            );
            let end = f
                .window
                .from
                .saturating_add(u64::try_from(period.as_nanos()).unwrap_or(u64::MAX));
            let _ = writeln!(
                out,
                "  window: worst {} in [{}, {}), {:.1}% of {}: {}",
                thousands(f.window.sum),
                at(f.window.from),
                at(end),
                100.0 * f.window.sum as f64 / amount as f64,
                thousands(amount),
                if f.window_violated() {
                    format!("VIOLATED by {}", thousands(f.window.sum - amount))
                } else {
                    "ok".to_owned()
                }
            );
            let rate = amount as f64 / period.as_secs_f64();
            let bucket = match &f.bucket {
                None => "nothing counted".to_owned(),
                Some(b) => format!(
                    "tightest: an admission of {} at {} needed {}{} and found {} (headroom {}): {}",
                    thousands(b.amount),
                    at(b.t),
                    thousands(b.needed),
                    if b.needed < b.amount {
                        " (a full bucket, into debt)"
                    } else {
                        ""
                    },
                    units(b.level),
                    units(b.headroom()),
                    if b.short > 0 {
                        format!(
                            "VIOLATED: {} admission{} found the bucket short",
                            thousands(b.short),
                            if b.short == 1 { "" } else { "s" }
                        )
                    } else {
                        "ok".to_owned()
                    }
                ),
            };
            let _ = writeln!(
                out,
                "  bucket: {} a second ({} per {}), burst {}: {bucket}",
                units(rate),
                thousands(amount),
                fmt_duration(period),
                thousands(f.burst),
            );
        }
        let violations = self.violations();
        let _ = writeln!(
            out,
            "\nviolations: {violations}{}",
            if violations == 0 {
                format!(" ({} limits held under both readings)", self.findings.len())
            } else {
                String::new()
            }
        );
        out
    }
}

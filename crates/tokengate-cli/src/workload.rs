//! The workload file: what traffic a simulation sends, and the seeded draws that make it.
//!
//! Its form, every key with a complete commented example, is in the crate's README (*The
//! workload file*); `tests/readme.rs` reads that example as written there, so that it stays
//! valid. The shape checked before the typed read is `FIELDS`.

use std::path::Path;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use toml::Spanned;

use crate::bounds::{self, DurationFrom};
use crate::duration;
use crate::error::{self, Error};
use crate::schema::{self, Field, Kind};

pub use crate::bounds::MAX_REQUESTS;

/// The most requests [`Workload::draw`] ever draws: above [`MAX_REQUESTS`] by a margin that a
/// workload under the cap never reaches (a Poisson count 450 standard deviations above its
/// mean), so it bounds memory without cutting a valid run short.
const MAX_DRAWN: u64 = MAX_REQUESTS + MAX_REQUESTS / 10;

/// A validated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// How long requests arrive.
    pub duration: Duration,
    /// The seed given in the file, if any.
    pub seed: Option<u64>,
    /// Requests the client has outstanding at once (waiting for admission or in a call); more
    /// wait for a slot, in arrival order.
    pub concurrency: u64,
    /// A request that has waited this long for admission gives up.
    pub max_wait: Option<Duration>,
    /// Attempts after a 429 before a request gives up.
    pub retries: u32,
    /// How requests arrive.
    pub arrivals: Arrivals,
    /// Prompt tokens of a request.
    pub input_tokens: Dist,
    /// Tokens the model produces (capped by `max_tokens`).
    pub output_tokens: Dist,
    /// Output tokens reserved at admission.
    pub max_tokens: u64,
    /// How long a call takes.
    pub latency: Latency,
    /// Models, picked by weight.
    pub models: Vec<Weighted>,
    /// Tenants, picked by weight.
    pub tenants: Vec<Weighted>,
    /// Where fields were written, for messages.
    pub(crate) places: Places,
}

/// Where some fields were written (`workload.toml:12`), for messages about them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Places {
    pub(crate) file: String,
    pub(crate) input_tokens: usize,
    pub(crate) max_tokens: usize,
    pub(crate) models: Vec<usize>,
    /// Line and column of `duration`, `arrivals.rate_per_minute` and each burst.
    pub(crate) duration: (usize, usize),
    pub(crate) rate_per_minute: (usize, usize),
    pub(crate) bursts: Vec<(usize, usize)>,
}

impl Places {
    /// `FILE:LINE:COL` of a field.
    pub(crate) fn at(&self, (line, column): (usize, usize)) -> String {
        format!("{}:{line}:{column}", self.file)
    }
}

/// How requests arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrivals {
    /// Mean requests per minute.
    pub rate_per_minute: f64,
    /// Poisson (exponential gaps) or evenly spaced.
    pub process: Process,
    /// Extra requests all at once.
    pub bursts: Vec<Burst>,
}

/// The arrival process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Exponentially distributed gaps: independent requests.
    Poisson,
    /// Evenly spaced.
    Uniform,
}

/// Requests that all arrive at one instant (and again every `every`, if given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// When, from the start.
    pub at: Duration,
    /// Repeats this often, if given.
    pub every: Option<Duration>,
    /// How many requests.
    pub requests: u64,
}

/// A distribution of whole numbers (token counts, milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    /// Always this value.
    Fixed(u64),
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest value.
        min: u64,
        /// Largest value.
        max: u64,
    },
    /// Log-normal with this median and shape `sigma`, rounded, within `1..=max`.
    LogNormal {
        /// The median.
        median: f64,
        /// The standard deviation of the logarithm (0.5: mild tail, 1.0: heavy tail).
        sigma: f64,
        /// Values above are cut to this.
        max: u64,
    },
}

impl Dist {
    /// The largest value it can draw.
    pub fn max(&self) -> u64 {
        match *self {
            Dist::Fixed(v) => v,
            Dist::Uniform { max, .. } | Dist::LogNormal { max, .. } => max,
        }
    }

    /// Draws a value.
    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        match *self {
            Dist::Fixed(v) => v,
            Dist::Uniform { min, max } => rng.random_range(min..=max),
            Dist::LogNormal { median, sigma, max } => {
                // Box-Muller: a standard normal from two uniforms in (0, 1].
                let u1 = 1.0 - rng.random::<f64>();
                let u2 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let v = (median.ln() + sigma * z).exp().round();
                (v as u64).clamp(1, max)
            }
        }
    }
}

impl std::fmt::Display for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dist::Fixed(v) => write!(f, "{v}"),
            Dist::Uniform { min, max } => write!(f, "uniform {min}..={max}"),
            Dist::LogNormal { median, sigma, max } => {
                write!(f, "lognormal median {median} sigma {sigma} max {max}")
            }
        }
    }
}

/// How long a call takes: `base_ms` plus `per_output_token_ms` for each output token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Milliseconds before the first token.
    pub base_ms: Dist,
    /// Milliseconds per output token.
    pub per_output_token_ms: f64,
}

/// A name with a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weighted {
    /// The model or tenant.
    pub name: String,
    /// Its relative share of requests.
    pub weight: u32,
}

/// One request of the workload, drawn before the simulation runs so that it does not depend
/// on the order in which tasks are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrives, in ns from the start.
    pub at: u64,
    /// Index into [`Workload::models`].
    pub model: usize,
    /// Index into [`Workload::tenants`].
    pub tenant: usize,
    /// Prompt tokens.
    pub input: u64,
    /// Output tokens the model will produce (at most `max_tokens`).
    pub output: u64,
    /// How long the call takes, in ns.
    pub latency: u64,
}

// ---- the file, as read ----

/// The file's shape, checked first: every key, its type, those required.
const FIELDS: &[Field] = &[
    Field::required("duration", Kind::Duration, "duration = \"1h\""),
    Field::optional("seed", Kind::Unsigned),
    Field::required("concurrency", Kind::Integer, "concurrency = 64"),
    Field::optional("max_wait", Kind::Duration),
    Field::optional("retries", Kind::Integer),
    Field::required("max_tokens", Kind::Integer, "max_tokens = 1024"),
    Field::required(
        "arrivals",
        Kind::Table(ARRIVALS),
        "[arrivals] rate_per_minute = 600",
    ),
    Field::required(
        "input_tokens",
        Kind::Table(DIST),
        "[input_tokens] kind = \"uniform\", min = 100, max = 2000",
    ),
    Field::required(
        "output_tokens",
        Kind::Table(DIST),
        "[output_tokens] kind = \"uniform\", min = 50, max = 600",
    ),
    Field::required(
        "latency",
        Kind::Table(LATENCY),
        "[latency] base_ms = { kind = \"fixed\", value = 300 }",
    ),
    Field::required(
        "models",
        Kind::ArrayOf(&Kind::Table(WEIGHTED)),
        "[[models]] name = \"gpt-4o\"",
    ),
    Field::optional("tenants", Kind::ArrayOf(&Kind::Table(WEIGHTED))),
];
const ARRIVALS: &[Field] = &[
    Field::required("rate_per_minute", Kind::Number, "rate_per_minute = 600"),
    Field::optional("process", Kind::String),
    Field::optional("bursts", Kind::ArrayOf(&Kind::Table(BURST))),
];
const BURST: &[Field] = &[
    Field::required("at", Kind::Duration, "at = \"20m\""),
    Field::optional("every", Kind::Duration),
    Field::required("requests", Kind::Integer, "requests = 300"),
];
const DIST: &[Field] = &[
    Field::required(
        "kind",
        Kind::String,
        "kind = \"fixed\", \"uniform\" or \"lognormal\"",
    ),
    Field::optional("value", Kind::Integer),
    Field::optional("min", Kind::Integer),
    Field::optional("max", Kind::Integer),
    Field::optional("median", Kind::Number),
    Field::optional("sigma", Kind::Number),
];
const LATENCY: &[Field] = &[
    Field::required(
        "base_ms",
        Kind::Table(DIST),
        "base_ms = { kind = \"uniform\", min = 200, max = 800 }",
    ),
    Field::optional("per_output_token_ms", Kind::Number),
];
const WEIGHTED: &[Field] = &[
    Field::required("name", Kind::String, "name = \"gpt-4o\""),
    Field::optional("weight", Kind::Integer),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    duration: Spanned<String>,
    seed: Option<u64>,
    concurrency: Spanned<i64>,
    max_wait: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    max_tokens: Spanned<i64>,
    arrivals: ArrivalsFile,
    input_tokens: Spanned<DistFile>,
    output_tokens: Spanned<DistFile>,
    latency: LatencyFile,
    models: Spanned<Vec<Spanned<WeightedFile>>>,
    tenants: Option<Spanned<Vec<Spanned<WeightedFile>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrivalsFile {
    rate_per_minute: Spanned<f64>,
    process: Option<Spanned<String>>,
    #[serde(default)]
    bursts: Vec<BurstFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstFile {
    at: Spanned<String>,
    every: Option<Spanned<String>>,
    requests: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DistFile {
    kind: Spanned<String>,
    value: Option<Spanned<i64>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
    median: Option<Spanned<f64>>,
    sigma: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyFile {
    base_ms: Spanned<DistFile>,
    per_output_token_ms: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedFile {
    name: Spanned<String>,
    weight: Option<Spanned<i64>>,
}

/// Reads fields and says where a bad one is.
struct Reader<'t> {
    file: &'t str,
    text: &'t str,
}

impl Reader<'_> {
    fn error(&self, span: std::ops::Range<usize>, field: &str, message: &str) -> Error {
        let (line, column) = error::line_column(self.text, span.start);
        Error::new(format!(
            "{}:{line}:{column}: field `{field}`: {message}",
            self.file
        ))
    }

    fn line<T>(&self, s: &Spanned<T>) -> usize {
        self.position(s).0
    }

    fn position<T>(&self, s: &Spanned<T>) -> (usize, usize) {
        error::line_column(self.text, s.span().start)
    }

    fn duration(&self, s: &Spanned<String>, field: &str, zero_ok: bool) -> Result<Duration, Error> {
        match duration::parse(s.get_ref()) {
            Some(d) if zero_ok || !d.is_zero() => Ok(d),
            Some(_) => Err(self.error(s.span(), field, "must be longer than 0")),
            None => Err(self.error(
                s.span(),
                field,
                &format!("expected {}, found {:?}", duration::EXPECTED, s.get_ref()),
            )),
        }
    }

    fn whole(&self, s: &Spanned<i64>, field: &str, min: i64, what: &str) -> Result<u64, Error> {
        let v = *s.get_ref();
        if v < min {
            return Err(self.error(
                s.span(),
                field,
                &format!("expected a whole number of at least {min} ({what}), found {v}"),
            ));
        }
        Ok(v as u64)
    }

    fn positive(&self, s: &Spanned<f64>, field: &str, what: &str) -> Result<f64, Error> {
        let v = *s.get_ref();
        if !(v.is_finite() && v > 0.0) {
            return Err(self.error(
                s.span(),
                field,
                &format!("expected a positive number ({what}), found {v}"),
            ));
        }
        Ok(v)
    }

    fn dist(&self, d: &Spanned<DistFile>, field: &str) -> Result<Dist, Error> {
        let f = d.get_ref();
        let need = |v: &Option<Spanned<i64>>, name: &str| -> Result<u64, Error> {
            match v {
                Some(v) => self.whole(v, &format!("{field}.{name}"), 1, "tokens or milliseconds"),
                None => Err(self.error(
                    d.span(),
                    field,
                    &format!(
                        "a {:?} distribution needs `{name}`",
                        f.kind.get_ref().as_str()
                    ),
                )),
            }
        };
        let extra = |present: &[(&str, bool)]| -> Result<(), Error> {
            match present.iter().find(|(_, p)| *p) {
                Some((name, _)) => Err(self.error(
                    d.span(),
                    field,
                    &format!(
                        "`{name}` does not apply to a {:?} distribution",
                        f.kind.get_ref().as_str()
                    ),
                )),
                None => Ok(()),
            }
        };
        match f.kind.get_ref().as_str() {
            "fixed" => {
                extra(&[
                    ("min", f.min.is_some()),
                    ("max", f.max.is_some()),
                    ("median", f.median.is_some()),
                    ("sigma", f.sigma.is_some()),
                ])?;
                Ok(Dist::Fixed(need(&f.value, "value")?))
            }
            "uniform" => {
                extra(&[
                    ("value", f.value.is_some()),
                    ("median", f.median.is_some()),
                    ("sigma", f.sigma.is_some()),
                ])?;
                let (min, max) = (need(&f.min, "min")?, need(&f.max, "max")?);
                if min > max {
                    return Err(self.error(
                        d.span(),
                        field,
                        &format!("min ({min}) is above max ({max})"),
                    ));
                }
                Ok(Dist::Uniform { min, max })
            }
            "lognormal" => {
                extra(&[("value", f.value.is_some()), ("min", f.min.is_some())])?;
                let median = match &f.median {
                    Some(m) => self.positive(m, &format!("{field}.median"), "the median")?,
                    None => {
                        return Err(self.error(
                            d.span(),
                            field,
                            "a \"lognormal\" distribution needs `median`",
                        ))
                    }
                };
                let sigma = match &f.sigma {
                    Some(s) => self.positive(
                        s,
                        &format!("{field}.sigma"),
                        "the spread of the logarithm, e.g. 0.7",
                    )?,
                    None => {
                        return Err(self.error(
                            d.span(),
                            field,
                            "a \"lognormal\" distribution needs `sigma`",
                        ))
                    }
                };
                let max = need(&f.max, "max")?;
                if median > max as f64 {
                    return Err(self.error(
                        d.span(),
                        field,
                        &format!("median ({median}) is above max ({max})"),
                    ));
                }
                Ok(Dist::LogNormal { median, sigma, max })
            }
            other => Err(self.error(
                f.kind.span(),
                &format!("{field}.kind"),
                &format!("expected \"fixed\", \"uniform\" or \"lognormal\", found {other:?}"),
            )),
        }
    }

    fn weighted(
        &self,
        list: &Spanned<Vec<Spanned<WeightedFile>>>,
        field: &str,
    ) -> Result<Vec<Weighted>, Error> {
        if list.get_ref().is_empty() {
            return Err(self.error(
                list.span(),
                field,
                "give at least one entry, e.g. [[models]] name = \"gpt-4o\"",
            ));
        }
        let mut out: Vec<Weighted> = Vec::new();
        for (i, w) in list.get_ref().iter().enumerate() {
            let at = format!("{field}[{i}]");
            let name = w.get_ref().name.get_ref().trim().to_owned();
            if name.is_empty() {
                return Err(self.error(
                    w.get_ref().name.span(),
                    &format!("{at}.name"),
                    "must not be empty",
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(self.error(
                    w.get_ref().name.span(),
                    &format!("{at}.name"),
                    &format!(
                        "{name:?} is listed twice: give it one entry with the sum of the weights"
                    ),
                ));
            }
            let weight = match &w.get_ref().weight {
                Some(s) => {
                    let v = self.whole(s, &format!("{at}.weight"), 1, "a relative share")?;
                    u32::try_from(v).map_err(|_| {
                        self.error(
                            s.span(),
                            &format!("{at}.weight"),
                            "is too large (at most 4294967295)",
                        )
                    })?
                }
                None => 1,
            };
            out.push(Weighted { name, weight });
        }
        Ok(out)
    }
}

impl Workload {
    /// Reads a workload file.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, or a field is missing, unknown or invalid: the
    /// message names the file, line, column and field.
    pub fn from_file(path: &Path) -> Result<Workload, Error> {
        let file = path.display().to_string();
        let text = crate::input::read_text(path, "workload file")?;
        Self::from_toml_str(&text, &file)
    }

    /// Reads a workload from TOML text; `file` names it in errors.
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn from_toml_str(text: &str, file: &str) -> Result<Workload, Error> {
        schema::check(text, file, FIELDS)?;
        let raw: File = toml::from_str(text).map_err(|e| schema::syntax(file, text, &e))?;
        let r = Reader { file, text };
        let duration = r.duration(&raw.duration, "duration", false)?;
        let concurrency = r.whole(
            &raw.concurrency,
            "concurrency",
            1,
            "requests outstanding at once",
        )?;
        let max_wait = raw
            .max_wait
            .as_ref()
            .map(|s| r.duration(s, "max_wait", false))
            .transpose()?;
        let retries = match &raw.retries {
            Some(s) => {
                u32::try_from(r.whole(s, "retries", 0, "attempts after a 429")?).unwrap_or(u32::MAX)
            }
            None => 3,
        };
        let max_tokens = r.whole(&raw.max_tokens, "max_tokens", 1, "output tokens reserved")?;
        let rate_per_minute = r.positive(
            &raw.arrivals.rate_per_minute,
            "arrivals.rate_per_minute",
            "requests per minute",
        )?;
        let process = match &raw.arrivals.process {
            None => Process::Poisson,
            Some(s) => match s.get_ref().as_str() {
                "poisson" => Process::Poisson,
                "uniform" => Process::Uniform,
                other => {
                    return Err(r.error(
                        s.span(),
                        "arrivals.process",
                        &format!("expected \"poisson\" or \"uniform\", found {other:?}"),
                    ))
                }
            },
        };
        let mut bursts = Vec::new();
        for (i, b) in raw.arrivals.bursts.iter().enumerate() {
            let at = format!("arrivals.bursts[{i}]");
            bursts.push(Burst {
                at: r.duration(&b.at, &format!("{at}.at"), true)?,
                every: b
                    .every
                    .as_ref()
                    .map(|s| r.duration(s, &format!("{at}.every"), false))
                    .transpose()?,
                requests: r.whole(&b.requests, &format!("{at}.requests"), 1, "requests")?,
            });
        }
        let input_tokens = r.dist(&raw.input_tokens, "input_tokens")?;
        let output_tokens = r.dist(&raw.output_tokens, "output_tokens")?;
        let base_ms = r.dist(&raw.latency.base_ms, "latency.base_ms")?;
        let per_output_token_ms = match &raw.latency.per_output_token_ms {
            Some(s) if *s.get_ref() == 0.0 => 0.0,
            Some(s) => r.positive(
                s,
                "latency.per_output_token_ms",
                "milliseconds per output token",
            )?,
            None => 0.0,
        };
        let models = r.weighted(&raw.models, "models")?;
        let tenants = match &raw.tenants {
            Some(t) => r.weighted(t, "tenants")?,
            None => vec![Weighted {
                name: "default".to_owned(),
                weight: 1,
            }],
        };
        let workload = Workload {
            duration,
            seed: raw.seed,
            concurrency,
            max_wait,
            retries,
            arrivals: Arrivals {
                rate_per_minute,
                process,
                bursts,
            },
            input_tokens,
            output_tokens,
            max_tokens,
            latency: Latency {
                base_ms,
                per_output_token_ms,
            },
            models,
            tenants,
            places: Places {
                file: file.to_owned(),
                input_tokens: r.line(&raw.input_tokens),
                max_tokens: r.line(&raw.max_tokens),
                models: raw.models.get_ref().iter().map(|m| r.line(m)).collect(),
                duration: r.position(&raw.duration),
                rate_per_minute: r.position(&raw.arrivals.rate_per_minute),
                bursts: raw
                    .arrivals
                    .bursts
                    .iter()
                    .map(|b| r.position(&b.at))
                    .collect(),
            },
        };
        bounds::check(&workload, DurationFrom::Workload)?;
        Ok(workload)
    }

    /// The same workload over `duration` (`--duration`), checked as a workload file's is.
    ///
    /// # Errors
    /// When the run would be beyond the simulator's clock or above the request cap
    /// ([`bounds::check`]).
    pub fn with_duration(&self, duration: Duration) -> Result<Workload, Error> {
        let workload = Workload {
            duration,
            ..self.clone()
        };
        bounds::check(&workload, DurationFrom::Flag)?;
        Ok(workload)
    }

    /// Where a field was written, as `FILE:LINE`, for messages.
    pub(crate) fn place(&self, line: usize) -> String {
        format!("{}:{line}", self.places.file)
    }

    /// The longest a call of the workload can take: the largest `base_ms` plus
    /// `per_output_token_ms` for the most output tokens a call produces.
    pub fn longest_call(&self) -> Duration {
        let output = self.output_tokens.max().min(self.max_tokens) as f64;
        let ms = self.latency.base_ms.max() as f64 + self.latency.per_output_token_ms * output;
        Duration::try_from_secs_f64(ms / 1e3).unwrap_or(Duration::MAX)
    }

    /// The number of requests expected to arrive (mean rate plus bursts), in closed form.
    pub fn expected_requests(&self) -> f64 {
        bounds::expected(self).total()
    }

    /// Every burst instant before `end` (ns) with its size.
    fn bursts_until(&self, end: Duration) -> impl Iterator<Item = (u64, u64)> + '_ {
        let end = nanos(end);
        self.arrivals.bursts.iter().flat_map(move |b| {
            let first = nanos(b.at);
            let every = b.every.map(nanos).unwrap_or(0);
            let count = bounds::burst_count(b.at, b.every, end);
            (0..count).map(move |k| (first.saturating_add(k.saturating_mul(every)), b.requests))
        })
    }

    /// Draws every request of the run, in arrival order, from `seed`. A workload checked by
    /// [`bounds::check`] (as every workload read from a file, or given a duration by
    /// [`with_duration`](Self::with_duration), and every one [`simulate`](crate::simulate)
    /// runs) is drawn whole; any other stops after a bound above [`MAX_REQUESTS`].
    pub fn draw(&self, seed: u64) -> Vec<Arrival> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let end = nanos(self.duration);
        let gap = 60e9 / self.arrivals.rate_per_minute;
        let expected = self.expected_requests().min(MAX_DRAWN as f64);
        let mut times = Vec::with_capacity(expected as usize + 16);
        let mut t = 0.0f64;
        loop {
            let step = match self.arrivals.process {
                Process::Uniform => gap,
                Process::Poisson => -(1.0 - rng.random::<f64>()).ln() * gap,
            };
            // The first uniform arrival is at 0; Poisson ones after an exponential gap.
            if !(times.is_empty() && self.arrivals.process == Process::Uniform) {
                t += step;
            }
            if t >= end as f64 || times.len() as u64 >= MAX_DRAWN {
                break;
            }
            times.push(t as u64);
        }
        for (at, n) in self.bursts_until(self.duration) {
            let room = MAX_DRAWN.saturating_sub(times.len() as u64);
            if room == 0 {
                break;
            }
            times.extend(std::iter::repeat_n(at, n.min(room) as usize));
        }
        times.sort_unstable();
        let models = Picker::new(&self.models);
        let tenants = Picker::new(&self.tenants);
        times
            .into_iter()
            .map(|at| {
                let model = models.pick(&mut rng);
                let tenant = tenants.pick(&mut rng);
                let input = self.input_tokens.sample(&mut rng);
                let output = self.output_tokens.sample(&mut rng).min(self.max_tokens);
                let ms = self.latency.base_ms.sample(&mut rng) as f64
                    + self.latency.per_output_token_ms * output as f64;
                Arrival {
                    at,
                    model,
                    tenant,
                    input,
                    output,
                    latency: (ms * 1e6) as u64,
                }
            })
            .collect()
    }
}

/// Picks an index by weight.
struct Picker {
    cumulative: Vec<u64>,
}

impl Picker {
    fn new(list: &[Weighted]) -> Self {
        let mut sum = 0;
        Self {
            cumulative: list
                .iter()
                .map(|w| {
                    sum += u64::from(w.weight);
                    sum
                })
                .collect(),
        }
    }

    fn pick(&self, rng: &mut SmallRng) -> usize {
        match self.cumulative.last() {
            Some(&total) if self.cumulative.len() > 1 => {
                let x = rng.random_range(0..total);
                self.cumulative.partition_point(|&c| c <= x)
            }
            _ => 0,
        }
    }
}

/// Whole nanoseconds of a duration, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Reads a duration given on the command line (`--duration 30s`), written as in a limits file
/// ([`duration::parse`]).
///
/// # Errors
/// When it is not a duration, or is zero.
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    match duration::parse(s) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("expected a duration longer than 0, found {s:?}")),
        None => Err(format!("expected {}, found {s:?}", duration::EXPECTED)),
    }
}

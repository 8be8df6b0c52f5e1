//! `LimiterCore`: the crate's `Limiter` as the Python package sees it. The package's
//! `tokengate.Limiter` wraps it with context managers and keyword defaults.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokengate::config::Config;
use tokengate::feedback::ProviderReport;
use tokengate::{Cost, Denied, Limiter, Policy, SystemClock};

use crate::acquire::{self, Names};
use crate::acquisition::Acquisition;
use crate::permit::Permit;
use crate::recipe::{self, Limits, Recipe, Redis};
use crate::{errors, headers, runtime, stats};

/// A limiter: the limits, where they live, and the limiter of this process built from them.
#[derive(Debug)]
#[pyclass(frozen, module = "tokengate._tokengate")]
pub struct LimiterCore {
    /// How to build it again (in a forked child); a reload updates its limits.
    recipe: Mutex<Recipe>,
    built: Mutex<Built>,
}

/// The limiter of one process generation (see `runtime`).
#[derive(Debug)]
struct Built {
    generation: u64,
    limiter: Option<Limiter>,
}

impl Drop for Built {
    fn drop(&mut self) {
        if self.generation != runtime::generation() {
            // The parent's (its locks and connections belong to the parent): never touched.
            std::mem::forget(self.limiter.take());
        }
    }
}

impl LimiterCore {
    fn new(recipe: Recipe) -> PyResult<Self> {
        let limiter = recipe.build()?;
        Ok(Self {
            recipe: Mutex::new(recipe),
            built: Mutex::new(Built {
                generation: runtime::generation(),
                limiter: Some(limiter),
            }),
        })
    }

    fn recipe(&self) -> std::sync::MutexGuard<'_, Recipe> {
        self.recipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This process's limiter: the one built here, or (in a child forked since) a new one
    /// on the same Redis.
    ///
    /// # Errors
    /// `ForkError` in a forked child when the limits live in the parent's memory.
    pub(crate) fn limiter(&self) -> PyResult<Limiter> {
        let generation = runtime::generation();
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if built.generation != generation {
            let recipe = self.recipe().clone();
            if !recipe.has_store() {
                return Err(errors::forked());
            }
            let fresh = recipe.build()?;
            std::mem::forget(built.limiter.take());
            built.generation = generation;
            built.limiter = Some(fresh);
        }
        match &built.limiter {
            Some(limiter) => Ok(limiter.clone()),
            None => Err(errors::forked()),
        }
    }

    /// Whether the limits live in a store (every acquisition then asks it).
    fn has_store(&self) -> bool {
        self.recipe().has_store()
    }

    /// The permit if the request is admitted now without waiting; `None` if it must wait
    /// (or the limits live in a store, which only an acquisition asks).
    ///
    /// # Errors
    /// A request that can never be admitted; `ForkError` (see [`Self::limiter`]).
    pub(crate) fn try_now(
        &self,
        py: Python<'_>,
        model: Option<&str>,
        tenant: Option<&str>,
        cost: Cost,
    ) -> PyResult<Option<Permit>> {
        if self.has_store() {
            return Ok(None);
        }
        match try_now(&self.limiter()?, model, tenant, cost) {
            Ok(permit) => Ok(Some(Permit::new(Some(permit)))),
            Err(Denied::Never(error)) => Err(errors::acquire_error(py, &error)),
            Err(_) => Ok(None),
        }
    }
}

/// The cost of one request.
pub(crate) fn cost(requests: u64, input: u64, output: u64) -> Cost {
    Cost::request()
        .with_requests(requests)
        .input(input)
        .output(output)
}

/// A timeout in seconds, as a duration.
pub(crate) fn timeout(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err(format!(
                    "timeout is {s}: give seconds, 0 or more (None waits as long as it takes)"
                ))
            })
        })
        .transpose()
}

fn names(model: Option<String>, tenant: Option<String>) -> Names {
    Names { tenant, model }
}

/// A limit of `amount` per minute or per day, if given.
type Amount = Option<u64>;

/// What sets one limit on a policy.
type SetLimit = fn(tokengate::PolicyBuilder, u64) -> tokengate::PolicyBuilder;

#[pymethods]
impl LimiterCore {
    /// A limiter of the limits given (each per minute or per day), in this process, or shared
    /// through the Redis at `redis`.
    #[staticmethod]
    #[pyo3(signature = (*, rpm=None, rpd=None, tpm=None, tpd=None, input_tpm=None, input_tpd=None,
        output_tpm=None, output_tpd=None, max_in_flight=None, redis=None, namespace=None,
        on_store_error=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_limits(
        rpm: Amount,
        rpd: Amount,
        tpm: Amount,
        tpd: Amount,
        input_tpm: Amount,
        input_tpd: Amount,
        output_tpm: Amount,
        output_tpd: Amount,
        max_in_flight: Amount,
        redis: Option<String>,
        namespace: Option<String>,
        on_store_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut builder = Policy::builder();
        let set: [(Amount, SetLimit); 9] = [
            (rpm, tokengate::PolicyBuilder::requests_per_minute),
            (rpd, tokengate::PolicyBuilder::requests_per_day),
            (tpm, tokengate::PolicyBuilder::tokens_per_minute),
            (tpd, tokengate::PolicyBuilder::tokens_per_day),
            (input_tpm, tokengate::PolicyBuilder::input_tokens_per_minute),
            (input_tpd, tokengate::PolicyBuilder::input_tokens_per_day),
            (
                output_tpm,
                tokengate::PolicyBuilder::output_tokens_per_minute,
            ),
            (output_tpd, tokengate::PolicyBuilder::output_tokens_per_day),
            (max_in_flight, tokengate::PolicyBuilder::max_in_flight),
        ];
        for (amount, apply) in set {
            if let Some(amount) = amount {
                builder = apply(builder, amount);
            }
        }
        let policy = builder.build().map_err(|e| errors::build_error(&e))?;
        Self::new(Recipe {
            limits: Limits::Policy(policy),
            redis: redis.map(|url| Redis { url, namespace }),
            on_store_error: on_store_error.map(recipe::on_store_error).transpose()?,
        })
    }

    /// A limiter of the models, families and tenants of a limits file; on the file's
    /// `[store]`, or on the Redis at `redis`.
    #[staticmethod]
    #[pyo3(signature = (path, *, redis=None, namespace=None, on_store_error=None))]
    fn from_config(
        path: std::path::PathBuf,
        redis: Option<String>,
        namespace: Option<String>,
        on_store_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = Python::attach(|py| {
            Config::from_file(&path).map_err(|e| errors::config_error(py, &e))
        })?;
        Self::new(Recipe {
            limits: Limits::Config(Box::new(config)),
            redis: redis.map(|url| Redis { url, namespace }),
            on_store_error: on_store_error.map(recipe::on_store_error).transpose()?,
        })
    }

    /// A limiter of the limits file's text (TOML), named `source` in its errors (`<toml>`
    /// when not given).
    #[staticmethod]
    #[pyo3(signature = (text, *, source=None, redis=None, namespace=None, on_store_error=None))]
    fn from_toml(
        py: Python<'_>,
        text: &str,
        source: Option<&str>,
        redis: Option<String>,
        namespace: Option<String>,
        on_store_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = Config::from_toml_str(text, source.unwrap_or("<toml>"))
            .map_err(|e| errors::config_error(py, &e))?;
        Self::new(Recipe {
            limits: Limits::Config(Box::new(config)),
            redis: redis.map(|url| Redis { url, namespace }),
            on_store_error: on_store_error.map(recipe::on_store_error).transpose()?,
        })
    }

    /// Whether the limits are shared through a store (Redis).
    #[getter]
    fn shared(&self) -> bool {
        self.has_store()
    }

    /// Admits now or raises `RateLimitExceeded` (with the dimension, cost and wait). On a
    /// shared limiter it asks the store, with a timeout of 0.
    #[pyo3(signature = (*, model=None, tenant=None, input=0, output=0, requests=1))]
    fn try_acquire(
        &self,
        py: Python<'_>,
        model: Option<String>,
        tenant: Option<String>,
        input: u64,
        output: u64,
        requests: u64,
    ) -> PyResult<Permit> {
        let limiter = self.limiter()?;
        let cost = cost(requests, input, output);
        if self.has_store() {
            let _guard = runtime::get()?.enter();
            return acquire::acquire_blocking(
                py,
                limiter,
                names(model, tenant),
                cost,
                Some(Duration::ZERO),
            );
        }
        match try_now(&limiter, model.as_deref(), tenant.as_deref(), cost) {
            Ok(permit) => Ok(Permit::new(Some(permit))),
            Err(denied) => Err(errors::denied(py, &denied)),
        }
    }

    /// An asynchronous acquisition (see `Acquisition`): what `Limiter.acquire()` returns.
    #[pyo3(signature = (model, tenant, input, output, requests, timeout, /))]
    fn acquisition(
        slf: Bound<'_, Self>,
        model: Option<String>,
        tenant: Option<String>,
        input: u64,
        output: u64,
        requests: u64,
        timeout: Option<f64>,
    ) -> PyResult<Acquisition> {
        Acquisition::new(
            slf.unbind(),
            model,
            tenant,
            (requests, input, output),
            timeout,
        )
    }

    /// The permit, waited for by this thread with the GIL released, at most `timeout`
    /// seconds; Ctrl-C interrupts the wait (and gives the reservation back).
    #[pyo3(signature = (*, model=None, tenant=None, input=0, output=0, requests=1, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn acquire_blocking(
        &self,
        py: Python<'_>,
        model: Option<String>,
        tenant: Option<String>,
        input: u64,
        output: u64,
        requests: u64,
        timeout: Option<f64>,
    ) -> PyResult<Permit> {
        let cost = cost(requests, input, output);
        if let Some(permit) = self.try_now(py, model.as_deref(), tenant.as_deref(), cost.clone())? {
            return Ok(permit);
        }
        acquire::acquire_blocking(
            py,
            self.limiter()?,
            names(model, tenant),
            cost,
            self::timeout(timeout)?,
        )
    }

    /// Corrects the limiter with a reply's rate-limit headers (OpenAI's `x-ratelimit-*`,
    /// Anthropic's `anthropic-ratelimit-*`, `retry-after`); a 429 `status` also pauses the
    /// model for its `retry-after` and lowers the limits it refused. Returns the units taken
    /// off because the provider counted more than the limiter.
    #[pyo3(signature = (headers=None, *, status=200, model=None, tenant=None))]
    fn observe(
        &self,
        headers: Option<&Bound<'_, PyAny>>,
        status: u16,
        model: Option<String>,
        tenant: Option<String>,
    ) -> PyResult<u64> {
        let pairs = match headers {
            Some(h) if !h.is_none() => headers::pairs(h)?,
            _ => Vec::new(),
        };
        let report = ProviderReport::from_headers(pairs, SystemTime::now());
        let limiter = self.limiter()?;
        // Store calls (a pause shared by every process) run on this process's runtime.
        let _guard = runtime::get()?.enter();
        let key = limiter.key_of(tenant.as_deref(), model.as_deref());
        Ok(match (status == 429, model.is_none() && tenant.is_none()) {
            (true, true) => limiter.observe_throttled(&report),
            (true, false) => key.observe_throttled(&report),
            (false, true) => limiter.observe(&report),
            (false, false) => key.observe(&report),
        })
    }

    /// Pauses admissions for `seconds` (the model's budget, or the limiter's own).
    #[pyo3(signature = (seconds, *, model=None, tenant=None))]
    fn pause(&self, seconds: f64, model: Option<String>, tenant: Option<String>) -> PyResult<()> {
        let wait = timeout(Some(seconds))?.unwrap_or_default();
        let limiter = self.limiter()?;
        let _guard = runtime::get()?.enter();
        if model.is_none() && tenant.is_none() {
            limiter.pause(wait);
        } else {
            limiter
                .key_of(tenant.as_deref(), model.as_deref())
                .pause(wait);
        }
        Ok(())
    }

    /// Lifts a pause.
    #[pyo3(signature = (*, model=None, tenant=None))]
    fn resume(&self, model: Option<String>, tenant: Option<String>) -> PyResult<()> {
        let limiter = self.limiter()?;
        let _guard = runtime::get()?.enter();
        if model.is_none() && tenant.is_none() {
            limiter.resume();
        } else {
            limiter.key_of(tenant.as_deref(), model.as_deref()).resume();
        }
        Ok(())
    }

    /// The limiter's own budget's stats.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats::budget(py, &self.limiter()?.stats())
    }

    /// The stats of every budget a request of `model` for `tenant` is charged to.
    #[pyo3(signature = (*, model=None, tenant=None))]
    fn key_stats<'py>(
        &self,
        py: Python<'py>,
        model: Option<String>,
        tenant: Option<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let limiter = self.limiter()?;
        let key = limiter.key_of(tenant.as_deref(), model.as_deref());
        stats::budgets(py, &key.stats())
    }

    /// The stats of every budget the limiter holds.
    fn all_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        stats::budgets(py, &self.limiter()?.all_stats())
    }

    /// What the store holds now for every budget a request of `model` for `tenant` is
    /// charged to (the limiter's own budget when neither is given), as every process sharing
    /// it sees it: per limit `used` and `remaining`, `in_flight`, `paused_for` (seconds).
    /// Charges nothing. One call to Redis per budget, with the GIL released (the package's
    /// `shared_state_async` runs it in a thread).
    #[pyo3(signature = (*, model=None, tenant=None))]
    fn shared_state<'py>(
        &self,
        py: Python<'py>,
        model: Option<String>,
        tenant: Option<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let limiter = self.limiter()?;
        let runtime = runtime::get()?;
        // A key of neither falls under the limiter's own budget alone.
        let key = limiter.key_of(tenant.as_deref(), model.as_deref());
        let state = py.detach(|| runtime.block_on(key.shared_state()));
        match state {
            Ok(state) => stats::shared(py, &state),
            Err(e) => Err(errors::acquire_error(py, &e)),
        }
    }

    /// How the limiter has used its store (all zero without one).
    fn store_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats::store(py, &self.limiter()?.store_stats())
    }

    /// Puts the limits of a file in force, keeping what is counted. The file's `[store]`
    /// must be the one the limiter was built with.
    fn reload(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let config = Config::from_file(&path).map_err(|e| errors::config_error(py, &e))?;
        let limiter = self.limiter()?;
        let _guard = runtime::get()?.enter();
        limiter
            .try_reload(config.clone())
            .map_err(|e| errors::config_error(py, &e))?;
        self.recipe().limits = Limits::Config(Box::new(config));
        Ok(())
    }
}

/// `cost` admitted now on the budgets of `model` and `tenant`, or the denial.
fn try_now(
    limiter: &Limiter,
    model: Option<&str>,
    tenant: Option<&str>,
    cost: Cost,
) -> Result<tokengate::Permit<'static, SystemClock>, Denied> {
    if model.is_none() && tenant.is_none() {
        limiter.try_acquire(cost).map(tokengate::Permit::into_owned)
    } else {
        limiter
            .key_of(tenant, model)
            .try_acquire(cost)
            .map(tokengate::Permit::into_owned)
    }
}

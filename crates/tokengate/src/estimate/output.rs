//! Output reservations learned from the output each model really produced.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError, RwLock};

/// How to learn an output reservation per model from observed output: a high quantile of the
/// most recent observations, at least a floor and never above the request's `max_tokens`.
///
/// Defaults: the 99th percentile (`0.99`) of the last 512 observations, trusted from 50
/// observations on, with a floor of 32 tokens. Memory: 16 bytes per observation kept, so
/// about 8 KiB per model at the default window, whatever the number of observations.
///
/// The quantile is the nearest rank: with `n` observations sorted in ascending order, the
/// `ceil(quantile * n)`-th. Below 100 observations the 99th percentile is the largest one seen.
///
/// # Examples
/// ```
/// use tokengate::estimate::{Estimator, OutputLearning};
/// let estimator = Estimator::builder()
///     .learn_output(OutputLearning::new().quantile(0.95).window(200).min_observations(20))
///     .build()?;
/// # Ok::<(), tokengate::estimate::EstimatorError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputLearning {
    pub(crate) quantile: f64,
    pub(crate) window: usize,
    pub(crate) min_observations: usize,
    pub(crate) floor: u64,
}

impl Default for OutputLearning {
    fn default() -> Self {
        Self {
            quantile: 0.99,
            window: 512,
            min_observations: 50,
            floor: 32,
        }
    }
}

impl OutputLearning {
    /// The defaults: p99 of the last 512 observations, from 50 on, at least 32 tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// The quantile to reserve, in `(0, 1]`: `0.99` reserves enough for 99 requests in 100.
    pub fn quantile(mut self, quantile: f64) -> Self {
        self.quantile = quantile;
        self
    }

    /// How many of the most recent observations to keep per model (at least 1).
    pub fn window(mut self, observations: usize) -> Self {
        self.window = observations;
        self
    }

    /// How many observations a model needs before its quantile is used (from 1 to the window);
    /// until then the reservation is `max_tokens`.
    pub fn min_observations(mut self, observations: usize) -> Self {
        self.min_observations = observations;
        self
    }

    /// The least a learned reservation can be, in tokens; `max_tokens` still caps it.
    pub fn floor(mut self, tokens: u64) -> Self {
        self.floor = tokens;
        self
    }

    /// Checks every figure.
    pub(crate) fn validate(&self) -> Result<(), super::EstimatorError> {
        use super::EstimatorError;
        if !(self.quantile > 0.0 && self.quantile <= 1.0) {
            return Err(EstimatorError::BadQuantile {
                quantile: self.quantile,
            });
        }
        if self.window == 0 {
            return Err(EstimatorError::ZeroWindow);
        }
        if self.min_observations == 0 || self.min_observations > self.window {
            return Err(EstimatorError::BadMinObservations {
                min_observations: self.min_observations,
                window: self.window,
            });
        }
        Ok(())
    }
}

/// What has been learned of one model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputStats {
    /// Observations kept (at most the window).
    pub observations: usize,
    /// The configured quantile of the observations kept, before the floor and the cap.
    pub quantile_tokens: u64,
    /// Whether there are enough observations for the quantile to be used.
    pub trusted: bool,
}

/// The last `window` observations of one model, in arrival order and sorted.
#[derive(Debug)]
struct Window {
    recent: VecDeque<u64>,
    sorted: Vec<u64>,
}

impl Window {
    fn new(window: usize) -> Self {
        Self {
            recent: VecDeque::with_capacity(window),
            sorted: Vec::with_capacity(window),
        }
    }

    /// Adds an observation, forgetting the oldest when `window` are kept.
    fn push(&mut self, tokens: u64, window: usize) {
        if self.recent.len() >= window {
            if let Some(oldest) = self.recent.pop_front() {
                if let Ok(at) = self.sorted.binary_search(&oldest) {
                    self.sorted.remove(at);
                }
            }
        }
        self.recent.push_back(tokens);
        let at = self.sorted.partition_point(|&t| t <= tokens);
        self.sorted.insert(at, tokens);
    }

    /// The nearest-rank `quantile` of the observations kept; `None` when there are none.
    fn quantile(&self, quantile: f64) -> Option<u64> {
        let n = self.sorted.len();
        // n is at most the window, far below 2^52: exact in f64. The rank is in 1..=n.
        let rank = ((quantile * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.sorted.get(rank - 1).copied()
    }
}

/// Every model's window. Thread-safe: a read lock to find a model, its own lock to update it.
#[derive(Debug)]
pub(crate) struct Learner {
    pub(crate) config: OutputLearning,
    models: RwLock<HashMap<Box<str>, Mutex<Window>>>,
}

impl Learner {
    pub(crate) fn new(config: OutputLearning) -> Self {
        Self {
            config,
            models: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn observe(&self, model: &str, tokens: u64) {
        let window = self.config.window;
        {
            let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(w) = models.get(model) {
                w.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(tokens, window);
                return;
            }
        }
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        models
            .entry(model.into())
            .or_insert_with(|| Mutex::new(Window::new(window)))
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tokens, window);
    }

    pub(crate) fn stats(&self, model: &str) -> Option<OutputStats> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        let w = models
            .get(model)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let observations = w.sorted.len();
        Some(OutputStats {
            observations,
            quantile_tokens: w.quantile(self.config.quantile)?,
            trusted: observations >= self.config.min_observations,
        })
    }
}

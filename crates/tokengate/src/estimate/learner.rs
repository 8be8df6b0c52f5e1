//! What the estimator learns from: per model, a window of the most recent observations and a
//! high quantile of them. Output reservations ([`OutputLearning`](super::OutputLearning)) and
//! input scaling ([`InputLearning`](super::InputLearning)) learn this way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError, RwLock};

use super::EstimatorError;

/// How to learn: the quantile, the window, the observations needed before trusting it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Learning {
    pub(crate) quantile: f64,
    pub(crate) window: usize,
    pub(crate) min_observations: usize,
}

impl Learning {
    /// Checks every figure.
    pub(crate) fn validate(&self) -> Result<(), EstimatorError> {
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

/// The setters every learning configuration has (`quantile`, `window`, `min_observations`),
/// on a type with a `learning: Learning` field; `$what` names what it observes ("outputs").
macro_rules! learning_setters {
    ($what:literal) => {
        #[doc = concat!("The quantile of the ", $what, " to use, in `(0, 1]`: `0.99` covers 99 requests in 100.")]
        pub fn quantile(mut self, quantile: f64) -> Self {
            self.learning.quantile = quantile;
            self
        }

        #[doc = concat!("How many of the most recent ", $what, " to keep per model (at least 1).")]
        pub fn window(mut self, observations: usize) -> Self {
            self.learning.window = observations;
            self
        }

        #[doc = concat!("How many ", $what, " a model needs before the quantile is used (from 1 to the window).")]
        pub fn min_observations(mut self, observations: usize) -> Self {
            self.learning.min_observations = observations;
            self
        }
    };
}
pub(crate) use learning_setters;

/// What has been learned of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Learned {
    /// Observations kept (at most the window).
    pub(crate) observations: usize,
    /// The quantile of the observations kept.
    pub(crate) quantile: u64,
    /// Whether there are enough observations for the quantile to be used.
    pub(crate) trusted: bool,
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
    pub(crate) config: Learning,
    models: RwLock<HashMap<Box<str>, Mutex<Window>>>,
}

impl Learner {
    pub(crate) fn new(config: Learning) -> Self {
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

    pub(crate) fn stats(&self, model: &str) -> Option<Learned> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        let w = models
            .get(model)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let observations = w.sorted.len();
        Some(Learned {
            observations,
            quantile: w.quantile(self.config.quantile)?,
            trusted: observations >= self.config.min_observations,
        })
    }
}

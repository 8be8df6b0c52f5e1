//! Output reservations learned from the output each model really produced.

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

    /// The window of observations this learns from.
    pub(crate) fn learning(&self) -> super::learner::Learning {
        super::learner::Learning {
            quantile: self.quantile,
            window: self.window,
            min_observations: self.min_observations,
        }
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

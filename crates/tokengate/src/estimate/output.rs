//! Output reservations learned from the output each model really produced.

use super::learner::{learning_setters, Learning};

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
    pub(crate) learning: Learning,
    pub(crate) floor: u64,
}

impl Default for OutputLearning {
    fn default() -> Self {
        Self {
            learning: Learning {
                quantile: 0.99,
                window: 512,
                min_observations: 50,
            },
            floor: 32,
        }
    }
}

impl OutputLearning {
    /// The defaults: p99 of the last 512 observations, from 50 on, at least 32 tokens.
    pub fn new() -> Self {
        Self::default()
    }

    learning_setters!("outputs");

    /// The least a learned reservation can be, in tokens; `max_tokens` still caps it.
    pub fn floor(mut self, tokens: u64) -> Self {
        self.floor = tokens;
        self
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

//! Input estimates scaled by what the provider really counted: the heuristic errs high by a
//! factor that depends on the text and the provider's tokenizer, and the replies say by how
//! much.

use super::learner::{learning_setters, Learning};

/// The learned ratio's unit: ratios are kept in 1,024ths.
pub(crate) const RATIO_UNIT: u64 = 1_024;
/// The learned factor is kept within 1/8 and 8 of the heuristic's count.
const MIN_RATIO: u64 = RATIO_UNIT / 8;
const MAX_RATIO: u64 = RATIO_UNIT * 8;

/// How to scale heuristic input counts per model by what replies report: the input a reply
/// says the provider counted, over the heuristic's count for the same request, observed per
/// model; once trusted, a high quantile of that ratio multiplies the heuristic's counts.
/// Counts made with a model's own tokenizer are not scaled.
///
/// Off by default: the heuristic errs high for ordinary text (by about 1.3x against OpenAI's
/// tokenizers, 1.15x against what Anthropic counted in this project's runs), which costs
/// input quota but never a 429. Learning trades some of that margin for quota: at the 99th
/// percentile of the last 512 ratios (the defaults) the reservation still covers 99 requests
/// in 100 of the kind seen lately, and a request that used more is charged the difference when
/// it settles. A sudden change of prompts (base64, a new language) can be underestimated
/// until the window follows it. Scaling is bounded to 1/8-8x.
///
/// # Examples
/// ```
/// use tokengate::estimate::{ChatMessage, Estimator, InputLearning};
///
/// let estimator = Estimator::builder()
///     .learn_input(InputLearning::new().min_observations(10))
///     .build()?;
/// let messages = [ChatMessage::user("Summarise the attached report in three bullet points.")];
/// let before = estimator.count_chat("claude-sonnet-4-5", &messages).tokens;
/// for _ in 0..10 {
///     // The replies say the provider counted 80% of what the heuristic counted.
///     estimator.observe_input("claude-sonnet-4-5", before, before * 8 / 10);
/// }
/// let after = estimator.count_chat("claude-sonnet-4-5", &messages).tokens;
/// assert!(after < before && after >= before * 8 / 10);
/// assert!(estimator.input_stats("claude-sonnet-4-5").unwrap().trusted);
/// # Ok::<(), tokengate::estimate::EstimatorError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputLearning {
    pub(crate) learning: Learning,
}

impl Default for InputLearning {
    fn default() -> Self {
        Self {
            learning: Learning {
                quantile: 0.99,
                window: 512,
                min_observations: 50,
            },
        }
    }
}

impl InputLearning {
    /// The defaults: p99 of the last 512 ratios, from 50 on.
    pub fn new() -> Self {
        Self::default()
    }

    learning_setters!("ratios");
}

/// What has been learned of one model's input counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputStats {
    /// Ratios kept (at most the window).
    pub observations: usize,
    /// The factor heuristic counts are multiplied by once trusted: the configured quantile of
    /// the provider's counts over the heuristic's.
    pub factor: f64,
    /// Whether there are enough observations for the factor to be used.
    pub trusted: bool,
}

/// The ratio, in [`RATIO_UNIT`]ths, of `reported` tokens to `estimated` ones, within bounds.
pub(crate) fn ratio(estimated: u64, reported: u64) -> u64 {
    let ratio = u128::from(reported) * u128::from(RATIO_UNIT) / u128::from(estimated.max(1));
    u64::try_from(ratio)
        .unwrap_or(u64::MAX)
        .clamp(MIN_RATIO, MAX_RATIO)
}

/// `tokens` scaled by `ratio` (in [`RATIO_UNIT`]ths), rounded up.
pub(crate) fn scale(tokens: u64, ratio: u64) -> u64 {
    let scaled = (u128::from(tokens) * u128::from(ratio)).div_ceil(u128::from(RATIO_UNIT));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_bounded_and_scaling_rounds_up() {
        assert_eq!(ratio(1_000, 800), 819);
        assert_eq!(ratio(0, 5), 5 * RATIO_UNIT);
        assert_eq!(ratio(0, 100), MAX_RATIO);
        assert_eq!(ratio(1_000, 0), MIN_RATIO);
        assert_eq!(ratio(1, u64::MAX), MAX_RATIO);
        assert_eq!(scale(1_000, 819), 800);
        assert_eq!(scale(u64::MAX, MAX_RATIO), u64::MAX);
    }
}

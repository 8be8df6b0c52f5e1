//! What a limit counts.

use std::fmt;
use std::sync::Arc;

/// A dimension a provider limits. Names match the fields of an admission log
/// (`requests`, `input_tokens`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dimension {
    /// Calls: every request counts one.
    Requests,
    /// Prompt tokens, known before the call.
    InputTokens,
    /// Completion tokens, known after the call (reserve an estimate, then settle).
    OutputTokens,
    /// Combined tokens: `input * input_weight + output * output_weight` (AWS Bedrock counts
    /// output five times).
    Tokens,
    /// Requests running at once.
    InFlight,
    /// A dimension the user names (images, audio seconds, dollars, ...).
    Custom(Arc<str>),
}

impl Dimension {
    /// The dimension's name as it appears in logs and stats.
    pub fn name(&self) -> &str {
        match self {
            Dimension::Requests => "requests",
            Dimension::InputTokens => "input_tokens",
            Dimension::OutputTokens => "output_tokens",
            Dimension::Tokens => "tokens",
            Dimension::InFlight => "in_flight",
            Dimension::Custom(name) => name,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

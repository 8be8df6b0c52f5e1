//! The one error type of the command: a paragraph that says what is wrong, where, and what to do.

use std::fmt;

use tokengate::config::ConfigError;

/// A mistake in the command's input (a file that cannot be read, bad TOML, an impossible
/// workload) or a failure to write an output. Displayed as one paragraph, printed on stderr by
/// the binary, which then exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    /// `FILE:LINE:COL: field `x`: message`, as the library words it.
    fn from(e: ConfigError) -> Self {
        Self::new(e.to_string())
    }
}

/// The line and column (from 1) of a byte offset in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = 1 + before.matches('\n').count();
    let column = 1 + before
        .rsplit_once('\n')
        .map_or(before, |(_, last)| last)
        .chars()
        .count();
    (line, column)
}

//! Human-readable formatting shared by errors and stats.

use std::fmt;
use std::time::Duration;

/// A period written the way people say it: `minute`, `day`, `10s`, `250ms`.
pub(crate) struct Period(pub(crate) Duration);

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_secs() {
            _ if self.0.subsec_nanos() != 0 => write!(f, "{:?}", self.0),
            1 => f.write_str("second"),
            60 => f.write_str("minute"),
            3_600 => f.write_str("hour"),
            86_400 => f.write_str("day"),
            s => write!(f, "{s}s"),
        }
    }
}

/// What an error says of a wait that never ends by time ([`Duration::MAX`]).
pub(crate) const NEVER: &str =
    "never by time alone: the limit's state would pass the end of the clock (584 years from its origin)";

/// The advice of a denial: `retry in 250ms`, or never for [`Duration::MAX`].
pub(crate) struct Retry(pub(crate) Duration);

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Duration::MAX {
            write!(f, "admitted {NEVER}")
        } else {
            write!(f, "retry in {:?}", self.0)
        }
    }
}

//! What a store call can fail with.

use crate::error::AcquireError;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request can never be admitted (a cost above a limit's capacity); nothing was read.
    #[error(transparent)]
    Refused(#[from] AcquireError),
    /// The store holds `budget` under other limits than the caller's: two processes sharing a
    /// store disagree about a budget's limits.
    #[error(
        "budget {budget:?}: its state was made under other limits ({stored}) than this \
         process's ({given}); give every process sharing the store the same limits, or reset \
         the budget (`Store::reset`) after changing them everywhere"
    )]
    Mismatch {
        /// The budget's name.
        budget: String,
        /// The limits its state follows.
        stored: String,
        /// The limits the caller gave.
        given: String,
    },
    /// The store cannot hold these limits (the Redis store's numeric range).
    #[error("{0}")]
    Unsupported(String),
    /// The store did not answer: a connection, a timeout, a server error.
    #[error("the store failed: {0}")]
    Backend(String),
}

//! The loom model of tokengate's in-memory limiter lives in `tests/lane.rs`; this crate has no
//! code of its own. Run it with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p tokengate-loom --release --target-dir target/loom
//! ```

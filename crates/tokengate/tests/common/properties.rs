//! How the property tests run: how many cases, and where each keeps the cases that failed.

use proptest::test_runner::{Config, FileFailurePersistence};

/// `cases` cases, or `PROPTEST_CASES` when set; failures kept in
/// `proptest-regressions/<file>.txt` under the crate, and replayed first on every run.
pub fn config(cases: u32, file: &str) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let path = format!(
        "{}/proptest-regressions/{file}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    Config {
        cases,
        // (proptest keeps the path for the test's life: a few bytes a property, leaked)
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(Box::leak(
            path.into_boxed_str(),
        )))),
        ..Config::default()
    }
}

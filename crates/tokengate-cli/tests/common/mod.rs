//! What the tests of the `tokengate` binary share: running it with a time bound (a hang fails
//! the test instead of blocking CI), scratch directories, the shipped example's files, and
//! the check of a one-line error.

// Each test file uses its own share of these.
#![allow(dead_code)]

// The library's own: a redis-server of a test's own on a free loopback port.
#[path = "../../../tokengate/tests/common/redis_server.rs"]
pub(crate) mod redis_server;

// The library's own: the independent checker of admission logs, when it is there.
#[path = "../../../tokengate/tests/common/check_admissions.rs"]
pub(crate) mod check_admissions;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;

/// The bound on a run of the shipped example's hour (about 2 s in a debug build).
pub(crate) const RUN_BOUND: Duration = Duration::from_secs(30);

/// The bound on a command that fails before any work, or simulates a few minutes.
pub(crate) const QUICK_BOUND: Duration = Duration::from_secs(5);

/// The shipped example's files.
pub(crate) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The text of one of the shipped example's files.
pub(crate) fn example_file(name: &str) -> String {
    std::fs::read_to_string(examples().join(name)).expect("the example file")
}

/// A fresh directory for one test's files.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokengate-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Runs the binary, failing the test if it takes longer than `bound`.
pub(crate) fn tokengate_within(bound: Duration, args: &[&str]) -> Output {
    tokengate_with_env(bound, args, &[])
}

/// Runs the binary with `env` added to its environment, failing the test if it takes longer
/// than `bound`.
pub(crate) fn tokengate_with_env(bound: Duration, args: &[&str], env: &[(&str, &str)]) -> Output {
    let started = std::time::Instant::now();
    let out = Command::cargo_bin("tokengate")
        .expect("the binary is built")
        .args(args)
        .envs(env.iter().copied())
        .timeout(bound)
        .output();
    match out {
        Ok(out) => {
            // assert_cmd kills the child at the bound: fail on that as on an error.
            assert!(
                started.elapsed() < bound,
                "`tokengate {}` took longer than {bound:?}",
                args.join(" ")
            );
            out
        }
        Err(e) => panic!(
            "`tokengate {}` did not finish within {bound:?}: {e}",
            args.join(" ")
        ),
    }
}

/// Runs the binary within [`RUN_BOUND`].
pub(crate) fn tokengate(args: &[&str]) -> Output {
    tokengate_within(RUN_BOUND, args)
}

/// Runs the binary within [`QUICK_BOUND`].
pub(crate) fn quick(args: &[&str]) -> Output {
    tokengate_within(QUICK_BOUND, args)
}

/// Bytes as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failure within [`QUICK_BOUND`] with a one-paragraph message on stderr containing
/// `needles`; returns the message.
pub(crate) fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let out = quick(args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "succeeded: {}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one paragraph: {err}");
    assert!(err.starts_with("tokengate: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "no {n:?} in {err}");
    }
    err
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("a scratch file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// The JSON report a successful run wrote to `json` (the run failing is the test failing,
/// with its stderr).
pub(crate) fn report(out: &Output, json: &Path) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(json).expect("the run wrote its --json report");
    serde_json::from_str(&written).expect("the report is JSON")
}

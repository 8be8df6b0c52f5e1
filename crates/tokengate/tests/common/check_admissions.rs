//! Runs the independent checker of admission logs, `shared/tools/check-admissions`, when it is
//! there: named by `TOKENGATE_CHECK_ADMISSIONS` (as `.ci/run` sets it), or beside the work tree.
//! The CLI's tests include this file too (by path: `pub` is theirs to allow).
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The checker, if it can be found.
pub fn tool() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOKENGATE_CHECK_ADMISSIONS").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        dir.join("../../../shared/tools/check-admissions"),
        dir.join("../../shared/tools/check-admissions"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Checks the JSON-lines `log` with `args` (`--limit ...`, `--bucket ...`, `--weights ...`):
/// prints what the checker printed, asserts that it found no violation, and returns its
/// output. Without the checker, says so and returns `None`.
pub fn check(name: &str, log: &str, args: &[String]) -> Option<String> {
    let Some(tool) = tool() else {
        println!(
            "note: check-admissions not found: the admission log of {name} is not checked by it"
        );
        return None;
    };
    let path = std::env::temp_dir().join(format!(
        "tokengate-admissions-{name}-{}.jsonl",
        std::process::id()
    ));
    std::fs::write(&path, log).expect("write the admission log");
    let output = Command::new("python3")
        .arg(&tool)
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs check-admissions");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("check-admissions ({name}):\n{stdout}{stderr}");
    assert!(
        output.status.success() && stdout.contains("violations: 0"),
        "check-admissions {name} {args:?}:\n{stdout}{stderr}"
    );
    Some(stdout)
}

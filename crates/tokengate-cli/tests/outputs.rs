//! The output paths (`--json`, `--log`, `--chart`) are checked before the run: a path that
//! cannot be written fails in milliseconds, naming its flag and path, instead of after the
//! run, losing its report.

mod common;

use common::{example_file, fails_with, quick, scratch, text, write};

/// A day of the shipped example's traffic: about a minute of work in a debug build, far
/// beyond the time bound of a command that should fail at once.
const LONG: &[&str] = &["simulate", "--duration", "24h"];

#[test]
fn an_output_in_a_missing_directory_fails_before_the_run() {
    for flag in ["--json", "--log", "--chart"] {
        let path = "/nonexistent-tokengate-dir/out.file";
        let mut args = LONG.to_vec();
        args.extend([flag, path]);
        fails_with(
            &args,
            &[
                &format!("{flag} {path}: cannot create the file"),
                "the directory /nonexistent-tokengate-dir does not exist",
            ],
        );
    }
}

#[test]
fn a_directory_as_an_output_fails_before_the_run() {
    let dir = scratch("output-dir");
    let d = dir.to_str().unwrap();
    let mut args = LONG.to_vec();
    args.extend(["--json", d]);
    fails_with(
        &args,
        &[&format!("--json {d}: is a directory"), "give a file name"],
    );
}

#[test]
fn one_file_for_two_outputs_or_an_input_is_refused() {
    let dir = scratch("output-clash");
    let report = dir.join("r.json");
    let r = report.to_str().unwrap();
    let same = format!("{}/./r.json", dir.display());
    let mut args = LONG.to_vec();
    args.extend(["--json", r, "--log", &same]);
    fails_with(&args, &["--json", "--log", "are one file"]);

    let limits = write(&dir, "limits.toml", &example_file("limits.toml"));
    let mut args = LONG.to_vec();
    args.extend(["--limits", &limits, "--chart", &limits]);
    fails_with(&args, &[&format!("--chart {limits}: is the --limits file")]);
    // The input is untouched.
    assert_eq!(
        std::fs::read_to_string(&limits).unwrap(),
        example_file("limits.toml")
    );
}

#[test]
fn a_failed_run_leaves_outputs_as_they_were() {
    let dir = scratch("output-failed");
    let old = write(&dir, "old.json", "what was there\n");
    let new = dir.join("new.svg");
    // Refused before the run (above the request cap), after the outputs were opened.
    let out = quick(&[
        "simulate",
        "--duration",
        "1000h",
        "--json",
        &old,
        "--chart",
        new.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "what was there\n");
    assert!(!new.exists(), "{} was left behind", new.display());
}

#[test]
fn outputs_are_written_after_a_run() {
    let dir = scratch("output-written");
    let old = write(&dir, "r.json", &"x".repeat(100_000));
    let out = quick(&["simulate", "--duration", "1m", "--json", &old]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Replaced whole, not written over the start of what was there.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&old).unwrap()).expect("the report alone");
    assert_eq!(json["duration_secs"], 60.0);
    assert!(text(&out.stdout).contains(&format!("wrote {old} (json)")));
}

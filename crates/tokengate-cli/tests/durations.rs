//! The workload file and `--duration` read durations as a limits file does: `1d`, `2d12h`,
//! `90s`, `1m30s`.

mod common;

use common::{example_file, fails_with, quick, scratch, text, write};

/// The shipped workload at a trickle, with `duration`, `max_wait` and its burst in days.
fn trickle_in_days() -> String {
    let workload = example_file("workload.toml")
        .replace("duration = \"1h\"", "duration = \"2d12h\"")
        .replace("max_wait = \"60s\"", "max_wait = \"1d\"")
        .replace("rate_per_minute = 590", "rate_per_minute = 0.01")
        .replace("at = \"20m\"", "at = \"1d\", every = \"1d12h\"");
    assert!(workload.contains("2d12h") && workload.contains("every = \"1d12h\""));
    workload
}

#[test]
fn a_workload_file_takes_days() {
    let dir = scratch("durations-days");
    let w = write(&dir, "workload.toml", &trickle_in_days());
    let out = quick(&["simulate", "--workload", &w, "--seed", "3", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = quick(&["simulate", "--workload", &w, "--seed", "3"]);
    assert!(
        text(&out.stdout).contains("60 h of traffic"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_duration_flag_takes_what_a_limits_file_takes() {
    let dir = scratch("durations-flag");
    let w = write(&dir, "workload.toml", &trickle_in_days());
    for (flag, shown) in [("1d", "1 d of traffic"), ("1m30s", "90 s of traffic")] {
        let out = quick(&[
            "simulate",
            "--workload",
            &w,
            "--seed",
            "3",
            "--duration",
            flag,
        ]);
        assert!(out.status.success(), "{flag}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(shown),
            "{flag}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn a_bad_duration_says_what_a_duration_looks_like() {
    let dir = scratch("durations-bad");
    let w = write(
        &dir,
        "workload.toml",
        &example_file("workload.toml").replace("duration = \"1h\"", "duration = \"1w\""),
    );
    fails_with(
        &["simulate", "--workload", &w],
        &[
            &format!("{w}:5:12: field `duration`"),
            "\"2d12h\"",
            "found \"1w\"",
        ],
    );
}

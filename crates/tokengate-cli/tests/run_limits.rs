//! A simulation's limits (the simulator's clock, the request cap) are checked before any work,
//! on every path (`--duration` and the workload file alike), in milliseconds, with a message
//! that says which limit was hit and how to stay under it.

mod common;

use common::{example_file, fails_with, quick, scratch, text, write};

#[test]
fn a_duration_beyond_the_clock_is_refused_at_once() {
    fails_with(
        &["simulate", "--duration", "6000000h"],
        &[
            "--duration 6000000h is beyond the simulator's clock",
            "at most 2562047h",
            "give a shorter --duration",
        ],
    );
    let dir = scratch("clock");
    let w = write(
        &dir,
        "workload.toml",
        &example_file("workload.toml").replace("duration = \"1h\"", "duration = \"6000000h\""),
    );
    fails_with(
        &["simulate", "--workload", &w],
        &[
            &format!("{w}:5:12: field `duration`"),
            "6000000h is beyond the simulator's clock",
            "at most 2562047h",
        ],
    );
}

#[test]
fn the_longest_run_the_clock_holds_still_runs() {
    // A trickle over 292 years: a few hundred requests, in virtual time.
    let dir = scratch("longest");
    let w = write(
        &dir,
        "workload.toml",
        &example_file("workload.toml")
            .replace("rate_per_minute = 590", "rate_per_minute = 0.000001")
            .replace("bursts = [{ at = \"20m\", requests = 200 }]", ""),
    );
    let out = quick(&[
        "simulate",
        "--workload",
        &w,
        "--duration",
        "2562047h",
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2562047 h of traffic"));
}

#[test]
fn a_duration_flag_above_the_request_cap_is_refused() {
    // 590 a minute for 1000 h: 35.4 million requests. Arrivals used to stop silently at the
    // cap, about 565 h in, under a report of 1000 h.
    fails_with(
        &["simulate", "--duration", "1000h"],
        &[
            "the workload would send about 35,400,200 requests over --duration 1000h",
            "above the cap of 20,000,000",
            "shorten --duration to at most about 564h at this rate",
            "arrivals.rate_per_minute",
        ],
    );
}

#[test]
fn a_workload_duration_above_the_request_cap_is_refused() {
    let dir = scratch("cap");
    let w = write(
        &dir,
        "workload.toml",
        &example_file("workload.toml").replace("duration = \"1h\"", "duration = \"1000h\""),
    );
    fails_with(
        &["simulate", "--workload", &w],
        &[
            "about 35,400,200 requests",
            "above the cap of 20,000,000",
            &format!("shorten `duration` ({w}:5:12)"),
            &format!("arrivals.rate_per_minute ({w}:13:19)"),
        ],
    );
}

#[test]
fn a_burst_every_nanosecond_is_refused_in_closed_form() {
    // 3.6 million million instants in an hour: counted, never iterated.
    let dir = scratch("bursts");
    let w = write(
        &dir,
        "workload.toml",
        &example_file("workload.toml").replace(
            "bursts = [{ at = \"20m\", requests = 200 }]",
            "bursts = [{ at = \"0s\", every = \"1ns\", requests = 1 }]",
        ),
    );
    fails_with(
        &["simulate", "--workload", &w],
        &[
            "about 3,600,000,035,400 requests",
            "above the cap of 20,000,000",
            &format!("arrivals.bursts[0] ({w}:15:18) alone sends 3,600,000,000,000"),
            "every 1ns",
            "give it a longer `every`",
        ],
    );
    // A microsecond of them is a thousand requests; --duration 1m makes it 60,000 million.
    let w = write(
        &dir,
        "short.toml",
        &example_file("workload.toml")
            .replace("duration = \"1h\"", "duration = \"1us\"")
            .replace(
                "bursts = [{ at = \"20m\", requests = 200 }]",
                "bursts = [{ at = \"0s\", every = \"1ns\", requests = 1 }]",
            ),
    );
    fails_with(
        &["simulate", "--workload", &w, "--duration", "1m"],
        &[
            "about 60,000,000,590 requests over --duration 1m",
            "arrivals.bursts[0]",
            "or shorten --duration",
        ],
    );
}

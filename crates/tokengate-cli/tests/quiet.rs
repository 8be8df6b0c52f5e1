//! `-q` prints a one-line summary of every run, even one in which no limit's period fits (no
//! binding limit can be measured).

mod common;

use common::{quick, text};

fn summary(args: &[&str]) -> String {
    let out = quick(args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    stdout.trim_end().to_owned()
}

#[test]
fn quiet_summarises_a_run_shorter_than_every_limits_period() {
    // Every limit of the example is per minute or per day.
    let line = summary(&["simulate", "-q", "--duration", "30s", "--seed", "1"]);
    for needle in [
        "binding limit: none measured, no limit's period fits in the 30 s run (the shortest is 1 min)",
        "run --duration 1m or longer",
        "429s from the provider",
        "requests completed",
        "still waiting",
        "refused",
    ] {
        assert!(line.contains(needle), "no {needle:?} in {line:?}");
    }
}

#[test]
fn quiet_names_the_binding_limit_and_the_requests() {
    let line = summary(&["simulate", "--quiet", "--duration", "2m", "--seed", "1"]);
    assert!(line.starts_with("binding limit: gpt-4o"), "{line:?}");
    assert!(line.contains(" per minute at "), "{line:?}");
    assert!(line.contains("requests completed"), "{line:?}");
}

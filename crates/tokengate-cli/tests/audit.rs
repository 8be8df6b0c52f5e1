//! `tokengate audit LOG --limits FILE`: an admission log checked against every limit of a
//! limits file (or a provider file) under both readings of "N per period", the window and the
//! bucket; exit status 0 when every limit held, 2 on a violation, 1 on bad input.

mod common;

use common::{examples, fails_with, quick, scratch, text, tokengate, write};

/// A log line: `t` in seconds, a model, a tenant, and the tokens counted.
fn line(t: f64, model: &str, input: u64, output: u64) -> String {
    format!(
        "{{\"t\": {t:.9}, \"key\": \"{model}\", \"model\": \"{model}\", \"tenant\": \"acme\", \"status\": 200, \"requests\": 1, \"input_tokens\": {input}, \"output_tokens\": {output}}}\n"
    )
}

/// Runs `audit` on a log of `lines` against `limits`; returns the exit status and stdout.
fn audit(name: &str, lines: &[String], limits: &str) -> (Option<i32>, String) {
    let dir = scratch(name);
    let log = write(&dir, "log.jsonl", &lines.concat());
    let limits = write(&dir, "limits.toml", limits);
    let out = quick(&["audit", &log, "--limits", &limits]);
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    (out.status.code(), text(&out.stdout))
}

/// The block of the report about `limit` (its line and the two after it).
fn block<'s>(report: &'s str, limit: &str) -> Vec<&'s str> {
    let lines: Vec<&str> = report.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(limit))
        .unwrap_or_else(|| panic!("no {limit:?} in\n{report}"));
    lines[i..i + 3].to_vec()
}

#[test]
fn the_example_log_holds_the_providers_and_the_clients_limits() {
    let dir = scratch("audit-example");
    let log = dir.join("a.jsonl");
    let out = tokengate(&[
        "simulate",
        "-q",
        "--duration",
        "5m",
        "--log",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["provider.toml", "limits.toml"] {
        let limits = examples().join(file);
        let out = quick(&[
            "audit",
            log.to_str().unwrap(),
            "--limits",
            limits.to_str().unwrap(),
        ]);
        let s = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {s}{}",
            text(&out.stderr)
        );
        assert!(s.contains("violations: 0"), "{s}");
        let gpt4o = block(&s, "model gpt-4o tokens 100000 per minute");
        assert!(gpt4o[1].starts_with("  window: worst "), "{gpt4o:?}");
        assert!(
            gpt4o[2].starts_with("  bucket: 1666.667 a second"),
            "{gpt4o:?}"
        );
        // The example's largest requests go above the bucket's 1,666: into a full one.
        assert!(gpt4o[2].contains("burst 1,666"), "{gpt4o:?}");
    }
    let limits = examples().join("limits.toml");
    let out = quick(&[
        "audit",
        log.to_str().unwrap(),
        "--limits",
        limits.to_str().unwrap(),
    ]);
    let s = text(&out.stdout);
    for budget in [
        "family gpt-4o-mini requests",
        "tenant acme requests",
        "tenant globex requests",
    ] {
        assert!(s.contains(budget), "no {budget:?} in\n{s}");
    }
}

#[test]
fn a_log_under_both_readings_passes_even_into_debt() {
    // 600 tokens a minute, paced: a bucket of 10 refilled at 10 a second. A prompt of 100
    // goes into a full bucket, into debt; the next waits until the debt is paid.
    let limits = "margin = \"0s\"\n[models.m]\ntokens_per_minute = 600\n";
    let lines = [
        line(0.0, "m", 90, 10),
        line(10.0, "m", 5, 5),
        line(11.0, "m", 5, 5),
    ];
    let (code, s) = audit("audit-debt", &lines, limits);
    assert_eq!(code, Some(0), "{s}");
    let tokens = block(&s, "model m tokens 600 per minute");
    assert!(
        tokens[1].contains("worst 120 in [0.000 s, 60.000 s), 20.0% of 600: ok"),
        "{tokens:?}"
    );
    assert!(
        tokens[2].contains("(a full bucket, into debt)"),
        "{tokens:?}"
    );
    assert!(s.contains("violations: 0"), "{s}");
}

#[test]
fn a_log_above_the_window_is_a_violation() {
    // A token bucket holding the whole minute: 6 at once, then 3 more at 30 s, refilled in
    // time, is 9 in one minute against a limit of 6.
    let limits = "margin = \"0s\"\n[[models.m.limits]]\ndimension = \"requests\"\namount = 6\nper = \"1m\"\nalgorithm = \"token_bucket\"\nburst = 6\n";
    let mut lines: Vec<String> = (0..6).map(|_| line(0.0, "m", 1, 1)).collect();
    lines.extend((0..3).map(|_| line(30.0, "m", 1, 1)));
    let (code, s) = audit("audit-window", &lines, limits);
    assert_eq!(code, Some(2), "{s}");
    let requests = block(&s, "model m requests 6 per minute");
    assert!(
        requests[1].contains("worst 9 in [0.000 s, 60.000 s), 150.0% of 6: VIOLATED by 3"),
        "{requests:?}"
    );
    assert!(requests[2].ends_with(": ok"), "{requests:?}");
    assert!(s.contains("violations: 1"), "{s}");
}

#[test]
fn a_log_faster_than_the_bucket_is_a_violation() {
    // 60 a minute, paced (a bucket of 1, refilled every second): two requests half a second
    // apart are well under 60 in the minute, but the second finds the bucket half full.
    let limits = "margin = \"0s\"\n[models.m]\nrequests_per_minute = 60\n";
    // The third, at 2.5 s, finds the bucket refilled.
    let lines = [
        line(0.0, "m", 1, 1),
        line(0.5, "m", 1, 1),
        line(2.5, "m", 1, 1),
    ];
    let (code, s) = audit("audit-bucket", &lines, limits);
    assert_eq!(code, Some(2), "{s}");
    let requests = block(&s, "model m requests 60 per minute");
    assert!(requests[1].ends_with(": ok"), "{requests:?}");
    assert!(
        requests[2].contains("an admission of 1 at 0.500 s needed 1 and found 0.5 (headroom -0.5): VIOLATED: 1 admission found the bucket short"),
        "{requests:?}"
    );
}

#[test]
fn a_provider_file_counts_nothing_for_its_429s() {
    // The provider refused the second call: it counted nothing for it.
    let provider =
        "[provider]\nalgorithm = \"sliding_window_log\"\n[models.m]\nrequests_per_minute = 1\n";
    let refused = line(1.0, "m", 0, 0).replace("\"status\": 200", "\"status\": 429");
    let lines = [line(0.0, "m", 5, 5), refused.clone()];
    let (code, s) = audit("audit-provider", &lines, provider);
    assert_eq!(code, Some(0), "{s}");
    assert!(
        s.contains("1 lines it refused with a 429 count on none"),
        "{s}"
    );
    // Against a client's limits, the 429's admission counts: the limiter admitted it.
    let client = "[models.m]\nrequests_per_minute = 1\n";
    let (code, s) = audit("audit-client", &lines, client);
    assert_eq!(code, Some(2), "{s}");
}

#[test]
fn bad_input_is_named_and_exits_1() {
    let dir = scratch("audit-bad");
    let limits = write(
        &dir,
        "limits.toml",
        "[models.m]\nrequests_per_minute = 60\n",
    );
    let log = write(
        &dir,
        "log.jsonl",
        &(line(0.0, "m", 1, 1) + "{\"t\": oops}\n"),
    );
    fails_with(
        &["audit", &log, "--limits", &limits],
        &[&format!("{log}:2: not JSON")],
    );
    let log = write(&dir, "log.jsonl", "{\"model\": \"m\"}\n");
    fails_with(
        &["audit", &log, "--limits", &limits],
        &[&format!(
            "{log}:1: field `t`: expected the admission's time in seconds"
        )],
    );
    let log = write(&dir, "log.jsonl", "{\"t\": 1, \"requests\": -1}\n");
    fails_with(
        &["audit", &log, "--limits", &limits],
        &[&format!(
            "{log}:1: field `requests`: expected a whole number of at least 0, found -1"
        )],
    );
    let workload = examples().join("workload.toml");
    fails_with(
        &["audit", &log, "--limits", workload.to_str().unwrap()],
        &["this is a workload file"],
    );
    fails_with(
        &["audit", "/dev/zero", "--limits", &limits],
        &["/dev/zero: cannot read the admission log: it is a character device"],
    );
}

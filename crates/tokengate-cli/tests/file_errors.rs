//! Mistakes in a workload file or a provider file are reported as a limits file's are:
//! `FILE:LINE:COL: field `x`: message`, an unknown key with the keys allowed and the closest.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{example_file, fails_with, scratch, write};

/// The line (from 1) of the first line of `text` starting with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line {start:?}"))
        + 1
}

/// Runs `simulate --workload` on the example workload with `from` replaced by `to`, expecting
/// an error at the line of `to`'s first line, column `column`, with `needles`.
fn workload_fails(from: &str, to: &str, column: usize, needles: &[&str]) {
    // One directory a call: the tests run at once.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch(&format!(
        "workload-errors-{}",
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let text = example_file("workload.toml").replacen(from, to, 1);
    assert_ne!(
        text,
        example_file("workload.toml"),
        "{from:?} is in the example"
    );
    let w = write(&dir, "workload.toml", &text);
    let line = line_of(&text, to.lines().next().unwrap());
    let at = format!("{w}:{line}:{column}: ");
    let mut all = vec![at.as_str()];
    all.extend(needles);
    fails_with(&["simulate", "--workload", &w], &all);
}

#[test]
fn an_unknown_workload_key_names_its_field_and_the_closest_key() {
    workload_fails(
        "rate_per_minute = 590",
        "rate_per_minit = 590",
        1,
        &["field `arrivals.rate_per_minit`: unknown field `rate_per_minit`: expected one of rate_per_minute, process, bursts (did you mean `rate_per_minute`?)"],
    );
    workload_fails(
        "max_tokens = 1024",
        "max_token = 1024",
        1,
        &[
            "field `max_token`: unknown field `max_token`",
            "(did you mean `max_tokens`?)",
        ],
    );
    workload_fails(
        "name = \"gpt-4o-mini\"",
        "nmae = \"gpt-4o-mini\"",
        1,
        &[
            "field `models[0].nmae`",
            "expected one of name, weight (did you mean `name`?)",
        ],
    );
    workload_fails(
        "base_ms = { kind = \"uniform\", min = 200, max = 800 }",
        "base_ms = { kind = \"uniform\", min = 200, maxx = 800 }",
        42,
        &["field `latency.base_ms.maxx`", "(did you mean `max`?)"],
    );
}

#[test]
fn a_workload_value_of_the_wrong_type_names_its_field() {
    workload_fails(
        "concurrency = 256",
        "concurrency = \"256\"",
        15,
        &["field `concurrency`: expected a whole number, found a string: write 256 without quotes"],
    );
    workload_fails(
        "max_wait = \"60s\"",
        "max_wait = 60",
        12,
        &[
            "field `max_wait`: expected a duration",
            "a duration needs a unit and quotes",
        ],
    );
    workload_fails(
        "seed = 7",
        "seed = -7",
        8,
        &["field `seed`: expected a whole number of at least 0, found -7"],
    );
}

#[test]
fn a_missing_workload_key_is_named_with_an_example() {
    let dir = scratch("workload-missing");
    let text = example_file("workload.toml").replace("max_tokens = 1024", "");
    let w = write(&dir, "workload.toml", &text);
    fails_with(
        &["simulate", "--workload", &w],
        &[&format!(
            "{w}: field `max_tokens`: is missing: expected e.g. max_tokens = 1024"
        )],
    );
}

#[test]
fn provider_file_keys_name_their_field_and_the_closest_key() {
    let dir = scratch("provider-errors");
    let base = example_file("provider.toml");
    for (from, to, column, needles) in [
        (
            "algorithm = \"smooth_window\"",
            "algoritm = \"smooth_window\"",
            1,
            vec!["field `provider.algoritm`: unknown field `algoritm`: expected one of algorithm, output_tokens (did you mean `algorithm`?)"],
        ),
        (
            "algorithm = \"smooth_window\"",
            "algorithm = 5",
            13,
            vec!["field `provider.algorithm`: expected a string, found an integer"],
        ),
        (
            "\n[provider]\n",
            "\n[provder]\n",
            2,
            vec!["field `provder`: unknown field `provder`", "provider (did you mean `provider`?)"],
        ),
    ] {
        let text = base.replacen(from, to, 1);
        let p = write(&dir, "provider.toml", &text);
        let line = line_of(&text, to.trim());
        let at = format!("{p}:{line}:{column}: ");
        let mut all = vec![at.as_str()];
        all.extend(needles);
        fails_with(&["simulate", "--provider", &p], &all);
    }
}

#[test]
fn a_store_in_a_limits_or_provider_file_is_refused_by_simulate() {
    let dir = scratch("store-section");
    for (name, flag) in [("limits.toml", "--limits"), ("provider.toml", "--provider")] {
        let text = format!(
            "{}\n[store]\nurl = \"redis://127.0.0.1:6379/0\"\n",
            example_file(name)
        );
        let path = write(&dir, name, &text);
        let at = format!(
            "{path}:{}:2: field `store`: `tokengate simulate` does not use a limits file's [store]",
            line_of(&text, "[store]")
        );
        fails_with(&["simulate", flag, &path], &[&at, "--redis URL"]);
    }
}

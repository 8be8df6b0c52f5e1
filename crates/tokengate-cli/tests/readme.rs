//! The README's examples of a workload file and a provider file are complete and valid: each is
//! read exactly as written there, checked, and run together.

mod common;

use std::path::Path;

use common::{quick, scratch, text, write};
use tokengate_cli::provider::ProviderSpec;
use tokengate_cli::workload::Workload;

/// The first ```toml block after the heading `heading` of the CLI's README.
fn example(heading: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("the README");
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in the README"))
        .1;
    let block = section
        .split_once("```toml\n")
        .unwrap_or_else(|| panic!("no toml block under {heading:?}"))
        .1;
    block
        .split_once("\n```")
        .expect("the block ends")
        .0
        .to_owned()
        + "\n"
}

#[test]
fn the_workload_example_is_valid_and_uses_every_key() {
    let text = example("## The workload file");
    let w = Workload::from_toml_str(&text, "README workload").expect("a valid workload");
    // Every optional key is there too.
    assert_eq!(w.seed, Some(7));
    assert!(w.max_wait.is_some());
    assert_eq!(w.arrivals.bursts.len(), 2);
    assert!(w.arrivals.bursts.iter().any(|b| b.every.is_some()));
    assert_eq!((w.models.len(), w.tenants.len()), (2, 2));
    for key in [
        "duration",
        "seed",
        "concurrency",
        "max_wait",
        "retries",
        "max_tokens",
        "[arrivals]",
        "rate_per_minute",
        "process",
        "bursts",
        "[input_tokens]",
        "[output_tokens]",
        "[latency]",
        "base_ms",
        "per_output_token_ms",
        "[[models]]",
        "[[tenants]]",
        "weight",
    ] {
        assert!(text.contains(key), "the example has no {key}");
    }
}

#[test]
fn the_provider_example_is_valid_and_sets_both_provider_keys() {
    let text = example("## The provider file");
    let spec = ProviderSpec::from_toml_str(&text, "README provider").expect("a valid provider");
    assert!(spec.config.account().is_some());
    assert_eq!(spec.config.families().count(), 1);
    for key in [
        "[provider]",
        "algorithm",
        "output_tokens",
        "[account]",
        "output_weight",
    ] {
        assert!(text.contains(key), "the example has no {key}");
    }
}

#[test]
fn the_examples_check_and_run_together() {
    let dir = scratch("readme-examples");
    let w = write(&dir, "workload.toml", &example("## The workload file"));
    let p = write(&dir, "provider.toml", &example("## The provider file"));
    for (file, says) in [(&w, "valid workload file"), (&p, "valid provider file")] {
        let out = quick(&["check", file]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(says), "{}", text(&out.stdout));
    }
    let out = quick(&[
        "simulate",
        "--workload",
        &w,
        "--provider",
        &p,
        "--duration",
        "2m",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

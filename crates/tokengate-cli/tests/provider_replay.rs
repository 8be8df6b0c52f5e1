//! The provider's answers are a plain function of the arrival sequence: replaying a run's
//! calls (every attempt, 429s included, with when each accepted call ended) through a fresh
//! provider ([`Provider::replay`]) gives back every answer the live provider gave, and every
//! count it reported. This is what a run over several processes relies on: its provider is
//! replayed on the merged log, by the same model the live run asks.

use std::time::Duration;

use tokengate_cli::provider::{Call, Provider, ProviderSpec};
use tokengate_cli::sim::EXAMPLE_PROVIDER;
use tokengate_cli::{simulate, SimInput, SimOptions};

/// Replays `input`'s run of `seed` and compares, call by call and count by count.
fn replay_matches_the_live_run(input: &SimInput, seed: u64) -> usize {
    let options = SimOptions {
        seed: Some(seed),
        duration: Some(Duration::from_secs(300)),
        ..SimOptions::default()
    };
    let sim = simulate(input, &options).expect("it runs");
    let mut provider = Provider::new(input.provider.clone()).expect("a provider");
    for model in &input.workload.models {
        provider.budget_of(&model.name).expect("a budget");
    }
    let calls: Vec<Call> = sim
        .records
        .iter()
        .map(|r| Call {
            budget: provider.budget_of(&r.model).expect("a budget"),
            at: r.t,
            end: (r.status == 200 && r.ended).then_some(r.ended_at),
            input: r.reserved_input,
            max_tokens: r.reserved_output,
            output: r.output,
        })
        .collect();
    let accepted = provider.replay(&calls);
    for (r, accepted) in sim.records.iter().zip(&accepted) {
        assert_eq!(
            *accepted,
            r.status == 200,
            "the call at {} ns to {} (attempt {})",
            r.t,
            r.model,
            r.attempt
        );
    }
    let live = &sim.report.provider.keys;
    let budgets: Vec<_> = provider
        .budgets()
        .iter()
        .chain(provider.account())
        .collect();
    assert_eq!(live.len(), budgets.len());
    for (k, b) in live.iter().zip(budgets) {
        assert_eq!(k.key, b.name);
        assert_eq!(
            (k.admitted, k.throttled),
            (b.accepted, b.throttled),
            "{}",
            k.key
        );
        for (l, pl) in k.limits.iter().zip(&b.limits) {
            assert_eq!(
                (l.charged, l.refunded),
                (pl.charged, pl.refunded),
                "{} {}",
                k.key,
                l.limit
            );
        }
    }
    accepted.iter().filter(|a| !**a).count()
}

#[test]
fn replaying_the_examples_calls_gives_its_answers_back() {
    let input = SimInput::example().expect("the example");
    replay_matches_the_live_run(&input, 7);
}

#[test]
fn replaying_a_run_with_429s_gives_them_back() {
    // A provider stricter than the client, counting usage, with an account: 429s, retries,
    // refunds at the end of calls, and the account's budget all take part.
    let text = EXAMPLE_PROVIDER
        .replace("requests_per_minute = 150", "requests_per_minute = 40")
        .replace(
            "algorithm = \"smooth_window\"",
            "algorithm = \"fixed_window\"",
        )
        .replace(
            "output_tokens = \"max_tokens\"",
            "output_tokens = \"usage\"",
        )
        + "\n[account]\nrequests_per_minute = 450\n";
    let mut input = SimInput::example().expect("the example");
    input.provider = ProviderSpec::from_toml_str(&text, "strict provider").expect("valid");
    let throttled = replay_matches_the_live_run(&input, 3);
    assert!(throttled > 0, "the run has 429s to replay");
}

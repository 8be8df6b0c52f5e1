//! A workload whose largest request can never be admitted is refused before the run, whichever
//! tenant sends it; when only some tenants' budgets can never hold it, the run goes on (their
//! requests refused at once) whatever the tenants' order, and a note names them.

mod common;

use common::{example_file, fails_with, quick, scratch, text, write};

/// The example's limits with acme's and every other tenant's budgets given.
fn limits(acme: &str, others: &str) -> String {
    let limits = example_file("limits.toml")
        .replace(
            "[tenants.acme]\nrequests_per_minute = 600",
            &format!("[tenants.acme]\nrequests_per_minute = 600\n{acme}"),
        )
        .replace(
            "[defaults.tenant]\nrequests_per_minute = 300",
            &format!("[defaults.tenant]\nrequests_per_minute = 300\n{others}"),
        );
    assert!(limits.contains(acme) && limits.contains(others));
    limits
}

// 5,000 tokens a minute is below the workload's largest request: 8,000 input tokens and 1,024
// max_tokens.
const SMALL: &str = "tokens_per_minute = 5_000";
const LARGE: &str = "tokens_per_minute = 1_000_000";

#[test]
fn a_request_no_tenant_budget_can_hold_is_refused_up_front() {
    let dir = scratch("impossible-every-tenant");
    let l = write(&dir, "limits.toml", &limits(SMALL, SMALL));
    fails_with(
        &["simulate", "--limits", &l],
        &[
            "impossible workload",
            "from any tenant",
            "8000 input tokens",
            "1024 output tokens",
            "the client's limits can never admit it",
        ],
    );
}

#[test]
fn the_first_tenant_alone_unable_to_hold_it_does_not_stop_the_run() {
    // Before, the first tenant's route decided alone: acme (listed first) unable to hold the
    // largest request stopped the run, globex unable to hold it did not.
    let dir = scratch("impossible-first-tenant");
    for (acme, others, refused) in [(SMALL, LARGE, "\"acme\""), (LARGE, SMALL, "\"globex\"")] {
        let l = write(&dir, "limits.toml", &limits(acme, others));
        let out = quick(&["simulate", "--limits", &l, "--duration", "5m", "-q"]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "which the budgets of tenants {refused} can never admit"
            )),
            "{err}"
        );
    }
}

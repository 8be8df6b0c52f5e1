//! A workload whose largest request can never be admitted is refused before the run, whichever
//! of its tenants' budgets cannot hold it, not only the first tenant's.

mod common;

use common::{example_file, fails_with, scratch, write};

#[test]
fn a_request_no_tenant_budget_can_hold_is_refused_up_front() {
    let dir = scratch("impossible-tenant");
    // acme (the workload's first tenant) has no token limit; every other tenant may use 5,000
    // tokens a minute, below the workload's largest request (8,000 input + 1,024 max_tokens).
    let limits = example_file("limits.toml").replace(
        "[defaults.tenant]\nrequests_per_minute = 300",
        "[defaults.tenant]\nrequests_per_minute = 300\ntokens_per_minute = 5_000",
    );
    assert!(limits.contains("tokens_per_minute = 5_000"));
    let l = write(&dir, "limits.toml", &limits);
    fails_with(
        &["simulate", "--limits", &l],
        &[
            "impossible workload",
            "from tenant \"globex\"",
            "8000 input tokens",
            "1024 output tokens",
            "the client's limits can never admit it",
        ],
    );
}

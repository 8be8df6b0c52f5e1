//! The Redis user docs/redis.md tells to make (its ACL rule, read from there), and a round of
//! every kind of call the store makes, for the tests that run a store as that user.

use std::time::Duration;

use tokengate::store::{Answer, Ask, Refusal, Store, StoreBudget};
use tokengate::{Algorithm, Cost, Dimension, Limit, Policy, Usage};

/// The store's own documentation: the ACL rule is the one line of it that starts so.
pub const DOCS: &str = include_str!("../../../../docs/redis.md");
pub const RULE_START: &str = "ACL SETUSER tokengate ";

/// The documented rules, in order: each one's words after `ACL SETUSER`, the user's name
/// first. The first makes the user; the second adds what a cluster needs.
fn documented_rules() -> Vec<Vec<String>> {
    DOCS.lines()
        .filter(|l| l.starts_with(RULE_START))
        .map(|l| l.split_whitespace().skip(2).map(str::to_owned).collect())
        .collect()
}

/// The documented rule that makes the user: its words after `ACL SETUSER`, the user's name
/// first.
pub fn documented_rule() -> Vec<String> {
    let rules = documented_rules();
    assert_eq!(
        rules.len(),
        2,
        "docs/redis.md gives two lines starting with {RULE_START:?}: the rule, and what a \
         cluster adds"
    );
    assert!(
        rules[0].iter().any(|w| w == "reset"),
        "the first rule resets the user"
    );
    rules[0].clone()
}

/// The documented rule a cluster's nodes apply after [`documented_rule`].
pub fn documented_cluster_rule() -> Vec<String> {
    let rules = documented_rules();
    assert_eq!(
        rules.len(),
        2,
        "docs/redis.md gives the rule a cluster adds"
    );
    rules[1].clone()
}

/// `(user, password)` of a rule.
pub fn credentials(rule: &[String]) -> (String, String) {
    let password = rule
        .iter()
        .find_map(|w| w.strip_prefix('>'))
        .expect("the rule sets a password");
    (rule[0].clone(), password.to_owned())
}

/// `redis://USER:PASSWORD@127.0.0.1:PORT/0` (or `rediss://`).
pub fn user_url(scheme: &str, port: u16, rule: &[String]) -> String {
    let (user, password) = credentials(rule);
    format!("{scheme}://{user}:{password}@127.0.0.1:{port}/0")
}

/// A request limit, a token limit that keeps a log and an in-flight cap: calls on it reach
/// the state, the lease set and the log's list.
pub fn budgets() -> Vec<StoreBudget> {
    let policy = Policy::builder()
        .requests_per_minute(600)
        .limit(
            Dimension::InputTokens,
            Limit::new(1_000, Duration::from_secs(60)).algorithm(Algorithm::SlidingWindowLog),
        )
        .max_in_flight(2)
        .build()
        .unwrap();
    vec![StoreBudget::new("account", policy)]
}

/// Acquires, renews, settles with less usage, snapshots, pauses (then is refused as paused),
/// resets (then is fresh and admitted): every kind of call the store makes.
pub async fn every_call(store: &dyn Store) {
    let budgets = budgets();
    let cost = Cost::request().input(300);
    let ask = || Ask::new(&budgets, &cost).max_wait(Duration::from_secs(5));
    let reservation = store
        .acquire(ask())
        .await
        .expect("acquires")
        .reserved()
        .expect("admitted");
    store.renew(&reservation).await.expect("renews");
    let during = store.snapshot(&budgets[0]).await.expect("snapshots");
    assert_eq!(during.in_flight, 1);
    store
        .settle(&reservation, Some(&Usage::new().input(100)))
        .await
        .expect("settles");
    let after = store.snapshot(&budgets[0]).await.expect("snapshots");
    assert_eq!(after.in_flight, 0);
    assert!(
        after.limits.iter().any(|l| l.used == 100),
        "the log holds the 100 tokens used: {after:?}"
    );
    let left = store
        .pause(&budgets[0], Duration::from_secs(30), true)
        .await
        .expect("pauses");
    assert!(left > Duration::from_secs(29), "{left:?}");
    let paused = store.acquire(ask()).await.expect("answers");
    assert!(
        matches!(paused, Answer::Refused(Refusal::Paused { .. })),
        "{paused:?}"
    );
    store.reset("account").await.expect("resets");
    let fresh = store.snapshot(&budgets[0]).await.expect("snapshots");
    assert!(fresh.limits.iter().all(|l| l.used == 0), "{fresh:?}");
    assert_eq!(fresh.paused_for, Duration::ZERO);
    let again = store.acquire(ask()).await.expect("acquires");
    let again = again.reserved().expect("admitted after the reset");
    store.settle(&again, None).await.expect("settles");
    // Fresh again, for the next round.
    store.reset("account").await.expect("resets");
}

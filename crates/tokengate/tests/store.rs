//! The store seam: the in-memory store through the body of tests every store runs
//! (`tests/common/store_cases.rs`; the Redis store runs the same in `tests/redis_store.rs`).
//!
//! Run: `cargo test -p tokengate --test store`.

mod common;

use std::time::Duration;

use common::store_cases as cases;
use tokengate::store::MemoryStore;
use tokengate::ManualClock;

const LEASE: Duration = Duration::from_secs(30);

fn store() -> (MemoryStore<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    (MemoryStore::with_clock(clock.clone()).lease(LEASE), clock)
}

fn run<F: std::future::Future>(test: F) -> F::Output {
    common::bounded::block_on_within(0, Duration::from_secs(60), test)
}

#[test]
fn the_request_vectors_hold() {
    run(cases::replays_the_request_vectors(store, ""));
}

#[test]
fn reservations_are_exact_and_first_come_first_served() {
    let (store, clock) = store();
    run(cases::reservations_are_exact_and_first_come_first_served(
        &store, &clock, "",
    ));
}

#[test]
fn nothing_overtakes_a_reservation() {
    let (store, clock) = store();
    run(cases::nothing_overtakes_a_reservation(&store, &clock, ""));
}

#[test]
fn a_provider_count_lowers_a_budget() {
    let (store, clock) = store();
    run(cases::a_provider_count_lowers_a_budget(&store, &clock, ""));
}

#[test]
fn a_settlement_under_other_limits_charges_the_state_it_finds() {
    let (store, clock) = store();
    run(cases::a_settlement_under_other_limits_charges_the_state_it_finds(&store, &clock, ""));
}

#[test]
fn beyond_the_horizon_a_request_keeps_its_place_in_line() {
    let (store, clock) = store();
    run(cases::beyond_the_horizon_a_request_keeps_its_place_in_line(
        &store, &clock, "",
    ));
}

#[test]
fn a_forgotten_budget_refunds_nothing_to_its_successor() {
    let (store, clock) = store();
    run(cases::a_forgotten_budget_refunds_nothing_to_its_successor(
        &store, &clock, "",
    ));
}

#[test]
fn a_cancelled_reservation_gives_its_place_back() {
    let (store, clock) = store();
    run(cases::a_cancelled_reservation_gives_its_place_back(
        &store, &clock, "",
    ));
}

#[test]
fn a_settlement_refunds_nothing_a_later_reservation_took() {
    let (store, clock) = store();
    run(cases::a_settlement_refunds_nothing_a_later_reservation_took(&store, &clock, ""));
}

#[test]
fn in_flight_slots_are_leases() {
    let (store, clock) = store();
    run(cases::in_flight_slots_are_leases(&store, &clock, "", LEASE));
}

#[test]
fn other_limits_on_one_budget_are_a_mismatch() {
    let (store, clock) = store();
    run(cases::other_limits_on_one_budget_are_a_mismatch(
        &store, &clock, "",
    ));
}

#[test]
fn snapshots_pauses_and_resets() {
    let (store, clock) = store();
    run(cases::snapshots_pauses_and_resets(&store, &clock, ""));
}

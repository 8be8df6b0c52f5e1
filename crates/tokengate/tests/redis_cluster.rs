//! The Redis store on a real Redis Cluster: three primaries the test starts on free loopback
//! ports (`tests/common/redis_cluster.rs`), joined with `redis-cli --cluster create`.
//!
//! - The body of tests every store runs (`tests/common/store_cases.rs`), on a cluster store.
//! - Namespaces whose slots three different nodes own: each lives on its node alone, and works.
//! - A request charging several budgets of one namespace (caps, logs, buckets) is one call on
//!   one slot: no node ever answers `CROSSSLOT`.
//! - The function library is loaded on every primary, and again on the node that owns the
//!   namespace's slot after a `FUNCTION FLUSH` there, between calls and while calls are in
//!   flight.
//! - A store runs on the cluster as the Redis user docs/redis.md tells to make, with the
//!   rule it gives for a cluster.
//! - Limits hold exactly under concurrent load from many tasks, on two namespaces whose slots
//!   two different nodes own, in real time on Redis's clock.
//!
//! Run: `cargo test -p tokengate --features redis,redis-cluster,config,json --test redis_cluster`.
#![cfg(feature = "redis-cluster")]

#[path = "common/redis_cluster.rs"]
mod cluster;
mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{RedisCluster, NODES};
use common::freed_slot::time_to_a_freed_slot;
use common::logged_store::Logged;
use common::rng::between;
use common::store_cases as cases;
use common::windows::{assert_windows, Window};
use redis::cluster_async::ClusterConnection;
use tokengate::redis::RedisStore;
use tokengate::store::{Answer, Ask, Refusal, Store, StoreBudget};
use tokengate::{Algorithm, Cost, Dimension, Limit, ManualClock, Policy, Usage};

const PREFIX: &str = "tokengate-test";
const LEASE: Duration = Duration::from_secs(30);
/// Every test ends within this, or fails.
const TEST_BOUND: Duration = Duration::from_secs(60);

type ClusterStore = RedisStore<ClusterConnection>;

/// Runs `test` against a cluster of its own (stopped when it ends), within [`TEST_BOUND`].
fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce(Arc<RedisCluster>) -> F) {
    let cluster = Arc::new(RedisCluster::start());
    common::bounded::block_on_within(2, TEST_BOUND, test(cluster.clone()));
}

/// A store on the cluster, connected by [`RedisStore::connect_cluster`].
async fn connect(cluster: &RedisCluster) -> ClusterStore {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisStore::connect_cluster(&nodes)
        .await
        .expect("the store connects to the cluster")
}

/// The key of budget `budget`'s state in namespace `namespace` (names without a byte to
/// escape).
fn state_key(namespace: &str, budget: &str) -> String {
    format!("{PREFIX}:{{{namespace}}}:b:{budget}:s")
}

/// A namespace `n0`, `n1`, ... whose slot node `node` owns.
fn namespace_on(cluster: &RedisCluster, node: usize) -> String {
    (0..1_000)
        .map(|i| format!("n{i}"))
        .find(|ns| cluster.owner_of(&state_key(ns, "x")) == node)
        .unwrap_or_else(|| panic!("no namespace of the first 1,000 on node {node}"))
}

/// `n` requests a period of an hour, in fixed windows: nothing comes back during a test.
fn per_hour(n: u64) -> Policy {
    let limit = Limit::new(n, Duration::from_secs(3_600))
        .algorithm(Algorithm::FixedWindow)
        .margin(Duration::ZERO);
    Policy::builder()
        .limit(Dimension::Requests, limit)
        .build()
        .expect("a valid policy")
}

/// Whether a request is admitted now.
async fn admitted(store: &dyn Store, budgets: &[StoreBudget]) -> bool {
    let cost = Cost::request();
    store
        .acquire(Ask::new(budgets, &cost))
        .await
        .expect("the store answers")
        .reserved()
        .is_some()
}

// ---------------------------------------------------------------------------------------
// The body of tests every store runs.

#[test]
fn every_store_case_holds_on_a_cluster() {
    run(|cluster| async move {
        // A cluster connection of the test's own, shared by stores of fresh namespaces (which
        // land on all three nodes).
        let urls = cluster.urls();
        let connection = redis::cluster::ClusterClient::new(urls.iter().map(String::as_str))
            .expect("cluster URLs")
            .get_async_connection()
            .await
            .expect("connects to the cluster");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let store = || {
            let clock = ManualClock::new();
            let namespace = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let store = RedisStore::with_connection(connection.clone())
                .namespace(PREFIX, &namespace)
                .lease(LEASE)
                .with_manual_clock(clock.clone());
            (store, clock)
        };
        cases::replays_the_request_vectors(store, "").await;
        let (s, clock) = store();
        cases::reservations_are_exact_and_first_come_first_served(&s, &clock, "").await;
        let (s, clock) = store();
        cases::nothing_overtakes_a_reservation(&s, &clock, "").await;
        let (s, clock) = store();
        cases::a_forgotten_budget_refunds_nothing_to_its_successor(&s, &clock, "").await;
        let (s, clock) = store();
        cases::a_cancelled_reservation_gives_its_place_back(&s, &clock, "").await;
        let (s, clock) = store();
        cases::in_flight_slots_are_leases(&s, &clock, "", LEASE).await;
        let (s, clock) = store();
        cases::other_limits_on_one_budget_are_a_mismatch(&s, &clock, "").await;
        // A reset finds its keys on the node that owns the namespace's slot, whichever it is.
        for _ in 0..NODES * 2 {
            let (s, clock) = store();
            cases::snapshots_pauses_and_resets(&s, &clock, "").await;
        }
        // The stores used every node.
        for i in 0..NODES {
            assert!(
                cluster.command_stat(i, "cmdstat_fcall", "calls") > 0,
                "node {i} served no call"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Where namespaces live.

#[test]
fn namespaces_on_different_nodes_each_work_on_their_own() {
    run(|cluster| async move {
        let namespaces: Vec<String> = (0..NODES).map(|i| namespace_on(&cluster, i)).collect();
        let clock = ManualClock::new();
        let budgets = [StoreBudget::new("account", per_hour(3))];
        for (node, ns) in namespaces.iter().enumerate() {
            let store = connect(&cluster)
                .await
                .namespace(PREFIX, ns)
                .with_manual_clock(clock.clone());
            // The same budget name in each namespace: three budgets of their own.
            for _ in 0..3 {
                assert!(admitted(&store, &budgets).await, "namespace {ns}");
            }
            let cost = Cost::request();
            let refused = store.acquire(Ask::new(&budgets, &cost)).await.unwrap();
            assert!(
                matches!(refused.refusal(), Some(Refusal::Wait { budget: 0, .. })),
                "namespace {ns}: {refused:?}"
            );
            let key = state_key(ns, "account");
            assert_eq!(cluster.owner_of(&key), node);
            let exists: u64 = cluster.query(node, redis::cmd("EXISTS").arg(&key));
            assert_eq!(exists, 1, "{key} on node {node}");
        }
        // Each node holds its namespace's one key and nothing else, and served its calls.
        for (node, ns) in namespaces.iter().enumerate() {
            let size: u64 = cluster.query(node, &redis::cmd("DBSIZE"));
            assert_eq!(size, 1, "node {node} (namespace {ns})");
            let calls = cluster.command_stat(node, "cmdstat_fcall", "calls");
            assert!(calls >= 4, "node {node}: {calls} calls");
        }
    });
}

#[test]
fn a_request_on_several_budgets_stays_in_one_slot() {
    run(|cluster| async move {
        let ns = namespace_on(&cluster, 1);
        let owner = cluster.owner_of(&state_key(&ns, "x"));
        let store = connect(&cluster).await.namespace(PREFIX, &ns).lease(LEASE);
        let log = Limit::per_minute(600).algorithm(Algorithm::SlidingWindowLog);
        let bucket = Limit::per_minute(100_000).algorithm(Algorithm::TokenBucket);
        let budgets = [
            StoreBudget::new(
                "account",
                Policy::builder()
                    .requests_per_minute(600)
                    .input_tokens_per_minute(100_000)
                    .max_in_flight(4)
                    .build()
                    .unwrap(),
            ),
            StoreBudget::new(
                "model gpt-4o",
                Policy::builder()
                    .limit(Dimension::Requests, log)
                    .max_in_flight(2)
                    .build()
                    .unwrap(),
            ),
            StoreBudget::new(
                "tenant:42",
                Policy::builder()
                    .limit(Dimension::InputTokens, bucket)
                    .build()
                    .unwrap(),
            ),
        ];
        let cost = Cost::request().input(500);
        for _ in 0..3 {
            let reservation = store
                .acquire(Ask::new(&budgets, &cost).max_wait(Duration::from_secs(5)))
                .await
                .expect("no CROSSSLOT: one slot")
                .reserved()
                .expect("admitted");
            store.renew(&reservation).await.expect("renewed");
            store
                .settle(&reservation, Some(&Usage::new().input(300)))
                .await
                .expect("settled");
        }
        for b in &budgets {
            let snapshot = store.snapshot(b).await.expect("a snapshot");
            assert!(snapshot.limits.iter().any(|l| l.used > 0), "{snapshot:?}");
        }
        store
            .pause(&budgets[2], Duration::from_secs(1), true)
            .await
            .expect("paused");
        // While a request holds its slots, every key of the namespace is on its node, in one
        // slot: the states, the leases of the budgets with a cap.
        let held = store
            .acquire(Ask::new(&budgets, &cost).max_wait(Duration::from_secs(5)))
            .await
            .expect("no CROSSSLOT: one slot")
            .reserved()
            .expect("admitted");
        let mut connection = cluster.node(owner);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{PREFIX}:{{{ns}}}:*"))
            .query(&mut connection)
            .unwrap();
        for key in [
            "account:s",
            "account:l",
            "model%20gpt-4o:s",
            "model%20gpt-4o:l",
            "tenant%3A42:s",
        ] {
            let key = format!("{PREFIX}:{{{ns}}}:b:{key}");
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        let slot = cluster.slot(&state_key(&ns, "x"));
        for key in &keys {
            assert_eq!(cluster.slot(key), slot, "{key}");
        }
        store.settle(&held, None).await.expect("settled");
        // A reset removes one budget's keys (found on that node), and no other's.
        store.reset("model gpt-4o").await.expect("reset");
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{PREFIX}:{{{ns}}}:*"))
            .query(&mut connection)
            .unwrap();
        assert!(
            !left.iter().any(|k| k.contains(":b:model%20gpt-4o:")),
            "{left:?}"
        );
        assert!(left.contains(&state_key(&ns, "account")), "{left:?}");
        // No node ever answered CROSSSLOT, and the other nodes hold nothing.
        for i in 0..NODES {
            let errors = cluster.error_stats(i);
            assert!(!errors.contains("CROSSSLOT"), "node {i}: {errors}");
            if i != owner {
                let size: u64 = cluster.query(i, &redis::cmd("DBSIZE"));
                assert_eq!(size, 0, "node {i}");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// The function library.

#[test]
fn a_library_flushed_on_the_owning_node_is_loaded_again() {
    run(|cluster| async move {
        let ns = namespace_on(&cluster, 2);
        let owner = 2;
        let store = Arc::new(
            connect(&cluster)
                .await
                .namespace(PREFIX, &ns)
                .with_manual_clock(ManualClock::new()),
        );
        let budgets = Arc::new([StoreBudget::new("flush", per_hour(100))]);
        // A new cluster has no library; the first call loads it on every primary.
        for i in 0..NODES {
            assert_eq!(cluster.libraries(i), 0, "node {i}");
        }
        for _ in 0..5 {
            assert!(admitted(&*store, &*budgets).await);
        }
        for i in 0..NODES {
            assert_eq!(cluster.libraries(i), 1, "node {i}");
        }
        // Flushed on the node that owns the slot, between calls: the next call finds the
        // function missing there, loads the library and goes on, with the state kept.
        let flush = redis::cmd("FUNCTION").arg("FLUSH").clone();
        let _: () = cluster.query(owner, &flush);
        assert_eq!(cluster.libraries(owner), 0);
        let misses = cluster.command_stat(owner, "cmdstat_fcall", "failed_calls");
        let loads = cluster.command_stat(owner, "cmdstat_function|load", "calls");
        for _ in 0..5 {
            assert!(admitted(&*store, &*budgets).await);
        }
        assert_eq!(cluster.libraries(owner), 1);
        assert_eq!(
            cluster.command_stat(owner, "cmdstat_fcall", "failed_calls"),
            misses + 1
        );
        assert_eq!(
            cluster.command_stat(owner, "cmdstat_function|load", "calls"),
            loads + 1
        );
        let used = store.snapshot(&budgets[0]).await.unwrap().limits[0].used;
        assert_eq!(used, 10, "the state outlives the library");
        // Flushed while calls are in flight: every call is answered, each ran once.
        let mut tasks = tokio::task::JoinSet::new();
        let spawn = |tasks: &mut tokio::task::JoinSet<bool>, n: usize| {
            for _ in 0..n {
                let (store, budgets) = (store.clone(), budgets.clone());
                tasks.spawn(async move { admitted(&*store, &*budgets).await });
            }
        };
        spawn(&mut tasks, 50);
        tokio::task::yield_now().await;
        let _: () = cluster.query(owner, &flush);
        spawn(&mut tasks, 50);
        let mut count = 0;
        while let Some(done) = tasks.join_next().await {
            count += usize::from(done.expect("the task ends"));
        }
        assert_eq!(count, 90, "the limit's 100 less the 10 before");
        assert!(!admitted(&*store, &*budgets).await);
        assert_eq!(cluster.libraries(owner), 1);
    });
}

// ---------------------------------------------------------------------------------------
// Limits under concurrent load.

const REQUESTS_PER_SECOND: u64 = 40;
const TOKENS_PER_SECOND: u64 = 4_000;
const IN_FLIGHT: u64 = 6;
const TASKS: usize = 16;
const LOAD: Duration = Duration::from_secs(3);

fn load_policy() -> Policy {
    // No safety margin: the store's instants are checked exactly against the limits as
    // written.
    Policy::builder()
        .margin(Duration::ZERO)
        .limit(Dimension::Requests, Limit::per_second(REQUESTS_PER_SECOND))
        .limit(Dimension::InputTokens, Limit::per_second(TOKENS_PER_SECOND))
        .max_in_flight(IN_FLIGHT)
        .build()
        .expect("a valid policy")
}

/// `TASKS` tasks acquiring from `store` for [`LOAD`], each going at its instant, holding its
/// slot a few milliseconds and settling. Returns the most permits held at once, as counted
/// between an admission's answer and its settlement's call (within the slot's life).
async fn load(store: Arc<Logged<ClusterStore>>, seed: u64) -> usize {
    let budgets = Arc::new([StoreBudget::new("account", load_policy())]);
    let (held, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let until = Instant::now() + LOAD;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (store, budgets) = (store.clone(), budgets.clone());
        let (held, most) = (held.clone(), most.clone());
        tasks.spawn(async move {
            let mut rng = seed * 1_000 + task as u64 + 1;
            while Instant::now() < until {
                let cost = Cost::request().input(between(&mut rng, 50, 150));
                let ask = Ask::new(&*budgets, &cost).max_wait(Duration::from_secs(1));
                match store.acquire(ask).await.expect("the store answers") {
                    Answer::Reserved(r) => {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(r.wait()).await;
                        let hold = between(&mut rng, 1, 20);
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        store.settle(&r, None).await.expect("settled");
                    }
                    Answer::Refused(refusal) => {
                        let wait = refusal.wait().unwrap_or(Duration::from_millis(20));
                        tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task ends");
    }
    most.load(Ordering::SeqCst)
}

#[test]
fn limits_hold_exactly_under_concurrent_load() {
    run(|cluster| async move {
        // Two namespaces whose slots two different nodes own, loaded at once.
        let mut runs = Vec::new();
        for (seed, node) in [(1, 0), (2, 2)] {
            let ns = namespace_on(&cluster, node);
            let store = Arc::new(Logged::new(
                connect(&cluster).await.namespace(PREFIX, &ns).lease(LEASE),
            ));
            runs.push((ns, store.clone(), tokio::spawn(load(store, seed))));
        }
        let second = Duration::from_secs(1);
        let windows = [
            Window::new("requests", REQUESTS_PER_SECOND, second),
            Window::new("input_tokens", TOKENS_PER_SECOND, second),
        ];
        for (ns, store, running) in runs {
            let most_held = running.await.expect("the load ends");
            assert!(
                most_held as u64 <= IN_FLIGHT,
                "{ns}: {most_held} permits held at once"
            );
            assert_eq!(store.failures(), 0, "{ns}: failed calls");
            let admitted: Vec<(Duration, Cost)> = store
                .admitted()
                .into_iter()
                .map(|a| (a.at, a.cost))
                .collect();
            let most = assert_windows(
                &format!("cluster-{ns}"),
                &admitted,
                &windows,
                Duration::ZERO,
            );
            // The binding limit was used: the load pressed on it.
            let used = (most[0] as f64 / REQUESTS_PER_SECOND as f64)
                .max(most[1] as f64 / TOKENS_PER_SECOND as f64);
            println!(
                "{ns}: {} admissions, {} calls, most held {most_held}; most in a second: {} \
                 requests, {} input tokens",
                admitted.len(),
                store.calls(),
                most[0],
                most[1]
            );
            assert!(used >= 0.9, "{ns}: the binding limit used to {used:.2}");
        }
    });
}

/// A slot freed through one cluster store wakes a caller waiting for it through another, at
/// once: the settlement publishes it to the whole cluster, and the waiting store subscribed
/// through one of its nodes.
#[test]
fn a_freed_slot_wakes_a_waiter_through_another_cluster_store() {
    run(|cluster| async move {
        let policy = Policy::builder()
            .requests_per_minute(6_000_000)
            .max_in_flight(1)
            .build()
            .expect("a valid policy");
        let limiter = |store: ClusterStore| {
            Arc::new(
                tokengate::Limiter::new(policy.clone())
                    .with_store(store.namespace("tokengate-cluster", "wake")),
            )
        };
        let holder = limiter(connect(&cluster).await);
        let waiter = limiter(connect(&cluster).await);
        let late = time_to_a_freed_slot(&holder, &waiter).await;
        println!("cluster: the waiter had the slot {late:?} after it was freed");
        assert!(
            late < Duration::from_millis(200),
            "a freed slot waited {late:?}"
        );
    });
}

/// The documented user, made on every node (a cluster's users are each node's own), runs
/// every kind of call the store makes, on namespaces that each node owns.
#[test]
fn a_store_runs_on_a_cluster_as_the_documented_user() {
    run(|cluster| async move {
        let rule = common::redis_acl::documented_rule();
        let for_a_cluster = common::redis_acl::documented_cluster_rule();
        for i in 0..NODES {
            let () = cluster.query(i, redis::cmd("ACL").arg("SETUSER").arg(&rule));
            let () = cluster.query(i, redis::cmd("ACL").arg("SETUSER").arg(&for_a_cluster));
        }
        let urls: Vec<String> = (0..NODES)
            .map(|i| common::redis_acl::user_url("redis", cluster.port(i), &rule))
            .collect();
        let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
        for node in 0..NODES {
            let store = RedisStore::connect_cluster(&nodes)
                .await
                .expect("connects to the cluster as the user")
                .namespace("tokengate", &namespace_on(&cluster, node));
            common::redis_acl::every_call(&store).await;
        }
    });
}

/// The cluster's address of node `node` as `CLUSTER SLOTS` on node `on` gives it.
fn announced_port(cluster: &RedisCluster, on: usize, node: usize) -> Option<u16> {
    let ranges: Vec<redis::Value> = cluster.query(on, redis::cmd("CLUSTER").arg("SLOTS"));
    let id: String = cluster.query(node, redis::cmd("CLUSTER").arg("MYID"));
    ranges.into_iter().find_map(|range| {
        let redis::Value::Array(fields) = range else {
            return None;
        };
        let redis::Value::Array(primary) = fields.get(2)? else {
            return None;
        };
        let found: String = redis::from_redis_value(primary.get(2)?.clone()).ok()?;
        (found == id).then(|| redis::from_redis_value(primary[1].clone()).ok())?
    })
}

/// The path to the node that owns a namespace goes silent (a proxy in front of it, which the
/// cluster announces as the node's address, swallows everything), then forwards again, but
/// only on new connections: the one the store had is dead for good, open and unanswered. The
/// store gives it up at its deadline and answers again on a new one.
#[test]
fn a_cluster_store_gives_up_a_connection_that_stopped_answering() {
    run(|cluster| async move {
        let node = 0;
        let namespace = namespace_on(&cluster, node);
        let proxy = common::tcp_proxy::TcpProxy::start(cluster.port(node));
        // The node announces the proxy as its address, and the others learn it by gossip.
        let () = cluster.query(
            node,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("cluster-announce-port")
                .arg(proxy.port()),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while (0..NODES).any(|on| announced_port(&cluster, on, node) != Some(proxy.port())) {
            assert!(
                Instant::now() < deadline,
                "the proxy's port was not announced"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let urls = cluster.urls();
        let others: Vec<&str> = (0..NODES)
            .filter(|&i| i != node)
            .map(|i| urls[i].as_str())
            .collect();
        let store = RedisStore::connect_cluster(&others)
            .await
            .expect("the store connects to the cluster")
            .namespace(PREFIX, &namespace)
            .timeout(Duration::from_millis(300));
        let budgets = [StoreBudget::new("x", per_hour(1_000))];
        assert!(admitted(&store, &budgets).await);
        assert!(
            proxy.accepted() > 0,
            "the store reached the node through the proxy"
        );
        // Silent: a call fails at its deadline.
        proxy.blackhole();
        let cost = Cost::request();
        let started = Instant::now();
        let failed = store.acquire(Ask::new(&budgets, &cost)).await;
        assert!(failed.is_err(), "{failed:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Forwarding again, for new connections; the store's old one stays dead.
        proxy.forward();
        let healed = Instant::now();
        let mut last = None;
        while healed.elapsed() < Duration::from_secs(20) {
            match store.acquire(Ask::new(&budgets, &cost)).await {
                Ok(Answer::Reserved(_)) => {
                    println!(
                        "answered again {:?} after the path came back ({} dead connection(s))",
                        healed.elapsed(),
                        proxy.dead()
                    );
                    return;
                }
                other => last = Some(other),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the store still fails 20 s after the path came back: {last:?}");
    });
}

//! [`RedisStore`]: the [`Store`] whose state lives in Redis, decided by one script a call.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use super::batch::{Batcher, Leave, Undo};
use super::connection::{Lent, Link};
use super::keys::KeySpace;
use super::released::Releases;
use super::script::{self, AcquireReply, Budget, BudgetKeys, Compiled};
use crate::clock::{Clock, ManualClock};
use crate::cost::Usage;
use crate::store::{
    Answer, Ask, BudgetSnapshot, Place, Refusal, Reservation, Store, StoreBudget, StoreError,
    StoreFuture,
};

/// The store whose state lives in Redis: every process and machine that uses the same Redis,
/// prefix and namespace shares the same limits, exactly.
///
/// Every call is one call of a Redis function (`FCALL`; Redis 7.0 or later) that applies the
/// core's rules to all the budgets of a request at once, on Redis's own clock (`TIME`): no
/// client's clock is read, so machines whose clocks disagree still share one timeline.
/// Concurrent calls on one store share one connection, pipelined; acquisitions made while
/// another is in flight wait for it and go together, in one call that decides them one after
/// another as so many calls would, reading and writing each budget once (an ask must name
/// each budget once). The function's library is
/// named after its text (`tokengate_` and 8 hex digits), so that processes running different
/// versions of this crate use their own side by side; the store loads it by itself
/// (`FUNCTION LOAD`) on a new server, after a restart or a `FUNCTION FLUSH`.
///
/// Keys are `PREFIX:{NAMESPACE}:b:BUDGET:...`, names escaped; everything in one namespace
/// shares one hash tag, hence one Redis Cluster slot, so that a request's budgets change in one
/// atomic step. Every key expires when its state no longer matters.
///
/// # Examples
/// ```no_run
/// use tokengate::redis::RedisStore;
/// use tokengate::store::{Ask, Store, StoreBudget};
/// use tokengate::{Cost, Policy};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
/// let budgets = [StoreBudget::new("account", Policy::builder().requests_per_minute(500).build()?)];
/// let one = Cost::request();
/// let ask = Ask::new(&budgets, &one).max_wait(std::time::Duration::from_secs(30));
/// if let Some(reservation) = store.acquire(ask).await?.reserved() {
///     tokio::time::sleep(reservation.wait()).await;
///     // ... the call ...
///     store.settle(&reservation, None).await?;
/// }
/// # Ok(()) }
/// ```
pub struct RedisStore<C = ConnectionManager> {
    link: Link<C>,
    /// The client of the connections the store makes, for its subscription to `released`.
    client: Option<redis::Client>,
    /// The namespace's channel of freed in-flight slots, and what the store heard on it.
    released: String,
    releases: Arc<Releases>,
    keys: KeySpace,
    lease: Duration,
    timeout: Duration,
    /// Tests replay schedules on a manual clock, passed to the script instead of `TIME`.
    clock: Option<ManualClock>,
    lease_ids: LeaseIds,
    prepared: Prepared,
    /// Acquisitions on their way, sent together under load.
    batcher: Arc<Batcher>,
}

/// A budget's keys and what the calls need of its policy, worked out once per budget: a
/// call's share of the client's work is otherwise mostly these.
#[derive(Debug)]
struct Ready {
    /// The budget itself: while it is kept, its name and policy stay where they are, which is
    /// how they are found again.
    budget: StoreBudget,
    keys: BudgetKeys,
    compiled: Compiled,
}

/// The budgets made ready, by where their name and policy are (the same `StoreBudget`, or a
/// clone of it, is found again without reading either). At most `PREPARED` of them: beyond,
/// they are all made again.
#[derive(Debug, Default)]
struct Prepared(Mutex<HashMap<(usize, usize), Arc<Ready>>>);

const PREPARED: usize = 4096;

impl Prepared {
    fn get(&self, keys: &KeySpace, budget: &StoreBudget) -> Result<Arc<Ready>, StoreError> {
        let id = (
            budget.name().as_ptr() as usize,
            std::ptr::from_ref(budget.policy()) as usize,
        );
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ready) = lock().get(&id) {
            return Ok(ready.clone());
        }
        let compiled = Compiled::new(budget.policy())
            .map_err(|e| StoreError::Unsupported(format!("budget {:?}: {e}", budget.name())))?;
        let ready = Arc::new(Ready {
            keys: keys.budget(budget.name(), budget.policy()),
            budget: budget.clone(),
            compiled,
        });
        let mut map = lock();
        if map.len() >= PREPARED {
            map.clear();
        }
        map.insert(id, ready.clone());
        Ok(ready)
    }
}

impl<C> std::fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("lease", &self.lease)
            .field("timeout", &self.timeout)
            .field("manual_clock", &self.clock.is_some())
            .finish_non_exhaustive()
    }
}

/// Lease ids unique across processes: a stem drawn in each process, the process id, and a
/// counter. (Two leases with one id would be one member of the lease set: one slot for two
/// requests.) Processes forked from one parent share its memory, the counter and std's random
/// hasher keys included: the process id tells siblings apart, and the stem, drawn again in
/// each process from those keys, its id and the time, tells apart a process from an earlier
/// one that had its id.
/// (Atomics, not a lock: a lock held by another thread when the process forks stays held in
/// the child, for good. Threads that race to draw a stem draw different ones, and the ids
/// stay unique: each holds the process id and a count of them all.)
#[derive(Debug)]
struct LeaseIds {
    /// The process the stem was drawn in (0: none yet).
    drawn_in: AtomicU32,
    stem: AtomicU64,
    next: AtomicU64,
}

impl LeaseIds {
    fn new() -> Self {
        Self {
            drawn_in: AtomicU32::new(0),
            stem: AtomicU64::new(0),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        self.next_in(std::process::id())
    }

    /// The next id, in the process `pid`.
    fn next_in(&self, pid: u32) -> String {
        let stem = if self.drawn_in.load(Ordering::Acquire) == pid {
            self.stem.load(Ordering::Relaxed)
        } else {
            let drawn = Self::draw(pid);
            self.stem.store(drawn, Ordering::Relaxed);
            self.drawn_in.store(pid, Ordering::Release);
            drawn
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{stem:016x}-{pid}-{n}")
    }

    fn draw(pid: u32) -> u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(pid);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(now);
        hasher.finish()
    }
}

/// The default prefix of every key.
pub const DEFAULT_PREFIX: &str = "tokengate";

/// The default deadline of one call to Redis.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest deadline of one call to Redis: a day. (Deadlines are instants: a longer one,
/// `Duration::MAX` say, would not fit in one.)
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

impl RedisStore<ConnectionManager> {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port/db`) with a
    /// connection that reconnects by itself, with backoff and jitter, when it is closed or
    /// refused, and that the store gives up for a new one when a call times out with nothing
    /// answered on it since the call was sent (a peer gone silent without closing it), or
    /// when the tokio runtime it was made on has shut down since. It is made on this call's
    /// runtime when that one has worker threads, else on the process's own: a store may be
    /// connected in a `block_on` of its own and then used from another runtime.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the URL is malformed or Redis does not answer within
    /// [`DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        Self::connected(client).await
    }

    /// A store through `client`, its first connection made now (within [`DEFAULT_TIMEOUT`]),
    /// the later ones when a call finds none.
    pub(super) async fn connected(client: redis::Client) -> Result<Self, StoreError> {
        let mut store = tokio::time::timeout(DEFAULT_TIMEOUT, Self::made(maker(client.clone())))
            .await
            .map_err(|_| timed_out(DEFAULT_TIMEOUT))??;
        store.client = Some(client);
        Ok(store)
    }

    /// A store through `client` that makes its connection at its first call.
    pub(super) fn lazily(client: redis::Client) -> Self {
        let mut store = Self::on_link(Link::made(None, maker(client.clone())));
        store.client = Some(client);
        store
    }
}

/// The settings of every connection the store makes. No response timeout of the connection's
/// own: the store's deadline ([`RedisStore::timeout`]) is the one, and a call past it is what
/// tells a silent connection.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(DEFAULT_TIMEOUT))
        .set_response_timeout(None)
        .set_number_of_retries(3)
}

/// Makes a connection through `client`, connected before it is lent (within the deadline of
/// the call that needs it), on the tokio runtime that runs the making (redis-rs spawns its
/// tasks there, its reconnections included, and panics without one): a lazy one would connect
/// on the runtime of its first command instead, whatever runtime it was made on.
fn maker(client: redis::Client) -> super::connection::Make<ConnectionManager> {
    Box::new(move || {
        let client = client.clone();
        Box::pin(async move {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the Redis store is called outside a tokio runtime: call it from one",
                )));
            }
            #[cfg(feature = "redis-tls")]
            super::client::default_crypto_provider();
            ConnectionManager::new_with_config(client, manager_config()).await
        })
    })
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store on a connection of your own (a `MultiplexedConnection`, a cluster connection),
    /// used as it is: what to do with one that stops answering is yours to decide (a
    /// `ConnectionManager` passed here is not replaced when it goes silent, as the one
    /// [`RedisStore::connect`] makes is).
    pub fn with_connection(connection: C) -> Self {
        Self::on_link(Link::given(connection))
    }

    /// A store on connections `make` makes, starting with one it makes now, each given up
    /// for a new one when it stops answering.
    ///
    /// # Errors
    /// What making the first failed with.
    pub(super) async fn made(make: super::connection::Make<C>) -> Result<Self, StoreError> {
        let link = Link::connected(make).await.map_err(backend)?;
        Ok(Self::on_link(link))
    }

    fn on_link(link: Link<C>) -> Self {
        let keys = KeySpace::new(DEFAULT_PREFIX, "default");
        Self {
            link,
            client: None,
            released: keys.released(),
            releases: Arc::default(),
            keys,
            lease: crate::store::DEFAULT_LEASE,
            timeout: DEFAULT_TIMEOUT,
            clock: None,
            lease_ids: LeaseIds::new(),
            prepared: Prepared::default(),
            batcher: Arc::default(),
        }
    }

    /// Keys start with `prefix` (default `tokengate`) and share the hash tag `{namespace}`
    /// (default `default`): stores with different namespaces share nothing, and may live on
    /// different cluster nodes.
    pub fn namespace(mut self, prefix: &str, namespace: &str) -> Self {
        self.keys = KeySpace::new(prefix, namespace);
        self.released = self.keys.released();
        self.releases = Arc::default();
        self.prepared = Prepared::default();
        self.batcher = Arc::default();
        self
    }

    /// How long an in-flight slot is held without a renewal (60 s unless set): a process that
    /// dies holding slots frees them within this.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The deadline of each call to Redis (2 s unless set, at most [`MAX_TIMEOUT`]: a longer
    /// one is cut to it): a call past it fails with [`StoreError::Backend`] rather than wait
    /// on a server that does not answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// Reads the instant from `clock` and passes it to the script instead of Redis's `TIME`:
    /// for replaying schedules on a manual clock in tests. Never share such a store between
    /// processes: their clocks would disagree.
    pub fn with_manual_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    fn now(&self) -> Option<u64> {
        self.clock.as_ref().map(Clock::now)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Every budget made ready for a call: its keys, and what the calls need of its policy.
    fn ready(&self, budgets: &[StoreBudget]) -> Result<Vec<Arc<Ready>>, StoreError> {
        budgets
            .iter()
            .map(|b| self.prepared.get(&self.keys, b))
            .collect()
    }

    /// Subscribes to freed slots through `client` (a connection of its own, made when a caller
    /// first waits for a slot), for a store whose connection was given rather than made.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn subscribing_through(mut self, client: redis::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// How many connections the store gave up for not answering (see
    /// [`RedisStore::connect`]); always 0 on a connection of your own.
    pub fn connections_replaced(&self) -> u64 {
        self.link.replaced()
    }

    /// Runs `invocation` within the deadline (a connection made for it included), and judges
    /// the connection by it.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: script::Invocation,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let lent = tokio::time::timeout_at(deadline, self.link.lend())
            .await
            .map_err(|_| timed_out(self.timeout))?
            .map_err(backend)?;
        run_on_link(&self.link, deadline, self.timeout, &lent, &invocation).await
    }

    async fn acquire_now(&self, ask: Ask<'_>) -> Result<Answer, StoreError> {
        let (budgets, cost) = (ask.budgets(), ask.cost());
        for (i, b) in budgets.iter().enumerate() {
            b.policy().check_possible(cost)?;
            // (the library reads and writes each budget of an ask once)
            if budgets[..i].iter().any(|a| a.name() == b.name()) {
                return Err(StoreError::Unsupported(format!(
                    "budget {:?} is named twice in one ask: name each budget of an ask once",
                    b.name()
                )));
            }
        }
        let ready = self.ready(budgets)?;
        let triples: Vec<Budget<'_>> = ready.iter().map(Ready::budget).collect();
        let max_wait = u64::try_from(ask.wait_limit().as_nanos()).unwrap_or(u64::MAX);
        // A lease only where a budget caps the slots a cost takes.
        let holds = !cost.is_zero() && budgets.iter().any(|b| b.policy().max_in_flight().is_some());
        let lease = if holds {
            self.lease_ids.next()
        } else {
            String::new()
        };
        let horizon = u64::try_from(ask.horizon_limit().as_nanos()).unwrap_or(u64::MAX);
        let places: Vec<_> = (0..budgets.len())
            .map(|i| ask.place_on(i).map(|p| (p.from, p.to, p.epoch)))
            .collect();
        let invocation = script::acquire_with(
            &triples,
            cost,
            self.now(),
            max_wait,
            horizon,
            &places,
            &lease,
            self.lease_ms(),
        );
        let refused = |r| Ok(Answer::Refused(r));
        // Its lease ends, and its place in line is given back, when its answer is lost (see
        // `release_on`).
        let release = holds.then(|| {
            let leases: Vec<&str> = ready.iter().map(|r| r.keys.leases.as_str()).collect();
            script::renew(&leases, self.now(), &lease, 0)
        });
        let leave = (horizon < max_wait).then(|| {
            let (ready, now) = (ready.clone(), self.now());
            Arc::new(move |i: usize, from, to, epoch| {
                let budget = ready.get(i)?;
                Some(script::leave(&budget.keys, now, from, to, epoch))
            }) as Arc<Leave>
        });
        let reply = self
            .batcher
            .acquire(
                &self.link,
                self.timeout,
                invocation,
                Undo { release, leave },
            )
            .await?;
        match reply {
            AcquireReply::Admitted {
                wait,
                epoch,
                receipts,
            } => Ok(Answer::Reserved(Reservation {
                budgets: budgets.to_vec(),
                reserved: cost.clone(),
                wait: Duration::from_nanos(wait),
                receipts,
                epoch,
                lease: holds.then_some(lease),
            })),
            AcquireReply::Wait {
                wait,
                budget,
                limit,
            } => refused(Refusal::Wait {
                wait: nanos(wait),
                budget,
                limit,
            }),
            AcquireReply::Queued { wait, budget } => refused(Refusal::Queued {
                wait: nanos(wait),
                budget,
            }),
            AcquireReply::Paused { wait, budget } => refused(Refusal::Paused {
                wait: nanos(wait),
                budget,
            }),
            AcquireReply::Ahead {
                wait,
                budget,
                from,
                to,
                epoch,
            } => refused(Refusal::Ahead {
                wait: nanos(wait),
                budget,
                place: Place { from, to, epoch },
            }),
            AcquireReply::InFlightFull { budget } => refused(Refusal::InFlightFull { budget }),
            AcquireReply::Mismatch {
                budget,
                limit,
                stored,
            } => {
                let b = &budgets[budget];
                Err(StoreError::Mismatch {
                    budget: b.name().to_owned(),
                    stored: format!("limit {limit} stored as {stored}"),
                    given: b.policy().describe(),
                })
            }
        }
    }

    async fn settle_now(
        &self,
        reservation: &Reservation,
        used: Option<&Usage>,
    ) -> Result<(), StoreError> {
        let ready = self.ready(&reservation.budgets)?;
        let triples: Vec<Budget<'_>> = ready.iter().map(Ready::budget).collect();
        let reserved = &reservation.reserved;
        let used = used.map_or_else(|| reserved.clone(), |u| u.as_cost(reserved));
        let invocation = script::settle_with(
            &triples,
            reserved,
            &used,
            reservation.epoch,
            &reservation.receipts,
            self.now(),
            reservation.lease.as_deref(),
            &self.released,
        );
        self.run::<redis::Value>(invocation).await.map(drop)
    }

    async fn renew_now(&self, reservation: &Reservation) -> Result<(), StoreError> {
        let Some(lease) = reservation.lease.as_deref() else {
            return Ok(());
        };
        let ready = self.ready(&reservation.budgets)?;
        let leases: Vec<&str> = ready.iter().map(|r| r.keys.leases.as_str()).collect();
        let invocation = script::renew(&leases, self.now(), lease, self.lease_ms());
        self.run::<redis::Value>(invocation).await.map(drop)
    }

    async fn pause_now(
        &self,
        budget: &StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> Result<Duration, StoreError> {
        let ready = self.prepared.get(&self.keys, budget)?;
        let for_ns = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
        let invocation = script::pause(&ready.keys, self.now(), for_ns, replace);
        let (_, left): (String, u64) = self.run(invocation).await?;
        Ok(Duration::from_nanos(left))
    }

    async fn snapshot_now(&self, budget: &StoreBudget) -> Result<BudgetSnapshot, StoreError> {
        let ready = self.prepared.get(&self.keys, budget)?;
        let policy = budget.policy();
        let peeked: script::Peeked = self
            .run(script::peek(&ready.keys, policy, self.now()))
            .await?;
        // The script's own snapshot rule where a frame moved (see `Peeked::snapshots`).
        Ok(BudgetSnapshot {
            limits: peeked.snapshots(policy),
            in_flight: peeked.in_flight,
            paused_for: Duration::from_nanos(peeked.paused_until.saturating_sub(peeked.now_rel)),
        })
    }

    async fn lower_now(
        &self,
        budget: &StoreBudget,
        limit: usize,
        counted: u64,
    ) -> Result<u64, StoreError> {
        let ready = self.prepared.get(&self.keys, budget)?;
        let invocation = script::lower(&ready.keys, budget.policy(), self.now(), limit, counted);
        match self.run(invocation).await? {
            script::Lowered::Charged(units) => Ok(units),
            script::Lowered::Mismatch { limit, stored } => Err(StoreError::Mismatch {
                budget: budget.name().to_owned(),
                stored: format!("limit {limit} stored as {stored}"),
                given: budget.policy().describe(),
            }),
        }
    }

    async fn leave_now(&self, budget: &StoreBudget, place: Place) -> Result<(), StoreError> {
        let ready = self.prepared.get(&self.keys, budget)?;
        let invocation = script::leave(&ready.keys, self.now(), place.from, place.to, place.epoch);
        self.run::<redis::Value>(invocation).await.map(drop)
    }

    async fn reset_now(&self, budget: &str) -> Result<(), StoreError> {
        let pattern = self.keys.pattern(budget);
        let mut cursor: u64 = 0;
        let work = async {
            let mut connection = self.link.lend().await?.connection;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500);
                let (next, found): (u64, Vec<String>) =
                    query_where(&mut connection, &pattern, &scan).await?;
                if !found.is_empty() {
                    let unlink = redis::cmd("UNLINK").arg(&found).clone();
                    query_where::<_, ()>(&mut connection, &pattern, &unlink).await?;
                }
                if next == 0 {
                    return Ok::<(), redis::RedisError>(());
                }
                cursor = next;
            }
        };
        // A reset walks the keyspace in batches: a deadline per batch would be fairer, but a
        // reset is an administrator's call; ten deadlines bound it.
        tokio::time::timeout(self.timeout * 10, work)
            .await
            .map_err(|_| timed_out(self.timeout * 10))?
            .map_err(backend)
    }
}

/// Runs `cmd`, which names no key (`SCAN`) or keys of `key`'s slot only, where `key` lives:
/// on a cluster connection, on the primary that owns `key`'s slot (it would send a command
/// without a key to a node at random); on any other connection, as it is.
async fn query_where<C, T>(connection: &mut C, key: &str, cmd: &redis::Cmd) -> redis::RedisResult<T>
where
    C: ConnectionLike + Send + 'static,
    T: redis::FromRedisValue,
{
    #[cfg(feature = "redis-cluster")]
    if let Some(cluster) = (connection as &mut (dyn std::any::Any + Send))
        .downcast_mut::<redis::cluster_async::ClusterConnection>()
    {
        return super::cluster::query_on_owner(cluster, key, cmd).await;
    }
    #[cfg(not(feature = "redis-cluster"))]
    let _ = key;
    cmd.query_async(connection).await
}

impl Ready {
    fn budget(self: &Arc<Self>) -> Budget<'_> {
        (&self.keys, self.budget.policy(), &self.compiled)
    }
}

fn nanos(wait: u64) -> Duration {
    if wait == u64::MAX {
        Duration::MAX
    } else {
        Duration::from_nanos(wait)
    }
}

pub(super) fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn timed_out(after: Duration) -> StoreError {
    StoreError::Backend(format!("Redis did not answer within {after:?}"))
}

/// Runs `invocation` on `lent` (of `link`) until `deadline` (the store's `timeout` from when
/// its caller asked), and judges the connection by it.
pub(super) async fn run_on_link<C, T>(
    link: &Link<C>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    lent: &Lent<C>,
    invocation: &script::Invocation,
) -> Result<T, StoreError>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
    T: redis::FromRedisValue,
{
    let mut connection = lent.connection.clone();
    let sent = std::time::Instant::now();
    let reply = tokio::time::timeout_at(deadline, invocation.invoke_async(&mut connection))
        .await
        .map_err(|_| timed_out(timeout));
    match &reply {
        // A reply, or the server's error reply: the connection answers.
        Ok(Ok(_)) => link.replied(lent),
        Ok(Err(e)) if !e.is_io_error() => link.replied(lent),
        // Silence: the deadline passed, or the connection's own timeout did. (A call sent
        // late in its callers' wait, behind a call that stalled, is not silence enough to
        // give the connection up: at least half the deadline is.)
        Err(_) if sent.elapsed() >= timeout / 2 => stalled(link, timeout, lent, sent),
        Err(_) => {}
        Ok(Err(e)) if e.is_timeout() => stalled(link, timeout, lent, sent),
        // Closed or refused: the connection reconnects by itself.
        Ok(Err(_)) => {}
    }
    reply?.map_err(backend)
}

/// A call on `lent` sent at `sent` had no reply within its deadline.
fn stalled<C: Clone + Send + Sync + 'static>(
    link: &Link<C>,
    deadline: Duration,
    lent: &Lent<C>,
    sent: std::time::Instant,
) {
    if link.stalled(lent, sent) {
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "tokengate::redis",
            ?deadline,
            "gave up a Redis connection on which nothing answered within the deadline"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = deadline;
    }
}

/// An acquisition that takes slots lost its answer (its deadline passed, most often; or its
/// caller left): it may still run, later, when a stalled server wakes, and take its slots for
/// a caller that is gone. So its lease is ended, in the background, by `release` sent on
/// `connection`, the one it went on, after it: a connection runs its calls in order, so this
/// one runs after the acquisition if that ever runs, and frees what it took. (Should the
/// connection break between the two, the slots come back when the lease ends.) The same for
/// a place in line it took.
pub(super) fn release_on<C>(mut connection: C, deadline: Duration, release: script::Invocation)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    in_background(deadline, async move {
        release
            .invoke_async::<redis::Value>(&mut connection)
            .await
            .ok()
    });
}

/// [`release_on`] whatever connection `link` lends, for an acquisition that has answered (so
/// the two need not share a connection).
pub(super) fn release_on_link<C>(link: Link<C>, deadline: Duration, release: script::Invocation)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    in_background(deadline, async move {
        let mut connection = link.lend().await.ok()?.connection;
        release
            .invoke_async::<redis::Value>(&mut connection)
            .await
            .ok()
    });
}

/// Runs `work` for at most `deadline`, on the process's own runtime: not one made for a
/// call, which may be gone before it runs, nor the caller's, which may be shutting down (and
/// would drop it unrun). What it finds is of no use to anyone. (No runtime: not run; a lease
/// then runs out.)
fn in_background<F>(deadline: Duration, work: F)
where
    F: std::future::Future + Send + 'static,
{
    if let Some(runtime) = crate::store::background::runtime() {
        drop(runtime.spawn(async move {
            let _ = tokio::time::timeout(deadline, work).await;
        }));
    }
}

impl<C> Store for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn acquire<'a>(&'a self, ask: Ask<'a>) -> StoreFuture<'a, Answer> {
        Box::pin(self.acquire_now(ask))
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        used: Option<&'a Usage>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.settle_now(reservation, used))
    }

    fn renew<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        Box::pin(self.renew_now(reservation))
    }

    fn pause<'a>(
        &'a self,
        budget: &'a StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> StoreFuture<'a, Duration> {
        Box::pin(self.pause_now(budget, pause, replace))
    }

    fn snapshot<'a>(&'a self, budget: &'a StoreBudget) -> StoreFuture<'a, BudgetSnapshot> {
        Box::pin(self.snapshot_now(budget))
    }

    fn reset<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.reset_now(budget))
    }

    fn leave<'a>(&'a self, budget: &'a StoreBudget, place: Place) -> StoreFuture<'a, ()> {
        Box::pin(self.leave_now(budget, place))
    }

    fn lower<'a>(
        &'a self,
        budget: &'a StoreBudget,
        limit: usize,
        counted: u64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.lower_now(budget, limit, counted))
    }

    fn release_mark(&self, budget: &StoreBudget) -> u64 {
        match self.prepared.get(&self.keys, budget) {
            Ok(ready) => self.releases.mark(&ready.keys.state),
            Err(_) => 0,
        }
    }

    /// True when the store makes its connections (every call reads the server's clock and has
    /// its own deadline, and a connection is made on a runtime that is always driven); false
    /// on a connection of your own ([`RedisStore::with_connection`]), whose tasks may live on
    /// the caller's current-thread runtime, and answer only while it is driven.
    fn any_runtime(&self) -> bool {
        !matches!(self.link, Link::Given(_))
    }

    fn released<'a>(&'a self, budget: &'a StoreBudget, mark: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Only a store that makes its connections knows how to subscribe.
            let (Some(client), Ok(ready)) = (&self.client, self.prepared.get(&self.keys, budget))
            else {
                return std::future::pending().await;
            };
            self.releases
                .after(client, &self.released, &ready.keys.state, mark)
                .await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LeaseIds;

    /// The stem and process id of a lease id.
    fn origin(id: &str) -> (&str, &str) {
        let mut parts = id.split('-');
        (parts.next().unwrap(), parts.next().unwrap())
    }

    #[test]
    fn lease_ids_differ_within_a_process() {
        let ids = LeaseIds::new();
        let made: std::collections::HashSet<String> = (0..1000).map(|_| ids.next_in(7)).collect();
        assert_eq!(made.len(), 1000);
        assert!(made.iter().all(|id| origin(id) == origin(&ids.next_in(7))));
    }

    #[test]
    fn a_process_forked_with_the_ids_of_its_parent_makes_other_ids() {
        // A fork copies the parent's state: its stem and counter. Two children, and the parent.
        let ids = LeaseIds::new();
        let parent = ids.next_in(100);
        let (first, second) = (ids.next_in(201), ids.next_in(202));
        let again = ids.next_in(100);
        let origins = [origin(&parent), origin(&first), origin(&second)];
        assert_ne!(origins[0], origins[1]);
        assert_ne!(origins[1], origins[2]);
        assert_ne!(origins[0].0, origins[1].0, "a new process draws a new stem");
        // (one struct stands for all three here: the parent's stem is drawn anew, as that of
        // a later process with the parent's id would be)
        assert_ne!(parent, again);
        assert_eq!(origin(&again).1, "100");
    }
}

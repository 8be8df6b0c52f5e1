//! The Lua script that applies the admission decision inside Redis (`decide.lua`, whose header
//! is the reference for its contract, storage layout and numeric domain), the arguments it
//! takes and the replies it gives.
//!
//! The script keeps every number below 2^53 (Redis's Lua has only doubles): this side refuses
//! the limits it cannot hold ([`check_domain`]) and works out every product of two figures the
//! script needs (the span of a cost at a limit's rate, a refund's worth in time), so that the
//! script only adds, subtracts and compares. Instants it returns are relative to an epoch in
//! whole seconds that comes with them.
//!
//! Only the crate's public API is used here: `tests/redis_script.rs` compiles this file into
//! the test (by path) to replay the test vectors through the very same encoding.

use std::fmt;
use std::sync::LazyLock;

use ::redis::{
    Cmd, ErrorKind, FromRedisValue, ParsingError, RedisError, RedisResult, ServerErrorKind, Value,
};

use crate::core::{
    FixedWindowState, GcraState, LimitRule, LimitState, Nanos, Receipt, SlidingCounterState,
    SlidingLogState, Snapshot,
};
use crate::{Algorithm, Cost, Limit, Policy};

/// `decide.lua` as written: `$LIBRARY` stands for the library's name.
const TEMPLATE: &str = include_str!("decide.lua");

/// The script as a Redis Functions library (Redis 7.0 or later), named after its text:
/// `tokengate_` and the first 8 hex digits of the template's SHA-1. Its functions are named
/// after it and their operation (`tokengate_…_acquire`). Processes running different versions
/// call different functions, side by side on one server.
#[derive(Debug)]
pub(crate) struct Library {
    /// The library's name.
    #[cfg_attr(not(test), allow(dead_code))] // Its functions' names say it.
    pub(crate) name: String,
    /// The text `FUNCTION LOAD` takes.
    pub(crate) code: String,
    /// Its functions' names, by operation.
    acquire: String,
    acquires: String,
    settle: String,
    pause: String,
    renew: String,
    peek: String,
    leave: String,
    lower: String,
}

/// The library, made once.
pub(crate) static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let hash = ::redis::Script::new(TEMPLATE).get_hash()[..8].to_owned();
    let name = format!("tokengate_{hash}");
    let function = |op: &str| format!("{name}_{op}");
    Library {
        code: TEMPLATE.replace("$LIBRARY", &name),
        acquire: function("acquire"),
        acquires: function("acquires"),
        settle: function("settle"),
        pause: function("pause"),
        renew: function("renew"),
        peek: function("peek"),
        leave: function("leave"),
        lower: function("lower"),
        name,
    }
});

/// One call of the library's function (`FCALL`). Invoked, it loads the library
/// (`FUNCTION LOAD`) when the server does not have it (a new server, a restart,
/// `FUNCTION FLUSH`) and calls again, once.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    cmd: Cmd,
}

impl Invocation {
    /// Runs the call on `con` (any connection: concurrent calls may be in flight on it).
    ///
    /// # Errors
    /// Redis's, or, when the function is still missing after the load, the load's (a Redis
    /// before 7.0, a user without the right to load it).
    pub(crate) async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl ::redis::aio::ConnectionLike,
    ) -> RedisResult<T> {
        match self.cmd.query_async(con).await {
            Err(e) if function_missing(&e) => {
                let load = loaded(load_cmd().query_async::<Value>(con).await);
                match self.cmd.query_async(con).await {
                    // Loaded where the call runs: on a cluster the load goes to every primary,
                    // and one of them being down fails it, not this call.
                    Ok(v) => Ok(v),
                    Err(again) if function_missing(&again) => Err(load.err().unwrap_or(again)),
                    Err(again) => Err(again),
                }
            }
            other => other,
        }
    }

    /// [`invoke_async`](Self::invoke_async) on a blocking connection.
    ///
    /// # Errors
    /// As `invoke_async`.
    #[cfg(test)]
    #[allow(dead_code)] // Used by tests/redis_script.rs, which compiles this file in.
    pub(crate) fn invoke<T: FromRedisValue>(
        &self,
        con: &mut dyn ::redis::ConnectionLike,
    ) -> RedisResult<T> {
        match self.cmd.query(con) {
            Err(e) if function_missing(&e) => {
                loaded(load_cmd().query::<Value>(con))?;
                self.cmd.query(con)
            }
            other => other,
        }
    }

    /// The command sent.
    #[cfg(test)]
    pub(crate) fn cmd(&self) -> &Cmd {
        &self.cmd
    }
}

/// Whether `e` says the server has no such function: the library is not loaded.
fn function_missing(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && e.detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

/// `FUNCTION LOAD` of the library.
fn load_cmd() -> Cmd {
    let mut cmd = ::redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg(&LIBRARY.code);
    cmd
}

/// The outcome of a `FUNCTION LOAD`: a library of that name already there (another caller
/// loaded it first) is as good as loaded, since its name is its text's hash.
fn loaded(reply: RedisResult<Value>) -> RedisResult<()> {
    match reply {
        Err(e) if !e.to_string().contains("already exists") => Err(e),
        _ => Ok(()),
    }
}

/// Amounts the script holds are below this: 2^52 units per period.
pub(crate) const AMOUNT_LIMIT: u64 = 1 << 52;

/// The longest period plus margin the script holds, and the longest a burst may take to earn:
/// 2^49 ns (6.5 days).
pub(crate) const WINDOW_LIMIT: Nanos = 1 << 49;

/// Every number given to the script stays at or below this (2^53 - 1): larger figures are
/// sent as this, which means "more than anything the script compares it with".
const EXACT: u64 = (1 << 53) - 1;

/// Counts (units to give back, usage beyond a reservation) are sent at most at this: the
/// script's counts saturate there, far above any amount it holds.
const COUNT_LIMIT: u64 = 1 << 52;

/// The keys of one budget: its state hash, its lease set and one list per limit (the sliding
/// logs'; passed for every limit, in the policy's order). All keys of a request must hash to
/// one cluster slot: put one hash tag in every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BudgetKeys {
    /// The hash of the budget's state.
    pub(crate) state: String,
    /// The sorted set of its in-flight leases.
    pub(crate) leases: String,
    /// One list per limit of its policy, in order.
    pub(crate) lists: Vec<String>,
}

impl BudgetKeys {
    /// `{prefix}:state`, `{prefix}:leases` and `{prefix}:log:{i}` for `limits` limits (the
    /// store names its keys itself).
    #[cfg(test)]
    pub(crate) fn new(prefix: &str, limits: usize) -> Self {
        Self {
            state: format!("{prefix}:state"),
            leases: format!("{prefix}:leases"),
            lists: (0..limits).map(|i| format!("{prefix}:log:{i}")).collect(),
        }
    }
}

/// A limit the script cannot hold exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DomainError(String);

/// Checks that the script holds every limit of `policy` exactly: an amount below 2^52, a
/// period plus margin of at most 2^49 ns (6.5 days), a burst below 2^52 that takes at most as
/// long to earn.
///
/// # Errors
/// The first limit it cannot hold, saying which and what to do.
pub(crate) fn check_domain(policy: &Policy) -> Result<(), DomainError> {
    for (dimension, limit) in policy.limits() {
        let wire = Wire::of(limit);
        let refuse = |what: String| {
            Err(DomainError(format!(
                "{dimension} limit {limit}: {what}; the Redis store holds amounts below 2^52 \
                 and periods (margin included) and bursts of at most 2^49 ns (6.5 days): \
                 count in larger units, use a shorter period, or keep this limit in memory"
            )))
        };
        if wire.amount >= AMOUNT_LIMIT {
            return refuse(format!("an amount of {}", wire.amount));
        }
        if wire.period.saturating_add(wire.margin) > WINDOW_LIMIT {
            return refuse(format!(
                "a period plus margin of {} ns",
                u128::from(wire.period) + u128::from(wire.margin)
            ));
        }
        if wire.burst >= AMOUNT_LIMIT || wire.tolerance.0 > WINDOW_LIMIT {
            return refuse(format!(
                "a burst of {} that takes {} ns to earn",
                wire.burst, wire.tolerance.0
            ));
        }
    }
    Ok(())
}

/// The fingerprint of `limit` as the script stores it: its seven rule fields joined with ':'
/// (algorithm, amount, period ns, margin ns, burst, and the burst's span).
#[cfg(test)]
pub(crate) fn fingerprint(limit: &Limit) -> String {
    fingerprints(std::iter::once(Wire::of(limit)))
}

/// `Rate::span`: the time `units` take to earn at `amount` per `period` ns, rounded up, and
/// what the rounding added in `1/amount`ths of a nanosecond; saturates at `u64::MAX`.
fn span(amount: u64, period: Nanos, units: u64) -> (Nanos, u64) {
    let num = u128::from(units) * u128::from(period);
    let time = num.div_ceil(u128::from(amount));
    match u64::try_from(time) {
        Ok(t) => (t, (time * u128::from(amount) - num) as u64),
        Err(_) => (u64::MAX, 0),
    }
}

/// `Rate::time_for_floor`: what `units` are worth given back, rounded down; saturates.
fn time_for_floor(amount: u64, period: Nanos, units: u64) -> Nanos {
    let t = u128::from(units) * u128::from(period) / u128::from(amount);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// A limit as the script reads it.
#[derive(Debug, Clone, Copy)]
struct Wire {
    alg: &'static str,
    amount: u64,
    period: Nanos,
    margin: Nanos,
    /// 0 when the algorithm has none.
    burst: u64,
    /// The burst's span (0, 0 when none).
    tolerance: (Nanos, u64),
}

impl Wire {
    fn of(limit: &Limit) -> Self {
        let rule = LimitRule::new(limit).expect("a policy's limits are valid");
        let alg = match rule.new_state() {
            LimitState::Gcra(_) if rule.algorithm() == Algorithm::LeakyBucket => "lb",
            LimitState::Gcra(_) => "tb",
            LimitState::Log(_) => "log",
            LimitState::Counter(_) => "ctr",
            LimitState::Fixed(_) => "fw",
            LimitState::Smooth(..) => "sw",
        };
        let (amount, period) = (rule.amount(), rule.period());
        let burst = rule.burst().unwrap_or(0);
        let tolerance = if burst == 0 {
            (0, 0)
        } else {
            span(amount, period, burst)
        };
        Self {
            alg,
            amount,
            period,
            margin: rule.margin(),
            burst,
            tolerance,
        }
    }

    /// Whether the script keeps a log (a list) for it.
    fn is_log(&self) -> bool {
        matches!(self.alg, "log" | "sw")
    }

    /// The span of `units` at this limit's rate, capped to what the script holds.
    fn span(&self, units: u64) -> (Nanos, u64) {
        let (time, over) = span(self.amount, self.period, units);
        (time.min(EXACT), over)
    }
}

/// What a call needs of a budget's policy, worked out once per policy (the store keeps it):
/// its limits as the script reads them, and their fingerprints.
#[derive(Debug)]
pub(crate) struct Compiled {
    wires: Vec<Wire>,
    fingerprints: String,
    /// How many of its limits keep a log (a list).
    logs: usize,
}

impl Compiled {
    /// What the calls need of `policy`.
    ///
    /// # Errors
    /// [`check_domain`]'s.
    pub(crate) fn new(policy: &Policy) -> Result<Self, DomainError> {
        check_domain(policy)?;
        Ok(Self::of(policy))
    }

    /// [`new`](Self::new) without the check (tests take the script to its edges).
    fn of(policy: &Policy) -> Self {
        let wires: Vec<Wire> = policy.limits().map(|(_, l)| Wire::of(l)).collect();
        Self {
            fingerprints: fingerprints(wires.iter().copied()),
            logs: wires.iter().filter(|w| w.is_log()).count(),
            wires,
        }
    }
}

/// A budget of a call: its keys, its policy, and what was worked out of the policy.
pub(crate) type Budget<'a> = (&'a BudgetKeys, &'a Policy, &'a Compiled);

/// One call of the function, written straight into its command: `FCALL`, the function, the
/// number of keys, the keys, then the arguments (the operation and the time first).
struct Call {
    cmd: Cmd,
}

impl Call {
    /// A call of `function` with `keys` keys, which the caller writes next, then its
    /// arguments: `args` of them, `bytes` long in all, or about.
    fn new(function: &str, keys: usize, args: usize, bytes: usize) -> Self {
        let mut cmd = Cmd::with_capacity(3 + keys + args, 48 + bytes);
        cmd.arg("FCALL").arg(function).arg(keys);
        Self { cmd }
    }

    fn key(&mut self, key: &str) -> &mut Self {
        self.cmd.arg(key);
        self
    }

    /// The time: `now` (nanoseconds since the Unix epoch, below 2^53), or "" for Redis's own
    /// clock.
    fn now(&mut self, now: Option<Nanos>) -> &mut Self {
        match now {
            Some(n) => self.cmd.arg(n.min(EXACT)),
            None => self.cmd.arg(""),
        };
        self
    }

    fn arg<T: ::redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    fn invocation(self) -> Invocation {
        Invocation { cmd: self.cmd }
    }
}

/// The fingerprints of `policy`'s limits, as the script stores them: each limit's seven rule
/// fields joined with ':', the limits joined with '|'.
fn fingerprints(wires: impl Iterator<Item = Wire>) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(128);
    for (i, w) in wires.enumerate() {
        if i > 0 {
            out.push('|');
        }
        let _ = write!(
            out,
            "{}:{}:{}:{}:{}:{}:{}",
            w.alg, w.amount, w.period, w.margin, w.burst, w.tolerance.0, w.tolerance.1
        );
    }
    out
}

/// Numbers for the script in one argument: little-endian doubles, each an integer below 2^53
/// (exact as a double), which the script reads with one `struct.unpack` (a decimal argument
/// costs it a `tonumber` each).
#[derive(Debug)]
struct Numbers(Vec<u8>);

impl Numbers {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(8 * n))
    }

    fn push(&mut self, n: u64) -> &mut Self {
        // Exact: every figure is capped below 2^53.
        self.0
            .extend_from_slice(&(n.min(EXACT) as f64).to_le_bytes());
        self
    }

    /// -1 for none.
    fn push_option(&mut self, n: Option<u64>) -> &mut Self {
        let n = n.map_or(-1.0, |n| n.min(EXACT) as f64);
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
}

/// The limits of `budgets` and the bytes of their keys and fingerprints: what a call over
/// them holds at most, for its buffers' capacity.
fn sizes(budgets: &[Budget<'_>]) -> (usize, usize) {
    budgets
        .iter()
        .fold((0, 0), |(limits, bytes), (k, _, compiled)| {
            let lists: usize = k.lists.iter().map(String::len).sum();
            let named = k.state.len() + k.leases.len() + compiled.fingerprints.len() + lists;
            (limits + compiled.wires.len(), bytes + named)
        })
}

/// A bucket mark (a receipt's) as the script takes and gives it: `h * 10^9 + l`.
fn split_mark(mark: u64) -> (u64, u64) {
    (mark / 1_000_000_000, mark % 1_000_000_000)
}

/// `budgets` with what is worked out of their policies, for the calls that take them (tests).
#[cfg(test)]
fn compiled<'a>(
    budgets: &[(&'a BudgetKeys, &'a Policy)],
) -> Vec<(&'a BudgetKeys, &'a Policy, Compiled)> {
    budgets
        .iter()
        .map(|&(k, p)| (k, p, Compiled::of(p)))
        .collect()
}

/// [`acquire_with`] of budgets given with their policies alone.
#[cfg(test)]
pub(crate) fn acquire(
    budgets: &[(&BudgetKeys, &Policy)],
    cost: &Cost,
    now: Option<Nanos>,
    max_wait: Nanos,
    lease: &str,
    lease_ms: u64,
) -> Invocation {
    let owned = compiled(budgets);
    let budgets: Vec<Budget<'_>> = owned.iter().map(|(k, p, c)| (*k, *p, c)).collect();
    acquire_with(
        &budgets,
        cost,
        now,
        max_wait,
        Nanos::MAX,
        &[],
        lease,
        lease_ms,
    )
}

/// The call that decides `cost` on every one of `budgets` (all or none) and records it:
/// admitted at `now` (Redis's clock when `None`; else nanoseconds below 2^53 since the Unix
/// epoch) or, when that is at most `max_wait` ns from now, reserved at its earliest instant,
/// holding an in-flight lease `lease` for `lease_ms` ms from then on every budget with a cap;
/// an instant further than `horizon` ns from now is answered "ahead" with a place in line.
/// `places`: per budget, the request's place in line there (a `Place`'s from, to, epoch).
///
/// Every limit of every budget must hold the cost (`Policy::check_possible`). Decode the reply
/// as [`AcquireReply`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn acquire_with(
    budgets: &[Budget<'_>],
    cost: &Cost,
    now: Option<Nanos>,
    max_wait: Nanos,
    horizon: Nanos,
    places: &[Option<(Nanos, Nanos, u64)>],
    lease: &str,
    lease_ms: u64,
) -> Invocation {
    // A cost of nothing takes no slot.
    let cap = |policy: &Policy| policy.max_in_flight().filter(|_| !cost.is_zero());
    // Per budget: its state, its lease set when the cost takes a slot there, its logs' lists.
    let (limits, bytes) = sizes(budgets);
    let keys = budgets
        .iter()
        .map(|(_, policy, compiled)| 1 + usize::from(cap(policy).is_some()) + compiled.logs)
        .sum();
    let numbers = 5 + 4 * budgets.len() + 3 * limits;
    let mut call = Call::new(
        &LIBRARY.acquire,
        keys,
        2 + budgets.len(),
        bytes + 8 * numbers + lease.len(),
    );
    for (k, policy, compiled) in budgets {
        call.key(&k.state);
        if cap(policy).is_some() {
            call.key(&k.leases);
        }
        for (wire, list) in compiled.wires.iter().zip(&k.lists) {
            if wire.is_log() {
                call.key(list);
            }
        }
    }
    let leased = budgets.iter().any(|(_, policy, _)| cap(policy).is_some());
    call.arg(if leased { lease } else { "" });
    let mut n = Numbers::with_capacity(numbers);
    n.push_option(now)
        .push(max_wait)
        .push(lease_ms)
        .push(budgets.len() as u64)
        .push(horizon.min(EXACT));
    for (i, (_, policy, compiled)) in budgets.iter().enumerate() {
        n.push_option(cap(policy));
        match places.get(i).copied().flatten() {
            Some((from, to, epoch)) => n.push(from).push(to).push(epoch),
            None => n.push_option(None).push(0).push(0),
        };
        for (wire, amount) in compiled.wires.iter().zip(policy.measure(cost)) {
            let amount = amount.unwrap_or(u64::MAX).min(EXACT);
            let (time, over) = wire.span(amount);
            n.push(amount).push(time).push(over);
        }
    }
    call.arg(n.0);
    for (_, _, compiled) in budgets {
        call.arg(compiled.fingerprints.as_str());
    }
    call.invocation()
}

/// One call that runs `calls` ([`acquire_with`]'s, at least one) one after another, at one
/// instant, in one atomic step: each budget's state is read and written once, however many
/// of them charge it. Decode the reply as [`Batched`].
///
/// Every key of every call must be in one hash slot (a store's namespace is).
pub(crate) fn acquires(calls: &[&Invocation]) -> Invocation {
    // Each call is `FCALL function keys KEYS... lease numbers FINGERPRINTS...`: its keys and
    // arguments are taken as they are, but its numbers, which join the batch's; a call with
    // the keys and arguments of the one before it (most often all of a batch's have the same:
    // Redis makes a Lua string of every one it is given) sends none of its own.
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut args: Vec<&[u8]> = Vec::new();
    let mut header = Numbers::with_capacity(1 + 3 * calls.len());
    let mut numbers: Vec<u8> = Vec::new();
    header.push(calls.len() as u64);
    // The last call that sent its own: its keys, then its arguments (lease, fingerprints).
    let mut last: Vec<&[u8]> = Vec::new();
    let mut last_keys = 0;
    for invocation in calls {
        let words: Vec<&[u8]> = invocation
            .cmd
            .args_iter()
            .map(|a| match a {
                ::redis::Arg::Simple(bytes) => bytes,
                // (no call here takes a cursor)
                _ => &[][..],
            })
            .collect();
        let n: usize = std::str::from_utf8(words[2])
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let (own, rest) = words[3..].split_at(n);
        // Its keys, then the lease, then the fingerprints.
        let mine: Vec<&[u8]> = own
            .iter()
            .chain(std::iter::once(&rest[0]))
            .chain(&rest[2..])
            .copied()
            .collect();
        numbers.extend_from_slice(rest[1]);
        let count = (rest[1].len() / 8) as u64;
        if !last.is_empty() && last_keys == n && last == mine {
            header.push(0).push(0).push(count);
            continue;
        }
        keys.extend(own);
        args.extend(&mine[n..]);
        header
            .push(n as u64)
            .push((mine.len() - n) as u64)
            .push(count);
        (last, last_keys) = (mine, n);
    }
    header.0.extend_from_slice(&numbers);
    let bytes = keys.iter().chain(&args).map(|w| w.len()).sum::<usize>() + header.0.len();
    let mut call = Call::new(&LIBRARY.acquires, keys.len(), 1 + args.len(), bytes);
    for key in keys {
        call.cmd.arg(key);
    }
    call.arg(header.0);
    for arg in args {
        call.cmd.arg(arg);
    }
    call.invocation()
}

/// What [`acquires`] answers: per call, what [`acquire_with`]'s would, or the error the
/// script met on that call (a state or limits it cannot read).
#[derive(Debug)]
pub(crate) struct Batched(pub(crate) Vec<Result<AcquireReply, String>>);

impl FromRedisValue for Batched {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let Value::Array(items) = v else {
            return Err(bad(format!("a batch's answer {v:?}")));
        };
        let replies = items
            .into_iter()
            .map(|item| {
                if let Value::Array(words) = &item {
                    if let [Value::BulkString(kind), Value::BulkString(message)] = &words[..] {
                        if kind == b"error" {
                            return Ok(Err(String::from_utf8_lossy(message).into_owned()));
                        }
                    }
                }
                AcquireReply::from_redis_value(item).map(Ok)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(replies))
    }
}

/// [`settle_with`] of budgets given with their policies alone.
#[cfg(test)]
pub(crate) fn settle(
    budgets: &[(&BudgetKeys, &Policy)],
    reserved: &Cost,
    used: &Cost,
    epoch: u64,
    receipts: &[Vec<Receipt>],
    now: Option<Nanos>,
    lease: Option<&str>,
) -> Invocation {
    let owned = compiled(budgets);
    let budgets: Vec<Budget<'_>> = owned.iter().map(|(k, p, c)| (*k, *p, c)).collect();
    settle_with(&budgets, reserved, used, epoch, receipts, now, lease, "")
}

/// The call that settles an admission of `reserved` on every one of `budgets` with what it
/// `used` (`Permit::settle`'s reading of a usage: figures left out as reserved): refunds with
/// `receipts` (per budget, per limit: what [`AcquireReply::Admitted`] gave, relative to its
/// `epoch`), charges beyond the reservation; then ends `lease` on the budgets that hold it
/// (those with an in-flight cap, unless `reserved` is nothing). A release (a failed call) is
/// `used == reserved`; a cancelled reservation is a usage of nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle_with(
    budgets: &[Budget<'_>],
    reserved: &Cost,
    used: &Cost,
    epoch: u64,
    receipts: &[Vec<Receipt>],
    now: Option<Nanos>,
    lease: Option<&str>,
    channel: &str,
) -> Invocation {
    // Its keys: the state, the lease set when it holds the lease, every limit's list (a
    // limit whose state follows other limits may be a log there).
    let holds = |policy: &Policy| {
        lease.is_some() && policy.max_in_flight().is_some() && !reserved.is_zero()
    };
    let (limits, bytes) = sizes(budgets);
    let keys = budgets
        .iter()
        .map(|(k, policy, _)| 1 + usize::from(holds(policy)) + k.lists.len())
        .sum();
    let numbers = 3 + budgets.len() + 8 * limits;
    let mut call = Call::new(
        &LIBRARY.settle,
        keys,
        3 + budgets.len(),
        bytes + 8 * numbers + channel.len() + 32,
    );
    for (k, policy, _) in budgets {
        call.key(&k.state);
        if holds(policy) {
            call.key(&k.leases);
        }
        for list in &k.lists {
            call.key(list);
        }
    }
    call.arg(lease.unwrap_or(""));
    let mut n = Numbers::with_capacity(numbers);
    n.push_option(now).push(epoch).push(budgets.len() as u64);
    for (b, (_, policy, compiled)) in budgets.iter().enumerate() {
        n.push(u64::from(holds(policy)));
        let mine = receipts.get(b);
        let each = compiled
            .wires
            .iter()
            .zip(policy.measure(reserved).zip(policy.measure(used)));
        for (i, (wire, (r, u))) in each.enumerate() {
            // As `settle_budget` reads them.
            let (r, u) = (r.unwrap_or(0), u.unwrap_or(u64::MAX));
            let receipt = mine.and_then(|m| m.get(i)).copied();
            let give_back = match receipt {
                Some(_) => r.saturating_sub(u).min(COUNT_LIMIT),
                None => 0,
            };
            let extra = u.saturating_sub(r).min(COUNT_LIMIT);
            let (time, over) = wire.span(extra.min(wire.amount));
            let receipt = receipt.unwrap_or_default();
            let (mark_h, mark_l) = split_mark(receipt.bucket_mark);
            n.push(give_back)
                .push(time_for_floor(wire.amount, wire.period, give_back))
                .push(extra)
                .push(time)
                .push(over)
                .push(receipt.admitted_at)
                .push(mark_h)
                .push(mark_l);
        }
    }
    call.arg(n.0);
    for (_, _, compiled) in budgets {
        call.arg(compiled.fingerprints.as_str());
    }
    call.arg(channel);
    call.invocation()
}

/// The call that pauses the budget of `keys` for `for_ns` from now: replacing the pause in
/// force when `replace` (0 lifts it), else keeping the later end. Replies `("ok", ns)`: how
/// long the budget is paused from now (0: it is not).
pub(crate) fn pause(
    keys: &BudgetKeys,
    now: Option<Nanos>,
    for_ns: Nanos,
    replace: bool,
) -> Invocation {
    let mut call = Call::new(&LIBRARY.pause, 1, 3, keys.state.len() + 32);
    call.key(&keys.state)
        .now(now)
        .arg(for_ns.min(EXACT))
        .arg(if replace { "set" } else { "max" });
    call.invocation()
}

/// The call that gives back a place in line on the budget of `keys`: the line ends at `from`
/// again when it ends at `to` in the frame of `epoch`. Replies 1 when it did, else 0.
pub(crate) fn leave(
    keys: &BudgetKeys,
    now: Option<Nanos>,
    from: Nanos,
    to: Nanos,
    epoch: u64,
) -> Invocation {
    let mut call = Call::new(&LIBRARY.leave, 1, 4, keys.state.len() + 64);
    call.key(&keys.state)
        .now(now)
        .arg(from.min(EXACT))
        .arg(to.min(EXACT))
        .arg(epoch.min(EXACT));
    call.invocation()
}

/// The call that counts on limit `limit` (from 0) of the budget of `keys` under `policy`
/// what `counted` exceeds of its count now (`LimitRule::lower`). Decode as [`Lowered`].
pub(crate) fn lower(
    keys: &BudgetKeys,
    policy: &Policy,
    now: Option<Nanos>,
    limit: usize,
    counted: u64,
) -> Invocation {
    let fingerprints = fingerprints(policy.limits().map(|(_, l)| Wire::of(l)));
    let mut call = Call::new(
        &LIBRARY.lower,
        1 + keys.lists.len(),
        4,
        128 + fingerprints.len(),
    );
    call.key(&keys.state);
    for list in &keys.lists {
        call.key(list);
    }
    call.now(now)
        .arg(fingerprints)
        .arg(limit + 1)
        .arg(counted.min(EXACT));
    call.invocation()
}

/// What [`lower`] answers: the units charged, or the limit whose stored fingerprint differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lowered {
    /// Charged this many units (0: the limit counted as much already).
    Charged(u64),
    /// The budget's state follows other limits: limit `limit` is `stored` there.
    Mismatch { limit: usize, stored: String },
}

impl FromRedisValue for Lowered {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut r = Reader::new(v)?;
        match r.string()?.as_str() {
            "ok" => Ok(Lowered::Charged(r.u64()?)),
            "mismatch" => {
                let _budget = r.usize()?;
                Ok(Lowered::Mismatch {
                    limit: r.usize()?,
                    stored: r.string()?,
                })
            }
            other => Err(bad(format!("an answer {other:?}"))),
        }
    }
}

/// The call that moves the expiry of `lease` to `lease_ms` from now in every set of `leases`
/// that holds it. Replies how many did (an integer).
pub(crate) fn renew(leases: &[&str], now: Option<Nanos>, lease: &str, lease_ms: u64) -> Invocation {
    let bytes = leases.iter().map(|l| l.len()).sum::<usize>() + lease.len() + 32;
    let mut call = Call::new(&LIBRARY.renew, leases.len(), 3, bytes);
    for l in leases {
        call.key(l);
    }
    call.now(now).arg(lease).arg(lease_ms.min(EXACT));
    call.invocation()
}

/// The call that reads the budget of `keys` under `policy` without changing it. Decode as
/// [`Peeked`] (a budget whose state follows other limits is an error).
pub(crate) fn peek(keys: &BudgetKeys, policy: &Policy, now: Option<Nanos>) -> Invocation {
    let fingerprints = fingerprints(policy.limits().map(|(_, l)| Wire::of(l)));
    let mut call = Call::new(
        &LIBRARY.peek,
        2 + keys.lists.len(),
        2,
        256 + fingerprints.len(),
    );
    call.key(&keys.state).key(&keys.leases);
    for list in &keys.lists {
        call.key(list);
    }
    call.now(now).arg(fingerprints);
    call.invocation()
}

/// What [`acquire`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AcquireReply {
    /// Recorded on every limit of every budget, `wait` ns from now (0: at once).
    Admitted {
        /// How long after now it is admitted.
        wait: Nanos,
        /// The epoch (Unix seconds) the receipts' instants count from.
        epoch: u64,
        /// Per budget, per limit: what its settlement needs.
        receipts: Vec<Vec<Receipt>>,
    },
    /// A limit admits it only `wait` ns from now (`u64::MAX`: never), beyond the wait allowed.
    Wait {
        /// From now.
        wait: Nanos,
        /// The budget's index.
        budget: usize,
        /// The limit's index in that budget's policy.
        limit: usize,
    },
    /// Earlier reservations on the budget hold it until `wait` ns from now, beyond the wait
    /// allowed.
    Queued {
        /// From now.
        wait: Nanos,
        /// The budget's index.
        budget: usize,
    },
    /// The budget is paused `wait` ns more, beyond the wait allowed.
    Paused {
        /// From now.
        wait: Nanos,
        /// The budget's index.
        budget: usize,
    },
    /// Admissible `wait` ns from now, beyond the horizon: only its place in line on the
    /// budget was recorded.
    Ahead {
        /// From now.
        wait: Nanos,
        /// The budget's index.
        budget: usize,
        /// The budget's line before and after it (own frame), and the frame's epoch.
        from: Nanos,
        to: Nanos,
        epoch: u64,
    },
    /// Every in-flight slot of the budget is leased.
    InFlightFull {
        /// The budget's index.
        budget: usize,
    },
    /// The budget's state follows other limits than the caller's: limit `limit` has the
    /// fingerprint `stored` there ("" when the state has fewer limits; `limit` is the number
    /// of the caller's when it has more).
    Mismatch {
        /// The budget's index.
        budget: usize,
        /// The first limit that differs.
        limit: usize,
        /// Its fingerprint in the store.
        stored: String,
    },
}

/// A reply read in order.
struct Reader {
    items: std::vec::IntoIter<Value>,
}

impl Reader {
    fn new(value: Value) -> Result<Self, ParsingError> {
        match value {
            Value::Array(items) => Ok(Self {
                items: items.into_iter(),
            }),
            other => Err(bad(format!("a script reply that is no array: {other:?}"))),
        }
    }

    fn next(&mut self) -> Result<Value, ParsingError> {
        self.items
            .next()
            .ok_or_else(|| bad("a script reply cut short".to_owned()))
    }

    fn string(&mut self) -> Result<String, ParsingError> {
        match self.next()? {
            Value::BulkString(b) => String::from_utf8(b).map_err(Into::into),
            Value::SimpleString(s) => Ok(s),
            other => Err(bad(format!("a string expected, not {other:?}"))),
        }
    }

    /// A number: an integer reply, or digits (figures past 2^53).
    fn i128(&mut self) -> Result<i128, ParsingError> {
        match self.next()? {
            Value::Int(i) => Ok(i128::from(i)),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("a number expected, not {b:?}"))),
            other => Err(bad(format!("a number expected, not {other:?}"))),
        }
    }

    fn u64(&mut self) -> Result<u64, ParsingError> {
        let n = self.i128()?;
        u64::try_from(n).map_err(|_| bad(format!("{n} is out of range")))
    }

    fn usize(&mut self) -> Result<usize, ParsingError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| bad(format!("{n} is out of range")))
    }

    /// A number past 2^53 as the script gives it, in two: `h * 10^9 + l`.
    fn mark(&mut self) -> Result<u64, ParsingError> {
        let (h, l) = (self.i128()?, self.i128()?);
        u64::try_from(h * 1_000_000_000 + l).map_err(|_| bad(format!("a mark of {h}e9 + {l}")))
    }

    /// A wait: -1 is never.
    fn wait(&mut self) -> Result<Nanos, ParsingError> {
        match self.i128()? {
            -1 => Ok(Nanos::MAX),
            n => u64::try_from(n).map_err(|_| bad(format!("a wait of {n}"))),
        }
    }
}

fn bad(message: String) -> ParsingError {
    ParsingError::from(format!("tokengate script: {message}"))
}

/// A reply of little-endian doubles (struct '<d'), each an integer, read in order.
struct Doubles<'a> {
    bytes: std::slice::ChunksExact<'a, u8>,
}

impl<'a> Doubles<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ParsingError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(bad(format!("{} bytes of doubles", bytes.len())));
        }
        Ok(Self {
            bytes: bytes.chunks_exact(8),
        })
    }

    fn u64(&mut self) -> Result<u64, ParsingError> {
        let chunk = self
            .bytes
            .next()
            .ok_or_else(|| bad("a script reply cut short".to_owned()))?;
        let x = f64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // Integers below 2^53 (or h of a mark, below 2^64 / 10^9): exact.
        if (0.0..18_446_744_073_709_551_616.0).contains(&x) && x.fract() == 0.0 {
            Ok(x as u64)
        } else {
            Err(bad(format!("{x} is no count")))
        }
    }

    fn usize(&mut self) -> Result<usize, ParsingError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| bad(format!("{n} is out of range")))
    }

    /// A number past 2^53 in two: `h * 10^9 + l`.
    fn mark(&mut self) -> Result<u64, ParsingError> {
        let (h, l) = (u128::from(self.u64()?), u128::from(self.u64()?));
        u64::try_from(h * 1_000_000_000 + l).map_err(|_| bad(format!("a mark of {h}e9 + {l}")))
    }
}

impl AcquireReply {
    /// An admission, as the script answers it: doubles in one string (wait, epoch, instant,
    /// budgets, then per budget: its limits, then per limit: its mark in two).
    fn admitted(bytes: &[u8]) -> Result<Self, ParsingError> {
        let mut r = Doubles::new(bytes)?;
        let (wait, epoch, at, budgets) = (r.u64()?, r.u64()?, r.u64()?, r.usize()?);
        let mut receipts = Vec::with_capacity(budgets.min(16));
        for _ in 0..budgets {
            let n = r.usize()?;
            let mut mine = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                mine.push(Receipt {
                    admitted_at: at,
                    bucket_mark: r.mark()?,
                });
            }
            receipts.push(mine);
        }
        if r.bytes.next().is_some() {
            return Err(bad("a longer admission than its budgets".to_owned()));
        }
        Ok(AcquireReply::Admitted {
            wait,
            epoch,
            receipts,
        })
    }
}

impl FromRedisValue for AcquireReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        if let Value::BulkString(bytes) = &v {
            return Self::admitted(bytes);
        }
        let mut r = Reader::new(v)?;
        match r.string()?.as_str() {
            "wait" => Ok(AcquireReply::Wait {
                wait: r.wait()?,
                budget: r.usize()?,
                limit: r.usize()?,
            }),
            "queued" => Ok(AcquireReply::Queued {
                wait: r.wait()?,
                budget: r.usize()?,
            }),
            "paused" => Ok(AcquireReply::Paused {
                wait: r.wait()?,
                budget: r.usize()?,
            }),
            "ahead" => Ok(AcquireReply::Ahead {
                wait: r.wait()?,
                budget: r.usize()?,
                from: r.u64()?,
                to: r.u64()?,
                epoch: r.u64()?,
            }),
            "in_flight_full" => Ok(AcquireReply::InFlightFull { budget: r.usize()? }),
            "mismatch" => Ok(AcquireReply::Mismatch {
                budget: r.usize()?,
                limit: r.usize()?,
                stored: r.string()?,
            }),
            other => Err(bad(format!("an answer {other:?}"))),
        }
    }
}

/// A budget's state as the script keeps it, in the budget's own frame: instants are
/// nanoseconds from `epoch` (Unix seconds), `now_rel` among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peeked {
    /// The epoch, Unix seconds.
    pub(crate) epoch: u64,
    /// Now, from the epoch.
    pub(crate) now_rel: Nanos,
    /// Leases not run out.
    pub(crate) in_flight: u64,
    /// The end of the provider's pause (not paused when not after `now_rel`).
    pub(crate) paused_until: Nanos,
    /// The latest reservation's instant: nothing is admitted before it.
    pub(crate) floor: Nanos,
    /// One state per limit of the policy, in order. The windows (fixed window, sliding window
    /// counter) start at `offsets[i]` modulo their period rather than 0: read them through
    /// [`snapshots`](Self::snapshots).
    pub(crate) limits: Vec<LimitState>,
    /// Per limit, where its windows start modulo its period (0 but for windows whose budget
    /// was rebased by a number of days that is not a multiple of their period).
    pub(crate) offsets: Vec<Nanos>,
}

impl Peeked {
    /// What each limit of `policy` looks like now (`LimitRule::snapshot`, which the script's
    /// state is read into), instants relative to the epoch (`u64::MAX`: never).
    pub(crate) fn snapshots(&self, policy: &Policy) -> Vec<Snapshot> {
        policy
            .limits()
            .zip(self.limits.iter().zip(&self.offsets))
            .map(|((_, limit), (state, &offset))| {
                let rule = LimitRule::new(limit).expect("a policy's limits are valid");
                let (state, shift) = in_core_frame(&rule, state, offset);
                let snapshot = rule.snapshot(&state, self.now_rel + shift);
                let back = |t: Nanos| if t == Nanos::MAX { t } else { t - shift };
                Snapshot {
                    reset_at: snapshot.reset_at.map(back),
                    next_refill_at: snapshot.next_refill_at.map(back),
                    ..snapshot
                }
            })
            .collect()
    }
}

/// Where a budget's own clock ends in the script: 2^52 ns from its epoch.
const END: Nanos = 1 << 52;

/// `state` (of `rule`, its windows starting at `offset` modulo the period) moved to a frame
/// in which the core reads it as the script does, and how far it moved: windows so that they
/// start at multiples of the period; buckets (and the smooth window's log) so that the end of
/// the budget's clock is the end of the core's (a bucket that would pass it is never
/// admitted). A bucket's TAT of 0 (nothing admitted yet) stays 0.
fn in_core_frame(rule: &LimitRule, state: &LimitState, offset: Nanos) -> (LimitState, Nanos) {
    let period = rule.period();
    let window = (period - offset % period) % period;
    let end = Nanos::MAX - END;
    let bucket = |g: &GcraState| GcraState {
        tat: if g.tat == 0 { 0 } else { g.tat + end },
        ..*g
    };
    match state {
        LimitState::Fixed(s) => (
            LimitState::Fixed(FixedWindowState {
                window_start: s.window_start + window,
                ..*s
            }),
            window,
        ),
        LimitState::Counter(s) => (
            LimitState::Counter(SlidingCounterState {
                window_start: s.window_start + window,
                ..*s
            }),
            window,
        ),
        LimitState::Gcra(g) => (LimitState::Gcra(bucket(g)), end),
        LimitState::Smooth(g, log) => {
            let log = SlidingLogState {
                entries: log.entries.iter().map(|&(t, a)| (t + end, a)).collect(),
                total: log.total,
            };
            (LimitState::Smooth(bucket(g), log), end)
        }
        LimitState::Log(_) => (state.clone(), 0),
    }
}

impl fmt::Display for Peeked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch {} now {} in flight {} paused until {} floor {}: {:?}",
            self.epoch, self.now_rel, self.in_flight, self.paused_until, self.floor, self.limits
        )
    }
}

impl FromRedisValue for Peeked {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut r = Reader::new(v)?;
        match r.string()?.as_str() {
            "ok" => {}
            "mismatch" => {
                let (_budget, limit, stored) = (r.usize()?, r.usize()?, r.string()?);
                return Err(bad(format!(
                    "the budget's state follows other limits: its limit {limit} is {stored:?}"
                )));
            }
            other => return Err(bad(format!("an answer {other:?}"))),
        }
        let mut peeked = Peeked {
            epoch: r.u64()?,
            now_rel: r.u64()?,
            in_flight: r.u64()?,
            paused_until: r.u64()?,
            floor: r.u64()?,
            limits: Vec::new(),
            offsets: Vec::new(),
        };
        fn bucket(r: &mut Reader) -> Result<GcraState, ParsingError> {
            Ok(GcraState {
                tat: r.u64()?,
                overshoot: r.u64()?,
                refunded: r.mark()?,
            })
        }
        fn log(r: &mut Reader) -> Result<SlidingLogState, ParsingError> {
            let total = u128::from(r.u64()?);
            let n = r.usize()?;
            let mut entries = std::collections::VecDeque::with_capacity(n.min(1024));
            for _ in 0..n {
                entries.push_back((r.u64()?, r.u64()?));
            }
            Ok(SlidingLogState { entries, total })
        }
        while r.items.len() > 0 {
            let (state, offset) = match r.string()?.as_str() {
                "tb" | "lb" => (LimitState::Gcra(bucket(&mut r)?), 0),
                "log" => (LimitState::Log(log(&mut r)?), 0),
                "sw" => (LimitState::Smooth(bucket(&mut r)?, log(&mut r)?), 0),
                "ctr" => {
                    let offset = r.u64()?;
                    let state = SlidingCounterState {
                        window_start: r.u64()?,
                        previous: r.u64()?,
                        current: r.u64()?,
                    };
                    (LimitState::Counter(state), offset)
                }
                "fw" => {
                    let offset = r.u64()?;
                    let state = FixedWindowState {
                        window_start: r.u64()?,
                        used: r.u64()?,
                    };
                    (LimitState::Fixed(state), offset)
                }
                other => return Err(bad(format!("an algorithm {other:?}"))),
            };
            peeked.limits.push(state);
            peeked.offsets.push(offset);
        }
        Ok(peeked)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Limit;

    /// The words of a call's command.
    fn words(invocation: &Invocation) -> Vec<String> {
        invocation
            .cmd()
            .args_iter()
            .map(|a| match a {
                ::redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "cursor".to_owned(),
            })
            .collect()
    }

    /// Word `i` of a call's command read as numbers (little-endian doubles; -1 as i64).
    fn numbers_at(invocation: &Invocation, i: usize) -> Vec<i64> {
        let word = invocation
            .cmd()
            .args_iter()
            .nth(i)
            .map(|a| match a {
                ::redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .unwrap();
        word.chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect()
    }

    fn limit(amount: u64, period: u64, alg: Algorithm) -> Limit {
        Limit::new(amount, Duration::from_nanos(period))
            .algorithm(alg)
            .margin(Duration::ZERO)
    }

    fn policy(limits: &[Limit]) -> Policy {
        let mut builder = Policy::builder();
        for (i, l) in limits.iter().enumerate() {
            builder = builder.custom(format!("d{i}"), l.clone());
        }
        builder.build().unwrap()
    }

    #[test]
    fn the_library_is_named_after_its_text() {
        let library = &*LIBRARY;
        let hash = library.name.strip_prefix("tokengate_").unwrap();
        assert!(
            hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            library.name
        );
        assert!(library
            .code
            .starts_with(&format!("#!lua name={}\n", library.name)));
        assert!(!library.code.contains("$LIBRARY"));
        let call = pause(&BudgetKeys::new("k", 0), Some(1), 2, true);
        let function = format!("{}_pause", library.name);
        assert_eq!(
            words(&call),
            ["FCALL", &function, "1", "k:state", "1", "2", "set"]
        );
        assert!(library.code.contains(&format!("'{function}'")));
    }

    #[test]
    fn spans_are_the_exact_time_of_the_units() {
        // 3 units per 10 ns: 3.33 ns each.
        assert_eq!(span(3, 10, 1), (4, 2));
        assert_eq!(span(3, 10, 3), (10, 0));
        assert_eq!(time_for_floor(3, 10, 1), 3);
        assert_eq!(span(1, u64::MAX, 2), (u64::MAX, 0));
        // A bucket of 3 at 3 a second fills exactly: what the core's commit of 3 units leaves.
        let rule = LimitRule::new(&limit(3, 1_000_000_000, Algorithm::TokenBucket)).unwrap();
        let mut state = rule.new_state();
        let _ = rule.commit(&mut state, 0, 1);
        let LimitState::Gcra(g) = state else {
            panic!("{state:?}")
        };
        assert_eq!((g.tat, g.overshoot), span(3, 1_000_000_000, 1));
    }

    #[test]
    fn a_fingerprint_is_the_seven_rule_fields() {
        let tb = limit(10, 1_000, Algorithm::TokenBucket).burst(3);
        assert_eq!(fingerprint(&tb), "tb:10:1000:0:3:300:0");
        let frac = limit(3, 10, Algorithm::TokenBucket);
        assert_eq!(fingerprint(&frac), "tb:3:10:0:3:10:0");
        let lb = limit(3, 10, Algorithm::LeakyBucket).margin(Duration::from_nanos(2));
        assert_eq!(fingerprint(&lb), "lb:3:10:2:1:4:2");
        let sw = Limit::per_minute(600);
        assert_eq!(
            fingerprint(&sw),
            "sw:600:60000000000:50000000:10:1000000000:0"
        );
        for (alg, name) in [
            (Algorithm::SlidingWindowLog, "log"),
            (Algorithm::SlidingWindowCounter, "ctr"),
            (Algorithm::FixedWindow, "fw"),
        ] {
            assert_eq!(
                fingerprint(&limit(5, 100, alg)),
                format!("{name}:5:100:0:0:0:0")
            );
        }
    }

    #[test]
    fn the_domain_is_below_two_to_the_fifty_two_units_and_six_and_a_half_days() {
        let ok = policy(&[limit((1 << 52) - 1, 1 << 49, Algorithm::FixedWindow)]);
        assert_eq!(check_domain(&ok), Ok(()));
        let many = policy(&[limit(1 << 52, 1_000, Algorithm::FixedWindow)]);
        let e = check_domain(&many).unwrap_err().to_string();
        assert!(e.contains("an amount of 4503599627370496"), "{e}");
        assert!(e.starts_with("d0 limit "), "{e}");
        let long = policy(&[limit(10, (1 << 49) + 1, Algorithm::FixedWindow)]);
        assert!(check_domain(&long).is_err());
        // The margin counts: a log counts each admission its period plus its margin.
        let margin = policy(&[Limit::new(10, Duration::from_nanos(1 << 49))
            .algorithm(Algorithm::SlidingWindowLog)
            .margin(Duration::from_nanos(1))]);
        assert!(check_domain(&margin).is_err());
        // A burst ten periods long takes too long to earn.
        let burst = policy(&[limit(10, 1 << 48, Algorithm::TokenBucket).burst(100)]);
        let e = check_domain(&burst).unwrap_err().to_string();
        assert!(e.contains("a burst of 100"), "{e}");
    }

    #[test]
    fn an_acquire_sends_each_budget_its_fingerprints_and_each_limit_its_amount_and_span() {
        let keys = BudgetKeys::new("{t}:a", 2);
        let p = Policy::builder()
            .requests_per_minute(600)
            .combined_tokens(limit(3, 10, Algorithm::TokenBucket), 1, 5)
            .max_in_flight(2)
            .build()
            .unwrap();
        let cost = Cost::request().input(1).output(0);
        let call = acquire(&[(&keys, &p)], &cost, Some(7), 100, "L1", 60_000);
        // The state, the lease set (the budget has a cap), the list of its one log.
        let w = words(&call);
        assert_eq!(
            w[2..7],
            ["3", "{t}:a:state", "{t}:a:leases", "{t}:a:log:0", "L1"]
        );
        assert_eq!(
            w[8..],
            ["sw:600:60000000000:50000000:10:1000000000:0|tb:3:10:0:3:10:0"]
        );
        // Now, max wait, lease ms, budgets, horizon (none: the script's whole range); the cap;
        // no place in line (-1, 0, 0); per limit: the amount and its span.
        let none = (1 << 53) - 1;
        assert_eq!(
            numbers_at(&call, 7),
            [
                7,
                100,
                60_000,
                1,
                none,
                2,
                -1,
                0,
                0,
                1,
                100_000_000,
                0,
                1,
                4,
                2
            ]
        );
        // Redis's own clock (-1), and a cost of nothing takes no slot: no lease, no lease set.
        let call = acquire(&[(&keys, &p)], &Cost::zero(), None, 0, "L2", 1);
        assert_eq!(words(&call)[2..6], ["2", "{t}:a:state", "{t}:a:log:0", ""]);
        let numbers = numbers_at(&call, 6);
        assert_eq!((numbers[0], numbers[5]), (-1, -1));
        // A horizon, and a place in line: from, to, epoch.
        let budgets = compiled(&[(&keys, &p)]);
        let budgets: Vec<Budget<'_>> = budgets.iter().map(|(k, p, c)| (*k, *p, c)).collect();
        let call = acquire_with(
            &budgets,
            &cost,
            Some(7),
            100,
            250,
            &[Some((3, 9, 86_400))],
            "L",
            1,
        );
        assert_eq!(numbers_at(&call, 7)[4..9], [250, 2, 3, 9, 86_400]);
    }

    #[test]
    fn a_settlement_sends_what_to_give_back_or_charge_with_the_receipt() {
        let keys = BudgetKeys::new("k", 1);
        let p = policy(&[limit(3, 10, Algorithm::TokenBucket)]);
        let receipt = Receipt {
            admitted_at: 5,
            bucket_mark: u64::MAX - 1,
        };
        let reserved = Cost::zero().with("d0", 3);
        let call = settle(
            &[(&keys, &p)],
            &reserved,
            &Cost::zero().with("d0", 1),
            9,
            &[vec![receipt]],
            Some(20),
            Some("L"),
        );
        assert_eq!(words(&call)[2..6], ["2", "k:state", "k:log:0", "L"]);
        // The fingerprints, then the channel of freed slots (none here).
        assert_eq!(words(&call)[7..], ["tb:3:10:0:3:10:0", ""]);
        // Now, the receipts' epoch, budgets; holds no lease; give back 2 (6 ns), no extra, the
        // receipt (its mark in two).
        assert_eq!(
            numbers_at(&call, 6),
            [20, 9, 1, 0, 2, 6, 0, 0, 0, 5, 18_446_744_073, 709_551_614]
        );
        // Beyond the reservation: min(extra, N) charged, its span sent; no receipt, no refund.
        // With a cap, the budget holds the lease.
        let capped = Policy::builder()
            .custom("d0", limit(3, 10, Algorithm::TokenBucket))
            .max_in_flight(1)
            .build()
            .unwrap();
        let call = settle(
            &[(&keys, &capped)],
            &reserved,
            &Cost::zero().with("d0", 10),
            0,
            &[],
            None,
            Some("L"),
        );
        assert_eq!(words(&call)[2..6], ["3", "k:state", "k:leases", "k:log:0"]);
        assert_eq!(numbers_at(&call, 7), [-1, 0, 1, 1, 0, 0, 7, 10, 0, 0, 0, 0]);
    }

    #[test]
    fn replies_decode() {
        let int = Value::Int;
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let doubles = |xs: &[f64]| -> Value {
            Value::BulkString(xs.iter().flat_map(|x| x.to_le_bytes()).collect())
        };
        let ok = doubles(&[
            5.0,
            86_400.0,
            10.0,
            2.0,
            1.0,
            18_446_744_073.0,
            709_551_615.0,
            0.0,
        ]);
        assert_eq!(
            AcquireReply::from_redis_value(ok).unwrap(),
            AcquireReply::Admitted {
                wait: 5,
                epoch: 86_400,
                receipts: vec![
                    vec![Receipt {
                        admitted_at: 10,
                        bucket_mark: u64::MAX
                    }],
                    vec![]
                ],
            }
        );
        let never = Value::Array(vec![s("wait"), int(-1), int(1), int(2)]);
        assert_eq!(
            AcquireReply::from_redis_value(never).unwrap(),
            AcquireReply::Wait {
                wait: u64::MAX,
                budget: 1,
                limit: 2
            }
        );
        let cut = Value::Array(vec![s("paused"), int(3)]);
        assert!(AcquireReply::from_redis_value(cut).is_err());
        assert!(AcquireReply::from_redis_value(doubles(&[5.0, 86_400.0, 10.0, 1.0])).is_err());
        assert!(AcquireReply::from_redis_value(doubles(&[0.5, 0.0, 0.0, 0.0])).is_err());
        let peek = Value::Array(vec![
            s("ok"),
            int(0),
            int(100),
            int(1),
            int(0),
            int(50),
            s("fw"),
            int(3),
            int(93),
            int(4),
            s("sw"),
            int(120),
            int(0),
            int(0),
            int(7),
            int(4),
            int(1),
            int(90),
            int(4),
        ]);
        let peeked = Peeked::from_redis_value(peek).unwrap();
        assert_eq!(
            (peeked.now_rel, peeked.floor, peeked.offsets),
            (100, 50, vec![3, 0])
        );
        assert_eq!(
            peeked.limits[1],
            LimitState::Smooth(
                GcraState {
                    tat: 120,
                    overshoot: 0,
                    refunded: 7
                },
                SlidingLogState {
                    entries: [(90, 4)].into(),
                    total: 4
                }
            )
        );
    }

    #[test]
    fn snapshots_read_windows_from_their_offset() {
        // Windows of 10 starting at 3 modulo 10: the one holding 100 is [93, 103).
        let p = policy(&[limit(5, 10, Algorithm::FixedWindow)]);
        let peeked = Peeked {
            epoch: 0,
            now_rel: 100,
            in_flight: 0,
            paused_until: 0,
            floor: 0,
            limits: vec![LimitState::Fixed(FixedWindowState {
                window_start: 93,
                used: 5,
            })],
            offsets: vec![3],
        };
        let snap = peeked.snapshots(&p)[0];
        assert_eq!(
            (snap.used, snap.remaining, snap.reset_at),
            (5, 0, Some(103))
        );
    }
}

#!lua name=$LIBRARY
--[[
tokengate's admission decision, inside Redis: one FCALL per call, atomic.

A second implementation of the Rust core (`src/core/`): `decide_request` and `commit_budget`
on every budget of a request, `settle_budget`, and the store's reservations, in-flight
leases and pauses (`src/store/`). The core is the specification; every rule below follows
its code line by line, and `tests/redis_script.rs` replays the test vectors and random
schedules against both. `src/redis/script.rs` encodes the arguments and decodes the replies.

A FUNCTION, NOT A SCRIPT. This is a Redis Functions library (Redis 7.0 or later), named by
`script.rs`: the name on the first line stands for `tokengate_` and the first 8 hex digits of
this text's SHA-1, and each operation (below) is a function named after it: `<name>_acquire`
and so on. Redis runs a script's whole body on every EVALSHA, making every one of its local
functions anew each time (some 70 closures here, several microseconds of every call before
any work); a library's top level runs once, at FUNCTION LOAD, and a call runs only its
function. So the top level only defines: Redis gives it none of Lua's libraries (math,
string, struct... are there when the functions run, and are taken then, once), and what
belongs to one call (its keys, arguments and time) is set at the function's entry (calls run
one at a time). The name changes with the text, so that processes running different versions
call their own functions side by side on one server; the store loads the library when a
call finds its function missing (a new server, a restart, FUNCTION FLUSH) and calls again.
Kept from call to call: the limits parsed from their fingerprints (at most 1000 policies,
then emptied), a pure function of their key; the states of budgets with logs as last read or
written (at most 1024, then emptied), each with the version it has in Redis, checked at
every call (STORAGE); and a few tables a call fills anew (budgets, the answer) rather than
make.

COST. What a call costs in Redis is mostly Redis's own work around Lua, and Lua's slowness:
each redis.call (0.5-1 us), each string made (Redis's Lua hashes every byte of it: a
command's reply, a substring, a concatenation, a struct.pack), each figure converted (a
number to a decimal string takes 0.4-0.6 us, a string to a number 0.2), each function called
(as much as ten arithmetic steps), each table made. So:
- The state is binary (below): one GET and one struct.unpack read all of a budget, one
  struct.pack and one SET (with its expiry) write it. A budget with logs, whose state is
  larger, is read from the library's copy when its 8 bytes of version (GETRANGE) match.
- A log keeps its first and last few entries in the state, and what a commit needs of it
  (its first entry's instant, its last counted one's): most commits touch its list not at
  all, the others push or pop a chunk of entries at once.
- The numbers of a call come as little-endian doubles in one argument, and an admission's
  answer goes back as one string of doubles (a table costs Redis far more to turn into a
  reply); the limits come as their fingerprints, parsed once per policy and kept.
- A number given to a command is written by Redis in floating point ('%.17g', some 2,000
  instructions): integers go as digits (`sformat('%d')`) instead.
- Acquisitions made at once go in one call (`acquires`): the call's own cost, its clock and
  each budget's read and write (and what the write needs: its expiry) are paid once for all
  of them.
- A call passes only the keys it may touch: an acquire the lease set of a budget only when
  the cost takes a slot there, and the lists of its logs only.
- The common paths are written out where they are used rather than called.

NUMBERS. Redis runs Lua 5.1, whose numbers are doubles: integers are exact below 2^53 only.
- Every instant is nanoseconds relative to its budget's epoch `e` (whole seconds, stored in
  the budget's state): a budget's "own frame". A new budget's epoch is the current second
  rounded down to a whole day (UTC), so windows aligned to multiples of the period from the
  epoch stay aligned for every period that divides a day; a budget keeps its alignment
  through rebases (below) whatever its period.
- The Rust side refuses (script.rs, `check_domain`) a limit whose amount is 2^52 or more,
  whose period plus margin is above 2^49 ns (6.5 days), or whose burst takes longer than
  2^49 ns to earn. It precomputes every product of two user figures the script needs: the
  spans T(c), o(c) of each cost (`Rate::span`: ceil(c*P/N) and the rounding in 1/Nths of a
  nanosecond), the burst's, a refund's worth floor(u*P/N). The one product left here, the
  sliding window counter's floor(room*P/previous), is `muldiv`: exact, in 24-bit limbs.
- The end of a budget's clock is END = 2^52 ns in its own frame (52 days from its epoch):
  the core's u64::MAX. A bucket that would pass it answers never (replied as -1), a charge
  past it stops there, a pause is cut there. It takes weeks of debt to get there.
- Counts (the log's total and entries, the windows' counters) saturate at 2^52, far above
  any amount: a count there denies as the exact one would.
- REBASE: when a budget's own "now" reaches 2^51 ns (26 days), an acquire or a settlement
  first moves its epoch forward by whole days (written even when the call then writes
  nothing else), so that now lands in [2^50, 2^50 + 1 day), and every stored instant back
  by as much. What goes below 0 is at least 2^50 ns old, beyond twice
  the longest period: a bucket's TAT there is full (0, as fresh), a window there is over
  (reset), a log entry there is dropped. The windows' alignment is kept (OFF below). A read
  (`peek`) rebases what it replies without writing; `pause` and `renew` never need to.
- The refunds' running total R of a bucket grows without bound (it only ever goes up): it is
  kept in two numbers, h and l (R = h * 10^9 + l, 0 <= l < 10^9), and so are the receipts'
  bucket marks (a drain instant plus that total), in arguments and replies alike.
- ONE FRAME per request: the budgets of one request may have different epochs. The decision
  counts from the oldest epoch `ef` (the frame: its instants stay below 2^51 + 1 day after
  the rebase); budget b's own frame is the frame less D_b = (e_b - ef) * 10^9 ns, and each
  budget decides in its own frame (the instant asked converted in, the answer out). Receipts
  are relative to `ef`, which the reply gives; a settlement converts them into each
  budget's current frame (which a rebase or a new incarnation may have moved).

TIME. Redis's own clock (`TIME`; production), or a count of nanoseconds below 2^53 given by
the call (tests): then the absolute time is that many nanoseconds from the Unix epoch, and a
budget made below one day has epoch 0, so the vectors' instants are its own. An acquire or a
settlement gives it first among its numbers (-1: Redis's clock), the other operations as
ARGV[1] in digits ("": Redis's clock).

STORAGE. Keys are built by the caller (one hash tag for all); per budget: a string (state), a
sorted set (leases) and one list per limit (used by the sliding logs only).
The state is "tg5", a byte n (the number of limits it holds), two bytes k (the number of
their doubles) and two bytes f (the fingerprints' length; both big-endian), then 7 + k
little-endian doubles (struct '<d'), then each log's head and tail (below), then the limits'
fingerprints: each limit's seven rule fields joined with ':', the limits joined with '|'
("" when n is 0: a pause alone). A budget with logs has "tg6" and a version (one more double)
before the others: new at every write (the library's first instant, in microseconds modulo
2^20, times 2^32, plus a count of its writes), so that a state whose version is the one the
library last read or wrote is the state it holds. The doubles, 0 unless set:
  E        epoch, Unix seconds (a multiple of a day)
  BORN     the own-frame instant the state was made. A receipt admitted before it belongs
           to an earlier incarnation of the budget, emptied since: its bucket gives nothing
           back (what the core answers: that incarnation was full when dropped)
  PAUSE    paused until (own frame); FLOOR: the latest reservation's instant
  X        the latest instant the limits' state is needed until (for `pause`'s expiry)
  LINE     the end of the line of requests answered "ahead" (below): one without a place is
           admitted no earlier
  LL       the limit (from 1; 0: none) that held back the latest place taken with a limit
           holding it back
then each limit's (own frame), in order:
  TAT OV RH RL     a bucket (token, leaky): tat, overshoot, refunded (h, l)
  WS PREV CUR OFF  a window (fixed, counter): start, previous count (counter), current
           count, and the alignment offset (in [0, P); 0 until a rebase moves the epoch by a
           number of days that is not a multiple of the period)
  TOTAL SHAPE FRONT NEED LEXP   a sliding log: the sum of its entries; the entries in its
           head (hn) and tail (tn) and the chunks in its list (lc), as lc * 1024 + hn * 32 +
           tn; its first entry's instant; its last entry with units' instant plus P + M (0
           when none); when its list expires (absolute milliseconds)
  the smooth window: its bucket's four, then its log's five.
A log's entries are struct '<dd' (instant, amount; own frame), oldest first, in three parts:
its head (the oldest, K = 4 at most) and its tail (the newest, K at most) in the state, and
between them its LIST, whose elements are chunks of K entries. A commit merges into the last
entry or appends to the tail; a full tail becomes the head if there is none, else the list's
last chunk. Entries that leave the window go from the front (the head, then whole chunks);
an emptied head takes the list's first chunk. So the tail holds the last entry whenever there
is one, and the head has entries whenever the list has chunks. A refund searches from the
back. The leases are a sorted set of lease ids scored by expiry in absolute whole
milliseconds (rounded up); a lease is live while its score is above the current millisecond
(rounded down).
EXPIRY: every write ends by setting the expiry of the keys it wrote to what their state still
needs, rounded up to whole milliseconds, plus 1 s: the state to the latest of every bucket's
TAT plus its margin, every log's last counted entry plus P + M, the windows' ends, the pause
and the floor; a log's list, when a chunk is pushed, to its last entry plus P + M (LEXP: by
then every entry in it, and in the head, has left the window; the state notes when, and a
log whose list has expired keeps its tail only); the leases to their latest lease. A budget
whose state is then fresh (behaves as a new one: the core's `LimitRule::is_fresh`, with a
bucket full for its margin) is deleted instead, its lists with it; unless a refund has given
time back (its refunded total is not 0), which keeps it for the 1 s only, so that no receipt
of it can meet a new incarnation at the same instant (the born rule above covers those
after). A state that takes limits (new, or a pause alone) deletes its logs' lists first:
they may outlive an earlier state.

OPERATIONS, one function each. A budget's limits come as its fingerprints (as stored, above);
each limit's seven rule fields (in this order): alg (sw smooth window, tb token bucket, lb
leaky bucket, log sliding window log, ctr sliding window counter, fw fixed window), N amount,
P period ns, M margin ns, B burst (0: none), TB OB (span of B; 0 0). "Numbers" is one
argument of little-endian doubles, all integers.
acquire  KEYS per budget: its state, its lease set when the cost takes a slot there, then the
         lists of its logs (sliding logs, smooth windows), in order.
         ARGV: lease id ("" when no budget takes a slot), numbers, then per budget its
         fingerprints. Numbers: now, max_wait ns, lease ms, nbudgets, horizon ns, then per
         budget: its cap (-1 when the cost takes no in-flight slot there), the request's
         place in line there (from, to, e of an "ahead" answer; from -1 when none), then per
         limit: c, Tc, Oc.
         The core's decide_request at t = max(now, every budget's floor, and its line where
         it holds no place): admitted (a place still last in line is given back: the line
         ends at its `from`), every
         limit of every budget commits at t, the floors move to t, capped budgets get the
         lease. Answer: a string of doubles: t - now, ef, t, nbudgets, then per budget: n,
         then per limit its bucket_mark as h, l (frame-relative; 0, 0 for the windows and the
         log); every receipt's admitted_at is t. A wait or a pause ending at u within
         max_wait of now: decided again at u (16 times at most). Otherwise, writing nothing:
         {"wait", u - now (-1: never), budget, limit},
         {"queued", t - now, budget} (admitted at t, after the floor of that budget, but
         later than max_wait),
         {"ahead", t - now, budget, from, to, e} (admitted at t, within max_wait but beyond
         the horizon: only its place in line is written, on the budget that holds it back,
         the last refusal's or the floor's: that budget's line moves from `from` to `to`, at
         least t plus Tc of the limit that held it, or when none did of the limit LL, or else
         the shortest Tc of the budget's limits; LL becomes the limit that held it, if one
         did; own frame, epoch e),
         {"paused", u - now, budget}, {"in_flight_full", budget} (unexpired leases >= cap),
         {"mismatch", budget, limit, stored fingerprint} (the budget's state follows other
         limits: a fingerprint differs, or it has more limits; "" when it has fewer).
         Indices from 0. Costs above a limit's capacity never get here.
acquires Several acquisitions, decided one after another at one instant (Redis's clock read
         once), as so many acquire calls would be, in one atomic step. KEYS: each one's, in
         order. ARGV: numbers (m, then per acquisition how many keys, arguments and numbers
         it has, then each one's numbers, one after another), then each one's arguments but
         its numbers. An acquisition with the keys and arguments of the one before it (most
         often, under load: Redis makes a Lua string of every one it is given) has none of
         its own: 0 keys and 0 arguments (any other has its lease). A budget written by an
         acquisition (save) is written once, at the end, as the last one left it, and the
         next acquisition that charges it finds it so; one emptied is deleted at once, and
         found empty by the next; one opened and not written (refused) is read again by the
         next. The budgets of an ask must be distinct (the
         store refuses one that names a budget twice). Answer: per acquisition, acquire's
         answer, or {"error", message} where acquire raised one: a state or limits it cannot
         read (found before it changes anything), or a command's error (a key of ours that
         holds another type), which may come after it charged some of its limits: those
         charges stay, written with the rest (the safe side).
settle   KEYS per budget: its state, its lease set when it holds the lease, then the lists of
         all its limits (a limit whose state follows other limits may be a log there).
         ARGV: lease id ("" none), numbers, then per budget its fingerprints, then the
         channel to publish on (below; "" none). Numbers: now, ef of the receipts, nbudgets, then per budget: 1 when it holds the lease (else 0), then
         per limit: g (units to refund: reserved - used, 0 when none or no receipt), back
         (floor(g*P/N)), extra (used - reserved, 0 when none), Tx Ox (span of min(extra, N)),
         admitted_at, bucket_mark as h, l (the receipt). The core's settle_budget: a refund
         with the receipt, or a charge of min(extra, N) at now. A limit whose stored
         fingerprint differs is stale: it is only charged, under the limits its state
         follows (the stored fingerprint's). Then the lease is removed from the budgets that
         hold it; each budget it was in gets its state key published on the channel (a slot
         came back there). {"ok"}.
pause    KEYS: state. ARGV: now, for ns, "set" (replace; 0 lifts) or "max" (the later end).
         {"ok", paused_until - now, 0 when not paused}.
renew    KEYS: lease sets. ARGV: now, lease id, lease ms: the lease, where present, expires
         lease ms from now. The number of sets it was in.
leave    KEYS: state. ARGV: now, from, to, e (an "ahead" answer's): when the budget's epoch
         is e and its line ends at `to`, it ends at `from` again. 1 when it did, else 0.
lower    KEYS: state, then the lists of all its limits. ARGV: now, fingerprints, limit (from
         1), counted: LimitRule::lower with what `counted` exceeds the limit's snapshot `used`
         now (nothing when it does not). {"ok", units charged} or {"mismatch", 0, limit,
         stored} (as acquire's).
peek     KEYS: state, leases, lists of ONE budget (all its limits'). ARGV: now, fingerprints.
         Writes nothing. {"ok", e, now, in flight, paused_until, floor, then per limit: alg,
         then tb/lb: tat, overshoot, refunded as h, l; log: total, k, k pairs t, amount;
         ctr: offset, window_start, previous, current; fw: offset, window_start, used; sw:
         the bucket's four then the log's} (own frame, rebased as a write would), or
         {"mismatch", 0, limit, stored}.
]]

-- Written for Redis's Lua: a function call costs as much as ten arithmetic steps and a call
-- of a C function (math.floor, string.*) as much again, so the common paths (a bucket, a log,
-- a smooth window, admitted) are written out where they are used, and `%` does floor's work.

local END = 4503599627370496 -- 2^52: the end of a budget's clock
local REBASE_AT = 2251799813685248 -- 2^51
local REBASE_TO = 1125899906842624 -- 2^50
local COUNT_MAX = 4503599627370496 -- 2^52
local DAY_S = 86400
local DAY_NS = 86400000000000
local GIGA = 1000000000
local MEGA = 1000000
local SLACK_MS = 1000
local NEVER = 1 / 0
local SEARCH_STEPS = 16
local CHUNK = 32
local LIMB = 16777216 -- 2^24
local RULES_MAX = 1000

-- The state's layout (see STORAGE): the budget's doubles, then each limit's, addressed as
-- v[o + TAT] and so on from its offset o (which is less than its first double's index by one,
-- or by five for a sliding log alone, whose doubles are the last five of the nine).
local HEAD = 7
local E, BORN, PAUSE, FLOOR, X, LINE, LL = 1, 2, 3, 4, 5, 6, 7
local TAT, OV, RH, RL = 1, 2, 3, 4
local WS, PREV, CUR, OFF = 1, 2, 3, 4
local TOTAL, SHAPE, FRONT, NEED, LEXP = 5, 6, 7, 8, 9
-- A log's entries: K at most in its head and in its tail, K in each chunk of its list.
local K = 4
local ENTRY = 16 -- bytes: struct '<dd'
local NOW_MS = 0

-- Lua's libraries, taken at the first call (see A FUNCTION, NOT A SCRIPT).
local tonumber, tostring, unpack, pcall, type
local sub, byte, char, find, gmatch, rep, sformat, concat, pack, unpack_s, call

-- The call's keys, arguments and time: set at the entry of every call.
local KEYS, ARGV, SEC, NSEC
-- A batch of acquisitions (`acquires`): where the current one's keys and arguments start
-- (less one: 0 outside a batch), whether the batch has read Redis's clock, the budgets it
-- has opened (by state key) and those whose write waits for its end.
local KX, AX, BATCH, TIMED = 0, 0, false, false
-- The budgets the current acquisition of a batch opened from Redis.
local ACQ_OPENED, ACQ_N = {}, 0
-- A batch's numbers (all its acquisitions'), and where the current one's start (less one).
local BX, XO = false, 0
local OPENED, DIRTY, DIRTY_N = {}, {}, 0

-- floor(a / b) and a - b * floor(a / b), exact for integers |a| < 2^53, 0 < b, |a| + b < 2^53
-- (Lua's % rounds a / b as it divides: one step fixes it).
local function idiv(a, b)
  local r = a % b
  if r < 0 then
    r = r + b
  elseif r >= b then
    r = r - b
  end
  return (a - r) / b, r
end

local function imod(a, b)
  local r = a % b
  if r < 0 then
    r = r + b
  elseif r >= b then
    r = r - b
  end
  return r
end

-- ceil(ns / MEGA): nanoseconds to whole milliseconds, rounded up.
local function ceil_ms(ns)
  local r = imod(ns, MEGA)
  if r > 0 then return (ns - r) / MEGA + 1 end
  return ns / MEGA
end

-- The time of the call: Redis's (`TIME`) for "" or a negative number, else the instant given
-- (tests): nanoseconds since the Unix epoch, as a number or digits.
local function clock(ns)
  if ns == '' or ns + 0 < 0 then
    -- (a batch's acquisitions are decided at one instant: its first's)
    if BATCH and TIMED then return end
    TIMED = true
    local t = call('TIME')
    SEC, NSEC = t[1] + 0, t[2] * 1000
  else
    SEC, NSEC = idiv(ns + 0, GIGA)
  end
  -- The current millisecond, rounded down: a lease scored above it is live.
  NOW_MS = SEC * 1000 + (NSEC - imod(NSEC, MEGA)) / MEGA
end

local function now_ms()
  return NOW_MS
end

-- floor(a * b / c) and the remainder, exact for integers 0 <= a, b < 2^53, 0 < c <= 2^52,
-- with a quotient below 2^53: the product in 24-bit limbs, divided bit by bit (the remainder
-- stays below c, so twice it plus one bit stays below 2^53).
local function muldiv(a, b, c)
  local function limbs(x)
    local x0 = x % LIMB
    x = (x - x0) / LIMB
    local x1 = x % LIMB
    return x0, x1, (x - x1) / LIMB
  end
  local a0, a1, a2 = limbs(a)
  local b0, b1, b2 = limbs(b)
  local p = {
    a0 * b0,
    a0 * b1 + a1 * b0,
    a0 * b2 + a1 * b1 + a2 * b0,
    a1 * b2 + a2 * b1,
    a2 * b2,
    0,
  }
  for i = 1, 5 do
    local lo = p[i] % LIMB
    p[i + 1] = p[i + 1] + (p[i] - lo) / LIMB
    p[i] = lo
  end
  local q, r = 0, 0
  for i = 6, 1, -1 do
    local limb = p[i]
    for bit = 23, 0, -1 do
      local weight = 2 ^ bit
      local set = 0
      if limb >= weight then
        set, limb = 1, limb - weight
      end
      r = r * 2 + set
      q = q * 2
      if r >= c then
        q, r = q + 1, r - c
      end
    end
  end
  return q, r
end

-- Numbers past 2^53 (refunded totals, bucket marks) as two: h * 10^9 + l, 0 <= l < 10^9.
-- (h, l) + d, for an integer |d| < 2^53.
local function hl_add(h, l, d)
  local dl = imod(d, GIGA)
  h, l = h + (d - dl) / GIGA, l + dl
  if l >= GIGA then h, l = h + 1, l - GIGA end
  return h, l
end

-- (xh, xl) - (yh, yl) as a plain number: exact within +-9 * 10^15, infinite beyond.
local function hl_sub(xh, xl, yh, yl)
  local dh = xh - yh
  if dh > 9000000 then return NEVER end
  if dh < -9000000 then return -NEVER end
  return dh * GIGA + (xl - yl)
end

-- ---------------------------------------------------------------------------------------
-- Limits, from their fingerprints; kept from call to call (immutable once made).

local RULES, RULES_N = {}, 0
-- The limits of a state that holds none (a pause alone, or a new state).
local NONE
-- A limit's doubles: a bucket's four, a log's five, a smooth window's nine, a window's four.
local SIZE = { tb = 4, lb = 4, sw = 9, log = 5, ctr = 4, fw = 4 }

-- A limit from its fingerprint: its seven rule fields joined with ':'.
local function rule(fp)
  local f = {}
  for part in gmatch(fp, '[^:]+') do f[#f + 1] = part end
  local alg = f[1]
  if SIZE[alg] == nil then error({ err = 'tokengate: no algorithm ' .. tostring(alg) }) end
  local L = {
    alg = alg,
    N = tonumber(f[2]),
    P = tonumber(f[3]),
    M = tonumber(f[4]),
    B = tonumber(f[5]),
    TB = tonumber(f[6]),
    OB = tonumber(f[7]),
    fp = fp,
    gcra = alg == 'tb' or alg == 'lb',
    bucket = alg == 'tb' or alg == 'lb' or alg == 'sw',
    log = alg == 'log' or alg == 'sw',
    window = alg == 'ctr' or alg == 'fw',
  }
  L.W = L.P + L.M
  return L
end

-- The limits of a budget's fingerprints (the limits' joined with '|'), with where each one's
-- doubles are (`off`), how many doubles they take (`size`), and where each log's list is
-- among the logs' (`li`: an acquire passes the logs' lists only).
local function rules_of(fps)
  local R = RULES[fps]
  if R ~= nil then return R end
  R = { off = {}, size = 0, logs = 0, li = {} }
  for fp in gmatch(fps, '[^|]+') do
    local L = rule(fp)
    local i = #R + 1
    R[i] = L
    R.off[i] = HEAD + R.size
    if L.alg == 'log' then R.off[i] = HEAD + R.size - 4 end
    R.size = R.size + SIZE[L.alg]
    if L.log then
      R.logs = R.logs + 1
      R.li[i] = R.logs
    end
  end
  if RULES_N >= RULES_MAX then RULES, RULES_N = {}, 0 end
  RULES[fps], RULES_N = R, RULES_N + 1
  return R
end

-- ---------------------------------------------------------------------------------------
-- Budgets: the state, read and written whole.

local FORMATS = {}

-- The struct format of k little-endian doubles.
local function doubles(k)
  local f = FORMATS[k]
  if f == nil then
    f = '<' .. rep('d', k)
    FORMATS[k] = f
  end
  return f
end

-- Lua's stack holds about 8,000 values: a C function returns, and `unpack` spreads, at most
-- this many at once (a batch of large asks has more numbers).
local SPREAD = 4096

-- The numbers of an argument made of little-endian doubles, in a table.
local function numbers(blob)
  local k = #blob / 8
  if k <= SPREAD then return { unpack_s(FORMATS[k] or doubles(k), blob) } end
  local x, n, at = {}, 0, 1
  while n < k do
    local m = k - n
    if m > SPREAD then m = SPREAD end
    local part = { unpack_s(FORMATS[m] or doubles(m), blob, at) }
    for i = 1, m do x[n + i] = part[i] end
    n, at = n + m, at + 8 * m
  end
  return x
end

-- The first r numbers of t as little-endian doubles, in one string.
local function packed(t, r)
  if r <= SPREAD then return pack(FORMATS[r] or doubles(r), unpack(t, 1, r)) end
  local parts, i = {}, 1
  while i <= r do
    local j = i + SPREAD - 1
    if j > r then j = r end
    parts[#parts + 1] = pack(FORMATS[j - i + 1] or doubles(j - i + 1), unpack(t, i, j))
    i = j + 1
  end
  return concat(parts)
end

local POOL = {}

-- A log's shape: the entries in its head and in its tail (in the state), the chunks in its
-- list.
local function shape(x)
  local tn = x % 32
  local hn = ((x - tn) / 32) % 32
  return hn, tn, (x - hn * 32 - tn) / 1024
end

local function shaped(hn, tn, lc)
  return lc * 1024 + hn * 32 + tn
end

-- Budgets' states as last read or written by this library, by key (budgets with logs only:
-- the others' states are small): an entry's doubles, logs' heads and tails, fingerprints,
-- their limits and count, and the version the state has in Redis (false while the call
-- changes them without writing). A call reads 8 bytes of the state (GETRANGE) when it has its
-- entry, rather than all of it (GET, and every byte hashed by Lua): the version is new at
-- every write (this library's first instant, then a count), so an equal one is the same
-- state. At most CACHED of them: then all are dropped.
local CACHE, CACHE_N, CACHED = {}, 0, 1024
local NONCE, WRITES = 0, 0
-- The calls so far: an entry a budget of this call already uses is not shared with another.
local CALLS = 0

-- The version of a state about to be written.
local function version()
  WRITES = WRITES + 1
  if WRITES >= 4294967296 then WRITES = 1 end
  return NONCE + WRITES
end

-- A state read whole: fills `e` (a budget or a cache entry: its version, doubles, logs'
-- heads and tails, fingerprints, their limits and count). `asked`: the fingerprints the call
-- gives, most often the stored ones (R, their limits).
local function parse(s, skey, e, asked, R)
  local t1, t2, t3, n, sh, sl, fh, fl = byte(s, 1, 8)
  -- "tg5", or "tg6" with a version (the states of budgets with logs)
  if t1 ~= 116 or t2 ~= 103 or (t3 ~= 53 and t3 ~= 54) then
    error({ err = 'tokengate: ' .. skey .. ' holds no state of this version' })
  end
  -- The version, the doubles, the logs' heads and tails, then the fingerprints.
  local flen = fh * 256 + fl
  local at, S = #s - flen + 1, R
  if flen == #asked and find(s, asked, at, true) == at then
    e.fps = asked
  else
    e.fps = sub(s, at, at + flen - 1)
    S = rules_of(e.fps)
  end
  local m = HEAD + sh * 256 + sl
  local versioned = t3 == 54
  local v
  if versioned then
    v = { unpack_s(FORMATS[m] or doubles(m), s, 17) }
  else
    v = { unpack_s(FORMATS[m] or doubles(m), s, 9) }
  end
  at = v[m + 1]
  v[m + 1] = nil
  if S.logs > 0 then
    local head, tail, off = e.head, e.tail, S.off
    for i = 1, n do
      if S[i].log then
        local hn, tn = shape(v[off[i] + SHAPE])
        head[i] = sub(s, at, at + ENTRY * hn - 1)
        at = at + ENTRY * hn
        tail[i] = sub(s, at, at + ENTRY * tn - 1)
        at = at + ENTRY * tn
      end
    end
  end
  e.v, e.S, e.n = v, S, n
  -- (a state without a version is read whole every time: any number says it exists)
  e.version = versioned and unpack_s('<d', s, 9) or -1
end

-- A new state's doubles.
local function fresh(e)
  local day = SEC - SEC % DAY_S
  local v = { day, (SEC - day) * GIGA + NSEC, 0, 0, 0, 0, 0 }
  e.version, e.v, e.fps, e.S, e.n = false, v, '', NONE, 0
end

-- The budget whose keys start at KEYS[kx]: its state, its lease set when `leased`, then the
-- lists of every limit (`all`) or of its logs only; a table of the call's, kept from call to
-- call (`bi` picks it). Its doubles `v`, its logs' heads and tails, its limits `n` and
-- fingerprints `fps` as stored (none for a new state) and theirs `S`, its instant `now`, its
-- cache entry (for budgets with logs: the others' states are small). `asked`: the
-- fingerprints the call gives, which the stored ones most often are; R, their limits.
local OPENS = 0

local function open(bi, kx, asked, R, leased, all)
  local skey = KEYS[kx]
  local B = BATCH and OPENED[skey]
  if B then
    -- An earlier acquisition of the batch wrote it (see `save`; an ask names each budget
    -- once): the state as that one left it, which is what Redis would hold (`again`).
    B.kx, B.lkey, B.lk, B.all, B.logs = kx, false, 0, all, false
    if leased then B.lkey, B.lk = KEYS[kx + 1], 1 end
    B.rules, B.asked, B.x, B.xa, B.cap, B.inflight, B.D = R, asked, false, 0, false, 0, 0
    B.now, B.again = (SEC - B.v[E]) * GIGA + NSEC, true
    return B
  end
  OPENS = OPENS + 1
  B = POOL[OPENS]
  if B == nil then
    -- Every field made at once (a table grown field by field costs twice as much).
    B = {
      kx = 0,
      skey = false,
      lkey = false,
      lk = 0,
      all = false,
      logs = false,
      entry = false,
      version = false,
      ohead = {},
      otail = {},
      written = 0,
      v = false,
      head = false,
      tail = false,
      n = 0,
      fps = '',
      S = false,
      exists = false,
      now = 0,
      rules = false,
      x = false,
      xa = 0,
      asked = '',
      cap = false,
      pf = -1,
      pt = 0,
      pe = 0,
      inflight = 0,
      D = 0,
      ms = false,
      again = false,
    }
    POOL[OPENS] = B
  end
  B.ms, B.again = false, false
  B.kx, B.skey, B.lkey, B.lk, B.all, B.logs = kx, skey, false, 0, all, false
  if leased then B.lkey, B.lk = KEYS[kx + 1], 1 end
  B.rules, B.asked, B.x, B.xa, B.cap, B.inflight, B.D = R, asked, false, 0, false, 0, 0
  local e, entry = nil, false
  if R.logs > 0 then
    e = CACHE[skey]
    local shared = e ~= nil and e.user == CALLS
    if e and e.version and not shared then
      local h = call('GETRANGE', skey, '8', '15')
      if #h ~= 8 or unpack_s('<d', h) ~= e.version then e = nil end
    else
      e = nil
    end
    if e == nil then
      e = { version = false, v = false, head = {}, tail = {}, fps = '', S = NONE, n = 0, user = 0 }
      local s = call('GET', skey)
      if s then
        parse(s, skey, e, asked, R)
      else
        fresh(e)
      end
      if not shared then
        if CACHE_N >= CACHED then CACHE, CACHE_N = {}, 0 end
        if CACHE[skey] == nil then CACHE_N = CACHE_N + 1 end
        CACHE[skey] = e
      end
    end
    e.user, entry = CALLS, e
    B.v, B.head, B.tail, B.fps, B.S, B.n = e.v, e.head, e.tail, e.fps, e.S, e.n
    B.version = e.version
  else
    B.head, B.tail = B.ohead, B.otail
    local s = call('GET', skey)
    if s then
      parse(s, skey, B, asked, R)
    else
      fresh(B)
    end
  end
  B.entry, B.exists = entry, B.version ~= false
  B.now = (SEC - B.v[E]) * GIGA + NSEC
  if BATCH then
    -- (registered once read: a state that cannot be read is read again, and fails again)
    OPENED[skey] = B
    ACQ_N = ACQ_N + 1
    ACQ_OPENED[ACQ_N] = B
  end
  return B
end

-- The state is about to change: its cache entry no longer says what Redis holds.
local function changing(B)
  if B.entry then B.entry.version = false end
end

-- The state was written as B holds it (encode gave it `B.written`), or deleted.
local function written(B)
  local e = B.entry
  if e then
    e.version, e.v, e.head, e.tail, e.fps, e.S, e.n =
      B.written, B.v, B.head, B.tail, B.fps, B.S, B.n
  end
end

local function deleted(B)
  if CACHE[B.skey] ~= nil then
    CACHE[B.skey], CACHE_N = nil, CACHE_N - 1
  end
end

-- The list of the budget's limit i (a log's, or any limit's when the call passed them all).
local function list(B, i)
  if B.all then return KEYS[B.kx + B.lk + i] end
  return KEYS[B.kx + B.lk + B.rules.li[i]]
end

-- How many keys a budget of limits R has in a call: its state, its lease set when `leased`,
-- the lists of every limit (`all`) or of its logs.
local function key_count(R, leased, all)
  local k = 1 + #R
  if not all then k = 1 + R.logs end
  if leased then k = k + 1 end
  return k
end

-- A state that holds no limits takes `fps` (its limits R, all new). Their logs' lists go:
-- they may have outlived an earlier state.
local function adopt(B, fps, R)
  changing(B)
  local v = B.v
  for j = HEAD + 1, HEAD + R.size do v[j] = 0 end
  B.n, B.fps, B.S = #R, fps, R
  local logs = {}
  for i = 1, #R do
    if R[i].log then
      logs[#logs + 1] = list(B, i)
      B.head[i], B.tail[i] = '', ''
    end
  end
  if #logs > 0 then call('DEL', unpack(logs)) end
end

-- The index (from 0) and stored fingerprint of the first limit the state disagrees on.
local function mismatch(B, fps, R)
  if B.n == 0 or B.fps == fps then return nil end
  local S = B.S
  for i = 1, #R do
    local stored = S[i]
    if stored == nil then return i - 1, '' end
    if stored.fp ~= R[i].fp then return i - 1, stored.fp end
  end
  if S[#R + 1] ~= nil then return #R, S[#R + 1].fp end
  return nil
end

local TAGS, PARTS = {}, {}

-- The state as stored: "tg5" ("tg6" with logs), the number of limits (a byte), of their doubles and the
-- fingerprints' length (two bytes each, big-endian), the version (a double), the doubles,
-- each log's head and tail, then the fingerprints.
local function encode(B)
  local n, S, fps = B.n, B.S, B.fps
  local size, flen = S.size, #fps
  local id = (n * 65536 + size) * 65536 + flen
  local tag = TAGS[id]
  if tag == nil then
    local t3 = 53
    if S.logs > 0 then t3 = 54 end
    tag = char(116, 103, t3, n, (size - size % 256) / 256, size % 256, (flen - flen % 256) / 256)
      .. char(flen % 256)
    TAGS[id] = tag
  end
  local m = HEAD + size
  if S.logs == 0 then
    B.written = -1
    return tag .. pack(FORMATS[m] or doubles(m), unpack(B.v, 1, m)) .. fps
  end
  B.written = version()
  local doubles_ = pack(FORMATS[m + 1] or doubles(m + 1), B.written, unpack(B.v, 1, m))
  local parts, p = PARTS, 2
  parts[1], parts[2] = tag, doubles_
  for i = 1, n do
    if S[i].log then
      parts[p + 1], parts[p + 2] = B.head[i], B.tail[i]
      p = p + 2
    end
  end
  parts[p + 1] = fps
  return concat(parts, '', 1, p + 1)
end

-- ---------------------------------------------------------------------------------------
-- The sliding log: its oldest entries (its head, K at most) and its newest (its tail, K at
-- most) in the state, whole chunks of K entries between them in its list. A commit appends
-- to the tail; a full tail becomes the head if there is none, else goes to the list's end, as
-- one element. Entries that leave the window go from the head; an emptied head takes the
-- list's first chunk. So the tail holds the last entry whenever the log has one, and the head
-- has entries whenever the list does. The list is read lazily, a few chunks at a time (most
-- calls read none of it, and write it once every K entries).

-- The struct format of a tail of n entries whose last is replaced: the first n - 1 entries'
-- bytes as they are, then the last entry's two doubles.
local MERGED = {}
for n = 2, K do
  MERGED[n] = '<c' .. ENTRY * (n - 1) .. 'dd'
end

-- What the call has read of the list of limit i: its chunks by index (from 0).
local function chunks(B, i)
  local logs = B.logs
  if not logs then
    logs = {}
    B.logs = logs
  end
  local g = logs[i]
  if g == nil then
    g = {}
    logs[i] = g
  end
  return g
end

-- Chunk ci of limit i's list (of lc chunks), reading a few more toward `step` (1 forward,
-- -1 backward) when it is not read yet.
local function chunk(B, i, ci, step, lc)
  local g = chunks(B, i)
  local c = g[ci]
  if c == nil then
    local from, to = ci, ci + 3 * step
    if from > to then from, to = to, from end
    if from < 0 then from = 0 end
    if to > lc - 1 then to = lc - 1 end
    local items = call('LRANGE', list(B, i), from, to)
    for j = 1, #items do g[from + j - 1] = items[j] end
    c = g[ci]
  end
  return c
end

-- Entry j (from 1: over the head, the list, the tail) of limit i (at o): t, a.
local function log_entry(B, i, o, j, step)
  local hn, tn, lc = shape(B.v[o + SHAPE])
  if j <= hn then return unpack_s('<dd', B.head[i], ENTRY * (j - 1) + 1) end
  j = j - hn
  if j <= lc * K then
    local r = (j - 1) % K
    return unpack_s('<dd', chunk(B, i, (j - 1 - r) / K, step, lc), ENTRY * r + 1)
  end
  return unpack_s('<dd', B.tail[i], ENTRY * (j - lc * K - 1) + 1)
end

-- `buf` with its entry at byte p replaced by e.
local function splice(buf, p, e)
  return sub(buf, 1, p - 1) .. e .. sub(buf, p + ENTRY)
end

-- Entry j of limit i becomes t, a (written).
local function log_set(B, i, o, j, t, a)
  local hn, tn, lc = shape(B.v[o + SHAPE])
  local e = pack('<dd', t, a)
  if j <= hn then
    B.head[i] = splice(B.head[i], ENTRY * (j - 1) + 1, e)
    return
  end
  j = j - hn
  if j <= lc * K then
    local r = (j - 1) % K
    local ci = (j - 1 - r) / K
    local c = splice(chunk(B, i, ci, -1, lc), ENTRY * r + 1, e)
    chunks(B, i)[ci] = c
    call('LSET', list(B, i), ci, c)
    return
  end
  B.tail[i] = splice(B.tail[i], ENTRY * (j - lc * K - 1) + 1, e)
end

-- A log whose list has expired (by LEXP its entries, and its head's, had all left the window:
-- see EXPIRY) keeps its tail: what it no longer has counted for nothing.
local function log_vanished(B, i, o)
  local v = B.v
  local hn, tn, lc = shape(v[o + SHAPE])
  if lc == 0 or NOW_MS < v[o + LEXP] then return end
  changing(B)
  call('DEL', list(B, i))
  local tail, total = B.tail[i], 0
  for j = 1, tn do
    local _, a = unpack_s('<dd', tail, ENTRY * (j - 1) + 1)
    total = total + a
  end
  v[o + TOTAL], v[o + SHAPE], v[o + FRONT] = total, shaped(0, tn, 0), unpack_s('<dd', tail, 1)
  if v[o + NEED] <= B.now then v[o + NEED] = 0 end
  B.head[i] = ''
  if B.logs then B.logs[i] = nil end
end

-- log_vanished of the first k limits (the stored ones) of a budget whose lists the call has.
local function logs_vanished(B, k)
  local S, v = B.S, B.v
  if S.logs == 0 then return end
  for i = 1, k do
    local o = S.off[i]
    -- (a list has chunks when the shape is 1024 or more)
    if S[i].log and v[o + SHAPE] >= 1024 and NOW_MS >= v[o + LEXP] then log_vanished(B, i, o) end
  end
end

-- sliding_log::earliest of limit i (at o), over the window W = P + M: when its entries
-- leave room for c (`now` when they do already).
local function log_earliest(B, i, o, L, now, c)
  local v = B.v
  local room = L.N - c
  local live = v[o + TOTAL]
  if live <= room then return now end
  local hn, tn, lc = shape(v[o + SHAPE])
  local at = now
  for j = 1, hn + lc * K + tn do
    if live <= room then break end
    local t, a = log_entry(B, i, o, j, 1)
    live = live - a
    at = t + L.W
  end
  if at < now then at = now end
  return at
end

-- sliding_log::commit: drops what has left the window, then records c at now.
local function log_commit(B, i, o, L, now, c)
  local v = B.v
  -- (the shape is read whole, and written, only when entries go or one is added)
  local sh = v[o + SHAPE]
  local tn = sh % 32
  local last = now - L.W
  if tn > 0 and last >= 0 and v[o + FRONT] <= last then
    local hn, lc
    hn, tn, lc = shape(sh)
    -- Entries have left the window: count them from the front...
    local n, k, gone = hn + lc * K + tn, 0, 0
    while k < n do
      local t, a = log_entry(B, i, o, k + 1, 1)
      if t > last then
        v[o + FRONT] = t
        break
      end
      gone, k = gone + a, k + 1
    end
    v[o + TOTAL] = v[o + TOTAL] - gone
    -- (the last entry with units among them: none has units any more)
    if v[o + NEED] <= now then v[o + NEED] = 0 end
    -- ... and drop them: from the head, whole chunks, then the tail; an emptied head takes
    -- the next chunk.
    local r = k
    if r > hn then r = hn end
    B.head[i], hn, k = sub(B.head[i], ENTRY * r + 1), hn - r, k - r
    if hn == 0 and lc > 0 then
      local whole = (k - k % K) / K
      if whole > lc then whole = lc end
      local popped = whole
      if whole < lc then popped = whole + 1 end
      local items = call('LPOP', list(B, i), popped)
      lc, k = lc - popped, k - whole * K
      if popped > whole then
        B.head[i], hn, k = sub(items[popped], ENTRY * k + 1), K - k, 0
      end
      if B.logs then B.logs[i] = nil end
    end
    if k > 0 then B.tail[i], tn = sub(B.tail[i], ENTRY * k + 1), tn - k end
    sh = shaped(hn, tn, lc)
    v[o + SHAPE] = sh
  end
  local total = v[o + TOTAL]
  if total + c > COUNT_MAX then c = COUNT_MAX - total end
  if c > 0 then
    v[o + TOTAL] = total + c
    local tail, t, a = B.tail[i], nil, nil
    if tn > 0 then t, a = unpack_s('<dd', tail, ENTRY * (tn - 1) + 1) end
    if tn > 0 and t >= now then
      -- Merged into the last entry (one string made: the entries before it, then it).
      if tn == 1 then
        B.tail[i] = pack('<dd', t, a + c)
      else
        B.tail[i] = pack(MERGED[tn], tail, t, a + c)
      end
    else
      local hn, _, lc = shape(sh)
      if tn == K then
        -- A full tail becomes the head, or the list's last chunk (which expires when its last
        -- entry leaves the window, plus the slack).
        if hn == 0 then
          B.head[i], hn = tail, K
        else
          local key = list(B, i)
          call('RPUSH', key, tail)
          lc = lc + 1
          local exp = v[E] * 1000 + ceil_ms(t + L.W) + SLACK_MS
          v[o + LEXP] = exp
          call('PEXPIRE', key, sformat('%d', exp - NOW_MS))
        end
        tail, tn = '', 0
      end
      if hn + lc + tn == 0 then v[o + FRONT] = now end
      B.tail[i], tn, t = pack('<c0dd', tail, now, c), tn + 1, now
      v[o + SHAPE] = shaped(hn, tn, lc)
    end
    v[o + NEED] = t + L.W
  end
end

-- sliding_log::refund: up to `units` back to the entry admitted at `at`.
local function log_refund(B, i, o, L, at, units)
  local v = B.v
  local hn, tn, lc = shape(v[o + SHAPE])
  local n = hn + lc * K + tn
  if n == 0 or at > unpack_s('<dd', B.tail[i], ENTRY * (tn - 1) + 1) then return end
  for j = n, 1, -1 do
    local t, a = log_entry(B, i, o, j, -1)
    if t == at then
      local given = units
      if a < given then given = a end
      if given > 0 then
        a = a - given
        log_set(B, i, o, j, t, a)
        v[o + TOTAL] = v[o + TOTAL] - given
        if a == 0 and v[o + NEED] == t + L.W then
          -- It was the last entry with units: find the one before it.
          v[o + NEED] = 0
          for k = j - 1, 1, -1 do
            local tk, ak = log_entry(B, i, o, k, -1)
            if ak > 0 then
              v[o + NEED] = tk + L.W
              break
            end
          end
        end
      end
      return
    end
    if t < at then return end
  end
end

-- Every entry of limit i's log (unless its list has expired), in order: instants, amounts.
local function log_all(B, i, o)
  local v = B.v
  local hn, tn, lc = shape(v[o + SHAPE])
  local ts, as = {}, {}
  local function add(buf)
    for j = 1, #buf / ENTRY do
      local t, a = unpack_s('<dd', buf, ENTRY * (j - 1) + 1)
      ts[#ts + 1], as[#as + 1] = t, a
    end
  end
  if lc == 0 or NOW_MS < v[o + LEXP] then
    add(B.head[i])
    if lc > 0 then
      local items = call('LRANGE', list(B, i), 0, -1)
      for j = 1, #items do add(items[j]) end
    end
  end
  add(B.tail[i])
  return ts, as
end

-- Limit i's log made of entries ts, as (after a rebase moved them), in its state and list.
local function log_rebuild(B, i, o, L, ts, as)
  local v = B.v
  local n = #ts
  local key = list(B, i)
  call('DEL', key)
  v[o + SHAPE], v[o + FRONT], v[o + NEED], v[o + LEXP] = 0, 0, 0, 0
  B.head[i], B.tail[i] = '', ''
  if B.logs then B.logs[i] = nil end
  if n == 0 then return end
  local function bytes(from, to)
    local parts = {}
    for j = from, to do parts[#parts + 1] = pack('<dd', ts[j], as[j]) end
    return concat(parts)
  end
  -- The last 1 to K entries in the tail, the first K before them in the head, the rest in
  -- chunks.
  local tn = (n - 1) % K + 1
  local rest = n - tn
  local hn, lc = 0, 0
  if rest > 0 then
    hn, lc = K, (rest - K) / K
    B.head[i] = bytes(1, K)
    for ci = 0, lc - 1 do
      call('RPUSH', key, bytes(K + ci * K + 1, K + ci * K + K))
    end
    if lc > 0 then
      local exp = v[E] * 1000 + ceil_ms(ts[rest] + L.W) + SLACK_MS
      v[o + LEXP] = exp
      call('PEXPIRE', key, sformat('%d', exp - NOW_MS))
    end
  end
  B.tail[i] = bytes(rest + 1, n)
  v[o + SHAPE], v[o + FRONT] = shaped(hn, tn, lc), ts[1]
  for j = n, 1, -1 do
    if as[j] > 0 then
      v[o + NEED] = ts[j] + L.W
      break
    end
  end
end

-- ---------------------------------------------------------------------------------------
-- GCRA (gcra.rs): the token and leaky buckets, and the smooth window's bucket. `advance`
-- (the exact TAT T, O after tat, ov; none past the end of the clock) and `next_tat` (the TAT
-- after admitting units of span T, O at an instant) are written out where they are used.

-- admit: true when admitted at now; false, the earliest instant otherwise.
local function gcra_admit(L, tat, ov, now, c, T, O)
  -- A, a: advance.
  local A, a = tat + T, ov
  if O ~= 0 then
    local gap = L.N - O
    if ov >= gap then
      A, a = A - 1, ov - gap
    else
      a = ov + O
    end
  end
  if A > END then return false, NEVER end
  local TT, OO = L.TB, L.OB
  if c > L.B then
    -- The shaper, the smooth window's bucket: waits for a full bucket.
    TT, OO = T, O
  end
  local at = L.M
  if tat == 0 then at = 0 end
  if a < OO then at = at + 1 end
  if A >= TT then
    at = A - TT + at
  else
    at = at - (TT - A)
    if at < 0 then at = 0 end
  end
  if at <= now then
    -- next_tat at now: past the end?
    if tat <= now and now + T > END then return false, NEVER end
    return true
  end
  if tat <= at and at + T > END then return false, NEVER end
  return false, at
end

local function gcra_earliest(L, tat, ov, now, c, T, O)
  local ok, at = gcra_admit(L, tat, ov, now, c, T, O)
  if ok then return now end
  return at
end

-- Gcra::commit: returns the drain instant, rounded down (the mark less the refunded total).
local function gcra_commit(L, v, o, now, T, O)
  local tat0, ov0 = v[o + TAT], v[o + OV]
  local tat, ov
  if tat0 > now then
    -- advance
    tat, ov = tat0 + T, ov0
    if O ~= 0 then
      local gap = L.N - O
      if ov0 >= gap then
        tat, ov = tat - 1, ov0 - gap
      else
        ov = ov0 + O
      end
    end
  else
    tat, ov = now + T, O
  end
  if tat > END then tat, ov = END, 0 end
  v[o + TAT], v[o + OV] = tat, ov
  if ov ~= 0 then tat = tat - 1 end
  if tat < 0 then return 0 end
  return tat
end

-- Gcra::refund: back at most what the bucket still holds of the admission marked mh, ml.
local function gcra_refund(v, o, now, mh, ml, back_)
  local drained = hl_sub(mh, ml, v[o + RH], v[o + RL])
  if drained < 0 then drained = 0 end
  local held = drained - now
  if held < 0 then held = 0 end
  if back_ > held then back_ = held end
  local tat = v[o + TAT]
  if tat > now and tat ~= END then
    local to = tat - back_
    if to < now then to = now end
    v[o + RH], v[o + RL] = hl_add(v[o + RH], v[o + RL], tat - to)
    v[o + TAT] = to
    if to == now then v[o + OV] = 0 end
  end
end

-- ---------------------------------------------------------------------------------------
-- Windows (fixed_window.rs, sliding_counter.rs), aligned to OFF modulo P.

local function window_of(t, P, off)
  return t - imod(t - off, P)
end

local function counts(L, v, o, now)
  local ws = v[o + WS]
  local w = window_of(now, L.P, v[o + OFF])
  if w <= ws then return v[o + PREV], v[o + CUR] end
  if w - L.P == ws then return v[o + CUR], 0 end
  return 0, 0
end

local function ctr_earliest(L, v, o, now, c)
  if now < v[o + WS] then now = v[o + WS] end
  local w = window_of(now, L.P, v[o + OFF])
  local prev, cur = counts(L, v, o, now)
  local from = now - w
  for _ = 1, 3 do
    local room = L.N - c - cur
    if L.N >= c and room >= 0 then
      local e = 0
      if prev ~= 0 then
        local free = L.P
        if room < prev then free = muldiv(room, L.P, prev) end
        if free > L.P then free = L.P end
        e = L.P - free
      end
      if e < L.P then
        if e < from then e = from end
        return w + e
      end
    end
    w, prev, cur, from = w + L.P, cur, 0, 0
  end
  return w
end

local function ctr_commit(L, v, o, now, c)
  local w = window_of(now, L.P, v[o + OFF])
  if w > v[o + WS] then
    local prev, cur = counts(L, v, o, now)
    v[o + WS], v[o + PREV], v[o + CUR] = w, prev, cur
  end
  local cur = v[o + CUR] + c
  if cur > COUNT_MAX then cur = COUNT_MAX end
  v[o + CUR] = cur
end

local function ctr_refund(L, v, o, at, units)
  local w = window_of(at, L.P, v[o + OFF])
  if w == v[o + WS] then
    local cur = v[o + CUR] - units
    if cur < 0 then cur = 0 end
    v[o + CUR] = cur
  elseif w + L.P == v[o + WS] then
    local prev = v[o + PREV] - units
    if prev < 0 then prev = 0 end
    v[o + PREV] = prev
  end
end

local function fw_earliest(L, v, o, now, c)
  local used = 0
  if window_of(now, L.P, v[o + OFF]) <= v[o + WS] then used = v[o + CUR] end
  if L.N >= used and c <= L.N - used then return now end
  local base = now
  if v[o + WS] > base then base = v[o + WS] end
  return window_of(base, L.P, v[o + OFF]) + L.P
end

local function fw_commit(L, v, o, now, c)
  local w = window_of(now, L.P, v[o + OFF])
  if v[o + WS] ~= w and w > v[o + WS] then v[o + WS], v[o + CUR] = w, 0 end
  local cur = v[o + CUR] + c
  if cur > COUNT_MAX then cur = COUNT_MAX end
  v[o + CUR] = cur
end

local function fw_refund(L, v, o, at, units)
  if v[o + WS] == window_of(at, L.P, v[o + OFF]) then
    local cur = v[o + CUR] - units
    if cur < 0 then cur = 0 end
    v[o + CUR] = cur
  end
end

-- ---------------------------------------------------------------------------------------
-- One limit (rule.rs), in its budget's own frame.

-- LimitRule::decide of limit i (of rule L, at o) for c units of span T, O: nil when admitted
-- at now, else the earliest instant (NEVER: never).
local function decide_limit(B, i, o, L, now, c, T, O)
  local v = B.v
  if L.gcra then
    local ok, at = gcra_admit(L, v[o + TAT], v[o + OV], now, c, T, O)
    if ok then return nil end
    return at
  end
  local alg, at = L.alg, nil
  if alg == 'sw' then
    local tat, ov = v[o + TAT], v[o + OV]
    local ok, u = gcra_admit(L, tat, ov, now, c, T, O)
    if ok and v[o + TOTAL] <= L.N - c then return nil end
    if ok then u = now end
    at = log_earliest(B, i, o, L, now, c)
    if u > at then at = u end
    -- The bucket again at that instant: full by then, it starts the units from it.
    if at > now and at ~= NEVER then at = gcra_earliest(L, tat, ov, at, c, T, O) end
  elseif alg == 'log' then
    at = log_earliest(B, i, o, L, now, c)
  elseif alg == 'ctr' then
    at = ctr_earliest(L, v, o, now, c)
  else
    at = fw_earliest(L, v, o, now, c)
  end
  if at <= now and at ~= NEVER then return nil end
  return at
end

-- LimitRule::commit of c units of span T, O: the bucket's drain instant (see gcra_commit),
-- nil for the windows and the log.
local function commit_limit(B, i, o, L, now, c, T, O)
  if L.gcra then return gcra_commit(L, B.v, o, now, T, O) end
  local alg = L.alg
  if alg == 'sw' then
    log_commit(B, i, o, L, now, c)
    return gcra_commit(L, B.v, o, now, T, O)
  elseif alg == 'log' then
    log_commit(B, i, o, L, now, c)
  elseif alg == 'ctr' then
    ctr_commit(L, B.v, o, now, c)
  else
    fw_commit(L, B.v, o, now, c)
  end
  return nil
end

-- LimitRule::charge: `units` more than admitted, at most the amount, at now (into debt), its
-- span worked out here (ceil(c * P / N) and the rounding's 1/Nths).
local function charge_limit(B, i, o, L, now, units)
  local c = units
  if c > L.N then c = L.N end
  local q, r = muldiv(c, L.P, L.N)
  if r > 0 then q, r = q + 1, L.N - r end
  commit_limit(B, i, o, L, now, c, q, r)
end

-- LimitRule::refund of `units` (worth `back_` ns to a bucket) admitted at `at` (own frame),
-- its mark mh, ml (own frame).
local function refund_limit(B, i, o, L, now, at, mh, ml, units, back_, born)
  if at < 0 then return end
  local v = B.v
  if L.bucket and at >= born then gcra_refund(v, o, now, mh, ml, back_) end
  if L.log then log_refund(B, i, o, L, at, units) end
  if L.alg == 'ctr' then
    ctr_refund(L, v, o, at, units)
  elseif L.alg == 'fw' then
    fw_refund(L, v, o, at, units)
  end
end

-- ---------------------------------------------------------------------------------------
-- The rebase, and writing a budget back.

-- The rebase: the number of days, and what it makes of one instant or TAT.
local function rebase_days(now)
  local k = idiv(now - REBASE_TO, DAY_NS)
  return k, k * DAY_NS
end

local function shift_instant(v, S)
  if v == 0 or v == END then return v end
  v = v - S
  if v < 0 then return 0 end
  return v
end

local function shift_tat(tat, ov, S)
  if tat == 0 or tat == END then return tat, ov end
  tat = tat - S
  if tat <= 0 then return 0, 0 end
  return tat, ov
end

-- Moves a stored budget's epoch forward (written), before it is read.
local function rebase(B)
  changing(B)
  local days, S = rebase_days(B.now)
  local v, R = B.v, B.S
  local rebuilds = {}
  v[PAUSE], v[FLOOR] = shift_instant(v[PAUSE], S), shift_instant(v[FLOOR], S)
  v[BORN], v[X] = shift_instant(v[BORN], S), shift_instant(v[X], S)
  v[LINE] = shift_instant(v[LINE], S)
  for i = 1, B.n do
    local L, o = R[i], R.off[i]
    if L.bucket then v[o + TAT], v[o + OV] = shift_tat(v[o + TAT], v[o + OV], S) end
    if L.window then
      v[o + OFF] = imod(v[o + OFF] - S, L.P)
      local ws = v[o + WS] - S
      if ws < 0 then
        v[o + WS], v[o + PREV], v[o + CUR] = 0, 0, 0
      else
        v[o + WS] = ws
      end
    end
    if L.log then
      local hn, tn, lc = shape(v[o + SHAPE])
      if hn + tn + lc > 0 then
        local ts, as = log_all(B, i, o)
        local kept_t, kept_a, total = {}, {}, 0
        for j = 1, #ts do
          if ts[j] - S >= 0 then
            kept_t[#kept_t + 1], kept_a[#kept_a + 1] = ts[j] - S, as[j]
            total = total + as[j]
          end
        end
        -- (the epoch moves first: the list's expiry is counted from it)
        rebuilds[#rebuilds + 1] = { i, o, L, kept_t, kept_a }
        v[o + TOTAL] = total
      end
    end
  end
  v[E] = v[E] + days * DAY_S
  B.now = B.now - S
  for j = 1, #rebuilds do
    local r = rebuilds[j]
    log_rebuild(B, r[1], r[2], r[3], r[4], r[5])
  end
  B.logs = false
  -- A list rebuilt of entries that have all left the window by now has an expiry already
  -- passed (Redis dropped it at its PEXPIRE): the log keeps its tail, as when a list expires
  -- (log_vanished).
  logs_vanished(B, B.n)
  call('SET', B.skey, encode(B), 'KEEPTTL')
  written(B)
end

-- The expiry of a state needed d ns more, in milliseconds (digits): rounded up, plus slack.
local function expiry(d)
  if d > 0 then return sformat('%d', ceil_ms(d) + SLACK_MS) end
  return sformat('%d', SLACK_MS)
end

-- The latest instant the first k limits' state still counts until (X; 0: fresh at any
-- instant); the latest the state needs (X, the pause, the floor, the line); and whether a
-- bucket among them has given time back.
local function limits_need(B, k)
  local v, S = B.v, B.S
  local x, refunded = 0, false
  for i = 1, k do
    local L, o = S[i], S.off[i]
    local need = 0
    if L.bucket then
      if v[o + RH] ~= 0 or v[o + RL] ~= 0 then refunded = true end
      if v[o + TAT] > 0 then need = v[o + TAT] + L.M end
    end
    if L.log and v[o + NEED] > need then need = v[o + NEED] end
    if L.window then
      if L.alg == 'ctr' then
        if v[o + CUR] > 0 then
          need = v[o + WS] + 2 * L.P
        elseif v[o + PREV] > 0 then
          need = v[o + WS] + L.P
        end
      elseif v[o + CUR] > 0 then
        need = v[o + WS] + L.P
      end
    end
    if need > x then x = need end
  end
  local need = x
  if v[PAUSE] > need then need = v[PAUSE] end
  if v[FLOOR] > need then need = v[FLOOR] end
  if v[LINE] > need then need = v[LINE] end
  return x, need, refunded
end

-- A budget a batch writes at its end (`flush`), as its last acquisition leaves it.
local function held(B)
  if not B.ms then
    DIRTY_N = DIRTY_N + 1
    DIRTY[DIRTY_N] = B
  end
  B.ms, B.exists = true, true
end

-- Writes a budget back: `all` says whether its first k limits (those the call loaded) are
-- all the state holds; the call has the lists of its first `lists` limits.
local function save(B, k, all, lists)
  local v, now = B.v, B.now
  if BATCH and all and k > 0 then
    -- Written once, at the batch's end, as the batch's last write of it leaves it, until
    -- what that one needs (`flush` works it out). Its first limit still counting after now
    -- says it is not fresh (the state's need is the latest of its limits', and more): a
    -- bucket (the most common first limit) counts until its TAT plus its margin (see
    -- limits_need).
    local L, o = B.S[1], B.S.off[1]
    local tat = L.bucket and v[o + TAT] or 0
    if (tat > 0 and tat + L.M > now) or limits_need(B, 1) > now then
      held(B)
      return
    end
  end
  local x, need, refunded = limits_need(B, k)
  if not all then
    if v[X] > x then
      x = v[X]
      if x > need then need = x end
    end
    refunded = true
  end
  if need <= now and not refunded then
    local keys = { B.skey }
    for i = 1, lists do
      if B.all or B.rules[i].log then keys[#keys + 1] = list(B, i) end
    end
    call('DEL', unpack(keys))
    deleted(B)
    -- (a later acquisition of the batch finds no state, as it would in Redis)
    B.ms = false
    if BATCH and OPENED[B.skey] == B then OPENED[B.skey] = nil end
    return
  end
  v[X] = x
  if BATCH then
    held(B)
    return
  end
  call('SET', B.skey, encode(B), 'PX', expiry(need - now))
  if B.entry then written(B) end
end

-- The writes a batch held back (see `save`): each budget's state as its last acquisition
-- left it (all its limits: a batch holds acquisitions only), until what that one needs.
local function flush()
  for j = 1, DIRTY_N do
    local B = DIRTY[j]
    if B.ms then
      local x, need = limits_need(B, B.n)
      B.v[X] = x
      call('SET', B.skey, encode(B), 'PX', expiry(need - B.now))
      if B.entry then written(B) end
      B.ms = false
    end
    DIRTY[j] = nil
  end
  DIRTY_N = 0
end

-- The lease set's expiry: its latest lease's.
local function lease_expiry(lkey)
  local top = call('ZRANGE', lkey, -1, -1, 'WITHSCORES')
  if #top == 0 then return end
  local ms = tonumber(top[2]) - now_ms()
  if ms < 1 then ms = 1 end
  call('PEXPIRE', lkey, sformat('%d', ms + SLACK_MS))
end

-- ---------------------------------------------------------------------------------------
-- Deciding a request.

-- BudgetView::decide at frame instant t: kind, until (frame; NEVER), limit index.
local function decide_budget(B, t)
  local now = t - B.D
  local v = B.v
  if v[PAUSE] > now then return 'paused', v[PAUSE] + B.D, 0 end
  local R, x, xa = B.rules, B.x, B.xa
  local off = R.off
  local at, li
  for i = 1, #R do
    local j, L, o = xa + 3 * i, R[i], off[i]
    local c, T, O = x[j - 3], x[j - 2], x[j - 1]
    local u
    if L.gcra or L.alg == 'sw' then
      -- A bucket, or a smooth window whose log has room (most calls): the bucket decides.
      local ok, w = gcra_admit(L, v[o + TAT], v[o + OV], now, c, T, O)
      if ok and (L.gcra or v[o + TOTAL] <= L.N - c) then
        u = nil
      elseif L.gcra then
        u = w
      else
        u = decide_limit(B, i, o, L, now, c, T, O)
      end
    else
      u = decide_limit(B, i, o, L, now, c, T, O)
    end
    if u ~= nil and (at == nil or u > at) then at, li = u, i end
  end
  if at ~= nil then
    -- decide_all's recheck: every limit again at that instant.
    if at ~= NEVER then
      for i = 1, #R do
        local j = xa + 3 * i
        local later = decide_limit(B, i, off[i], R[i], at, x[j - 3], x[j - 2], x[j - 1])
        if later ~= nil and later > at then at, li = later, i end
        if at == NEVER then break end
      end
    end
    return 'wait', at + B.D, li
  end
  if B.cap and B.inflight >= B.cap then return 'inflight', nil, 0 end
  return 'admit', nil, 0
end

-- decide_request: the budget that holds the request back longest.
local function decide_request(budgets, nb, t)
  local kind, untl, budget, limit = 'admit', nil, 0, 0
  for bi = 1, nb do
    local k, u, li = decide_budget(budgets[bi], t)
    if k ~= 'admit' then
      local longer
      if kind == 'admit' then
        longer = true
      elseif u ~= nil and kind == 'inflight' then
        longer = u > t
      elseif u ~= nil then
        longer = untl ~= nil and u > untl
      else
        longer = false
      end
      if longer then kind, untl, budget, limit = k, u, bi, li end
    end
  end
  return kind, untl, budget, limit
end

-- ---------------------------------------------------------------------------------------
-- Operations.

local BUDGETS, REPLY = {}, {}

local function acquire()
  -- Its numbers from x[o + 1] on, its fingerprints from ARGV[fx + 1] on: in a batch, the
  -- numbers are all in the batch's first argument.
  local lease, x, o, fx = ARGV[AX + 1], BX, XO, AX + 1
  if not BATCH then x, o, fx = numbers(ARGV[2]), 0, 2 end
  clock(x[o + 1])
  local max_wait, lease_ms, nb, horizon = x[o + 2], x[o + 3], x[o + 4], x[o + 5]
  local xa, kx = o + 6, KX + 1
  local budgets = BUDGETS
  for bi = 1, nb do
    local fps = ARGV[fx + bi]
    local R = rules_of(fps)
    local cap = x[xa]
    local leased = cap >= 0
    local B = open(bi, kx, fps, R, leased, false)
    -- key_count(R, leased, false)
    kx = kx + 1 + R.logs
    if leased then kx = kx + 1 end
    if leased then B.cap = cap end
    -- Its place in line, if it holds one: from (-1: none), to, epoch.
    B.pf, B.pt, B.pe = x[xa + 1], x[xa + 2], x[xa + 3]
    B.x, B.xa = x, xa + 4
    xa = xa + 4 + 3 * #R
    local mi, stored = mismatch(B, fps, R)
    if mi ~= nil then return { 'mismatch', bi - 1, mi, stored } end
    budgets[bi] = B
  end
  local ef = SEC - SEC % DAY_S
  for bi = 1, nb do
    local B = budgets[bi]
    -- (at the batch's clock, its lists stay as an earlier acquisition of it found them)
    if not B.again then logs_vanished(B, B.n) end
    if B.exists and B.now >= REBASE_AT then rebase(B) end
    if B.n == 0 then adopt(B, B.asked, B.rules) end
    if B.cap then
      call('ZREMRANGEBYSCORE', B.lkey, '-inf', sformat('%d', now_ms()))
      B.inflight = call('ZCARD', B.lkey)
    end
    if B.v[E] < ef then ef = B.v[E] end
  end
  local now = (SEC - ef) * GIGA + NSEC
  local t, fb = now, 1
  for bi = 1, nb do
    local B = budgets[bi]
    B.D = (B.v[E] - ef) * GIGA
    -- Nothing before a floor, nor, without a place in line there, before the line's end.
    local f = B.v[FLOOR]
    if B.pf < 0 and B.v[LINE] > f then f = B.v[LINE] end
    if f + B.D > t then t, fb = f + B.D, bi end
  end
  -- What holds the request back: a budget, and its limit when one does.
  local admitted, refusal, hb, hl = false, nil, fb, nil
  for _ = 1, SEARCH_STEPS do
    local kind, u, bi, li = decide_request(budgets, nb, t)
    if kind == 'admit' then
      admitted = true
      break
    end
    if kind == 'inflight' then return { 'in_flight_full', bi - 1 } end
    local wait = -1
    if u ~= NEVER then wait = u - now end
    if kind == 'paused' then
      refusal, hb, hl = { 'paused', wait, bi - 1 }, bi, nil
    else
      refusal, hb, hl = { 'wait', wait, bi - 1, li - 1 }, bi, li
    end
    if u == NEVER or u - now > max_wait then break end
    t = u
  end
  if not admitted then return refusal end
  -- Admitted only after an earlier reservation, later than the caller may wait: refused.
  if t - now > max_wait then return { 'queued', t - now, fb - 1 } end
  if t - now > horizon then
    -- Beyond the horizon: a place in line on the budget that holds it back, whose line moves
    -- past it by Policy::room_in_line: Tc of the limit that held it back, or of the one
    -- that held back the latest place (LL), or else the shortest Tc of its limits.
    local B = budgets[hb]
    local v, bx, nr = B.v, B.xa, #B.rules
    local li = hl
    if li == nil and v[LL] >= 1 and v[LL] <= nr then li = v[LL] end
    local room = 0
    if li ~= nil then
      room = x[bx + 3 * li - 2]
    else
      for i = 1, nr do
        local T = x[bx + 3 * i - 2]
        if i == 1 or T < room then room = T end
      end
    end
    local from, line = v[LINE], t - B.D + room
    -- A line already passed is no line (as in memory, where a fresh budget is forgotten).
    if from <= B.now then from = 0 end
    if line < from then line = from end
    if line > from or (hl ~= nil and v[LL] ~= hl) then
      changing(B)
      v[LINE] = line
      if hl ~= nil then v[LL] = hl end
      save(B, B.n, true, B.n)
    end
    return { 'ahead', t - now, hb - 1, from, line, B.v[E] }
  end
  -- The answer as doubles in one string (see OPERATIONS): a table costs Redis far more to
  -- turn into a reply.
  for bi = 1, nb do
    local entry = budgets[bi].entry
    if entry then entry.version = false end
  end
  local reply = REPLY
  reply[1], reply[2], reply[3], reply[4] = t - now, ef, t, nb
  local r = 4
  for bi = 1, nb do
    local B = budgets[bi]
    local D, v, bx, R = B.D, B.v, B.xa, B.rules
    local tb, off = t - D, R.off
    r = r + 1
    reply[r] = #R
    for i = 1, #R do
      local j, o, L = bx + 3 * i, off[i], R[i]
      local drained
      if L.gcra then
        drained = gcra_commit(L, v, o, tb, x[j - 2], x[j - 1])
      elseif L.alg == 'sw' then
        -- (commit_limit's smooth window, written out)
        log_commit(B, i, o, L, tb, x[j - 3])
        drained = gcra_commit(L, v, o, tb, x[j - 2], x[j - 1])
      else
        drained = commit_limit(B, i, o, L, tb, x[j - 3], x[j - 2], x[j - 1])
      end
      local h, l = 0, 0
      if drained ~= nil then
        -- The mark: the drain instant plus the refunded total, in the frame (hl_add).
        local d = drained + D
        local dl = d % GIGA
        if dl < 0 then
          dl = dl + GIGA
        elseif dl >= GIGA then
          dl = dl - GIGA
        end
        h, l = v[o + RH] + (d - dl) / GIGA, v[o + RL] + dl
        if l >= GIGA then h, l = h + 1, l - GIGA end
      end
      reply[r + 1], reply[r + 2] = h, l
      r = r + 2
    end
    v[FLOOR] = tb
    -- Out of line: its place, still the last, is given back.
    if B.pf >= 0 and B.pe == v[E] and v[LINE] == B.pt then v[LINE] = B.pf end
    if B.cap then
      call('ZADD', B.lkey, sformat('%d', ef * 1000 + ceil_ms(t) + lease_ms), lease)
      lease_expiry(B.lkey)
    end
    save(B, B.n, true, B.n)
  end
  return packed(reply, r)
end

-- Several acquisitions in one call (see OPERATIONS).
local function acquires()
  local h = numbers(ARGV[1])
  local m = h[1]
  BATCH, TIMED, OPENED, BX = true, false, {}, h
  -- (where its keys and arguments start, less one; how many the last one with its own had)
  local replies, kx, ax, xo, nk, na = {}, 0, 1, 1 + 3 * m, 0, 0
  for j = 1, m do
    local k, a = h[3 * j - 1], h[3 * j]
    -- (every acquisition has an argument, its lease: 0 says "as the one before")
    if a > 0 then kx, ax, nk, na = kx + nk, ax + na, k, a end
    KX, AX, XO, ACQ_N = kx, ax, xo, 0
    local ok, r = pcall(acquire)
    -- What it opened and did not write (refused, or failed) is read again by the next
    -- acquisition that needs it, as it would be from Redis: whatever it changed there
    -- (limits taken by a new state, expired entries dropped) was not written.
    for i = 1, ACQ_N do
      local B = ACQ_OPENED[i]
      if not B.ms and OPENED[B.skey] == B then OPENED[B.skey] = nil end
      ACQ_OPENED[i] = nil
    end
    if ok then
      replies[j] = r
    elseif type(r) == 'table' and r.err then
      replies[j] = { 'error', r.err }
    else
      replies[j] = { 'error', tostring(r) }
    end
    xo = xo + h[3 * j + 1]
  end
  flush()
  return replies
end

local function settle()
  local lease, x = ARGV[1], numbers(ARGV[2])
  clock(x[1])
  local er, nb = x[2], x[3]
  local channel = ARGV[3 + nb] or ''
  local xa, kx = 4, 1
  for bi = 1, nb do
    local fps = ARGV[2 + bi]
    local held = x[xa] ~= 0
    xa = xa + 1
    local R = rules_of(fps)
    local n = #R
    local B = open(bi, kx, fps, R, held, true)
    changing(B)
    kx = kx + key_count(R, held, true)
    local stored = B.n
    if stored <= n then logs_vanished(B, stored) end
    if B.exists and B.now >= REBASE_AT and stored <= n then rebase(B) end
    if stored == 0 then adopt(B, fps, R) end
    -- The receipts' frame in this budget's: whatever is that far off gives nothing back.
    local de = er - B.v[E]
    local d = nil
    if de >= -9000000 and de <= 9000000 then d = de * GIGA end
    local S = B.S
    local now, born, dirty = B.now, B.v[BORN], false
    -- Settled no earlier than the budget's latest reservation (FLOOR): a refund at `now` would
    -- give back what that one, committed ahead of now, already counted as taken.
    if B.v[FLOOR] > now then now = B.v[FLOOR] end
    for i = 1, n do
      local L = R[i]
      local g, back_, extra, T, O = x[xa], x[xa + 1], x[xa + 2], x[xa + 3], x[xa + 4]
      local at, mh, ml = x[xa + 5], x[xa + 6], x[xa + 7]
      xa = xa + 8
      local kept = S[i]
      if kept ~= nil and kept.fp == L.fp then
        if g > 0 and d ~= nil then
          mh, ml = hl_add(mh, ml, d)
          refund_limit(B, i, S.off[i], L, now, at + d, mh, ml, g, back_, born)
          dirty = true
        elseif extra > 0 then
          if extra > L.N then extra = L.N end
          commit_limit(B, i, S.off[i], L, now, extra, T, O)
          dirty = true
        end
      elseif kept ~= nil then
        -- Stale: charged only, under the limits its state follows.
        if extra > 0 then
          charge_limit(B, i, S.off[i], kept, now, extra)
          dirty = true
        end
      end
    end
    if dirty then
      local k = B.n
      if n < k then k = n end
      save(B, k, B.n <= n, n)
    end
    if B.lkey and lease ~= '' then
      -- A slot freed: waiters for one are told, on the namespace's channel.
      if call('ZREM', B.lkey, lease) == 1 and channel ~= '' then
        call('PUBLISH', channel, B.skey)
      end
      lease_expiry(B.lkey)
    end
  end
  return { 'ok' }
end

local function pause()
  clock(ARGV[1])
  local for_ns, mode = tonumber(ARGV[2]), ARGV[3]
  local B = open(1, 1, '', NONE, false, true)
  local v, now = B.v, B.now
  local u = now + for_ns
  if u > END then u = END end
  local p = u
  if mode == 'max' and v[PAUSE] > u then p = v[PAUSE] end
  local need = p
  if v[X] > need then need = v[X] end
  if v[FLOOR] > need then need = v[FLOOR] end
  if v[LINE] > need then need = v[LINE] end
  if need <= now then
    if B.exists then
      local refunded, S = false, B.S
      for i = 1, B.n do
        local o = S.off[i]
        if S[i].bucket and (v[o + RH] ~= 0 or v[o + RL] ~= 0) then refunded = true end
      end
      changing(B)
      if refunded then
        v[PAUSE] = p
        call('SET', B.skey, encode(B), 'PX', SLACK_MS)
        written(B)
      else
        call('DEL', B.skey)
        deleted(B)
      end
    end
    return { 'ok', 0 }
  end
  changing(B)
  v[PAUSE] = p
  call('SET', B.skey, encode(B), 'PX', ceil_ms(need - now) + SLACK_MS)
  written(B)
  local left = 0
  if p > now then left = p - now end
  return { 'ok', left }
end

local function renew()
  clock(ARGV[1])
  local lease, lease_ms = ARGV[2], tonumber(ARGV[3])
  local score = SEC * 1000 + ceil_ms(NSEC) + lease_ms
  local renewed = 0
  for j = 1, #KEYS do
    local key = KEYS[j]
    if call('ZSCORE', key, lease) then
      call('ZADD', key, 'XX', score, lease)
      lease_expiry(key)
      renewed = renewed + 1
    end
  end
  return renewed
end

local function leave()
  clock(ARGV[1])
  local from, to, e = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local B = open(1, 1, '', NONE, false, true)
  if not B.exists or B.v[E] ~= e or B.v[LINE] ~= to then return 0 end
  changing(B)
  B.v[LINE] = from
  call('SET', B.skey, encode(B), 'KEEPTTL')
  written(B)
  return 1
end

-- LimitRule::snapshot's `used` of limit i (rule L, at o) at now, own frame: the units it
-- counts now (in its window, or missing from its bucket).
local function used_of(B, i, o, L, now)
  local v = B.v
  if L.gcra then
    -- burst - Gcra::available: the units the bucket holds, rounded up, at most its burst.
    local tat = v[o + TAT]
    if tat <= now then return 0 end
    local ahead = tat - now
    if ahead > L.TB then return L.B end
    local q, r = muldiv(ahead, L.N, L.P)
    local d = r - v[o + OV]
    if d > 0 then
      q = q + 1
    elseif d < 0 then
      q = q - idiv(-d, L.P)
    end
    if q > L.B then q = L.B end
    if q < 0 then q = 0 end
    return q
  end
  local alg = L.alg
  if alg == 'sw' or alg == 'log' then
    -- sliding_log::used: the entries after now - W.
    local live, last = v[o + TOTAL], now - L.W
    if last < 0 then return live end
    local hn, tn, lc = shape(v[o + SHAPE])
    for j = 1, hn + lc * K + tn do
      local t, a = log_entry(B, i, o, j, 1)
      if t > last then break end
      live = live - a
    end
    return live
  elseif alg == 'ctr' then
    -- sliding_counter::estimate: the previous window's count, weighted by what is left of
    -- it (rounded up), and the current one's.
    local t = now
    if t < v[o + WS] then t = v[o + WS] end
    local prev, cur = counts(L, v, o, t)
    local q, r = muldiv(prev, L.P - (t - window_of(t, L.P, v[o + OFF])), L.P)
    if r > 0 then q = q + 1 end
    q = q + cur
    if q > COUNT_MAX then q = COUNT_MAX end
    return q
  end
  if window_of(now, L.P, v[o + OFF]) <= v[o + WS] then return v[o + CUR] end
  return 0
end

local function lower()
  clock(ARGV[1])
  local fps, li, counted = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local R = rules_of(fps)
  local B = open(1, 1, fps, R, false, true)
  local mi, stored = mismatch(B, fps, R)
  if mi ~= nil then return { 'mismatch', 0, mi, stored } end
  local L = R[li]
  if L == nil then return { 'ok', 0 } end
  logs_vanished(B, B.n)
  if B.exists and B.now >= REBASE_AT then rebase(B) end
  if B.n == 0 then adopt(B, fps, R) end
  local o, now = R.off[li], B.now
  local excess = counted - used_of(B, li, o, L, now)
  if excess <= 0 then return { 'ok', 0 } end
  -- LimitRule::lower: a charge of at most the amount at now; the smooth window's in its
  -- window (its log) only.
  changing(B)
  if L.alg == 'sw' then
    local c = excess
    if c > L.N then c = L.N end
    log_commit(B, li, o, L, now, c)
  else
    charge_limit(B, li, o, L, now, excess)
  end
  save(B, B.n, true, B.n)
  return { 'ok', excess }
end

local function peek()
  clock(ARGV[1])
  local fps = ARGV[2]
  local R = rules_of(fps)
  local B = open(1, 1, fps, R, true, true)
  local mi, stored = mismatch(B, fps, R)
  if mi ~= nil then return { 'mismatch', 0, mi, stored } end
  local v, exists = B.v, B.exists
  local stored = B.n > 0
  if not stored then
    for j = HEAD + 1, HEAD + R.size do v[j] = 0 end
  end
  local S, e = 0, v[E]
  if exists and B.now >= REBASE_AT then
    local days
    days, S = rebase_days(B.now)
    e = e + days * DAY_S
  end
  local inflight = call('ZCOUNT', B.lkey, '(' .. sformat('%d', now_ms()), '+inf')
  local reply = {
    'ok',
    e,
    B.now - S,
    inflight,
    shift_instant(v[PAUSE], S),
    shift_instant(v[FLOOR], S),
  }
  local function out(x) reply[#reply + 1] = x end
  for i = 1, #R do
    local L, o = R[i], R.off[i]
    out(L.alg)
    if L.bucket then
      local tat, ov = shift_tat(v[o + TAT], v[o + OV], S)
      out(tat)
      out(ov)
      out(v[o + RH])
      out(v[o + RL])
    end
    if L.log then
      -- (a list expired: its entries and the head's left the window, the tail's count)
      local ts, as, total, pairs_ = {}, {}, v[o + TOTAL], {}
      if stored then ts, as = log_all(B, i, o) end
      if v[o + SHAPE] >= 1024 and NOW_MS >= v[o + LEXP] then
        total = 0
        for j = 1, #as do total = total + as[j] end
      end
      for j = 1, #ts do
        if ts[j] - S < 0 then
          total = total - as[j]
        else
          pairs_[#pairs_ + 1] = ts[j] - S
          pairs_[#pairs_ + 1] = as[j]
        end
      end
      out(total)
      out(#pairs_ / 2)
      for j = 1, #pairs_ do out(pairs_[j]) end
    end
    if L.window then
      local ws, prev, cur = v[o + WS] - S, v[o + PREV], v[o + CUR]
      if ws < 0 then ws, prev, cur = 0, 0, 0 end
      out(imod(v[o + OFF] - S, L.P))
      out(ws)
      if L.alg == 'ctr' then out(prev) end
      out(cur)
    end
  end
  return reply
end

local function init()
  tonumber, tostring, unpack = _G.tonumber, _G.tostring, _G.unpack
  pcall, type = _G.pcall, _G.type
  sub, byte, char, find = string.sub, string.byte, string.char, string.find
  gmatch, rep, sformat, concat = string.gmatch, string.rep, string.format, table.concat
  pack, unpack_s = struct.pack, struct.unpack
  call = redis.call
  NONE = rules_of('')
  -- Versions this library writes: its first instant (microseconds, 20 bits), then a count.
  local t = call('TIME')
  NONCE = (t[2] % 1048576) * 4294967296
end

-- One function per operation, named after the library.
local function entry(op)
  return function(keys, args)
    if call == nil then init() end
    KEYS, ARGV, CALLS, OPENS = keys, args, CALLS + 1, 0
    -- (outside a batch; and whatever a batch that failed left)
    BATCH, KX, AX, DIRTY_N, BX = false, 0, 0, 0, false
    return op()
  end
end

redis.register_function('$LIBRARY_acquire', entry(acquire))
redis.register_function('$LIBRARY_acquires', entry(acquires))
redis.register_function('$LIBRARY_settle', entry(settle))
redis.register_function('$LIBRARY_pause', entry(pause))
redis.register_function('$LIBRARY_renew', entry(renew))
redis.register_function('$LIBRARY_peek', entry(peek))
redis.register_function('$LIBRARY_leave', entry(leave))
redis.register_function('$LIBRARY_lower', entry(lower))

#!lua name=$LIBRARY
--[[
tokengate's admission decision, inside Redis: one FCALL per call, atomic.

A Redis Functions library (Redis 7.0 or later), named by `script.rs`: the name on the first
line stands for `tokengate_` and the first 8 hex digits of this text's SHA-1, the name of the
library and of its one function. Why a function rather than a script (EVALSHA): Redis runs a script's whole
body on every call, making every one of its local functions anew each time (some 70 closures
here: 15 us of a call before any work); a library's top level runs once, at FUNCTION LOAD,
and each call runs only its function. The top level therefore only defines: Redis gives it
none of Lua's libraries (math, string, table are there when the functions run), and what
belongs to one call (its keys, arguments and time) is set at the function's entry (calls run
one at a time). The name changes with the text, so that processes running different versions
call their own functions side by side on one server; the store loads the library when a call
finds its function missing (a new server, a restart, FUNCTION FLUSH) and calls again.

A second implementation of the Rust core (`src/core/`): `decide_request` and `commit_budget`
on every budget of a request, `settle_budget`, and the store's reservations, in-flight
leases and pauses (`src/store/`). The core is the specification; every rule below follows
its code line by line, and `tests/redis_script.rs` replays the test vectors and random
schedules against both. `src/redis/script.rs` encodes the arguments and decodes the replies.

NUMBERS. Redis runs Lua 5.1, whose numbers are doubles: integers are exact below 2^53 only.
- Every instant is nanoseconds relative to its budget's epoch `e` (whole seconds, stored in
  the budget's hash): a budget's "own frame". A new budget's epoch is the current second
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
  (reset), a log entry there is dropped. The windows' alignment is kept in `a<i>`. A read
  (`peek`) rebases what it replies without writing; `pause` and `renew` never need to.
- The refunds' running total `r<i>` grows without bound (it only ever goes up): it is kept
  as a decimal string and handled in two parts (a multiple of 10^9 and the rest), and so
  are the receipts' bucket marks (a drain instant plus that total).
- ONE FRAME per request: the budgets of one request may have different epochs. The decision
  counts from the oldest epoch `ef` (the frame: its instants stay below 2^51 + 1 day after
  the rebase); budget b's own frame is the frame less D_b = (e_b - ef) * 10^9 ns, and each
  budget decides in its own frame (the instant asked converted in, the answer out). Receipts
  are relative to `ef`, which the reply gives; a settlement converts them into each
  budget's current frame (which a rebase or a new incarnation may have moved).

TIME. ARGV[2] is "" (production: Redis's own clock, `TIME`) or a decimal count of
nanoseconds below 2^53 (tests): then the absolute time is that many nanoseconds from the Unix
epoch, and a budget made below one day has epoch 0, so the vectors' instants are its own.

STORAGE. Keys are built by the caller (one hash tag for all); per budget: a hash (state), a
sorted set (leases) and one list per limit (used by the sliding logs only). Hash fields,
absent meaning 0 (numbers are decimal strings):
  e        epoch, Unix seconds (a multiple of a day)
  b        "born": the own-frame instant the hash was made. A receipt admitted before it
           belongs to an earlier incarnation of the budget, emptied since: its bucket gives
           nothing back (what the core answers: that incarnation was full when dropped)
  p        paused until (own frame); q: the floor, the latest reservation's instant
  x        the latest instant the limits' state is needed until (for `pause`'s expiry)
  f<i>     limit i's fingerprint: its seven rule fields joined with ':'
  t<i> o<i> r<i>   bucket (token, leaky, the smooth window's): tat, overshoot, refunded
  n<i>     sliding log (alone, or the smooth window's): the sum of its entries
  w<i> v<i> c<i> a<i>  windows: start, previous count (counter), current count, and the
           alignment offset (in [0, P); 0 until a rebase moves the epoch by a number of days
           that is not a multiple of the period)
Each log is a LIST of "t:amount" (own frame), oldest first: expiry pops the front, a
commit merges into or pushes at the back, a refund searches from the back. The leases are a
sorted set of lease ids scored by expiry in absolute whole milliseconds (rounded up); a lease
is live while its score is above the current millisecond (rounded down).
EXPIRY: every write ends by setting the expiry of the keys it wrote to what their state still
needs, rounded up to whole milliseconds, plus 1 s: the hash and lists to the latest of every
bucket's TAT plus its margin, every log's last counted entry plus P + M, the windows' ends,
the pause and the floor; the leases to their latest lease. A budget whose state is then fresh
(behaves as a new one: the core's `LimitRule::is_fresh`, with a bucket full for its margin)
is deleted instead; unless a refund has given time back (its refunded total is not 0), which
keeps it for the 1 s only, so that no receipt of it can meet a new incarnation at the same
instant (the born rule above covers those after).

OPERATIONS (ARGV[1]); per-limit rule fields (in this order): alg (sw smooth window, tb
token bucket, lb leaky bucket, log sliding window log, ctr sliding window counter, fw fixed
window), N amount, P period ns, M margin ns, B burst (0: none), TB OB (span of B; 0 0).
acquire  KEYS per budget: state, leases, list_0..list_{n-1}.
         ARGV: now, max_wait ns, lease id, lease ms, nbudgets, then per budget: cap ("" when
         the cost takes no in-flight slot there), n, then per limit: 7 rule fields, c, Tc, Oc.
         The core's decide_request at t = max(now, every budget's floor): admitted, every
         limit of every budget commits at t, the floors move to t, capped budgets get the
         lease: {"ok", t - now, ef, nbudgets, then per budget: n, then per limit:
         admitted_at, bucket_mark (frame-relative; the mark a decimal string)}. A wait or a
         pause ending at u within max_wait of now: decided again at u (16 times at most).
         Otherwise, writing nothing: {"wait", u - now (-1: never), budget, limit},
         {"queued", t - now, budget} (admitted at t, after the floor of that budget, but
         later than max_wait),
         {"paused", u - now, budget}, {"in_flight_full", budget} (unexpired leases >= cap),
         {"mismatch", budget, limit, stored fingerprint} (the budget's state follows other
         limits: a fingerprint differs, or it has more limits; "" when it has fewer).
         Indices from 0. Costs above a limit's capacity never get here.
settle   KEYS as acquire. ARGV: now, lease id ("" none), ef of the receipts, nbudgets, then
         per budget: n, then per limit: 7 rule fields, g (units to refund: reserved - used,
         0 when none or no receipt), back (floor(g*P/N)), extra (used - reserved, 0 when
         none), Tx Ox (span of min(extra, N)), admitted_at, bucket_mark (the receipt). The
         core's settle_budget: a refund with the receipt, or a charge of min(extra, N) at
         now. A limit whose stored fingerprint differs is stale: it is only charged, under
         the limits its state follows (the stored fingerprint's). Then the lease is removed
         from every budget. {"ok"}.
pause    KEYS: state. ARGV: now, for ns, "set" (replace; 0 lifts) or "max" (the later end).
         {"ok", paused_until - now, 0 when not paused}.
renew    KEYS: lease sets. ARGV: now, lease id, lease ms: the lease, where present, expires
         lease ms from now. The number of sets it was in.
peek     KEYS: state, leases, lists of ONE budget. ARGV: now, n, 7 rule fields per limit.
         Writes nothing. {"ok", e, now, in flight, paused_until, floor, then per limit: alg,
         then tb/lb: tat, overshoot, refunded (string); log: total, k, k pairs t, amount;
         ctr: offset, window_start, previous, current; fw: offset, window_start, used; sw:
         the bucket's three then the log's} (own frame, rebased as a write would), or
         {"mismatch", 0, limit, stored}.
]]

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

-- Redis runs a library's top level with none of Lua's libraries (they are there only when
-- its functions run): math.floor is taken at the first call.
local floor

-- The call's keys, arguments and time: set at the entry of every call (calls run one at a
-- time). NOW_MS is the current millisecond, rounded down: a lease scored above it is live.
local KEYS, ARGV, SEC, NSEC, NOW_MS

-- floor(a / b) and a - b * floor(a / b), exact for integers |a| < 2^53, 0 < b, |a| + b < 2^53.
local function idiv(a, b)
  local q = floor(a / b)
  local r = a - q * b
  if r < 0 then
    q, r = q - 1, r + b
  elseif r >= b then
    q, r = q + 1, r - b
  end
  return q, r
end

local function imod(a, b)
  local _, r = idiv(a, b)
  return r
end

-- ceil(a / MEGA): nanoseconds to whole milliseconds, rounded up.
local function ceil_ms(ns)
  local q, r = idiv(ns, MEGA)
  if r > 0 then q = q + 1 end
  return q
end

-- A number as Redis must store it: every digit (tostring would give 14 significant ones).
local function fmt(v)
  return string.format('%.0f', v)
end

local function num(v)
  if v == nil or v == false or v == '' then return 0 end
  return tonumber(v)
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

-- Numbers past 2^53 (refunded totals, bucket marks): {h, l} = h * 10^9 + l, 0 <= l < 10^9.
local function big(s)
  if s == nil or s == false or s == '' then return { 0, 0 } end
  if #s <= 15 then
    local h, l = idiv(tonumber(s), GIGA)
    return { h, l }
  end
  return { tonumber(string.sub(s, 1, -10)), tonumber(string.sub(s, -9)) }
end

-- x + d, for an integer |d| < 2^53.
local function big_add(x, d)
  local dh, dl = idiv(d, GIGA)
  local h, l = x[1] + dh, x[2] + dl
  if l >= GIGA then h, l = h + 1, l - GIGA end
  return { h, l }
end

-- x - y as a plain number: exact within +-9 * 10^15, infinite beyond.
local function big_sub(x, y)
  local dh = x[1] - y[1]
  if dh > 9000000 then return NEVER end
  if dh < -9000000 then return -NEVER end
  return dh * GIGA + (x[2] - y[2])
end

local function big_fmt(x)
  if x[1] <= 0 then
    if x[1] < 0 then return '0' end
    return fmt(x[2])
  end
  return fmt(x[1]) .. string.format('%09.0f', x[2])
end

local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^:]+') do out[#out + 1] = part end
  return out
end

-- The time of the call: Unix seconds and nanoseconds.
local function clock(arg)
  if arg == nil or arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]), tonumber(t[2]) * 1000
  end
  return idiv(tonumber(arg), GIGA)
end


-- A limit from its seven rule fields at f[i..i+6].
local function rule(f, i)
  local alg = f[i]
  local L = {
    alg = alg,
    N = tonumber(f[i + 1]),
    P = tonumber(f[i + 2]),
    M = tonumber(f[i + 3]),
    B = tonumber(f[i + 4]),
    TB = tonumber(f[i + 5]),
    OB = tonumber(f[i + 6]),
    fp = table.concat({ f[i], f[i + 1], f[i + 2], f[i + 3], f[i + 4], f[i + 5], f[i + 6] }, ':'),
  }
  L.W = L.P + L.M
  L.bucket = alg == 'tb' or alg == 'lb' or alg == 'sw'
  L.log = alg == 'log' or alg == 'sw'
  L.window = alg == 'ctr' or alg == 'fw'
  return L
end

-- ---------------------------------------------------------------------------------------
-- The sliding log: a list read lazily, a chunk at a time (most decisions read none of it).

local function log_open(key, exists)
  return { key = key, exists = exists, c = {} }
end

local function log_len(g)
  if g.n == nil then
    g.n = g.exists and redis.call('LLEN', g.key) or 0
  end
  return g.n
end

local function entry(s)
  local c = string.find(s, ':', 1, true)
  return tonumber(string.sub(s, 1, c - 1)), tonumber(string.sub(s, c + 1))
end

local function log_fill(g, from, to)
  local items = redis.call('LRANGE', g.key, from - 1, to - 1)
  for j, s in ipairs(items) do
    local t, a = entry(s)
    g.c[from + j - 1] = { t, a }
  end
end

-- Entry i (1-based, from the front), reading forward; log_back reads backward.
local function log_get(g, i)
  local e = g.c[i]
  if e == nil then
    log_fill(g, i, i + CHUNK - 1)
    e = g.c[i]
  end
  return e[1], e[2]
end

local function log_back(g, i)
  local e = g.c[i]
  if e == nil then
    local from = i - CHUNK + 1
    if from < 1 then from = 1 end
    log_fill(g, from, i)
    e = g.c[i]
  end
  return e[1], e[2]
end

local function log_written(g)
  g.c, g.n, g.exists = {}, nil, true
end

-- sliding_log::earliest, over the window W = P + M.
local function log_earliest(L, st, now, c)
  local room = L.N - c
  local live = st.total
  local at = now
  local g = st.lg
  for i = 1, log_len(g) do
    if live <= room then break end
    local t, a = log_get(g, i)
    live = live - a
    at = t + L.W
  end
  if at < now then at = now end
  return at
end

-- sliding_log::commit: drops what has left the window, then records c at now.
local function log_commit(L, st, now, c)
  local g = st.lg
  local n = log_len(g)
  local k, gone = 0, 0
  if now >= L.W then
    local last = now - L.W
    while k < n do
      local t, a = log_get(g, k + 1)
      if t > last then break end
      gone, k = gone + a, k + 1
    end
  end
  if k > 0 then
    redis.call('LTRIM', g.key, k, -1)
    st.total = st.total - gone
  end
  if st.total + c > COUNT_MAX then c = COUNT_MAX - st.total end
  if c > 0 then
    st.total = st.total + c
    local merged = false
    if n > k then
      local t, a = log_get(g, n)
      if t >= now then
        redis.call('LSET', g.key, -1, fmt(t) .. ':' .. fmt(a + c))
        merged = true
      end
    end
    if not merged then redis.call('RPUSH', g.key, fmt(now) .. ':' .. fmt(c)) end
  end
  log_written(g)
end

-- sliding_log::refund: up to `units` back to the entry admitted at `at`.
local function log_refund(st, at, units)
  local g = st.lg
  for i = log_len(g), 1, -1 do
    local t, a = log_back(g, i)
    if t == at then
      local back = math.min(units, a)
      if back > 0 then
        redis.call('LSET', g.key, i - 1, fmt(t) .. ':' .. fmt(a - back))
        st.total = st.total - back
        log_written(g)
      end
      return
    end
    if t < at then return end
  end
end

-- Until when the log counts something: its last entry with units, plus the window.
local function log_need(L, st)
  local g = st.lg
  for i = log_len(g), 1, -1 do
    local t, a = log_back(g, i)
    if a > 0 then return t + L.W end
  end
  return 0
end

-- ---------------------------------------------------------------------------------------
-- GCRA (gcra.rs): the token and leaky buckets, and the smooth window's bucket.

-- advance: the exact TAT T, O after the state's own; nil past the end of the clock.
local function advance(L, st, T, O)
  local time, over
  if O == 0 then
    time, over = st.tat + T, st.ov
  else
    local gap = L.N - O
    if st.ov >= gap then
      time, over = st.tat + T - 1, st.ov - gap
    else
      time, over = st.tat + T, st.ov + O
    end
  end
  if time > END then return nil end
  return time, over
end

-- next_tat: the TAT after admitting units of span T, O at now (A, a: advance's).
local function next_tat(st, now, T, O, A, a)
  if st.tat > now then return A, a end
  local time = now + T
  if time > END then return nil end
  return time, O
end

-- admit: true, tat, overshoot when admitted at now; false, the earliest instant otherwise.
local function gcra_admit(L, st, now, c, T, O)
  local A, a = advance(L, st, T, O)
  if A == nil then return false, NEVER end
  local TT, OO = L.TB, L.OB
  if c > L.B then
    -- The shaper, the smooth window's bucket: waits for a full bucket.
    TT, OO = T, O
  end
  local margin = L.M
  if st.tat == 0 then margin = 0 end
  local rounding = 0
  if a < OO then rounding = 1 end
  local at
  if A >= TT then
    at = A - TT + rounding + margin
  else
    at = margin + rounding - (TT - A)
    if at < 0 then at = 0 end
  end
  if at < now then at = now end
  if at > now then
    if next_tat(st, at, T, O, A, a) == nil then return false, NEVER end
    return false, at
  end
  local tat, ov = next_tat(st, now, T, O, A, a)
  if tat == nil then return false, NEVER end
  return true, tat, ov
end

local function gcra_earliest(L, st, now, c, T, O)
  local ok, at = gcra_admit(L, st, now, c, T, O)
  if ok then return now end
  return at
end

-- Gcra::commit: returns the mark (drain instant, rounded down, plus refunded) as a big.
local function gcra_commit(L, st, now, T, O)
  local tat, ov
  local A, a = advance(L, st, T, O)
  if A ~= nil then tat, ov = next_tat(st, now, T, O, A, a) end
  if tat == nil then tat, ov = END, 0 end
  st.tat, st.ov = tat, ov
  local drained = tat
  if ov ~= 0 then drained = tat - 1 end
  if drained < 0 then drained = 0 end
  return big_add(st.R, drained)
end

-- Gcra::refund: back at most what the bucket still holds of the admission marked `mark`.
local function gcra_refund(st, now, mark, back)
  local drained = big_sub(mark, st.R)
  if drained < 0 then drained = 0 end
  local held = drained - now
  if held < 0 then held = 0 end
  if back > held then back = held end
  if st.tat > now and st.tat ~= END then
    local tat = st.tat - back
    if tat < now then tat = now end
    st.R = big_add(st.R, st.tat - tat)
    st.tat = tat
    if tat == now then st.ov = 0 end
  end
end

-- ---------------------------------------------------------------------------------------
-- Windows (fixed_window.rs, sliding_counter.rs), aligned to `off` modulo P.

local function window_of(t, P, off)
  return t - imod(t - off, P)
end

local function counts(L, st, now)
  local w = window_of(now, L.P, st.off)
  if w <= st.ws then return st.prev, st.cur end
  if w - L.P == st.ws then return st.cur, 0 end
  return 0, 0
end

local function ctr_earliest(L, st, now, c)
  if now < st.ws then now = st.ws end
  local w = window_of(now, L.P, st.off)
  local prev, cur = counts(L, st, now)
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

local function ctr_commit(L, st, now, c)
  local w = window_of(now, L.P, st.off)
  if w > st.ws then
    local prev, cur = counts(L, st, now)
    st.ws, st.prev, st.cur = w, prev, cur
  end
  st.cur = math.min(st.cur + c, COUNT_MAX)
end

local function ctr_refund(L, st, at, units)
  local w = window_of(at, L.P, st.off)
  if w == st.ws then
    st.cur = math.max(st.cur - units, 0)
  elseif w + L.P == st.ws then
    st.prev = math.max(st.prev - units, 0)
  end
end

local function fw_earliest(L, st, now, c)
  local used = 0
  if window_of(now, L.P, st.off) <= st.ws then used = st.cur end
  if L.N >= used and c <= L.N - used then return now end
  local base = now
  if st.ws > base then base = st.ws end
  return window_of(base, L.P, st.off) + L.P
end

local function fw_commit(L, st, now, c)
  local w = window_of(now, L.P, st.off)
  if st.ws ~= w and w > st.ws then st.ws, st.cur = w, 0 end
  st.cur = math.min(st.cur + c, COUNT_MAX)
end

local function fw_refund(L, st, at, units)
  if st.ws == window_of(at, L.P, st.off) then st.cur = math.max(st.cur - units, 0) end
end

-- ---------------------------------------------------------------------------------------
-- One limit (rule.rs), in its budget's own frame.

-- LimitRule::decide: nil when admitted at now, else the earliest instant (NEVER: never).
local function decide_limit(L, now)
  local st, c = L.st, L.c
  if L.alg == 'tb' or L.alg == 'lb' then
    local ok, at = gcra_admit(L, st, now, c, L.T, L.O)
    if ok then return nil end
    return at
  end
  local at
  if L.alg == 'log' then
    at = log_earliest(L, st, now, c)
  elseif L.alg == 'ctr' then
    at = ctr_earliest(L, st, now, c)
  elseif L.alg == 'fw' then
    at = fw_earliest(L, st, now, c)
  else
    at = math.max(gcra_earliest(L, st, now, c, L.T, L.O), log_earliest(L, st, now, c))
    -- The bucket again at that instant: full by then, it starts the units from it.
    if at > now and at ~= NEVER then at = gcra_earliest(L, st, at, c, L.T, L.O) end
  end
  if at <= now and at ~= NEVER then return nil end
  return at
end

-- LimitRule::commit of c units of span T, O: the receipt's mark (a big), nil for windows.
local function commit_limit(L, now, c, T, O)
  local st = L.st
  if L.alg == 'tb' or L.alg == 'lb' then return gcra_commit(L, st, now, T, O) end
  if L.alg == 'ctr' then
    ctr_commit(L, st, now, c)
  elseif L.alg == 'fw' then
    fw_commit(L, st, now, c)
  else
    log_commit(L, st, now, c)
    if L.alg == 'sw' then return gcra_commit(L, st, now, T, O) end
  end
  return nil
end

-- LimitRule::refund of `units` (worth `back` ns to a bucket) admitted at `at` (own frame).
local function refund_limit(L, now, at, mark, units, back, born)
  if at < 0 then return end
  local st = L.st
  if L.bucket and at >= born then gcra_refund(st, now, mark, back) end
  if L.log then log_refund(st, at, units) end
  if L.alg == 'ctr' then
    ctr_refund(L, st, at, units)
  elseif L.alg == 'fw' then
    fw_refund(L, st, at, units)
  end
end

-- The latest instant the limit's state still counts until (0: fresh at any instant).
local function need_limit(L)
  local st, need = L.st, 0
  if L.bucket and st.tat > 0 then need = st.tat + L.M end
  if L.log then need = math.max(need, log_need(L, st)) end
  if L.alg == 'ctr' then
    if st.cur > 0 then
      need = st.ws + 2 * L.P
    elseif st.prev > 0 then
      need = st.ws + L.P
    end
  elseif L.alg == 'fw' and st.cur > 0 then
    need = st.ws + L.P
  end
  return need
end

-- ---------------------------------------------------------------------------------------
-- Budgets.

local function open(hkey, lkey, lists, may_write)
  local raw = redis.call('HGETALL', hkey)
  local h = {}
  for j = 1, #raw, 2 do h[raw[j]] = raw[j + 1] end
  local B = { hkey = hkey, lkey = lkey, lists = lists, h = h, exists = h.e ~= nil }
  if B.exists then
    B.e = tonumber(h.e)
  else
    B.e = SEC - SEC % DAY_S
    -- Lists outlive their hash by at most the slack: never read them into a new one.
    if may_write and #lists > 0 then redis.call('DEL', unpack(lists)) end
  end
  B.now = (SEC - B.e) * GIGA + NSEC
  return B
end

-- The index (from 0) and stored fingerprint of the first limit the state disagrees on.
local function mismatch(B, limits)
  local h = B.h
  if h.f0 == nil then return nil end
  for i, L in ipairs(limits) do
    local stored = h['f' .. (i - 1)]
    if stored ~= L.fp then return i - 1, stored or '' end
  end
  local more = h['f' .. #limits]
  if more ~= nil then return #limits, more end
  return nil
end

-- How many limits the stored state has.
local function stored_limits(h)
  local n = 0
  while h['f' .. n] ~= nil do n = n + 1 end
  return n
end

-- The state of limit L (field suffix k, list key) from the hash.
local function load(B, L, k, list)
  local h, st = B.h, {}
  L.k, L.st = k, st
  if L.bucket then
    st.tat, st.ov, st.R = num(h['t' .. k]), num(h['o' .. k]), big(h['r' .. k])
  end
  if L.log then
    st.total = num(h['n' .. k])
    st.lg = log_open(list, B.exists)
  end
  if L.window then
    st.ws, st.prev = num(h['w' .. k]), num(h['v' .. k])
    st.cur, st.off = num(h['c' .. k]), num(h['a' .. k])
  end
end

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
  local days, S = rebase_days(B.now)
  local h, set = B.h, {}
  local function put(f, v)
    h[f] = fmt(v)
    set[#set + 1] = f
    set[#set + 1] = h[f]
  end
  for _, f in ipairs({ 'p', 'q', 'b', 'x' }) do
    if h[f] ~= nil then put(f, shift_instant(num(h[f]), S)) end
  end
  for i = 0, stored_limits(h) - 1 do
    local k = tostring(i)
    local L = rule(split(h['f' .. k]), 1)
    if L.bucket and h['t' .. k] ~= nil then
      local tat, ov = shift_tat(num(h['t' .. k]), num(h['o' .. k]), S)
      put('t' .. k, tat)
      put('o' .. k, ov)
    end
    if L.window then
      put('a' .. k, imod(num(h['a' .. k]) - S, L.P))
      local ws = num(h['w' .. k]) - S
      if ws < 0 then
        put('w' .. k, 0)
        put('v' .. k, 0)
        put('c' .. k, 0)
      else
        put('w' .. k, ws)
      end
    end
    local key = B.lists[i + 1]
    if L.log and key ~= nil then
      local items = redis.call('LRANGE', key, 0, -1)
      if #items > 0 then
        local kept, gone = {}, 0
        for _, s in ipairs(items) do
          local t, a = entry(s)
          if t - S < 0 then
            gone = gone + a
          else
            kept[#kept + 1] = fmt(t - S) .. ':' .. fmt(a)
          end
        end
        local ttl = redis.call('PTTL', key)
        redis.call('DEL', key)
        for j = 1, #kept, 1000 do
          redis.call('RPUSH', key, unpack(kept, j, math.min(j + 999, #kept)))
        end
        if #kept > 0 and ttl > 0 then redis.call('PEXPIRE', key, ttl) end
        put('n' .. k, num(h['n' .. k]) - gone)
      end
    end
  end
  B.e = B.e + days * DAY_S
  put('e', B.e)
  redis.call('HSET', B.hkey, unpack(set))
  B.now = B.now - S
end

local function expire(keys, ms)
  for _, key in ipairs(keys) do redis.call('PEXPIRE', key, ms) end
end

-- The lease set's expiry: its latest lease's.
local function lease_expiry(lkey)
  local top = redis.call('ZRANGE', lkey, -1, -1, 'WITHSCORES')
  if #top == 0 then return end
  local ms = tonumber(top[2]) - NOW_MS
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', lkey, ms + SLACK_MS)
end

-- Writes a budget's state back: `limits` are the ones loaded (field suffix L.k), `all` says
-- whether they are all the stored state has, `fps` the fingerprints to store (or nil).
local function save(B, limits, all, fps)
  local fields = {}
  local function put(f, v)
    fields[#fields + 1] = f
    fields[#fields + 1] = v
  end
  local x, refunded = 0, false
  for _, L in ipairs(limits) do
    local st, k = L.st, L.k
    if L.bucket then
      put('t' .. k, fmt(st.tat))
      put('o' .. k, fmt(st.ov))
      put('r' .. k, big_fmt(st.R))
      if st.R[1] ~= 0 or st.R[2] ~= 0 then refunded = true end
    end
    if L.log then put('n' .. k, fmt(st.total)) end
    if L.window then
      put('w' .. k, fmt(st.ws))
      put('v' .. k, fmt(st.prev))
      put('c' .. k, fmt(st.cur))
    end
    x = math.max(x, need_limit(L))
  end
  if not all then
    x = math.max(x, num(B.h.x))
    refunded = true
  end
  local need = math.max(x, B.p, B.q)
  local keys = { B.hkey }
  for _, key in ipairs(B.lists) do keys[#keys + 1] = key end
  if need <= B.now and not refunded then
    redis.call('DEL', unpack(keys))
    return
  end
  if not B.exists then
    put('e', fmt(B.e))
    put('b', fmt(B.born))
  end
  if fps ~= nil then
    for i, fp in ipairs(fps) do put('f' .. (i - 1), fp) end
  end
  put('p', fmt(B.p))
  put('q', fmt(B.q))
  put('x', fmt(x))
  redis.call('HSET', B.hkey, unpack(fields))
  local ms = SLACK_MS
  if need > B.now then ms = ceil_ms(need - B.now) + SLACK_MS end
  expire(keys, ms)
end

-- BudgetView::decide at frame instant t: kind, until (frame; NEVER), limit index.
local function decide_budget(B, t)
  local now = t - B.D
  if B.p > now then return 'paused', B.p + B.D, 0 end
  local at, li
  for i, L in ipairs(B.limits) do
    local x = decide_limit(L, now)
    if x ~= nil and (at == nil or x > at) then at, li = x, i end
  end
  if at ~= nil then
    -- decide_all's recheck: every limit again at that instant.
    if at ~= NEVER then
      for i, L in ipairs(B.limits) do
        local later = decide_limit(L, at)
        if later ~= nil and later > at then at, li = later, i end
        if at == NEVER then break end
      end
    end
    return 'wait', at + B.D, li
  end
  if B.cap ~= nil and B.inflight >= B.cap then return 'inflight', nil, 0 end
  return 'admit', nil, 0
end

-- decide_request: the budget that holds the request back longest.
local function decide_request(budgets, t)
  local kind, untl, budget, limit = 'admit', nil, 0, 0
  for bi, B in ipairs(budgets) do
    local k, u, li = decide_budget(B, t)
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

local function acquire()
  local max_wait, lease, lease_ms = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
  local nb = tonumber(ARGV[6])
  local a, kx = 7, 1
  local budgets = {}
  for bi = 1, nb do
    local cap, n = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    local limits, lists = {}, {}
    for i = 1, n do
      local L = rule(ARGV, a)
      L.c, L.T, L.O = tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9])
      a = a + 10
      limits[i] = L
      lists[i] = KEYS[kx + 1 + i]
    end
    local B = open(KEYS[kx], KEYS[kx + 1], lists, true)
    kx = kx + 2 + n
    B.limits = limits
    if cap ~= '' then B.cap = tonumber(cap) end
    local mi, stored = mismatch(B, limits)
    if mi ~= nil then return { 'mismatch', bi - 1, mi, stored } end
    budgets[bi] = B
  end
  local ef = SEC - SEC % DAY_S
  for _, B in ipairs(budgets) do
    if B.exists and B.now >= REBASE_AT then rebase(B) end
    for i, L in ipairs(B.limits) do load(B, L, tostring(i - 1), B.lists[i]) end
    B.p, B.q = num(B.h.p), num(B.h.q)
    B.born = B.now
    redis.call('ZREMRANGEBYSCORE', B.lkey, '-inf', NOW_MS)
    B.inflight = redis.call('ZCARD', B.lkey)
    if B.e < ef then ef = B.e end
  end
  local now = (SEC - ef) * GIGA + NSEC
  local t, fb = now, 1
  for bi, B in ipairs(budgets) do
    B.D = (B.e - ef) * GIGA
    if B.q + B.D > t then t, fb = B.q + B.D, bi end
  end
  local admitted, refusal = false, nil
  for _ = 1, SEARCH_STEPS do
    local kind, u, bi, li = decide_request(budgets, t)
    if kind == 'admit' then
      admitted = true
      break
    end
    if kind == 'inflight' then return { 'in_flight_full', bi - 1 } end
    local wait = -1
    if u ~= NEVER then wait = u - now end
    if kind == 'paused' then
      refusal = { 'paused', wait, bi - 1 }
    else
      refusal = { 'wait', wait, bi - 1, li - 1 }
    end
    if u == NEVER or u - now > max_wait then break end
    t = u
  end
  if not admitted then return refusal end
  -- Admitted only after an earlier reservation, later than the caller may wait: refused.
  if t - now > max_wait then return { 'queued', t - now, fb - 1 } end
  local reply = { 'ok', t - now, ef, #budgets }
  for _, B in ipairs(budgets) do
    local tb = t - B.D
    reply[#reply + 1] = #B.limits
    local fps = nil
    if B.h.f0 == nil then fps = {} end
    for _, L in ipairs(B.limits) do
      local mark = commit_limit(L, tb, L.c, L.T, L.O)
      reply[#reply + 1] = t
      if mark ~= nil then
        reply[#reply + 1] = big_fmt(big_add(mark, B.D))
      else
        reply[#reply + 1] = '0'
      end
      if fps ~= nil then fps[#fps + 1] = L.fp end
    end
    B.q = tb
    if B.cap ~= nil then
      local score = ef * 1000 + ceil_ms(t) + lease_ms
      redis.call('ZADD', B.lkey, fmt(score), lease)
      lease_expiry(B.lkey)
    end
    save(B, B.limits, true, fps)
  end
  return reply
end

local function settle()
  local lease, er, nb = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local a, kx = 6, 1
  for _ = 1, nb do
    local n = tonumber(ARGV[a])
    a = a + 1
    local lists = {}
    for i = 1, n do lists[i] = KEYS[kx + 1 + i] end
    local B = open(KEYS[kx], KEYS[kx + 1], lists, true)
    local lkey = KEYS[kx + 1]
    kx = kx + 2 + n
    local h = B.h
    local fresh = h.f0 == nil
    local stored = stored_limits(h)
    if B.exists and B.now >= REBASE_AT and stored <= n then rebase(B) end
    B.p, B.q, B.born = num(h.p), num(h.q), B.now
    if B.exists then B.born = num(h.b) end
    -- The receipts' frame in this budget's: whatever is that far off gives nothing back.
    local de = er - B.e
    local d = nil
    if de >= -9000000 and de <= 9000000 then d = de * GIGA end
    local limits, fps, dirty = {}, {}, false
    for i = 1, n do
      local L = rule(ARGV, a)
      local g, back, extra = tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9])
      local T, O = tonumber(ARGV[a + 10]), tonumber(ARGV[a + 11])
      local at, mark = tonumber(ARGV[a + 12]), ARGV[a + 13]
      a = a + 14
      fps[i] = L.fp
      local k = tostring(i - 1)
      local kept = h['f' .. k]
      if fresh or kept == L.fp then
        load(B, L, k, lists[i])
        limits[#limits + 1] = L
        if g > 0 and d ~= nil then
          refund_limit(L, B.now, at + d, big_add(big(mark), d), g, back, B.born)
          dirty = true
        elseif extra > 0 then
          commit_limit(L, B.now, math.min(extra, L.N), T, O)
          dirty = true
        end
      elseif kept ~= nil then
        -- Stale: charged only, under the limits its state follows.
        local S = rule(split(kept), 1)
        load(B, S, k, lists[i])
        limits[#limits + 1] = S
        if extra > 0 then
          local x = math.min(extra, S.N)
          local q, r = muldiv(x, S.P, S.N)
          if r > 0 then q, r = q + 1, S.N - r end
          commit_limit(S, B.now, x, q, r)
          dirty = true
        end
      end
    end
    if dirty then
      if not fresh then fps = nil end
      save(B, limits, stored <= n, fps)
    end
    if lease ~= '' then
      redis.call('ZREM', lkey, lease)
      lease_expiry(lkey)
    end
  end
  return { 'ok' }
end

local function pause()
  local for_ns, mode = tonumber(ARGV[3]), ARGV[4]
  local B = open(KEYS[1], nil, {}, false)
  local h, now = B.h, B.now
  local u = now + for_ns
  if u > END then u = END end
  local p = u
  if mode == 'max' and num(h.p) > u then p = num(h.p) end
  local need = math.max(num(h.x), num(h.q), p)
  if need <= now then
    if B.exists then
      local refunded = false
      for i = 0, stored_limits(h) - 1 do
        local R = big(h['r' .. i])
        if R[1] ~= 0 or R[2] ~= 0 then refunded = true end
      end
      if refunded then
        redis.call('HSET', B.hkey, 'p', fmt(p))
        redis.call('PEXPIRE', B.hkey, SLACK_MS)
      else
        redis.call('DEL', B.hkey)
      end
    end
    return { 'ok', 0 }
  end
  if B.exists then
    redis.call('HSET', B.hkey, 'p', fmt(p))
  else
    redis.call('HSET', B.hkey, 'e', fmt(B.e), 'b', fmt(now), 'p', fmt(p))
  end
  redis.call('PEXPIRE', B.hkey, ceil_ms(need - now) + SLACK_MS)
  local left = 0
  if p > now then left = p - now end
  return { 'ok', left }
end

local function renew()
  local lease, lease_ms = ARGV[3], tonumber(ARGV[4])
  local score = SEC * 1000 + ceil_ms(NSEC) + lease_ms
  local renewed = 0
  for _, key in ipairs(KEYS) do
    if redis.call('ZSCORE', key, lease) then
      redis.call('ZADD', key, 'XX', fmt(score), lease)
      lease_expiry(key)
      renewed = renewed + 1
    end
  end
  return renewed
end

local function peek()
  local n = tonumber(ARGV[3])
  local limits, lists = {}, {}
  for i = 1, n do
    limits[i] = rule(ARGV, 4 + (i - 1) * 7)
    lists[i] = KEYS[2 + i]
  end
  local B = open(KEYS[1], KEYS[2], lists, false)
  local mi, stored = mismatch(B, limits)
  if mi ~= nil then return { 'mismatch', 0, mi, stored } end
  local h, S = B.h, 0
  if B.exists and B.now >= REBASE_AT then
    local days
    days, S = rebase_days(B.now)
    B.e = B.e + days * DAY_S
  end
  local inflight = redis.call('ZCOUNT', B.lkey, '(' .. fmt(NOW_MS), '+inf')
  local paused, floor_ = shift_instant(num(h.p), S), shift_instant(num(h.q), S)
  local reply = { 'ok', B.e, B.now - S, inflight, paused, floor_ }
  local function out(v) reply[#reply + 1] = v end
  for i, L in ipairs(limits) do
    local k = tostring(i - 1)
    out(L.alg)
    if L.bucket then
      local tat, ov = shift_tat(num(h['t' .. k]), num(h['o' .. k]), S)
      out(tat)
      out(ov)
      out(big_fmt(big(h['r' .. k])))
    end
    if L.log then
      local items = {}
      if B.exists then items = redis.call('LRANGE', lists[i], 0, -1) end
      local total, pairs_ = num(h['n' .. k]), {}
      for _, s in ipairs(items) do
        local t, a = entry(s)
        if t - S < 0 then
          total = total - a
        else
          pairs_[#pairs_ + 1] = t - S
          pairs_[#pairs_ + 1] = a
        end
      end
      out(total)
      out(#pairs_ / 2)
      for _, v in ipairs(pairs_) do out(v) end
    end
    if L.window then
      local ws, prev, cur = num(h['w' .. k]) - S, num(h['v' .. k]), num(h['c' .. k])
      if ws < 0 then ws, prev, cur = 0, 0, 0 end
      out(imod(num(h['a' .. k]) - S, L.P))
      out(ws)
      if L.alg == 'ctr' then out(prev) end
      out(cur)
    end
  end
  return reply
end

local OPERATIONS = { acquire = acquire, settle = settle, pause = pause, renew = renew, peek = peek }

redis.register_function('$LIBRARY', function(keys, args)
  KEYS, ARGV = keys, args
  floor = math.floor
  local op = OPERATIONS[ARGV[1]]
  if op == nil then
    return redis.error_reply('tokengate: unknown operation ' .. tostring(ARGV[1]))
  end
  SEC, NSEC = clock(ARGV[2])
  NOW_MS = SEC * 1000 + floor(NSEC / MEGA)
  return op()
end)

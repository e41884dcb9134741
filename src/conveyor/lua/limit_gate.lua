-- limit_gate: the gate of a delivery of a task with a rate and/or a concurrency limit. Either
-- the job runs now (taking its rate slot and/or a concurrency lease), or it is parked in the
-- delayed set, in one step and without counting an attempt, so a limited job holds no
-- worker slot while it waits.
-- @flags allow-oom
-- Concurrency is checked before the rate, and neither is taken unless both admit: a job
-- that cannot run spends no rate slot on a full concurrency limit and holds no lease while
-- it waits for a rate slot. A rate-limited job reserves its slot (includes/gcra.lua); a
-- concurrency-limited one joins the waiters that concurrency_release.lua wakes in order.
-- KEYS[1] ready stream the job was read from, KEYS[2] delayed zset, KEYS[3] payloads hash,
-- KEYS[4] job record, then KEYS[5] the rate limiter zset when ARGV[7] has 'r', then the
-- leases zset and the waiters zset when ARGV[7] has 'c' (KEYS[5..6], or KEYS[6..7] with 'r')
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id,
-- ARGV[5] payload (JSON object of the stream fields, same attempt: what retry.lua takes),
-- ARGV[6] record_json (written only when parked), ARGV[7] 'r', 'c' or 'rc',
-- ARGV[8] rate interval ms (fractional), ARGV[9] rate burst, ARGV[10] keep_ms (how long an
-- unclaimed reservation and an idle limiter are kept), ARGV[11] concurrency limit,
-- ARGV[12] lease_ms, ARGV[13] retry_ms (longest wait of a parked job without a wake-up);
-- the arguments of a limit not in ARGV[7] are ignored ('' is fine)
-- After the limiter keys: the queue's cancelled set, then the job's unique key held until
-- done (optional); ARGV[14] cancelled record_json (finished_at is stamped here), ARGV[15]
-- its ttl_ms, ARGV[16] done channel, ARGV[17] publish command.
-- A job cancelled between its delivery and this gate (cancel.lua found its entry pending, so
-- it only marked it) is never parked: a parked job comes back as a new entry, with a record
-- no longer saying it was cancelled, so the mark would be lost. It ends `cancelled` here
-- instead, as retry.lua ends a marked job, freeing its unique key.
-- returns {1, now_ms}: run now (the delivery is untouched and still this consumer's; with
-- 'c' a lease is held until now_ms + lease_ms); {0, due_ms}: parked until due_ms;
-- {-1, 0}: the consumer no longer owns the entry (nothing changed); {-2, 0}: it was
-- marked cancelled and ended `cancelled` (acked, unmarked)
-- @include owner
-- @include time
-- @include unique
-- @include ending
-- @include gcra
-- @include leases
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return {-1, 0} end
local job_id, mode = ARGV[4], ARGV[7]
local rated, limited = string.find(mode, 'r', 1, true), string.find(mode, 'c', 1, true)
-- fractional milliseconds: above 1000/s, whole ones would let one job through per ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

local extra = 4 + (rated and 1 or 0) + (limited and 2 or 0)
local cancelled, unique_key = KEYS[extra + 1], KEYS[extra + 2]

local function park(due)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  if redis.call('SREM', cancelled, job_id) == 1 then
    if limited then redis.call('ZREM', KEYS[rated and 7 or 6], job_id) end
    release_unique(unique_key, job_id)
    store_end(KEYS[4], stamp(ARGV[14], now_ms()), ARGV[15])
    redis.call(ARGV[17], ARGV[16], KEYS[4])
    return {-2, 0}
  end
  redis.call('ZADD', KEYS[2], due, job_id)
  redis.call('HSET', KEYS[3], job_id, ARGV[5])
  redis.call('SET', KEYS[4], ARGV[6])
  return {0, due}
end

local leases, waiters, lease_ms, retry_ms
if limited then
  local at = rated and 6 or 5
  leases, waiters = KEYS[at], KEYS[at + 1]
  lease_ms, retry_ms = tonumber(ARGV[12]), tonumber(ARGV[13])
  local wait = lease_wait(leases, job_id, tonumber(ARGV[11]), retry_ms, now)
  if wait > 0 then
    lease_queue(waiters, job_id, lease_ms, retry_ms, now)
    return park(math.ceil(now) + wait)
  end
end
if rated then
  local slot = gcra(KEYS[5], job_id, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), now)
  if slot > 0 then
    -- a woken waiter that must now wait for its rate slot is no longer the one to wake
    if limited then redis.call('ZREM', waiters, job_id) end
    return park(slot)
  end
end
if limited then lease_take(leases, waiters, job_id, lease_ms, now) end
return {1, math.floor(now)}

-- rate_limit: the gate of a delivery of a rate-limited task (GCRA on Redis' clock). Either
-- the job may run now, or it is parked in the delayed set until a slot reserved for it, in
-- one step and without counting an attempt, so a limited job holds no worker slot.
-- @flags allow-oom
-- A limited job reserves its own future slot (a member of the limiter key scored by that
-- slot), so a backlog waits in order, each job delivered about twice, never polling. When it
-- comes back at its slot it runs without consuming another one.
-- KEYS[1] ready stream the job was read from, KEYS[2] delayed zset, KEYS[3] payloads hash,
-- KEYS[4] job record, KEYS[5] limiter zset (member 'tat': the theoretical arrival time;
-- members <job id>: slots reserved by parked jobs)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id,
-- ARGV[5] payload (JSON object of the stream fields, same attempt, as retry.lua takes),
-- ARGV[6] record_json (written only when parked), ARGV[7] emission interval in ms (may be
-- fractional), ARGV[8] burst (jobs that may run back to back, >= 1), ARGV[9] keep_ms (how
-- long an unclaimed reservation and an idle limiter are kept)
-- returns {1, now_ms}: run now (the delivery is untouched and still this consumer's);
-- {0, due_ms}: parked until due_ms; {-1, 0}: the consumer no longer owns the entry (nothing
-- changed)
-- @include owner
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return {-1, 0} end
local limiter, job_id = KEYS[5], ARGV[4]
local interval, burst, keep = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
-- fractional milliseconds: above 1000/s, whole ones would let one job through per ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZREMRANGEBYSCORE', limiter, '-inf', '(' .. math.floor(now - keep))

local function park(due)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[2], due, job_id)
  redis.call('HSET', KEYS[3], job_id, ARGV[5])
  redis.call('SET', KEYS[4], ARGV[6])
  return {0, due}
end

local reserved = redis.call('ZSCORE', limiter, job_id)
if reserved then
  reserved = tonumber(reserved)
  if reserved <= now then
    redis.call('ZREM', limiter, job_id)
    return {1, math.floor(now)}
  end
  return park(reserved) -- back too early (replayed, promoted by hand): wait for its slot
end

local tat = tonumber(redis.call('ZSCORE', limiter, 'tat') or now)
if tat < now then tat = now end
local allowed_at = tat - (burst - 1) * interval
-- formatted by hand: Lua's own number-to-string keeps 14 digits, 0.1 ms at today's epoch
redis.call('ZADD', limiter, string.format('%.4f', tat + interval), 'tat')
redis.call('PEXPIRE', limiter, math.ceil(tat + interval - now + keep))
if allowed_at <= now then return {1, math.floor(now)} end
local slot = math.ceil(allowed_at)
redis.call('ZADD', limiter, slot, job_id)
return park(slot)

-- concurrency_acquire: the gate of a delivery of a concurrency-limited task. Either the job
-- takes a lease (one of at most LIMIT held across all workers) and runs, or it is parked in
-- the delayed set, in one step and without counting an attempt, so it holds no worker slot.
-- @flags allow-oom
-- Leases are members of a sorted set scored by their expiry on Redis' clock; expired ones are
-- dropped first, so the slots of a worker that died come back after one lease timeout. A
-- parked job joins the waiters (first come, first woken): concurrency_release.lua makes the
-- oldest one due at once; otherwise it comes back after RETRY_MS or when the earliest lease
-- expires, whichever is sooner.
-- KEYS[1] ready stream the job was read from, KEYS[2] delayed zset, KEYS[3] payloads hash,
-- KEYS[4] job record, KEYS[5] leases zset, KEYS[6] waiters zset
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id,
-- ARGV[5] payload (JSON object of the stream fields, same attempt, as retry.lua takes),
-- ARGV[6] record_json (written only when parked), ARGV[7] limit (>= 1),
-- ARGV[8] lease_ms, ARGV[9] retry_ms (longest wait of a parked job)
-- returns {1, now_ms}: run now, lease held until now_ms + lease_ms (renew it with
-- concurrency_renew.lua, give it back with concurrency_release.lua); {0, due_ms}: parked
-- until due_ms; {-1, 0}: the consumer no longer owns the entry (nothing changed)
-- @include owner
-- @include time
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return {-1, 0} end
local leases, waiters, job_id = KEYS[5], KEYS[6], ARGV[4]
local limit, lease_ms, retry_ms = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
-- a job delivered again (reclaimed from a dead worker) keeps the lease it already holds
if redis.call('ZSCORE', leases, job_id) or redis.call('ZCARD', leases) < limit then
  redis.call('ZADD', leases, now + lease_ms, job_id)
  redis.call('PEXPIRE', leases, lease_ms + 1000)
  redis.call('ZREM', waiters, job_id)
  return {1, now}
end
local wait = retry_ms
local earliest = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
if earliest[2] and tonumber(earliest[2]) - now + 1 < wait then
  wait = tonumber(earliest[2]) - now + 1
end
local due = now + math.max(wait, 1)
redis.call('ZADD', waiters, 'NX', now, job_id)
redis.call('PEXPIRE', waiters, math.max(retry_ms, lease_ms) * 10)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], due, job_id)
redis.call('HSET', KEYS[3], job_id, ARGV[5])
redis.call('SET', KEYS[4], ARGV[6])
return {0, due}

-- Concurrency leases: a zset of job ids scored by lease expiry (Redis ms). Expired leases
-- are dropped before counting, so a dead worker's slots come back after one lease timeout.
-- lease_wait(leases, job_id, limit, retry_ms, now): 0 when the job may take a lease (it has
-- one already, from a delivery before a crash, or a slot is free); else how long to wait
-- before trying again: retry_ms, or until the earliest lease expires if that is sooner.
local function lease_wait(leases, job_id, limit, retry_ms, now)
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', math.floor(now))
  if redis.call('ZSCORE', leases, job_id) or redis.call('ZCARD', leases) < limit then
    return 0
  end
  local wait = retry_ms
  local earliest = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
  if earliest[2] and tonumber(earliest[2]) - now + 1 < wait then
    wait = tonumber(earliest[2]) - now + 1
  end
  return math.max(math.ceil(wait), 1)
end
local function lease_take(leases, waiters, job_id, lease_ms, now)
  redis.call('ZADD', leases, math.ceil(now + lease_ms), job_id)
  redis.call('PEXPIRE', leases, lease_ms + 1000)
  redis.call('ZREM', waiters, job_id)
end
-- a parked job joins the waiters in order of first arrival (NX keeps its place)
local function lease_queue(waiters, job_id, lease_ms, retry_ms, now)
  redis.call('ZADD', waiters, 'NX', math.floor(now), job_id)
  redis.call('PEXPIRE', waiters, math.max(retry_ms, lease_ms) * 10)
end
-- lease_release(leases, waiters, delayed, job_id, now): give a lease back and make the
-- oldest waiter still parked in the delayed set due now (waiters gone from it are dropped).
-- Returns 1 and the woken job id or '', or 0 when no lease was held.
local function lease_release(leases, waiters, delayed, job_id, now)
  if redis.call('ZREM', leases, job_id) == 0 then return 0, '' end
  for _, w in ipairs(redis.call('ZRANGE', waiters, 0, 15)) do
    local due = redis.call('ZSCORE', delayed, w)
    if not due then
      redis.call('ZREM', waiters, w)
    elseif tonumber(due) > now then
      redis.call('ZADD', delayed, 'XX', now, w)
      redis.call('ZREM', waiters, w)
      return 1, w
    end
  end
  return 1, ''
end

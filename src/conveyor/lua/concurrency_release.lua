-- concurrency_release: give back the lease of a job that ended, and wake the oldest waiter.
-- @flags allow-oom
-- Waking makes the oldest waiter still parked in the delayed set due now, so a freed slot
-- is taken within one promotion instead of after a waiter's fallback delay. Waiters no
-- longer in the delayed set (running, cancelled) are dropped from the list.
-- KEYS[1] leases zset, KEYS[2] waiters zset, KEYS[3] delayed zset
-- ARGV[1] job_id
-- returns {released (1 or 0: no lease held, e.g. it expired), woken job id or ''}
-- @include time
local leases, waiters, delayed = KEYS[1], KEYS[2], KEYS[3]
local released = redis.call('ZREM', leases, ARGV[1])
if released == 0 then return {0, ''} end
local now = now_ms()
for _, w in ipairs(redis.call('ZRANGE', waiters, 0, 15)) do
  local due = redis.call('ZSCORE', delayed, w)
  if not due then
    redis.call('ZREM', waiters, w)
  elseif tonumber(due) > now then
    redis.call('ZADD', delayed, 'XX', now, w)
    redis.call('ZREM', waiters, w)
    return {1, w}
  end
end
return {1, ''}

-- concurrency_release: give back the lease of a job that ended here, and wake the oldest
-- waiter.
-- @flags allow-oom
-- Meant to run right after the transition that ended the delivery (complete, retry, dead),
-- in the same pipeline: if that transition found the entry held by another consumer (this
-- worker lost its lease and the job runs elsewhere), the entry is still pending under that
-- consumer and the lease, which now counts for that run, is left alone.
-- Waking makes the oldest waiter still parked in the delayed set due now, so a freed slot
-- is taken within one promotion instead of after a waiter's fallback delay. Waiters no
-- longer in the delayed set (running, cancelled) are dropped from the list.
-- KEYS[1] leases zset, KEYS[2] waiters zset, KEYS[3] delayed zset, KEYS[4] ready stream the
-- job was read from
-- ARGV[1] job_id, ARGV[2] group, ARGV[3] entry_id, ARGV[4] consumer
-- returns {1, woken job id or ''}; {0, ''} when no lease was held (expired, released
-- before); {-1, ''} when another consumer holds the entry (nothing changed)
-- @include time
local leases, waiters, delayed = KEYS[1], KEYS[2], KEYS[3]
local pending = redis.call('XPENDING', KEYS[4], ARGV[2], ARGV[3], ARGV[3], 1)[1]
if pending and pending[2] ~= ARGV[4] then return {-1, ''} end
if redis.call('ZREM', leases, ARGV[1]) == 0 then return {0, ''} end
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

-- gcra(limiter, job_id, interval, burst, keep, now): the rate decision for one job, GCRA with
-- reserved slots. The limiter zset holds 'tat' (the theoretical arrival time) and, per job
-- told to wait, the slot reserved for it, so a job that comes back at its slot runs without
-- consuming another one and a backlog waits in order instead of polling.
-- Returns 0 when the job may run now, or the whole ms it must wait for.
local function gcra(limiter, job_id, interval, burst, keep, now)
  redis.call('ZREMRANGEBYSCORE', limiter, '-inf', '(' .. math.floor(now - keep))
  local reserved = redis.call('ZSCORE', limiter, job_id)
  if reserved then
    reserved = tonumber(reserved)
    if reserved <= now then
      redis.call('ZREM', limiter, job_id)
      return 0
    end
    return reserved -- back too early (replayed, promoted by hand): wait for its slot
  end
  local tat = tonumber(redis.call('ZSCORE', limiter, 'tat') or now)
  if tat < now then tat = now end
  local allowed_at = tat - (burst - 1) * interval
  -- formatted by hand: Lua's own number-to-string keeps 14 digits, 0.1 ms at today's epoch
  redis.call('ZADD', limiter, string.format('%.4f', tat + interval), 'tat')
  redis.call('PEXPIRE', limiter, math.ceil(tat + interval - now + keep))
  if allowed_at <= now then return 0 end
  local slot = math.ceil(allowed_at)
  redis.call('ZADD', limiter, slot, job_id)
  return slot
end

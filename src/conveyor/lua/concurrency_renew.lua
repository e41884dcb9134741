-- concurrency_renew: extend the concurrency leases of the jobs a live worker still runs.
-- @flags allow-oom
-- Called from the worker's lease beat beside renew.lua. Only a lease still held (present
-- and not expired) is extended: an expired one may already count for another job, so it is
-- reported as lost instead of taken back.
-- KEYS[1..n] leases zsets (of one queue), ARGV[1] lease_ms, ARGV[2..n+1] the job id held
-- under each key, in KEYS order
-- returns the job ids whose lease was lost
-- @include time
local now = now_ms()
local lease_ms = tonumber(ARGV[1])
local lost = {}
for i, key in ipairs(KEYS) do
  local job_id = ARGV[i + 1]
  local score = redis.call('ZSCORE', key, job_id)
  if score and tonumber(score) > now then
    redis.call('ZADD', key, now + lease_ms, job_id)
    redis.call('PEXPIRE', key, lease_ms + 1000)
  else
    lost[#lost + 1] = job_id
  end
end
return lost

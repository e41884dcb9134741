-- schedule: put a new job in the delayed set, due after a delay on Redis' clock or at a time.
-- @flags
-- KEYS[1] delayed zset, KEYS[2] payloads hash, KEYS[3] job record,
-- KEYS[4] unique key (optional)
-- ARGV[1] job_id, ARGV[2] payload (JSON object of stream fields), ARGV[3] delay_ms,
-- ARGV[4] absolute due time in ms, or '' to use Redis' clock plus the delay,
-- ARGV[5] unique window in ms (0: until the job ends; the entry then names the key in its `unique` field) (with KEYS[4])
-- returns {1, job_id, due_ms} when scheduled, {0, existing job_id, 0} when the key was taken
-- @include time
if KEYS[4] then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {0, existing, 0} end
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[4], ARGV[1], 'PX', tonumber(ARGV[5]))
  else
    redis.call('SET', KEYS[4], ARGV[1])  -- until done: the step that ends the job frees it
  end
end
local due
if ARGV[4] ~= '' then due = tonumber(ARGV[4]) else due = now_ms() + tonumber(ARGV[3]) end
redis.call('ZADD', KEYS[1], due, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[3], cjson.encode({state = 'scheduled'}))
return {1, ARGV[1], due}

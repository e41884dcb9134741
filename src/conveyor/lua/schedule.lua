-- schedule: put a new job in the delayed set, due after a delay on Redis' clock or at a time.
-- @flags
-- KEYS[1] delayed zset, KEYS[2] payloads hash, KEYS[3] job record
-- ARGV[1] job_id, ARGV[2] payload (JSON object of stream fields), ARGV[3] delay_ms,
-- ARGV[4] absolute due time in ms, or '' to use Redis' clock plus the delay
-- returns the due time in ms
-- @include time
local due
if ARGV[4] ~= '' then due = tonumber(ARGV[4]) else due = now_ms() + tonumber(ARGV[3]) end
redis.call('ZADD', KEYS[1], due, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SET', KEYS[3], cjson.encode({state = 'scheduled'}))
return due

-- retry: end a delivery and park the job in the delayed set until its delay is over: a
-- failed attempt's backoff, or a bounce of a job for a task this worker does not register
-- (a rolling deploy: it comes back as a new entry, for whichever worker reads it next).
-- @flags allow-oom
-- KEYS[1] ready stream the job was read from, KEYS[2] delayed zset, KEYS[3] payloads hash,
-- KEYS[4] job record
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id,
-- ARGV[5] payload (JSON object of the stream fields for the next attempt),
-- ARGV[6] delay_ms, ARGV[7] record_json
-- returns 1, or 0 when the consumer no longer owns the entry (nothing changed)
-- @include owner
-- @include time
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
local due = now_ms() + tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], due, ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('SET', KEYS[4], ARGV[7])
return 1

-- retry: end a delivery and park the job in the delayed set until its delay is over: a
-- failed attempt's backoff, or a bounce of a job for a task this worker does not register
-- (a rolling deploy: it comes back as a new entry, for whichever worker reads it next).
-- @flags allow-oom
-- A job cancelled while it ran (marked after its worker's last lease beat) is not parked:
-- it ends `cancelled` here, freeing a unique key it held until done, so a cancel is never
-- undone by a retry.
-- KEYS[1] ready stream the job was read from, KEYS[2] delayed zset, KEYS[3] payloads hash,
-- KEYS[4] job record, KEYS[5] cancelled set, KEYS[6] unique key held until done (optional)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id,
-- ARGV[5] payload (JSON object of the stream fields for the next attempt),
-- ARGV[6] delay_ms, ARGV[7] record_json, ARGV[8] cancelled record_json (finished_at is
-- stamped here), ARGV[9] its ttl_ms, ARGV[10] done channel, ARGV[11] publish command
-- returns 1, 2 when it ended cancelled instead, or 0 when the consumer no longer owns the
-- entry (nothing changed)
-- @include owner
-- @include time
-- @include unique
-- @include ending
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if redis.call('SREM', KEYS[5], ARGV[4]) == 1 then
  release_unique(KEYS[6], ARGV[4])
  store_end(KEYS[4], stamp(ARGV[8], now_ms()), ARGV[9])
  redis.call(ARGV[11], ARGV[10], KEYS[4])
  return 2
end
local due = now_ms() + tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], due, ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('SET', KEYS[4], ARGV[7])
return 1

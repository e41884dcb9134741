-- requeue: hand an unfinished job back to its ready stream at once (graceful shutdown).
-- @flags allow-oom
-- The old entry is acked and a copy carrying the job id is added, so any worker can take it
-- now instead of after a lease timeout, and this consumer's PEL empties. A job marked
-- cancelled while it ran is not handed back: it ends `cancelled` here (record stamped on
-- Redis' clock, mark dropped, a unique key it held until done freed), so a shutdown never
-- undoes a cancel.
-- KEYS[1] ready stream, KEYS[2] job record, KEYS[3] cancelled set, KEYS[4] unique key held
-- until done (optional)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] level name, ARGV[5] job_id,
-- ARGV[6] cancelled record_json, ARGV[7] its ttl_ms, ARGV[8] done channel, ARGV[9] publish
-- command, ARGV[10..] fields
-- returns the new entry id, 'cancelled' when it ended cancelled instead, or false when the
-- consumer no longer owns the entry
-- @include owner
-- @include time
-- @include unique
-- @include ending
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return false end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if redis.call('SREM', KEYS[3], ARGV[5]) == 1 then
  release_unique(KEYS[4], ARGV[5])
  store_end(KEYS[2], stamp(ARGV[6], now_ms()), ARGV[7])
  redis.call(ARGV[9], ARGV[8], KEYS[2])
  return 'cancelled'
end
local new_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 10))
redis.call('SET', KEYS[2], cjson.encode({state = 'queued', level = ARGV[4], entry = new_id}))
return new_id

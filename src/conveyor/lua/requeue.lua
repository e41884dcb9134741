-- requeue: hand an unfinished job back to its ready stream at once (graceful shutdown).
-- @flags allow-oom
-- The old entry is acked and a copy carrying the job id is added, so any worker can take it
-- now instead of after a lease timeout, and this consumer's PEL empties.
-- KEYS[1] ready stream, KEYS[2] job record
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] level name, ARGV[5..] fields
-- returns the new entry id, or false when the consumer no longer owns the entry
-- @include owner
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return false end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
local new_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
redis.call('SET', KEYS[2], cjson.encode({state = 'queued', level = ARGV[4], entry = new_id}))
return new_id

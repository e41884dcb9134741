-- dead: end a delivery for good, moving the job to the dead-letter stream with its reason.
-- @flags allow-oom
-- The job loses its cancel mark and frees a unique key it held until done, in the same step;
-- a chord member whose chord sits on this queue tells it here too (member_end), only once
-- this worker is found to own the entry: a stale worker cannot write into the chord.
-- KEYS[1] ready stream, KEYS[2] dead stream, KEYS[3] job record, KEYS[4] cancelled set,
-- KEYS[5] the job's unique key held until done (optional), then the chord tail's keys
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] record_json, ARGV[5] ttl_ms
-- (0 deletes the record: an ended job's record always expires), ARGV[6] done channel,
-- ARGV[7] PUBLISH or SPUBLISH, ARGV[8] job_id, ARGV[9..15] the chord tail (member_end in
-- includes/workflow.lua; ARGV[9] 0 for none), ARGV[16..] dead entry fields (field, value, ...)
-- returns the dead entry id, or false when the consumer no longer owns the entry
-- @include owner
-- @include unique
-- @include workflow
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return false end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
local dead_id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 16))
member_end(9, ARGV[6], ARGV[7])
redis.call('SREM', KEYS[4], ARGV[8])
release_unique(before_member(5, 9), ARGV[8])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl)
else
  redis.call('DEL', KEYS[3])
end
redis.call(ARGV[7], ARGV[6], KEYS[3])
return dead_id

-- expire: end a delivered job that waited longer than its `expires` option allows, instead
-- of running it: acked and recorded `expired` with the reason, not dead-lettered.
-- @flags allow-oom
-- The wait counts from the moment the job became ready, which its entry id records on
-- Redis' clock (the enqueue, or the promotion of a delayed or retried job), and is compared
-- with Redis' clock here, so skewed workers agree. A job moved back to its stream without a
-- new attempt (a wait for a rate or concurrency limit, a shutdown requeue) carries the time
-- it first became ready (its `ready_at` field, ARGV[10]), so a new entry does not restart
-- the clock; a retry drops it (a retried job is ready again at its due time). The worker
-- calls this for a job with an `expires` field before running it; 0 means run it.
-- A cancel mark on the job (a cancel that found it delivered, before this check) is cleared
-- here, as dead.lua does: a mark left behind would stay in the set for ever, and every fetch
-- would pay the per-entry check while the set is not empty.
-- KEYS[1] ready stream the job was read from, KEYS[2] job record, KEYS[3] the queue's
-- cancelled set, KEYS[4] the job's unique key held until done (optional), then the chord
-- tail's keys
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id, ARGV[5] expires_ms,
-- ARGV[6] record_json (finished_at and waited_ms are stamped here), ARGV[7] record ttl_ms
-- (0 deletes it), ARGV[8] done channel, ARGV[9] publish command ('PUBLISH' or 'SPUBLISH'),
-- ARGV[10] the entry's `ready_at` ms or '', ARGV[11..17] the chord tail (member_end in
-- includes/workflow.lua; ARGV[11] 0 for none): an expired chord member tells its chord on
-- this queue in this step; ARGV[18] '1' for a dry run: the same answer, nothing changed (a
-- member whose chord is on another queue asks first, reports there, then ends here)
-- returns 1 when expired and ended, 0 when not expired (run it; nothing changed), -1 when
-- the consumer no longer owns the entry (nothing changed)
-- @include owner
-- @include time
-- @include unique
-- @include ending
-- @include workflow
local now = now_ms()
local ready_at = tonumber(ARGV[10] or '') or tonumber(string.match(ARGV[3], '^(%d+)-'))
if now - ready_at <= tonumber(ARGV[5]) then return 0 end
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return -1 end
if ARGV[18] == '1' then return 1 end
member_end(11, ARGV[8], ARGV[9])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[4])
release_unique(before_member(4, 11), ARGV[4])
local obj = cjson.decode(stamp(ARGV[6], now))
obj['waited_ms'] = now - ready_at
store_end(KEYS[2], cjson.encode(obj), ARGV[7])
redis.call(ARGV[9], ARGV[8], KEYS[2])
return 1

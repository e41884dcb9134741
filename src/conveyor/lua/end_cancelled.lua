-- end_cancelled: end a running job whose cancel mark its worker read on the lease beat:
-- acked and recorded `cancelled`, never retried.
-- @flags allow-oom
-- The fetch hands this script the entries it found marked (fetch.lua, the blocking read):
-- a job cancelled while queued already has its `cancelled` record (cancel.lua wrote and
-- published it), which is kept as it is; any other marked entry (a cancel that found it
-- delivered, a stale mark) is ended here, so a mark never just vanishes.
-- XACK takes no consumer name, so the worker must still own the entry: one that lost its
-- lease cannot end a job another worker now holds.
-- KEYS[1] ready stream the job was read from, KEYS[2] job record, KEYS[3] cancelled set,
-- KEYS[4] the job's unique key held until done (optional), then the chord tail's keys
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4] job_id, ARGV[5] record_json
-- (finished_at is stamped here), ARGV[6] record ttl_ms (0 deletes it), ARGV[7] done
-- channel, ARGV[8] publish command ('PUBLISH' or 'SPUBLISH'), ARGV[9..15] the chord tail
-- (member_end in includes/workflow.lua; ARGV[9] 0 for none): a cancelled chord member
-- tells its chord on this queue in this step, so the chord does not wait for it for ever
-- returns 1 when it ended the job here, 2 when it only took the entry of a job cancel.lua had
-- ended (the cancelling client told the hooks then), 0 when the consumer no longer owns the
-- entry (nothing changed)
-- @include owner
-- @include time
-- @include unique
-- @include ending
-- @include workflow
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[4])
release_unique(before_member(4, 9), ARGV[4])
member_end(9, ARGV[7], ARGV[8])
local raw = redis.call('GET', KEYS[2])
local ok, rec = pcall(cjson.decode, raw or '')
if ok and type(rec) == 'table' and rec['state'] == 'cancelled' then return 2 end
store_end(KEYS[2], stamp(ARGV[5], now_ms()), ARGV[6])
redis.call(ARGV[8], ARGV[7], KEYS[2])
return 1

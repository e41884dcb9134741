-- skip_cancelled: of the entries a plain blocking XREADGROUP just delivered to this consumer
-- (a read no script can wrap), drop those whose job was cancelled while queued, as fetch.lua
-- does for the entries it reads: acked so they never run, and unmarked. Their record already
-- says `cancelled` (cancel.lua wrote it).
-- @flags allow-oom
-- A cancel that lands between the read and this script finds the entry pending, so it
-- marks the job as running (SIGNALLED) and writes no record: such an entry is not dropped
-- here (its job would end with no record at all); it runs, and its worker's lease beat stops
-- it. So an entry is dropped only when its record says `cancelled`.
-- A queue with no cancel pending pays one SCARD here. Only entries this consumer holds are
-- touched: XACK takes no consumer name.
-- KEYS[1] ready stream, KEYS[2] cancelled set, KEYS[3..] the record key of each entry, in
-- ARGV order
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] job id prefix of the stream ('queue:n:'),
-- ARGV[4..] pairs: entry_id, the entry's `id` field or ''
-- returns the dropped entry ids (the caller runs the others)
-- @include owner
if redis.call('SCARD', KEYS[2]) == 0 then return {} end
local dropped = {}
local k = 2
for i = 4, #ARGV, 2 do
  k = k + 1
  local entry = ARGV[i]
  local job_id = ARGV[i + 1]
  if job_id == '' then job_id = ARGV[3] .. entry end
  if owns(KEYS[1], ARGV[1], entry, ARGV[2]) and redis.call('SISMEMBER', KEYS[2], job_id) == 1 then
    local raw = redis.call('GET', KEYS[k])
    local ok, rec = pcall(cjson.decode, raw or '')
    if ok and type(rec) == 'table' and rec['state'] == 'cancelled' then
      redis.call('SREM', KEYS[2], job_id)
      dropped[#dropped + 1] = entry
    end
  end
end
if #dropped > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(dropped)) end
return dropped

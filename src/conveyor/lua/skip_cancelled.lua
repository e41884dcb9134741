-- skip_cancelled: of the entries a plain blocking XREADGROUP just delivered to this consumer
-- (a read no script can wrap), drop those whose job was cancelled while queued, as fetch.lua
-- does for the entries it reads: acked so they never run, and unmarked. Their record already
-- says `cancelled` (cancel.lua wrote it).
-- @flags allow-oom
-- A queue with no cancel pending pays one SCARD here. Only entries this consumer holds are
-- touched: XACK takes no consumer name.
-- KEYS[1] ready stream, KEYS[2] cancelled set
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] job id prefix of the stream ('queue:n:'),
-- ARGV[4..] pairs: entry_id, the entry's `id` field or ''
-- returns the dropped entry ids (the caller runs the others)
-- @include owner
-- @include cancelled
if redis.call('SCARD', KEYS[2]) == 0 then return {} end
local entries = {}
for i = 4, #ARGV, 2 do
  if owns(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    local fields = {}
    if ARGV[i + 1] ~= '' then fields = {'id', ARGV[i + 1]} end
    entries[#entries + 1] = {ARGV[i], fields}
  end
end
local _, dropped = drop_cancelled(KEYS[1], ARGV[1], KEYS[2], ARGV[3], entries)
return dropped

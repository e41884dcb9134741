-- fetch: deliver up to COUNT new jobs to a consumer, draining higher priority levels first.
-- @flags allow-oom
-- Entries of jobs marked cancelled are returned apart, still delivered and marked, for the
-- worker to end with end_cancelled.lua (includes/cancelled.lua says why); the check costs
-- one SCARD per call when no cancel is pending.
-- KEYS[1..n]  ready streams of one queue, most urgent first
-- KEYS[n+1]   the queue's cancelled set
-- ARGV[1]     group
-- ARGV[2]     consumer
-- ARGV[3]     count: the consumer's free slots
-- ARGV[4..3+n] job id prefix of each stream ('queue:h:', ...): the id of an entry without
--             an `id` field, minus its entry id
-- returns     { {level_index, {{entry_id, {field, value, ...}}, ...}, marked}, ... } for
--             non-empty levels; marked (the same shape) only when some entries were marked
-- @include cancelled
local group, consumer = ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local n = #KEYS - 1
local cancelled = KEYS[n + 1]
local check = redis.call('SCARD', cancelled) > 0
local out = {}
for i = 1, n do
  if want <= 0 then break end
  local stream = KEYS[i]
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS', stream, '>')
  if reply and reply[1] then
    local entries, marked = reply[1][2], {}
    if check then entries, marked = split_cancelled(cancelled, ARGV[3 + i], entries) end
    want = want - #entries - #marked
    if #marked > 0 then
      out[#out + 1] = {i, entries, marked}
    elseif #entries > 0 then
      out[#out + 1] = {i, entries}
    end
  end
end
return out

-- fetch: deliver up to COUNT new jobs to a consumer, draining higher priority levels first.
-- @flags allow-oom
-- KEYS[1..n]  ready streams of one queue, most urgent first
-- ARGV[1]     group
-- ARGV[2]     consumer
-- ARGV[3]     count: the consumer's free slots
-- returns     { {level_index, {{entry_id, {field, value, ...}}, ...}}, ... } for non-empty levels
local group, consumer = ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local out = {}
for i, stream in ipairs(KEYS) do
  if want <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS', stream, '>')
  if reply and reply[1] then
    local entries = reply[1][2]
    want = want - #entries
    out[#out + 1] = {i, entries}
  end
end
return out

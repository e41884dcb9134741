-- trim: delete old history from a ready stream, never an entry that is not finished.
-- @flags allow-oom
-- Plain XADD MAXLEN / XTRIM delete entries that are undelivered or pending; this trims only
-- below the safe point: the oldest entry that some group has not delivered or not acked.
-- Above that point, history is kept by count and/or by age.
-- KEYS[1] ready stream
-- ARGV[1] keep_count (0: no count rule), ARGV[2] keep_ms (0: no age rule),
-- ARGV[3] max entries deleted per call
-- returns the number of entries deleted
-- @include ids
-- @include time
local stream = KEYS[1]
local keep_count, keep_ms, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local len = redis.call('XLEN', stream)
if len == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then return 0 end
local safe = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local summary = redis.call('XPENDING', stream, info['name'])
  if tonumber(summary[1]) > 0 then
    safe = id_min(safe, summary[2])
  else
    safe = id_min(safe, id_next(info['last-delivered-id']))
  end
end
local threshold = safe
if keep_count > 0 then
  if len <= keep_count then return 0 end
  local excess = len - keep_count
  local first_kept = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, cap) + 1)
  threshold = id_min(threshold, first_kept[#first_kept][1])
else
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', cap + 1)
  if #head > cap then threshold = id_min(threshold, head[#head][1]) end
end
if keep_ms > 0 then
  threshold = id_min(threshold, string.format('%d-0', now_ms() - keep_ms))
end
return redis.call('XTRIM', stream, 'MINID', threshold)

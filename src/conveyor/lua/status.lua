-- status: where a job is now, read in one atomic step.
-- @flags no-writes
-- KEYS[1] job record, KEYS[2..4] ready streams (high, normal, low), KEYS[5] delayed zset
-- ARGV[1] group, ARGV[2] job_id, ARGV[3] level of the job's first entry or '',
-- ARGV[4] that entry id or ''
-- returns {record_json or false, place, detail...} where place is one of
--   'record'   the record says it all (done, dead, cancelled)
--   'delayed'  waiting in the delayed set; detail = due ms
--   'running'  in a consumer's PEL; detail = consumer, deliveries
--   'queued'   in a ready stream, not yet delivered
--   'finished' delivered and acknowledged, record gone (expired or not kept)
--   'unknown'  nothing found
-- @include ids
local slots = {high = 2, normal = 3, low = 4}
local rec = redis.call('GET', KEYS[1])
local level, entry = ARGV[3], ARGV[4]
if rec then
  local obj = cjson.decode(rec)
  if obj['state'] == 'queued' then
    level, entry = obj['level'], obj['entry']
  elseif obj['state'] == 'scheduled' or obj['state'] == 'retrying' then
    local due = redis.call('ZSCORE', KEYS[5], ARGV[2])
    return {rec, 'delayed', due or ''}
  else
    return {rec, 'record'}
  end
end
if entry == '' or slots[level] == nil then return {rec or false, 'unknown'} end
local stream = KEYS[slots[level]]
if redis.call('EXISTS', stream) == 0 then return {rec or false, 'unknown'} end
local ok, p = pcall(redis.call, 'XPENDING', stream, ARGV[1], entry, entry, 1)
if ok and p[1] then return {rec or false, 'running', p[1][2], p[1][4]} end
local found = redis.call('XRANGE', stream, entry, entry)
if not found[1] then return {rec or false, 'unknown'} end
if not ok then return {rec or false, 'queued'} end
local groups = redis.call('XINFO', 'GROUPS', stream)
for _, g in ipairs(groups) do
  for i = 1, #g, 2 do
    if g[i] == 'name' and g[i + 1] == ARGV[1] then
      for k = 1, #g, 2 do
        if g[k] == 'last-delivered-id' and id_less(g[k + 1], entry) then
          return {rec or false, 'queued'}
        end
      end
    end
  end
end
return {rec or false, 'finished'}

-- cancel: stop a job wherever it is, in one atomic step (job.cancel()).
-- @flags allow-oom
-- Delayed or retrying: removed from the delayed set and ended `cancelled` here. Queued (in a
-- ready stream, undelivered): its record says `cancelled` now and its id joins the queue's
-- `cancelled` set; the entry stays until its turn (XINFO lag stays true) and the fetch
-- skips it. Running (in a PEL): only marked; its worker reads the mark on its lease beat
-- and ends the job with end_cancelled.lua. Ended jobs are left alone.
-- A delayed chord member is ended `cancelled` here too, but its entry is moved to its ready
-- stream, marked, as a queued one's: the worker that reads it ends it with end_cancelled.lua,
-- which tells the chord (its hash may sit on another queue, out of this script's reach), so
-- the chord does not wait for it for ever.
-- A job holding a unique key "until done" (a `unique` field) is ended only when the caller
-- passed that key (KEYS[8], named in ARGV[8]); else nothing changes and the reply names the
-- key to pass: the key is freed in the same step that ends the job.
-- KEYS[1] job record, KEYS[2..4] ready streams (high, normal, low), KEYS[5] delayed zset,
-- KEYS[6] payloads hash, KEYS[7] cancelled set, KEYS[8] the job's unique key (optional)
-- ARGV[1] group, ARGV[2] job_id, ARGV[3] level of the job's first entry or '',
-- ARGV[4] that entry id or '', ARGV[5] record_json of the cancelled job (finished_at is
-- stamped here), ARGV[6] record ttl_ms (0 deletes it), ARGV[7] done channel + ' ' +
-- publish command ('PUBLISH' or 'SPUBLISH'), ARGV[8] unique key name passed as KEYS[8] or '',
-- ARGV[9] '1' when the id is a workflow step that may not be added yet (a workflow handle's
-- cancel()): with no record, its record is written `cancelled` ({1, ''}) and the handoff
-- that would add it adds nothing (add_step in includes/workflow.lua)
-- returns {code, detail}:
--   {1, task}      cancelled: was delayed or retrying, now ended (task: its task name, for
--                  the client's hooks; '' for a workflow step not added yet)
--   {2, task}      will skip: was queued, now ended and marked
--   {3, consumer}  signalled: running on `consumer`, marked
--   {4, state}     already ended: done, dead, cancelled, expired, or record_expired (ended
--                  long enough ago that its record's TTL passed) (nothing changed)
--   {5, name}      pass the unique key `name` and call again (nothing changed)
--   {0, ''}        unknown id
-- @include ids
-- @include time
-- @include unique
-- @include ending
-- @include fields
local slots = {high = 2, normal = 3, low = 4}
local group, job_id = ARGV[1], ARGV[2]
local channel, publish = string.match(ARGV[7], '^(%S+) (%S+)$')

local function finish(unique_name)
  if (unique_name or '') ~= ARGV[8] then return false end
  if unique_name then release_unique(KEYS[8], job_id) end
  store_end(KEYS[1], stamp(ARGV[5], now_ms()), ARGV[6])
  redis.call(publish, channel, KEYS[1])
  return true
end

local rec = redis.call('GET', KEYS[1])
local level, entry = ARGV[3], ARGV[4]
if rec then
  local obj = cjson.decode(rec)
  local state = obj['state']
  if state == 'queued' then
    level, entry = obj['level'], obj['entry']
  elseif state == 'scheduled' or state == 'retrying' then
    local payload = redis.call('HGET', KEYS[6], job_id)
    if not redis.call('ZSCORE', KEYS[5], job_id) or not payload then return {0, ''} end
    local unique_name = cjson.decode(payload)['unique']
    if not finish(unique_name) then return {5, unique_name or ''} end
    redis.call('ZREM', KEYS[5], job_id)
    redis.call('HDEL', KEYS[6], job_id)
    local fields = cjson.decode(payload)
    local ok, flow = pcall(cjson.decode, fields['workflow'] or '')
    if ok and type(flow) == 'table' and type(flow['member']) == 'table' then
      local at = slots[fields['level'] or 'normal'] or 3
      fields['level'] = nil
      redis.call('XADD', KEYS[at], '*', unpack(flatten(fields)))
      redis.call('SADD', KEYS[7], job_id)
    end
    return {1, fields['task'] or ''}
  else
    return {4, state}
  end
end
if not rec and ARGV[9] == '1' then
  finish(nil)
  return {1, ''}
end
if entry == '' or slots[level] == nil then return {0, ''} end
local stream = KEYS[slots[level]]
if redis.call('EXISTS', stream) == 0 then return {0, ''} end
local found = redis.call('XRANGE', stream, entry, entry)[1]
local ok, p = pcall(redis.call, 'XPENDING', stream, group, entry, entry, 1)
if ok and p[1] then
  redis.call('SADD', KEYS[7], job_id)
  return {3, p[1][2]}
end
if not found then return {0, ''} end
local queued = not ok
if ok then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and g[i + 1] == group then
        for k = 1, #g, 2 do
          if g[k] == 'last-delivered-id' then queued = id_less(g[k + 1], entry) end
        end
      end
    end
  end
end
-- delivered and acked, its record's TTL passed: not the `expires` option's `expired`
if not queued then return {4, 'record_expired'} end
local unique_name = field_of(found[2], 'unique')
if not finish(unique_name) then return {5, unique_name} end
redis.call('SADD', KEYS[7], job_id)
return {2, field_of(found[2], 'task') or ''}

-- add_step(stream, record, level, fields): add a workflow's next job (its entry carries the
-- job id the workflow gave it) and record where it sits, so its status is found by that id.
local function add_step(stream, record, level, fields)
  local entry = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('SET', record, cjson.encode({state = 'queued', level = level, entry = entry}))
  return entry
end
-- chord_add(hash, index, value, size, cb_stream, cb_record, cb_level): store one member's
-- result (or error) under its index; the report that fills the last index adds the callback,
-- whose entry chord_open stored as `cb`. HSETNX makes a repeated report of one member do
-- nothing, and a hash that is gone (expired) takes no report, so the callback is added once.
-- Returns 0 (a repeat, or no such chord), 1 (stored) or 2 (stored, and the callback added).
local function chord_add(hash, index, value, size, cb_stream, cb_record, cb_level)
  if redis.call('EXISTS', hash) == 0 then return 0 end
  if redis.call('HSETNX', hash, index, value) == 0 then return 0 end
  if redis.call('HLEN', hash) < tonumber(size) + 1 then return 1 end
  add_step(cb_stream, cb_record, cb_level, cjson.decode(redis.call('HGET', hash, 'cb')))
  return 2
end

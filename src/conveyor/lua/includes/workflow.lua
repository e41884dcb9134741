-- is_cancelled(record): the job's record says `cancelled` (a workflow step not added yet
-- gets such a record from a cancel of its workflow: cancel.lua with ARGV[9] '1').
local function is_cancelled(record)
  local raw = redis.call('GET', record)
  if not raw then return false end
  local ok, obj = pcall(cjson.decode, raw)
  return ok and type(obj) == 'table' and obj['state'] == 'cancelled'
end
-- add_step(stream, record, level, fields): add a workflow's next job (its entry carries the
-- job id the workflow gave it) and record where it sits, so its status is found by that id.
-- A step whose workflow was cancelled before it was added is not added (false).
local function add_step(stream, record, level, fields)
  if is_cancelled(record) then return false end
  local entry = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('SET', record, cjson.encode({state = 'queued', level = level, entry = entry}))
  return entry
end
-- chord_live(hash): renew a chord's lifetime: CHORD_TTL_MS from its latest news (a report,
-- or a member that failed for good), so a chord lives as long as its members move. The
-- same as workflows/launch.py CHORD_TTL_MS (a test checks); not kept in the hash, whose
-- fields workers of an older version count.
local CHORD_TTL_MS = 604800000
local function chord_live(hash)
  redis.call('PEXPIRE', hash, CHORD_TTL_MS)
end
-- chord_add(hash, index, value, size, cb_stream, cb_record, cb_level, is_error): store one
-- member's result under its index, or (is_error) the error it stands for under 'e'..index;
-- the report that fills the last slot adds the callback, whose entry chord_open stored as
-- `cb`. A slot holds one of the two: a repeated report of a member does nothing, and a
-- result replaces an error (a stale worker's, written before its lease was found lost)
-- until the callback has been added; a hash that is gone (expired) takes no report, so the
-- callback is added once. The hash holds `cb` and one field per filled slot, so HLEN
-- counts. Every report renews its lifetime (chord_live).
-- Returns 0 (a repeat, too late, or no such chord), 1 (stored) or 2 (stored, callback added).
local function chord_add(hash, index, value, size, cb_stream, cb_record, cb_level, is_error)
  if redis.call('EXISTS', hash) == 0 then return 0 end
  if redis.call('HEXISTS', hash, index) == 1 then return 0 end
  local err = 'e' .. index
  local full = tonumber(size) + 1
  chord_live(hash)
  if is_error then
    if redis.call('HSETNX', hash, err, value) == 0 then return 0 end
  else
    if redis.call('HEXISTS', hash, err) == 1 then
      if redis.call('HLEN', hash) >= full then return 0 end
      redis.call('HDEL', hash, err)
    end
    redis.call('HSET', hash, index, value)
  end
  if redis.call('HLEN', hash) < full then return 1 end
  add_step(cb_stream, cb_record, cb_level, cjson.decode(redis.call('HGET', hash, 'cb')))
  return 2
end
-- chord_fail(hash, index, cb_record, record, ttl_ms, channel, publish): a member ended for
-- good without a result under on_error="fail": the callback will not run, so its record
-- says dead and names the member (result waiters wake). The member's slot stays empty: a
-- replay of a dead member fills it and adds the callback then. 0 when the chord is gone or
-- the member had reported already, else 1.
local function chord_fail(hash, index, cb_record, record, ttl_ms, channel, publish)
  if redis.call('EXISTS', hash) == 0 then return 0 end
  if redis.call('HEXISTS', hash, index) == 1 then return 0 end
  if is_cancelled(cb_record) then return 0 end  -- its workflow was cancelled: that says it
  chord_live(hash)  -- kept for a replay of the member as long as a report would keep it
  redis.call('SET', cb_record, record, 'PX', ttl_ms)
  redis.call(publish, channel, cb_record)
  return 1
end
-- member_end(at, channel, publish): tell a chord on this queue that a member ended without
-- a result (dead, cancelled, expired), in the script that ends the member, after its
-- ownership was checked. ARGV[at] is the KEYS index of the chord hash (0: not a chord member
-- on this queue; nothing to do), the callback's stream and record following it in KEYS;
-- ARGV[at+1..at+6]: on_error ('include' or 'fail'), member index, chord size, the error JSON
-- (include) or the callback's dead record (fail), callback level, that record's ttl ms.
local function member_end(at, channel, publish)
  local k = tonumber(ARGV[at])
  if not k or k == 0 then return 0 end
  local hash, cb_stream, cb_record = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  if ARGV[at + 1] == 'include' then
    return chord_add(hash, ARGV[at + 2], ARGV[at + 4], ARGV[at + 3], cb_stream, cb_record,
      ARGV[at + 5], true)
  end
  return chord_fail(hash, ARGV[at + 2], cb_record, ARGV[at + 4], ARGV[at + 6], channel, publish)
end
-- before_member(n, at): KEYS[n], an optional key (a unique key) that the chord tail's keys
-- follow, or nil when it was not passed and the tail's keys start at n (ARGV[at]).
local function before_member(n, at)
  if tonumber(ARGV[at]) == n then return nil end
  return KEYS[n]
end

-- stamp(record_json, now): the record the caller built, with `finished_at` on Redis' clock.
local function stamp(record_json, now)
  local obj = cjson.decode(record_json)
  obj['finished_at'] = now
  return cjson.encode(obj)
end
-- store_end(key, record, ttl_ms): an ended job's record always expires (0 deletes it now).
local function store_end(key, record, ttl_ms)
  if tonumber(ttl_ms) > 0 then
    redis.call('SET', key, record, 'PX', ttl_ms)
  else
    redis.call('DEL', key)
  end
end

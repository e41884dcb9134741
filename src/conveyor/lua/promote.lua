-- promote: move due jobs from the delayed set to their ready stream, each exactly once.
-- @flags allow-oom
-- Any number of workers may call this; a job is moved only if it is still in the set and due,
-- so two promoters never add the same job twice.
-- KEYS[1] delayed zset, KEYS[2] payloads hash, KEYS[3..5] ready streams (high, normal, low),
-- KEYS[6..5+n] record key of each job, in ARGV order
-- ARGV[1..n] job ids
-- returns the number of jobs moved
-- @include time
-- @include fields
local levels = {high = 3, normal = 4, low = 5}
local now = now_ms()
local moved = 0
for i, job_id in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[1], job_id)
  if score and tonumber(score) <= now then
    local payload = redis.call('HGET', KEYS[2], job_id)
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('HDEL', KEYS[2], job_id)
    if payload then
      local obj = cjson.decode(payload)
      local level = obj['level'] or 'normal'
      obj['level'] = nil
      local slot = levels[level] or 4
      local args = flatten(obj)
      local entry = redis.call('XADD', KEYS[slot], '*', unpack(args))
      redis.call('SET', KEYS[5 + i], cjson.encode({state = 'queued', level = level, entry = entry}))
      moved = moved + 1
    end
  end
end
return moved

-- complete: acknowledge a batch of finished jobs and store their records, atomically.
-- @flags allow-oom
-- Entries the consumer no longer owns (its lease was lost and the job reclaimed) are left
-- alone and reported, so a late worker cannot finish a job another worker now holds.
-- KEYS[1..3]      ready streams (high, normal, low)
-- KEYS[4..3+n]    record key of each job, in ARGV order
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] done channel, ARGV[4] PEL scan limit
-- ARGV[5..]       per job: level_index, entry_id, record_json, ttl_ms
-- returns         indexes (1-based) of rejected jobs
-- @include ids
local group, consumer, channel = ARGV[1], ARGV[2], ARGV[3]
local limit = tonumber(ARGV[4])
local nlevels = 3
local per_level = {}
local n = (#ARGV - 4) / 4
for j = 1, n do
  local base = 4 + (j - 1) * 4
  local lvl = tonumber(ARGV[base + 1])
  local ids = per_level[lvl]
  if not ids then ids = {}; per_level[lvl] = ids end
  ids[#ids + 1] = j
end


local rejected = {}
local done_keys = {}
for lvl = 1, nlevels do
  local jobs = per_level[lvl]
  if jobs then
    local stream = KEYS[lvl]
    local lo, hi = nil, nil
    for _, j in ipairs(jobs) do
      local id = ARGV[4 + (j - 1) * 4 + 2]
      if lo == nil or id_less(id, lo) then lo = id end
      if hi == nil or id_less(hi, id) then hi = id end
    end
    local owned = {}
    local pel = redis.call('XPENDING', stream, group, lo, hi, limit, consumer)
    for _, p in ipairs(pel) do owned[p[1]] = true end
    local acks = {}
    for _, j in ipairs(jobs) do
      local base = 4 + (j - 1) * 4
      local id = ARGV[base + 2]
      if owned[id] then
        acks[#acks + 1] = id
        local key = KEYS[nlevels + j]
        local ttl = tonumber(ARGV[base + 4])
        if ttl > 0 then
          redis.call('SET', key, ARGV[base + 3], 'PX', ttl)
        else
          redis.call('DEL', key)
        end
        done_keys[#done_keys + 1] = key
      else
        rejected[#rejected + 1] = j
      end
    end
    if #acks > 0 then
      redis.call('XACK', stream, group, unpack(acks))
    end
  end
end
if #done_keys > 0 then
  redis.call('PUBLISH', channel, table.concat(done_keys, '\n'))
end
return rejected

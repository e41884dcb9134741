-- complete: acknowledge a batch of finished jobs and store their records, atomically.
-- @flags allow-oom
-- Entries the consumer no longer owns (its lease was lost and the job reclaimed) are left
-- alone and reported, so a late worker cannot finish a job another worker now holds.
-- A job that ends here loses its cancel mark (cancelled after its last lease beat, it ran to
-- the end), frees a unique key it held until done and gives back its concurrency lease
-- (waking the oldest waiter), in the same step: a limited task pays no release script.
-- KEYS[1..3]      ready streams (high, normal, low), KEYS[4] the queue's cancelled set
-- KEYS[5..4+n]    record key of each job, in ARGV order, then the unique keys held until done,
--                 then per job holding a concurrency lease: its leases zset, waiters zset and
--                 the delayed zset, then the keys of workflow handoffs (all under this tag)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] done channel, ARGV[4] PUBLISH or SPUBLISH
--                 (sharded pub/sub on Redis Cluster 7+: the channel has the queue's tag)
-- ARGV[5]         how many ARGV slots the workflow handoffs take (0 for plain jobs), then
--                 per handoff: the job's index (1-based, in ARGV order), a kind and its args:
--                 'step' stream, record (KEYS indexes), level, n, then n field/value items:
--                 add a chain's next step; 'chord' hash, member index, result JSON, size,
--                 callback stream, callback record (KEYS indexes), callback level: report to
--                 a chord, adding its callback when last; 'drop' hash (KEYS index): a chord's
--                 results, read by the callback that just succeeded. Each runs only if its
--                 job is acked here, so the next step is added exactly when its step ends.
-- ARGV[6+h..]     per level: level_index, count, lowest and highest entry_id of the level's
--                 jobs, then per job of that level: entry_id, record_json, ttl_ms (0 deletes
--                 the record), job_id, index in KEYS of its unique key or 0, index in KEYS
--                 of its leases zset or 0
-- returns         indexes (1-based, in ARGV order) of rejected jobs
-- The done message names the record keys stored, one per line; then a blank line and one
-- line per key: the record itself when it is kept, at most INLINE_MAX bytes, free of
-- newlines and within the message's INLINE_TOTAL, else an empty line. A waiter given its
-- record returns without reading it back; older waiters see lines that name no key.
-- @include unique
-- @include leases
-- @include time
-- @include workflow
local group, consumer, channel, publish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local INLINE_MAX, INLINE_TOTAL = 1024, 16384
local rejected, done_keys, inline, inlined = {}, {}, {}, 0
local handoffs = {}
local a = 6
local h_end = 5 + tonumber(ARGV[5])
while a <= h_end do
  local job, kind = tonumber(ARGV[a]), ARGV[a + 1]
  handoffs[job] = handoffs[job] or {}
  table.insert(handoffs[job], a + 1)
  if kind == 'step' then
    a = a + 6 + tonumber(ARGV[a + 5])
  elseif kind == 'chord' then
    a = a + 9
  else
    a = a + 3
  end
end
local function hand_off(at)
  local kind = ARGV[at]
  if kind == 'step' then
    local n = tonumber(ARGV[at + 4])
    add_step(KEYS[tonumber(ARGV[at + 1])], KEYS[tonumber(ARGV[at + 2])], ARGV[at + 3],
      {unpack(ARGV, at + 5, at + 4 + n)})
  elseif kind == 'chord' then
    chord_add(KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4],
      KEYS[tonumber(ARGV[at + 5])], KEYS[tonumber(ARGV[at + 6])], ARGV[at + 7])
  else
    redis.call('DEL', KEYS[tonumber(ARGV[at + 1])])
  end
end
local j = 0
local marks = redis.call('SCARD', KEYS[4]) > 0
while a <= #ARGV do
  local stream = KEYS[tonumber(ARGV[a])]
  local n = tonumber(ARGV[a + 1])
  local low, high = ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  -- Ownership: one read of the consumer's pending entries between the batch's lowest and
  -- highest id covers the batch (and the jobs still running among them, so up to 4n);
  -- past that, a job not among them is looked up alone. Reading only that range costs a
  -- quarter of reading the consumer's oldest 4n entries, which a busy worker's PEL fills.
  local window = 4 * n
  local owned = {}
  local pel = redis.call('XPENDING', stream, group, low, high, window, consumer)
  for _, p in ipairs(pel) do owned[p[1]] = true end
  local complete_pel = #pel < window
  local acks = {}
  for _ = 1, n do
    j = j + 1
    local id = ARGV[a]
    local mine = owned[id]
    if not mine and not complete_pel then
      mine = #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0
    end
    if mine then
      acks[#acks + 1] = id
      local key = KEYS[4 + j]
      if marks then redis.call('SREM', KEYS[4], ARGV[a + 3]) end
      local u = tonumber(ARGV[a + 4])
      if u > 0 then release_unique(KEYS[u], ARGV[a + 3]) end
      local l = tonumber(ARGV[a + 5])
      if l > 0 then lease_release(KEYS[l], KEYS[l + 1], KEYS[l + 2], ARGV[a + 3], now_ms()) end
      local ttl, record = ARGV[a + 2], ARGV[a + 1]
      if ttl ~= '0' then
        redis.call('SET', key, record, 'PX', ttl)
      else
        redis.call('DEL', key)
        record = ''
      end
      done_keys[#done_keys + 1] = key
      if #record > INLINE_MAX or inlined + #record > INLINE_TOTAL
          or string.find(record, '\n', 1, true) then
        record = ''
      end
      inlined = inlined + #record
      inline[#inline + 1] = record
      if handoffs[j] then
        for _, at in ipairs(handoffs[j]) do hand_off(at) end
      end
    else
      rejected[#rejected + 1] = j
    end
    a = a + 6
  end
  if #acks > 0 then
    redis.call('XACK', stream, group, unpack(acks))
  end
end
if #done_keys > 0 then
  redis.call(publish, channel, table.concat(done_keys, '\n') .. '\n\n' .. table.concat(inline, '\n'))
end
return rejected

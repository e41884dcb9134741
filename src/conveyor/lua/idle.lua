-- idle: whether a queue has nothing left to do, read in one atomic step (burst workers).
-- @flags no-writes
-- KEYS[1] delayed zset, KEYS[2..4] ready streams (high, normal, low)
-- ARGV[1] group
-- returns {delayed, running, undelivered}: jobs in the delayed set, entries in the group's
--   PEL (delivered, not acked) and entries the group has not delivered yet (0 or 1 per
--   stream: one is enough to say "not empty").
-- Read apart, these counts race: a job moves from the PEL to the delayed set (retry) or from
-- the delayed set to a stream (promote) between two reads and is seen in neither.
local delayed = redis.call('ZCARD', KEYS[1])
local running, undelivered = 0, 0
for i = 2, 4 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local last = nil
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[i])) do
      local info = {}
      for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
      if info['name'] == ARGV[1] then
        running = running + info['pending']
        last = info['last-delivered-id']
      end
    end
    -- No group yet: every entry is undelivered.
    local after = last and ('(' .. last) or '-'
    if #redis.call('XRANGE', KEYS[i], after, '+', 'COUNT', 1) > 0 then
      undelivered = undelivered + 1
    end
  end
end
return {delayed, running, undelivered}

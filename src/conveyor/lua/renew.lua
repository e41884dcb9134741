-- renew: extend the lease of the jobs a live worker still holds.
-- @flags allow-oom
-- XCLAIM of its own entries with JUSTID resets their idle time without counting a delivery.
-- Only entries still owned are touched, so a renewal never steals back a reclaimed job.
-- KEYS[1] ready stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] PEL scan limit, ARGV[4..] entry ids held
-- returns the ids another consumer now holds (the lease was lost); ids no longer pending at
-- all were acked meanwhile by this worker, which is not a loss
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local owned = {}
local pel = redis.call('XPENDING', stream, group, '-', '+', tonumber(ARGV[3]), consumer)
for _, p in ipairs(pel) do owned[p[1]] = true end
local keep, lost = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if owned[id] then
    keep[#keep + 1] = id
  elseif redis.call('XPENDING', stream, group, id, id, 1)[1] then
    lost[#lost + 1] = id
  end
end
if #keep > 0 then
  local args = {'XCLAIM', stream, group, consumer, 0}
  for _, id in ipairs(keep) do args[#args + 1] = id end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return lost

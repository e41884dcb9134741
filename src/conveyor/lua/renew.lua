-- renew: extend the lease of the jobs a live worker still holds.
-- @flags allow-oom
-- XCLAIM of its own entries with JUSTID resets their idle time without counting a delivery.
-- Only entries still owned are touched, so a renewal never steals back a reclaimed job.
-- KEYS[1] ready stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] PEL scan limit, ARGV[4..] entry ids held
-- returns the ids no longer owned (the lease was lost)
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local owned = {}
local pel = redis.call('XPENDING', stream, group, '-', '+', tonumber(ARGV[3]), consumer)
for _, p in ipairs(pel) do owned[p[1]] = true end
local keep, lost = {}, {}
for i = 4, #ARGV do
  if owned[ARGV[i]] then keep[#keep + 1] = ARGV[i] else lost[#lost + 1] = ARGV[i] end
end
if #keep > 0 then
  local args = {'XCLAIM', stream, group, consumer, 0}
  for _, id in ipairs(keep) do args[#args + 1] = id end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return lost

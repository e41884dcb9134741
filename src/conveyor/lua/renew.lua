-- renew: extend the lease of the jobs a live worker still holds.
-- @flags allow-oom
-- XCLAIM of its own entries with JUSTID resets their idle time without counting a delivery.
-- Only entries still owned are touched, so a renewal never steals back a reclaimed job.
-- Ownership is read from the consumer's pending entries between the lowest and highest id
-- held, at most ARGV[3] of them (the worker passes its count of held ids plus a margin):
-- reading the whole PEL instead cost 7-25 ms of Redis' time per beat at -c 500, a stall
-- every other client waited out. An id not in a full window is looked up alone.
-- KEYS[1] ready stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] window (most PEL entries read in one go),
-- ARGV[4] lowest and ARGV[5] highest entry id held, ARGV[6..] entry ids held
-- returns the ids another consumer now holds (the lease was lost); ids no longer pending at
-- all were acked meanwhile by this worker, which is not a loss
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local window = tonumber(ARGV[3])
local owned = {}
local pel = redis.call('XPENDING', stream, group, ARGV[4], ARGV[5], window, consumer)
for _, p in ipairs(pel) do owned[p[1]] = true end
local whole = #pel < window
local keep, lost = {}, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  if owned[id] or (not whole and redis.call('XPENDING', stream, group, id, id, 1, consumer)[1]) then
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

-- reclaim: take over jobs whose lease expired (their worker died) and say how often each
-- @flags allow-oom
-- was delivered, so the worker can dead-letter one that keeps killing its workers.
-- KEYS[1] ready stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms (the lease timeout), ARGV[4] count
-- returns { {entry_id, {field, value, ...}, deliveries}, ... , deleted = {ids} }
--         as { claimed_list, deleted_ids }
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local reply = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], '0-0', 'COUNT', ARGV[4])
local claimed = {}
for _, entry in ipairs(reply[2]) do
  if entry and entry[2] then
    local p = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
    local deliveries = 1
    if p[1] then deliveries = p[1][4] end
    claimed[#claimed + 1] = {entry[1], entry[2], deliveries}
  end
end
local deleted = reply[3] or {}
return {claimed, deleted}

-- retire: delete a consumer from its group, but only when it holds no pending entry.
-- @flags allow-oom
-- KEYS[1..n] ready streams of one queue
-- ARGV[1] group, ARGV[2] consumer
-- returns 1 when the consumer was deleted from every stream, 0 when it still holds work
local group, consumer = ARGV[1], ARGV[2]
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    local p = redis.call('XPENDING', stream, group, '-', '+', 1, consumer)
    if p[1] then return 0 end
  end
end
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  end
end
return 1

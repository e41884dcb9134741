-- heartbeat: record that a worker is alive, on Redis' clock, and forget workers that are not.
-- @flags allow-oom
-- KEYS[1] workers registry (zset: consumer -> last beat ms), KEYS[2] this worker's info key
-- ARGV[1] consumer, ARGV[2] info (JSON), ARGV[3] ttl ms
-- returns the number of stale workers removed
-- @include time
local now = now_ms()
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local stale = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return stale

-- due: list delayed jobs whose time has come on Redis' clock, and when the next one falls due.
-- @flags no-writes
-- KEYS[1] delayed zset
-- ARGV[1] limit
-- returns { {job_id, ...}, ms_until_next_due or -1 when nothing else is waiting }
-- @include time
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
return {ids, wait}

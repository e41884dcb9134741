-- progress: store a running job's latest progress, stamped with Redis' clock.
-- @flags allow-oom
-- One key per job beside its record, replaced on each report and expiring `ttl_ms` after
-- the last one, so it never outlives the job's own retention by more than that.
-- KEYS[1] progress key
-- ARGV[1] fraction (0..1, as text), ARGV[2] message, ARGV[3] ttl_ms
-- returns the Redis time stored (ms)
-- @include time
local now = now_ms()
redis.call('SET', KEYS[1], cjson.encode({fraction = tonumber(ARGV[1]), message = ARGV[2],
  at = now}), 'PX', ARGV[3])
return now

-- chord_failed: a chord member died for good under on_error="fail": the callback will not
-- run, so its record says dead and names the member (result waiters wake). The member's slot
-- stays empty: replaying the member and its success fills it and adds the callback then.
-- @flags allow-oom
-- KEYS[1] chord hash, KEYS[2] callback record
-- ARGV[1] member index, ARGV[2] callback's dead record, ARGV[3] its ttl ms,
-- ARGV[4] done channel of the callback's queue, ARGV[5] PUBLISH or SPUBLISH
-- returns 1 when recorded, 0 when the chord is gone or that member had reported already
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call(ARGV[5], ARGV[4], KEYS[2])
return 1

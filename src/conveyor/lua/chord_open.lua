-- chord_open: create a chord's fan-in hash before its members are enqueued: the callback's
-- entry (added by the report of the last member) and the hash's lifetime, which each
-- member's report renews (chord_live in includes/workflow.lua): a chord whose members take
-- long, or whose dead member is replayed late, is not lost while it moves.
-- @flags
-- KEYS[1] the chord hash (the callback queue's hash tag)
-- ARGV[1] the callback entry's field/value pairs as a JSON array of strings, ARGV[2] ttl ms
-- returns 1
redis.call('HSET', KEYS[1], 'cb', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1

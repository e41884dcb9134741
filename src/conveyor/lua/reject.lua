-- reject: end a delivery that must not touch any job record, moving it to the dead stream.
-- @flags allow-oom
-- For entries that cannot be trusted to name their job: a bad signature, or a signed copy of
-- a job that already ended (a replay). Their `id` field may name another job; its record is
-- left as it is.
-- KEYS[1] ready stream, KEYS[2] dead stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry_id, ARGV[4..] dead entry fields
-- returns the dead entry id, or false when the consumer no longer owns the entry
-- @include owner
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return false end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))

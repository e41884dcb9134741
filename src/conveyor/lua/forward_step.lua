-- forward_step: add a chain's next step to another queue before the step that finished is
-- acked on its own (forward-then-ack, where the two queues do not share a hash tag).
-- @flags allow-oom
-- A marker keyed by the next job's deterministic id makes a re-run of the finished step (its
-- worker died before the ack) add nothing: the next step is added once.
-- KEYS[1] the next job's handoff marker, KEYS[2] its ready stream, KEYS[3] its record
-- ARGV[1] marker ttl in ms, ARGV[2] level name, ARGV[3..] field/value pairs of its entry
-- returns 1 when added, 0 when it had been added before
-- @include workflow
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
add_step(KEYS[2], KEYS[3], ARGV[2], {unpack(ARGV, 3)})
return 1

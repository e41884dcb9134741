-- owns: whether a consumer still holds an entry, read before a workflow job tells another
-- queue that it ended (forward-then-end): a worker that lost its lease sends nothing there.
-- The script that then ends the job checks again, in its own step.
-- @flags no-writes
-- KEYS[1] ready stream
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer
-- returns 1 when the consumer holds the entry, else 0
-- @include owner
if owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 1 end
return 0

-- append_events: add a worker's batch of job events to its namespace's events stream.
-- No allow-oom flag: at the memory limit the batch is refused (the worker drops it) rather
-- than taking memory acks and dead letters need. One call per flush instead of one XADD per
-- event from the client: what it spares is the client's cost per command, not Redis'.
-- KEYS[1] events stream ({~events} hash tag: it shares a slot with no queue)
-- ARGV[1] maxlen (approximate: MAXLEN ~)
-- ARGV[2..] events, each as two items: a field name and its value (the event's JSON)
-- returns the number of events added
local key, maxlen = KEYS[1], ARGV[1]
for i = 2, #ARGV, 2 do
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', ARGV[i], ARGV[i + 1])
end
return (#ARGV - 1) / 2

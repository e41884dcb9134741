-- chunk_append: add one partial result (or a run's end marker) to a job's chunk stream.
-- @flags allow-oom
-- A chunk stream is not a queue: MAXLEN bounds it, and it expires `ttl_ms` after this write
-- (long while the job runs, its result_ttl from the run's end). Each entry names its run (a
-- name no other run of the job has) and its index in that run; a run writes its entries one
-- at a time, in index order, so a write resent after a dropped connection finds its first
-- copy as the stream's last entry, with the same run and index, and is not added again.
-- KEYS[1]  the job's chunk stream
-- ARGV[1]  MAXLEN (approximate), ARGV[2] ttl_ms, ARGV[3] run ("<attempt>.<delivery>.<token>"),
-- ARGV[4]  index of the entry in its run (0, 1, ...), ARGV[5] kind ('c' chunk, 'end'),
-- ARGV[6]  payload: the chunk's JSON, or for 'end' the run's outcome ('ok' or 'error')
-- returns  the entry id (the existing one's when it was already there)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
  local f = last[2]
  if f[1] == 'run' and f[2] == ARGV[3] and f[3] == 'n' and f[4] == ARGV[4] then
    return last[1]
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'run', ARGV[3], 'n', ARGV[4], ARGV[5], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id

-- chunk_append: add one partial result (or a run's end marker) to a job's chunk stream.
-- @flags allow-oom
-- A chunk stream is not a queue: MAXLEN bounds it, and it expires `ttl_ms` after its last
-- write, as long as the job's record is kept. Each entry names its run (attempt and
-- delivery) and its index in that run; an entry whose run already reached that index is not
-- added again, so a write resent after a dropped connection never doubles a chunk.
-- KEYS[1]  the job's chunk stream
-- ARGV[1]  MAXLEN (approximate), ARGV[2] ttl_ms, ARGV[3] run ("<attempt>.<delivery>"),
-- ARGV[4]  index of the entry in its run (0, 1, ...), ARGV[5] kind ('c' chunk, 'end'),
-- ARGV[6]  payload: the chunk's JSON, or for 'end' the run's outcome ('ok' or 'error')
-- returns  the entry id (the existing one's when it was already there)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
  local f = last[2]
  if f[1] == 'run' and f[2] == ARGV[3] and f[3] == 'n' and tonumber(f[4]) >= tonumber(ARGV[4])
  then
    return last[1]
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'run', ARGV[3], 'n', ARGV[4], ARGV[5], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id

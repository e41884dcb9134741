-- enqueue_many_signed: add a batch of jobs with minted ids to one ready stream, all or none,
-- and record where each sits (the signed twin of enqueue_many).
-- @flags
-- No allow-oom: at the memory limit Redis refuses the whole call before its first write.
-- KEYS[1]      ready stream
-- KEYS[2..n+1] record key of each job, in ARGV order
-- ARGV[1]      level name
-- ARGV[2..]    per job: the number of field/value pairs, then the pairs
-- returns      the new entry ids, in ARGV order
local stream = KEYS[1]
local ids = {}
local i = 2
while i <= #ARGV do
  local last = i + 2 * tonumber(ARGV[i])
  local entry = redis.call('XADD', stream, '*', unpack(ARGV, i + 1, last))
  ids[#ids + 1] = entry
  redis.call('SET', KEYS[#ids + 1], cjson.encode({state = 'queued', level = ARGV[1], entry = entry}))
  i = last + 1
end
return ids

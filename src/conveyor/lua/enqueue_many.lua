-- enqueue_many: add a batch of jobs to one ready stream, all of them or none.
-- @flags
-- No allow-oom: at the memory limit Redis refuses the whole call before its first write.
-- KEYS[1]   ready stream
-- ARGV      per job: the number of field/value pairs, then the pairs
-- returns   the new entry ids, in ARGV order
local stream = KEYS[1]
local ids = {}
local i = 1
while i <= #ARGV do
  local last = i + 2 * tonumber(ARGV[i])
  ids[#ids + 1] = redis.call('XADD', stream, '*', unpack(ARGV, i + 1, last))
  i = last + 1
end
return ids

-- enqueue_signed: add a job whose id the producer minted (an app that signs its jobs), and
-- record where it sits, so its status is found by id and its id is covered by the signature.
-- @flags
-- No allow-oom: at the memory limit Redis refuses the call before its first write.
-- KEYS[1] ready stream, KEYS[2] job record, KEYS[3] unique key (optional)
-- ARGV[1] level name, ARGV[2] job id, ARGV[3] unique window in ms (0: until the job ends; the entry then names the key in its `unique` field) (with KEYS[3]) or '',
-- ARGV[4..] field/value pairs of the entry
-- returns {1, job_id} when added, {0, existing job_id} when the unique key was taken
if KEYS[3] then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
local entry = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('SET', KEYS[2], cjson.encode({state = 'queued', level = ARGV[1], entry = entry}))
if KEYS[3] then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[3], ARGV[2], 'PX', tonumber(ARGV[3]))
  else
    redis.call('SET', KEYS[3], ARGV[2])  -- until done: the step that ends the job frees it
  end
end
return {1, ARGV[2]}

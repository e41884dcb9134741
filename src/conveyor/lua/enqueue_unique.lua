-- enqueue_unique: add a job unless one with the same unique key was added within its window.
-- @flags
-- A caller that retries an enqueue after a timeout (was it added or not?) passes the same key
-- and gets the first job back instead of a duplicate.
-- KEYS[1] unique key, KEYS[2] ready stream
-- ARGV[1] window in ms (0: until the job ends; the entry then names the key in its `unique` field), ARGV[2] job id prefix ('queue:n:'), ARGV[3..] fields
-- returns {1, job_id} when added, {0, existing job_id} when the key was taken
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local entry = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
local job_id = ARGV[2] .. entry
if tonumber(ARGV[1]) > 0 then
  redis.call('SET', KEYS[1], job_id, 'PX', tonumber(ARGV[1]))
else
  redis.call('SET', KEYS[1], job_id)  -- until done: the step that ends the job frees it
end
return {1, job_id}

-- create_group: create a ready stream's consumer group at id 0, unless it exists.
-- @flags allow-oom
-- At id 0, jobs added before any worker ever ran are delivered too. allow-oom lets a worker
-- start and drain a backlog that filled Redis to its memory limit.
-- KEYS[1] ready stream
-- ARGV[1] group
-- returns 1 when created, 0 when it already existed
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if ok then return 1 end
if string.find(tostring(err), 'BUSYGROUP') then return 0 end
return redis.error_reply(tostring(err))

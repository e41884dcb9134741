-- replay: move a dead job back to its ready stream for another try, exactly once.
-- @flags allow-oom
-- KEYS[1] dead stream, KEYS[2] target ready stream, KEYS[3] job record
-- ARGV[1] dead entry id, ARGV[2] level name, ARGV[3..] fields of the new entry
-- returns the new entry id, or false when the dead entry is gone (already replayed or purged)
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
local entry = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[3], cjson.encode({state = 'queued', level = ARGV[2], entry = entry}))
return entry

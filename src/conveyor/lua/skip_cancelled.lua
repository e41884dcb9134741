-- skip_cancelled: deliver new entries of one ready stream, dropping those whose job was
-- cancelled while queued: the fetch step of includes/cancelled.lua on its own, so the
-- include is tested as fetch.lua will run it (and usable by a single-stream reader).
-- @flags allow-oom
-- KEYS[1] ready stream, KEYS[2] cancelled set
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] job id prefix of the stream
-- ('queue:n:')
-- returns {kept entries {{entry_id, {field, value, ...}}, ...}, dropped entry ids}
-- @include cancelled
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS',
  KEYS[1], '>')
if not reply or not reply[1] then return {{}, {}} end
if redis.call('SCARD', KEYS[2]) == 0 then return {reply[1][2], {}} end
local kept, dropped = drop_cancelled(KEYS[1], ARGV[1], KEYS[2], ARGV[4], reply[1][2])
return {kept, dropped}

-- cron_fire: enqueue a schedule's due ticks, each once, and move its last-fired mark forward.
-- @flags
-- No allow-oom: it adds work, so at the memory limit Redis refuses it before its first write.
-- Any number of workers call this with ticks they chose from a mark they read a moment ago.
-- A tick at or below the current mark, or whose tick key exists (fired by a worker that
-- predates marks), is not enqueued again; a tick later than Redis' clock is refused; the mark
-- only moves forward and its TTL is refreshed, so a schedule removed from code lets it expire.
-- KEYS[1] last-fired mark (string: tick in UTC ms), KEYS[2] ready stream,
-- KEYS[3..2+n] tick key of each tick, in ARGV order,
-- KEYS[3+n..2+2n] job record of each tick (signed apps only: ARGV[4] is '')
-- ARGV[1] mark TTL in ms, ARGV[2] tick key window in ms, ARGV[3] level name,
-- ARGV[4] job id prefix ('queue:n:', the id is prefix .. entry) or '' for minted ids,
-- ARGV[5] n, then per tick: tick ms, job id ('' with a prefix), field count k, k field/value pairs
-- returns {mark after the call or false, tick, job id, tick, job id, ...} for the ticks enqueued
-- @include time
local now = now_ms()
local mark = tonumber(redis.call('GET', KEYS[1]) or '')
local n = tonumber(ARGV[5])
local prefix = ARGV[4]
local out = {}
local pos = 6
for i = 1, n do
  local tick_text = ARGV[pos]
  local tick = tonumber(tick_text)
  local job_id = ARGV[pos + 1]
  local k = tonumber(ARGV[pos + 2])
  local first, last = pos + 3, pos + 2 + 2 * k
  pos = last + 1
  if tick <= now and (mark == nil or tick > mark) then
    local tick_key = KEYS[2 + i]
    if redis.call('EXISTS', tick_key) == 0 then
      local entry = redis.call('XADD', KEYS[2], '*', unpack(ARGV, first, last))
      if prefix ~= '' then
        job_id = prefix .. entry
      else
        redis.call('SET', KEYS[2 + n + i],
          cjson.encode({state = 'queued', level = ARGV[3], entry = entry}))
      end
      redis.call('SET', tick_key, job_id, 'PX', tonumber(ARGV[2]))
      out[#out + 1] = tick_text
      out[#out + 1] = job_id
    end
    mark = tick
  end
end
if mark ~= nil then
  -- string.format keeps all digits: tostring() of a 13-digit number may print 1.7e+12
  redis.call('SET', KEYS[1], string.format('%d', mark), 'PX', tonumber(ARGV[1]))
end
table.insert(out, 1, mark and string.format('%d', mark) or false)
return out

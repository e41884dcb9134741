-- fetch_plan: how many new jobs to read from each ready stream of a queue, most urgent first.
-- @flags no-writes
-- The worker then reads them with plain XREADGROUP: fetch.lua copies every entry it delivers
-- into Lua and back out (about 5 us of Redis' time per job, twice the read itself), this
-- copies nothing but each stream's group lag. Where the lag does not tell, fetch.lua reads.
-- KEYS[1..n]  ready streams of one queue, most urgent first
-- KEYS[n+1]   the queue's cancelled set
-- ARGV[1]     group
-- ARGV[2]     count: the consumer's free slots
-- returns     {c1, ..., cn}: new entries to read from each stream (their sum at most count);
--             -1 when a cancel is pending (fetch.lua sets marked entries apart, and entries
--             read by an older plan must be checked); or nil when fetch.lua must read for
--             another reason: a group's lag is unknown to Redis (after XDEL or on 6.2), or a
--             stream or group is missing (fetch.lua raises NOGROUP)
local group, want = ARGV[1], tonumber(ARGV[2])
local n = #KEYS - 1
if redis.call('SCARD', KEYS[n + 1]) > 0 then return -1 end
local out = {}
for i = 1, n do
  local take = 0
  if want > 0 then
    local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])
    if groups.err then return false end
    local lag = nil
    for _, g in ipairs(groups) do
      local name, l = nil, nil
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'lag' then l = g[j + 1] end
      end
      if name == group then lag = l end
    end
    if not lag then return false end
    take = math.min(want, lag)
    want = want - take
  end
  out[i] = take
end
return out

-- split_cancelled(set, id_prefix, entries): the fetched entries whose job is not marked
-- cancelled, and those that are.
-- cancel.lua marks a queued job in the queue's `cancelled` set (and writes its `cancelled`
-- record) without deleting its entry, so XINFO lag stays true; a job it found delivered is
-- marked too. A marked entry is left delivered (pending to this consumer) and marked: the
-- worker ends it with end_cancelled.lua, which has its record key in KEYS (this script only
-- knows job ids), keeps a `cancelled` record cancel.lua wrote and ends any other job
-- `cancelled` (a stale mark: record TTL, unique key freed, published). Acking it here
-- would leave such a job with no end. Call it only when SCARD(set) > 0, so a queue with no
-- cancel pending pays nothing per entry.
-- id_prefix is the job id of an entry without an `id` field, minus its entry id
-- ('queue:n:').
local function split_cancelled(set, id_prefix, entries)
  local kept, marked = {}, {}
  for _, e in ipairs(entries) do
    local job_id = nil
    local fields = e[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'id' then
        job_id = fields[i + 1]
        break
      end
    end
    if redis.call('SISMEMBER', set, job_id or (id_prefix .. e[1])) == 1 then
      marked[#marked + 1] = e
    else
      kept[#kept + 1] = e
    end
  end
  return kept, marked
end

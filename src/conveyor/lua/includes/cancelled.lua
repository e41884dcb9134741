-- drop_cancelled(stream, group, set, id_prefix, entries): the fetched entries whose job is
-- not marked cancelled, and the ids of the entries dropped.
-- cancel.lua marks a queued job in the queue's `cancelled` set (and writes its `cancelled`
-- record) without deleting its entry, so XINFO lag stays true; the entry is skipped here,
-- when its turn comes: acked so no worker runs it, and unmarked. Call it only when
-- SCARD(set) > 0, so a queue with no cancel pending pays nothing per entry.
-- id_prefix is the job id of an entry without an `id` field, minus its entry id
-- ('queue:n:').
local function drop_cancelled(stream, group, set, id_prefix, entries)
  local kept, dropped = {}, {}
  for _, e in ipairs(entries) do
    local job_id = nil
    local fields = e[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'id' then
        job_id = fields[i + 1]
        break
      end
    end
    if redis.call('SREM', set, job_id or (id_prefix .. e[1])) == 1 then
      dropped[#dropped + 1] = e[1]
    else
      kept[#kept + 1] = e
    end
  end
  if #dropped > 0 then redis.call('XACK', stream, group, unpack(dropped)) end
  return kept, dropped
end

-- Unique keys taken "until done": the job's stream fields name the key in a `unique` field,
-- and the transition that ends the job frees it, in the same atomic step.
-- field_of(fields, name): a value of a flat {field, value, ...} list, or nil.
local function field_of(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
-- release_unique(key, job_id): DEL the key only while it still names this job, so a key
-- already taken by a newer job (after a window ran out) is never freed by an old one.
local function release_unique(key, job_id)
  if key and redis.call('GET', key) == job_id then redis.call('DEL', key) end
end

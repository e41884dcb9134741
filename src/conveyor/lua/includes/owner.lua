-- owns(stream, group, entry, consumer): true when `consumer` holds `entry` in the group's PEL.
-- XACK takes no consumer name, so every transition that ends a delivery checks this first:
-- a worker that lost its lease must not finish a job another worker now holds.
local function owns(stream, group, entry, consumer)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  return p[1] ~= nil and p[1][2] == consumer
end

-- Stream ids compared as numbers: '9-0' < '10-0', which a string comparison gets wrong.
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function id_less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end
local function id_min(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if id_less(b, a) then return b end
  return a
end
local function id_next(id)
  local ms, seq = id_parts(id)
  return string.format('%d-%d', ms, seq + 1)
end

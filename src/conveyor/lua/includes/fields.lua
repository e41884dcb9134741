-- flatten(tbl): a decoded JSON object of stream fields as an XADD argument list.
-- Field order does not matter to a reader; `version` goes first by convention.
local function flatten(obj)
  local out = {}
  if obj['version'] ~= nil then
    out[#out + 1] = 'version'
    out[#out + 1] = obj['version']
  end
  for k, v in pairs(obj) do
    if k ~= 'version' then
      out[#out + 1] = k
      out[#out + 1] = v
    end
  end
  return out
end

-- One flush of telemetry-ingest, applied atomically and at most once.
--
-- KEYS[1]  the flush's marker key (tp:{pipeline}:batch:<id>)
-- ARGV     marker_ttl,
--          n_ops,     (kind, key, field) * n_ops
--          n_uncond,  (op, amount) * n_uncond          -- pre-summed events
--          n_entries, (claim_key, id, n_refs, (op, amount) * n_refs) * n_entries
--          n_expire,  (key, 'at'|'in', seconds) * n_expire
--          n_trim,    (key, keep) * n_trim
-- Returns  'ok:' followed by the comma-separated (0-based) indices of the
--          entries whose id was already claimed (duplicates).
--
-- A replay with the same marker returns the stored result and writes nothing,
-- so a flush retried after a lost reply is applied exactly once. All keys
-- share the pipeline's hash tag, so this stays within one Redis Cluster slot.

local done = redis.call('GET', KEYS[1])
if done then
  return done
end

local i = 1
local function nextarg()
  local v = ARGV[i]
  i = i + 1
  return v
end

local marker_ttl = nextarg()
local kind, key, field = {}, {}, {}
for o = 1, tonumber(nextarg()) do
  kind[o] = nextarg(); key[o] = nextarg(); field[o] = nextarg()
end

local acc, pushes = {}, {}
local function add(o, amount)
  local k = kind[o]
  if k == 'l' then
    local list = pushes[o]
    if not list then list = {}; pushes[o] = list end
    list[#list + 1] = amount
    return
  end
  local x = tonumber(amount)
  local cur = acc[o]
  if cur == nil then
    acc[o] = x
  elseif k == 'mn' then
    if x < cur then acc[o] = x end
  elseif k == 'mx' then
    if x > cur then acc[o] = x end
  else
    acc[o] = cur + x
  end
end

for _ = 1, tonumber(nextarg()) do
  local o = tonumber(nextarg())
  add(o, nextarg())
end

local dups = {}
for e = 1, tonumber(nextarg()) do
  local claim_key, id, n = nextarg(), nextarg(), tonumber(nextarg())
  if claim_key == '' or redis.call('SADD', claim_key, id) == 1 then
    for _ = 1, n do
      local o = tonumber(nextarg())
      add(o, nextarg())
    end
  else
    dups[#dups + 1] = e - 1
    i = i + 2 * n
  end
end

for o, x in pairs(acc) do
  local k = kind[o]
  if k == 'h' then
    redis.call('HINCRBY', key[o], field[o], string.format('%.0f', x))
  elseif k == 'f' then
    redis.call('HINCRBYFLOAT', key[o], field[o], string.format('%.17g', x))
  elseif k == 'z' then
    redis.call('ZINCRBY', key[o], string.format('%.17g', x), field[o])
  elseif k == 'mn' or k == 'mx' then
    local stored = tonumber(redis.call('HGET', key[o], field[o]))
    if stored == nil or (k == 'mn' and x < stored) or (k == 'mx' and x > stored) then
      redis.call('HSET', key[o], field[o], string.format('%.17g', x))
    end
  end
end

for o, list in pairs(pushes) do
  -- unpack() is bounded by the Lua stack; push in slices.
  for s = 1, #list, 256 do
    redis.call('LPUSH', key[o], unpack(list, s, math.min(s + 255, #list)))
  end
end

for _ = 1, tonumber(nextarg()) do
  local k, mode, secs = nextarg(), nextarg(), nextarg()
  if mode == 'at' then
    redis.call('EXPIREAT', k, secs)
  else
    redis.call('EXPIRE', k, secs)
  end
end

for _ = 1, tonumber(nextarg()) do
  local k, keep = nextarg(), tonumber(nextarg())
  redis.call('LTRIM', k, 0, keep - 1)
end

local result = 'ok:' .. table.concat(dups, ',')
redis.call('SET', KEYS[1], result, 'EX', marker_ttl)
return result

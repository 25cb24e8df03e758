-- One flush of telemetry-ingest, applied atomically and at most once.
--
-- KEYS[1]  the flush's marker key (tp:{pipeline}:batch:<id>)
-- ARGV     marker_ttl, result,
--          n_sets,  (set_key, n, id * n) * n_sets           -- dedup claims
--          for each of HINCRBY, HINCRBYFLOAT:
--            n_keys, (key, n, (field, amount) * n) * n_keys  -- pre-summed
--          n_keys, (key, n, member * n, amount * n) * n_keys -- ZSET increments
--          for each of min, max:
--            n_keys, (key, n, (field, amount) * n) * n_keys
--          n_groups, (keep, trim_above, ttl, n_lists, (key, n, value * n) * n_lists,
--                     n_refresh, key * n_refresh) * n_groups  -- recent events
--          n_expire, (key, unix_seconds) * n_expire          -- EXPIREAT
-- Returns  `result` .. '@' .. the script's run time in microseconds once
--          applied, `result` alone on every replay of the same marker;
--          or 'dup:' followed by the comma-separated (0-based) positions,
--          among all ids sent, of the ids already claimed: then nothing was
--          written, and the caller sends the flush again without them.
--
-- Amounts arrive summed and formatted by the pod, so each (key, field) costs
-- one command here, and each sorted set two per slice of members. All keys
-- share the pipeline's hash tag, so this stays within one Redis Cluster slot.

local started = redis.call('TIME')
local done = redis.call('GET', KEYS[1])
if done then
  return done
end

-- unpack() is bounded by the Lua stack; variadic commands go in slices.
local SLICE = 512
local i = 3

-- Claims: check every id first, write nothing if one is taken.
local n_sets = tonumber(ARGV[i]); i = i + 1
local sets_at = i
local dups, base = {}, 0
for _ = 1, n_sets do
  local key, n = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  for s = 0, n - 1, SLICE do
    local seen = redis.call('SMISMEMBER', key, unpack(ARGV, i + s, i + math.min(s + SLICE, n) - 1))
    for k = 1, #seen do
      if seen[k] == 1 then dups[#dups + 1] = base + s + k - 1 end
    end
  end
  i = i + n; base = base + n
end
if #dups > 0 then
  return 'dup:' .. table.concat(dups, ',')
end
i = sets_at
for _ = 1, n_sets do
  local key, n = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  for s = 0, n - 1, SLICE do
    redis.call('SADD', key, unpack(ARGV, i + s, i + math.min(s + SLICE, n) - 1))
  end
  i = i + n
end

local function each_pair(apply)
  local groups = tonumber(ARGV[i]); i = i + 1
  for _ = 1, groups do
    local key, n = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
    for _ = 1, n do
      apply(key, ARGV[i], ARGV[i + 1]); i = i + 2
    end
  end
end

each_pair(function(key, field, n) redis.call('HINCRBY', key, field, n) end)
each_pair(function(key, field, x) redis.call('HINCRBYFLOAT', key, field, x) end)

-- Sorted-set increments: members, then their amounts. One ZMSCORE and one
-- ZADD per slice instead of a ZINCRBY per member; the sum is the same double
-- addition ZINCRBY does, and a Lua number reaches Redis formatted exactly
-- (%.17g), so the stored scores are the same.
local zsets = tonumber(ARGV[i]); i = i + 1
for _ = 1, zsets do
  local key, n = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  for s = 0, n - 1, SLICE do
    local m = math.min(SLICE, n - s)
    local at = i + s
    local old = redis.call('ZMSCORE', key, unpack(ARGV, at, at + m - 1))
    local args = {}
    for k = 1, m do
      local x = tonumber(ARGV[at + n + k - 1])
      if old[k] then x = x + tonumber(old[k]) end
      args[2 * k - 1] = x
      args[2 * k] = ARGV[at + k - 1]
    end
    redis.call('ZADD', key, unpack(args))
  end
  i = i + 2 * n
end

each_pair(function(key, field, x)
  local stored = tonumber(redis.call('HGET', key, field))
  if stored == nil or tonumber(x) < stored then redis.call('HSET', key, field, x) end
end)
each_pair(function(key, field, x)
  local stored = tonumber(redis.call('HGET', key, field))
  if stored == nil or tonumber(x) > stored then redis.call('HSET', key, field, x) end
end)

-- Recent-events lists come in groups sharing `keep`, `trim_above` and `ttl`
-- (one group per settings version; in practice one). A list is trimmed back
-- to `keep` once it is longer than `trim_above` (readers see only the first
-- `keep`). Its TTL is set when this push created it, and for the group's
-- `refresh` keys, which the pod sends at most every few minutes per list.
local list_groups = tonumber(ARGV[i]); i = i + 1
for _ = 1, list_groups do
  local keep, trim_above, ttl = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local lists = tonumber(ARGV[i + 3])
  i = i + 4
  local created = {}
  for _ = 1, lists do
    local key, n = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
    local len = 0
    for s = 0, n - 1, SLICE do
      len = redis.call('LPUSH', key, unpack(ARGV, i + s, i + math.min(s + SLICE, n) - 1))
    end
    i = i + n
    if len > trim_above then
      redis.call('LTRIM', key, 0, keep - 1)
    end
    if ttl ~= '0' and len == n then
      redis.call('EXPIRE', key, ttl)
      created[key] = true
    end
  end
  local refresh = tonumber(ARGV[i]); i = i + 1
  for _ = 1, refresh do
    local key = ARGV[i]; i = i + 1
    if ttl ~= '0' and not created[key] then
      redis.call('EXPIRE', key, ttl)
    end
  end
end

local expires = tonumber(ARGV[i]); i = i + 1
for _ = 1, expires do
  redis.call('EXPIREAT', ARGV[i], ARGV[i + 1]); i = i + 2
end

redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
local now = redis.call('TIME')
local micros = (tonumber(now[1]) - tonumber(started[1])) * 1000000
  + tonumber(now[2]) - tonumber(started[2])
return ARGV[2] .. '@' .. micros

-- wrk script: POST /api/v1/events/batch with WRK_BATCH (100) events per
-- request, each with a unique event id (so dedup does not turn the run into
-- duplicates), spread over WRK_DEVICES (1000) devices and WRK_USERS (5000)
-- users like telemetryctl's events.
local thread_id = 0
local batch = tonumber(os.getenv("WRK_BATCH") or "100")
local devices = tonumber(os.getenv("WRK_DEVICES") or "1000")
local users = tonumber(os.getenv("WRK_USERS") or "5000")
local types = { "reading", "purchase", "login" }
local regions = { "eu", "us", "ap" }

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  counter = 0
  math.randomseed(os.time() + (tid or 0))
end

function request()
  counter = counter + 1
  local now = os.time() * 1000
  local parts = {}
  for i = 1, batch do
    local t = types[math.random(3)]
    local value = (t == "purchase") and (math.random(100, 9999) / 100) or math.random(0, 100)
    parts[i] = string.format(
      '{"deviceId":"device-%05d","timestamp":%d,"eventType":"%s","eventId":"wrk-%s-%d-%d","userId":"user-%d","value":%s,"attributes":{"region":"%s"},"payload":{"seq":%d,"temp":21.5}}',
      math.random(0, devices - 1), now, t, tid, counter, i, math.random(0, users - 1), value,
      regions[math.random(3)], counter)
  end
  return wrk.format("POST", "/api/v1/events/batch", {["Content-Type"] = "application/json"},
    "[" .. table.concat(parts, ",") .. "]")
end

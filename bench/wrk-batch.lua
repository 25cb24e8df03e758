-- wrk script: POST /api/v1/events/batch with 100 events per request, each
-- with a unique event id (so dedup does not turn the run into duplicates).
local thread_id = 0
local counter = 0
local batch = tonumber(os.getenv("WRK_BATCH") or "100")

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function request()
  counter = counter + 1
  local now = os.time() * 1000
  local parts = {}
  for i = 1, batch do
    parts[i] = string.format(
      '{"deviceId":"wrk-%d","timestamp":%d,"eventType":"%s","eventId":"wrk-%s-%d-%d","userId":"u%d","value":%d.5,"payload":{"i":%d}}',
      i % 50, now, (i % 3 == 0) and "purchase" or "reading", tid, counter, i, i % 200, i % 90, i)
  end
  return wrk.format("POST", "/api/v1/events/batch", {["Content-Type"] = "application/json"},
    "[" .. table.concat(parts, ",") .. "]")
end

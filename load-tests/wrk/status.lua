-- Durable status reports for wrk (load-tests/compare.sh): each request is one device's
-- report in a running deployment, the devices taken in turn, and each device's status
-- alternating downloading / installing, so every report is a real state change that the
-- server makes durable before its 204.
--
--   WRK_TOKENS=tokens.txt WRK_DEPLOYMENT=<id> wrk -t1 -c64 -d10s -s status.lua http://HOST:PORT
--
-- WRK_TOKENS holds one device token per line; use more devices than connections, so that
-- a device rarely has two reports in flight.
--
-- Every request is built once, before the run, instead of formatted on each call: wrk then
-- spends less of the CPU it shares with the server on a small machine (10.3 against 11.3 µs
-- per report in two rounds each, BENCHMARKS.md).
local requests = {}
local sent = 0

init = function()
  local tokens = {}
  for line in io.lines(os.getenv("WRK_TOKENS")) do
    tokens[#tokens + 1] = line
  end
  local path = "/api/devices/v1/deployments/device/deployments/"
    .. os.getenv("WRK_DEPLOYMENT") .. "/status"
  -- The first pass over the devices reports downloading, the second installing.
  for _, body in ipairs({ '{"status":"downloading"}', '{"status":"installing"}' }) do
    for _, token in ipairs(tokens) do
      local headers = {
        ["Authorization"] = "Bearer " .. token,
        ["Content-Type"] = "application/json",
      }
      requests[#requests + 1] = wrk.format("PUT", path, headers, body)
    end
  end
end

request = function()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

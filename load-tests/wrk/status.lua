-- Durable status reports for wrk (load-tests/compare.sh): each request is one device's
-- report in a running deployment, the devices taken in turn, and each device's status
-- alternating downloading / installing, so every report is a real state change that the
-- server makes durable before its 204.
--
--   WRK_TOKENS=tokens.txt WRK_DEPLOYMENT=<id> wrk -t1 -c64 -d10s -s status.lua http://HOST:PORT
--
-- WRK_TOKENS holds one device token per line; use more devices than connections, so that
-- a device rarely has two reports in flight.
local tokens = {}
for line in io.lines(os.getenv("WRK_TOKENS")) do
  tokens[#tokens + 1] = line
end
local path = "/api/devices/v1/deployments/device/deployments/"
  .. os.getenv("WRK_DEPLOYMENT") .. "/status"
local bodies = { '{"status":"downloading"}', '{"status":"installing"}' }
local sent = 0

request = function()
  local device = sent % #tokens
  local turn = math.floor(sent / #tokens) % 2
  sent = sent + 1
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[device + 1],
    ["Content-Type"] = "application/json",
  }
  return wrk.format("PUT", path, headers, bodies[turn + 1])
end

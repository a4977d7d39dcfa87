-- wrk script: POST sampled verifications (the execute gate) of one shard.
-- Usage: wrk -s scripts/verify-load.lua http://127.0.0.1:7788 -- SHARD_ID [SAMPLES]
local shard, samples = "load", 16
function init(args)
  if args[1] then shard = args[1] end
  if args[2] then samples = tonumber(args[2]) end
end
function request()
  return wrk.format("POST", "/v1/shards/" .. shard .. "/verify",
    {["Content-Type"] = "application/json"},
    string.format('{"mode":"sampled","samples":%d}', samples))
end
function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
    wrk.thread:stop()
  end
end

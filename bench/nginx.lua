-- nginx benchmark (not part of make test): enqueue through celers.nginx's thread pool against
-- the blocking call made on the event loop, and the latency of an unrelated request on the
-- same nginx worker while the database hangs.
--
--   bench/nginx.sh            (starts the private database; CELERS_DSN to use another)
--
-- One nginx worker, the example configuration plus a location that calls the broker directly
-- on the event loop (bench/nginx_blocking.lua). Load comes from curl --parallel (one process,
-- 16 transfers at a time). Figures are printed as requests/s and milliseconds.
package.path = "./?.lua;" .. package.path
local helper = require "spec.helper"
local ngx_helper = require "spec.nginx_helper"
local celers = require "celers"

local sh = helper.shell_quote
local N = tonumber(os.getenv("BENCH_N") or "2000")
local PAR = tonumber(os.getenv("BENCH_PARALLEL") or "16")

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

-- POST body "x" to url n times, `par` at a time; returns requests/s and the status counts.
local function load(url, n, par)
  local cfg = os.tmpname()
  local f = assert(io.open(cfg, "w"))
  for _ = 1, n do
    f:write('url = "', url, '"\n', 'data = "x"\n', 'output = "/dev/null"\n', 'write-out = "%{http_code}\\n"\n')
  end
  f:close()
  local t0 = now()
  local p = io.popen(("curl -s -Z --parallel-max %d -K %s 2>/dev/null"):format(par, sh(cfg)))
  local codes = {}
  for line in p:lines() do codes[line] = (codes[line] or 0) + 1 end
  p:close()
  local dt = now() - t0
  os.remove(cfg)
  return n / dt, codes
end

local function codes_text(codes)
  local t = {}
  for k, v in pairs(codes) do t[#t + 1] = k .. "x" .. v end
  table.sort(t)
  return table.concat(t, " ")
end

-- Latencies (ms) of `n` sequential GETs of url.
local function latencies(url, n, max_s)
  local out = {}
  for i = 1, n do
    local _, _, t = ngx_helper.http(url, { max = max_s })
    out[i] = (t or max_s) * 1000
  end
  table.sort(out)
  return out
end

local function pct(sorted, p)
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

local dsn = assert(os.getenv("CELERS_BENCH_DSN"), "run bench/nginx.sh")
local b = assert(celers.connect(dsn))
assert(b:migrate())
b:purge_all()

-- the example config plus the blocking location, one worker
local function start(target_dsn)
  local srv = ngx_helper.start { dsn = target_dsn, workers = 1,
                                extra_conf = helper.root .. "/bench/nginx_blocking.conf" }
  return srv
end

print(("nginx bench: %d requests, %d at a time, 1 nginx worker, pool of 4 threads"):format(N, PAR))
local srv = start(dsn)
local ok, err = pcall(function()
  load(srv.url .. "/enqueue/warmup", 200, PAR)
  load(srv.url .. "/enqueue_blocking/warmup", 200, PAR)
  local pool_rps, pool_codes = load(srv.url .. "/enqueue/bench", N, PAR)
  local block_rps, block_codes = load(srv.url .. "/enqueue_blocking/bench", N, PAR)
  local landed = tonumber(helper.scalar(dsn, "SELECT COUNT(*) FROM celers_tasks WHERE task_name = 'bench'"))
  print(("  enqueue via thread pool   %8.0f req/s   (%s)"):format(pool_rps, codes_text(pool_codes)))
  print(("  enqueue blocking call     %8.0f req/s   (%s)"):format(block_rps, codes_text(block_codes)))
  print(("  ratio pool / blocking     %8.2f          tasks landed: %d of %d"):format(
    pool_rps / block_rps, landed, 2 * N))
end)
srv.stop()
assert(ok, err)

-- the database hangs: a listener that accepts and never answers
local hung = ngx_helper.hung_listener()
local hung_dsn = ("mysql://celers:x@127.0.0.1:%d/celers"):format(hung.port)
local VARIANTS = { { "thread pool", "/enqueue/stuck", 200 }, { "blocking call", "/enqueue_blocking/stuck", 3 } }
for _, variant in ipairs(VARIANTS) do
  local s = start(hung_dsn)
  local ok2, err2 = pcall(function()
    -- keep 8 enqueues in flight for the whole measurement
    local stop = os.tmpname()
    os.execute(("(for i in 1 2 3 4 5 6 7 8; do (while [ -f %s ]; do curl -s -m 30 -o /dev/null -d x %s; done) & done;"
      .. " wait) >/dev/null 2>&1 &")
      :format(sh(stop), sh(s.url .. variant[2])))
    os.execute("sleep 0.3")
    local lat = latencies(s.url .. "/ping", variant[3], 30)
    os.remove(stop)
    print(("  /ping with the database hung, enqueues via %-13s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d requests)")
      :format(variant[1], pct(lat, 0.5), pct(lat, 0.99), lat[#lat], #lat))
  end)
  os.execute("sleep 2.5") -- let the in-flight enqueues time out
  s.stop()
  assert(ok2, err2)
end
hung.stop()
b:purge_all()
b:close()

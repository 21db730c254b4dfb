-- wrk script: keep-alive POSTs of a fixed JSON body, results as one JSON line.
--
--   BENCH_BODY=body.json BENCH_PATH=/v1/chat/completions [BENCH_HEADERS=headers.txt] \
--   [BENCH_MAX_REQUESTS=10000] wrk -t1 -c32 -d5s --latency -s benchmarks/wrk_post.lua http://127.0.0.1:PORT
--
-- BENCH_HEADERS is a file of "name: value" lines added to every request.
-- BENCH_MAX_REQUESTS stops the run after that many responses (the memory runs);
-- it needs a `response` callback, which makes wrk parse every response for Lua,
-- so it is defined only when asked for.
-- At the end `done` prints "BENCH_JSON {...}" (latencies in microseconds) for
-- benchmarks/load.py; wrk's own --latency report stays above it for humans.

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
wrk.body = slurp(assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set"))
wrk.headers["Content-Type"] = "application/json"

local header_file = os.getenv("BENCH_HEADERS")
if header_file and header_file ~= "" then
  for line in io.lines(header_file) do
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then wrk.headers[name] = value end
  end
end

local limit = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "")
if limit then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen >= limit then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end

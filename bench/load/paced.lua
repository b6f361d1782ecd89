-- wrk script for the AIM API load tests: one endpoint per wrk process, sent at a constant rate.
--
-- Usage: wrk -t1 -cC -dD --latency -s paced.lua URL -- MODE RATE TAG [FILE]
--   MODE  get:PATH     GET PATH (for example get:/api/v1/agents)
--         audit        GET /api/v1/audit-logs, following next_cursor, and from the first page again at the end
--         post-agents  POST /api/v1/agents with a unique name and the public key in AIM_LOAD_PUBLIC_KEY
--         post-mcp     POST /api/v1/mcp-servers with a unique URL
--         verify       POST /api/v1/agents/{id}/verify, one line of FILE per request ("agent_id<TAB>json body"),
--                      each a signed request with its own nonce; FILE must hold enough lines for the run
--   RATE  requests per second of this process, split evenly over its threads; 0 sends as fast as the
--         connections allow (closed model). schedule:PATH sends at the planned times in PATH: one
--         offset in ms from the start per line, in order. The threads take alternate lines.
--   TAG   text that makes the names and URLs of created resources unique to this run
-- The API key comes from the environment (AIM_LOAD_API_KEY), so it does not show in the process list.
--
-- Pacing: each thread keeps a schedule of send times, one every 1/rate seconds, and delay() holds a
-- connection until its slot, like wrk2's constant throughput mode. When every connection is busy at
-- a slot's time, the request goes out late; lateness over LATE_MS is counted and reported, because
-- wrk times a request from its actual send, so late sends hide queueing (coordinated omission).
-- The result is one line "AIM_RESULT {json}" with counts and latency percentiles in microseconds,
-- and the responses completed in each second of the run.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } aim_timespec;
int clock_gettime(int clk_id, aim_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local LATE_MS = 5
local timespec = ffi.new("aim_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
  table.insert(threads, thread)
end

local mode, tag, interval_ms, next_slot, start_ms
local sent = 0
local schedule = nil
local schedule_index, schedule_step = 0, 1
local BUCKET_MS = 1000
-- Globals, because done() reads them from each thread with thread:get().
late, max_lag_ms = 0, 0
statuses = {}
completed = {}
error_sample = nil
local auth_header
local get_path
local cursor = nil
local verify_lines = {}
local verify_index = 0

local function url_encode(text)
  return (text:gsub("[^%w%-%._~]", function(char) return string.format("%%%02X", string.byte(char)) end))
end

local function load_offsets(path)
  local handle = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  local offsets = {}
  for line in handle:lines() do
    table.insert(offsets, tonumber(line))
  end
  handle:close()
  return offsets
end

local function load_lines(path)
  local handle = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in handle:lines() do
    local agent_id, body = line:match("^([^\t]+)\t(.+)$")
    if agent_id then
      table.insert(verify_lines, { "/api/v1/agents/" .. agent_id .. "/verify", body })
    end
  end
  handle:close()
end

function init(args)
  mode = args[1]
  local rate = tonumber(args[2]) or 0
  tag = args[3] or "run"
  local threads_total = tonumber(os.getenv("AIM_LOAD_THREADS") or "1")
  local api_key = assert(os.getenv("AIM_LOAD_API_KEY"), "AIM_LOAD_API_KEY is not set")
  auth_header = "Bearer " .. api_key
  if args[2]:sub(1, 9) == "schedule:" then
    schedule = load_offsets(args[2]:sub(10))
    schedule_index = (thread_index or 1) - threads_total
    schedule_step = threads_total
  end
  if rate > 0 then
    interval_ms = 1000.0 * threads_total / rate
  else
    interval_ms = 0
  end
  start_ms = now_ms()
  next_slot = start_ms
  if mode:sub(1, 4) == "get:" then
    get_path = mode:sub(5)
  elseif mode == "verify" then
    local path = args[4]
    load_lines(path)
    -- Threads take interleaved lines, so no two threads send the same nonce.
    verify_index = (thread_index or 1) - 1
  end
end

local function count_lag(lag)
  if lag > LATE_MS then
    late = late + 1
  end
  if lag > max_lag_ms then
    max_lag_ms = lag
  end
end

function delay()
  if schedule then
    schedule_index = schedule_index + schedule_step
    local offset = schedule[schedule_index]
    if offset == nil then
      -- Every planned request went out: idle until wrk's -d duration ends the run.
      return 3600000
    end
    local now = now_ms()
    local slot = start_ms + offset
    if slot < now then
      count_lag(now - slot)
      return 0
    end
    return slot - now
  end
  if interval_ms <= 0 then
    return 0
  end
  local now = now_ms()
  if next_slot < now then
    count_lag(now - next_slot)
    next_slot = now
  end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  return slot - now
end

local json_headers = nil

function request()
  sent = sent + 1
  if get_path then
    return wrk.format("GET", get_path, { ["Authorization"] = auth_header })
  end
  if mode == "audit" then
    local path = "/api/v1/audit-logs?limit=50"
    if cursor then
      path = path .. "&cursor=" .. url_encode(cursor)
    end
    return wrk.format("GET", path, { ["Authorization"] = auth_header })
  end
  json_headers = json_headers or { ["Authorization"] = auth_header, ["Content-Type"] = "application/json" }
  local unique = tag .. "-" .. tostring(thread_index or 1) .. "-" .. tostring(sent)
  if mode == "post-agents" then
    local body = '{"name":"load-' .. unique .. '","agent_type":"load-test","public_key":"'
      .. assert(os.getenv("AIM_LOAD_PUBLIC_KEY"), "AIM_LOAD_PUBLIC_KEY is not set")
      .. '","capabilities":["db:read"]}'
    return wrk.format("POST", "/api/v1/agents", json_headers, body)
  end
  if mode == "post-mcp" then
    local body = '{"name":"load ' .. unique .. '","url":"https://' .. unique .. '.load.example.test/mcp"}'
    return wrk.format("POST", "/api/v1/mcp-servers", json_headers, body)
  end
  if mode == "verify" then
    verify_index = verify_index + (tonumber(os.getenv("AIM_LOAD_THREADS") or "1"))
    local entry = verify_lines[verify_index]
    if entry == nil then
      -- Out of signed requests: wrap around; the replays are denied and show up as reason "replay".
      verify_index = (thread_index or 1)
      entry = verify_lines[verify_index]
    end
    return wrk.format("POST", entry[1], json_headers, entry[2])
  end
  error("unknown mode " .. tostring(mode))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local bucket = math.floor((now_ms() - start_ms) / BUCKET_MS) + 1
  completed[bucket] = (completed[bucket] or 0) + 1
  if status >= 400 and error_sample == nil then
    error_sample = tostring(status) .. " " .. string.sub(body or "", 1, 300)
  end
  if mode == "audit" then
    if status == 200 then
      cursor = body:match('"next_cursor"%s*:%s*"([^"]+)"')
    else
      cursor = nil
    end
  end
end

local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(char) return string.format("\\u%04x", string.byte(char)) end) .. '"'
end

function done(summary, latency, requests)
  local late_total, max_lag, status_parts, sample = 0, 0, {}, nil
  local merged, buckets, bucket_count = {}, {}, 0
  for _, thread in ipairs(threads) do
    late_total = late_total + (thread:get("late") or 0)
    local lag = thread:get("max_lag_ms") or 0
    if lag > max_lag then
      max_lag = lag
    end
    local thread_statuses = thread:get("statuses") or {}
    for code, count in pairs(thread_statuses) do
      merged[code] = (merged[code] or 0) + count
    end
    sample = sample or thread:get("error_sample")
    for index, count in pairs(thread:get("completed") or {}) do
      buckets[index] = (buckets[index] or 0) + count
      if index > bucket_count then
        bucket_count = index
      end
    end
  end
  for code, count in pairs(merged) do
    table.insert(status_parts, string.format('"%d":%d', code, count))
  end
  local bucket_parts = {}
  for index = 1, bucket_count do
    table.insert(bucket_parts, tostring(buckets[index] or 0))
  end
  local errors = summary.errors
  io.write(string.format(
    'AIM_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"late":%d,"max_lag_ms":%.1f,"statuses":{%s},"error_sample":%s,"completed_1s":[%s]}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    late_total, max_lag, table.concat(status_parts, ","), sample and json_string(sample) or "null",
    table.concat(bucket_parts, ",")))
end

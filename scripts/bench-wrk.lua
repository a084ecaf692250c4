-- wrk script for scripts/bench's `wrk` scenario: single internal transfers posted as machine
-- clients (X-API-Key) with a fresh Idempotency-Key each, between accounts drawn uniformly from
-- the fixture tally-loadtest set up (`--setup-only`). A client that is not ours, so the
-- figure does not depend on our own generator's cost.
--
--   wrk -t2 -c256 -d20s -s scripts/bench-wrk.lua http://127.0.0.1:PORT -- FIXTURE.lua RUN_ID [BATCH]
--
-- With BATCH > 0 (scripts/callgrind's batch load) each request is instead a
-- `POST /v1/transfers/batch` of BATCH transfers, every source one of a random owner's accounts
-- (a batch is sent by one caller), with the same kind of Idempotency-Key.
--
-- FIXTURE.lua returns { keys = { "<api key of user 1>", ... }, accounts = { { "<id>", owner }, ... } }
-- with owners as 1-based indexes into keys. Each request's Idempotency-Key is
-- `wrk-<RUN_ID>-<thread>-<n>`, so the bench can find this run's transfers in the store. The
-- summary line at the end counts the requests sent and the answers by status, so the bench can
-- check that every 201 made exactly one transfer and no request more than one.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  local fixture = dofile(args[1])
  keys = fixture.keys
  accounts = fixture.accounts
  run_id = args[2] or "run"
  batch = tonumber(args[3] or "0") or 0
  -- Each owner's accounts, for a batch's sources.
  owned = {}
  for index, account in ipairs(accounts) do
    owned[account[2]] = owned[account[2]] or {}
    table.insert(owned[account[2]], index)
  end
  counter = 0
  statuses = {}
  math.randomseed(thread_id * 7919 + os.time())
end

-- One transfer's JSON from accounts[source] to a random other account.
local function transfer(source)
  local destination = math.random(#accounts - 1)
  if destination >= source then destination = destination + 1 end
  return string.format(
    '{"type":"internal","source_account_id":"%s","destination_account_id":"%s","amount":"0.01","reference":"wrk"}',
    accounts[source][1], accounts[destination][1])
end

local function batch_request()
  local owner = accounts[math.random(#accounts)][2]
  local sources = owned[owner]
  local items = {}
  for i = 1, batch do
    items[i] = transfer(sources[math.random(#sources)])
  end
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-API-Key"] = keys[owner],
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run_id, thread_id, counter),
  }
  return wrk.format("POST", "/v1/transfers/batch", headers, '{"transfers":[' .. table.concat(items, ",") .. ']}')
end

function request()
  counter = counter + 1
  if batch > 0 then return batch_request() end
  local source = math.random(#accounts)
  local from = accounts[source]
  local body = transfer(source)
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-API-Key"] = keys[from[2]],
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run_id, thread_id, counter),
  }
  return wrk.format("POST", "/v1/transfers", headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  local sent = 0
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("counter")
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  io.write(string.format(
    'WRK_SUMMARY {"requests": %d, "sent": %d, "duration_us": %d, "statuses": {%s}, "latency_us": {"p50": %d, "p99": %d, "p99_9": %d, "max": %d}, "socket_errors": %d}\n',
    summary.requests, sent, summary.duration, table.concat(parts, ", "),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

-- wrk script: one fixed request (method, content type, body from the command line) and a
-- JSON summary line the runner parses.
--   wrk ... -s patch.lua URL -- METHOD CONTENT_TYPE BODY [HEADERS]
-- HEADERS: more request headers, one "Name: value" per line (a signed call's).
function init(args)
    wrk.method = args[1] or "GET"
    if args[2] and args[2] ~= "" then
        wrk.headers["Content-Type"] = args[2]
    end
    if args[3] and args[3] ~= "" then
        wrk.body = args[3]
    end
    wrk.headers["X-Auth-Token"] = "bench-token"
    for line in string.gmatch(args[4] or "", "[^\n]+") do
        local name, value = string.match(line, "^([^:]+): (.*)$")
        wrk.headers[name] = value
    end
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
        summary.requests, summary.duration, summary.bytes, errors.status,
        errors.connect + errors.read + errors.write + errors.timeout,
        latency:percentile(50.0), latency:percentile(99.0)))
end

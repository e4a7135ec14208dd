-- wrk script for `make bench` (tooling/smsdev/bench/loadgen.py): POST one JSON body to one path, built
-- once (no per-request Lua), so wrk spends its CPU on the load and not on the script.
--   BENCH_BODY  the body, e.g. {"sms": "WINNER!! ..."} (the app's and the FastAPI service's API)
--   BENCH_PATH  the path (default /sms/)
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/sms/"
wrk.body = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
wrk.headers["Content-Type"] = "application/json"

-- POSTs one fixed body, read from a file, to the URL on wrk's command line. The serve_load
-- benchmark (benchmarks/src/bin/serve_load.rs) writes one body file per scenario and runs, e.g.
--
--   wrk -t1 -c32 -d20s --latency -s benchmarks/serve_load/post.lua \
--       http://127.0.0.1:8080/v2/models/etl_to_train/infer -- /tmp/v2_single.json
--
-- Arguments after `--`: BODY_FILE [CONTENT_TYPE]; the content type defaults to application/json
-- (Arrow IPC bodies: application/vnd.apache.arrow.stream). wrk adds Content-Length itself.
-- Runs once per wrk thread, before wrk builds the (then fixed) request.

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s post.lua URL -- BODY_FILE [CONTENT_TYPE]")
   end
   local file, err = io.open(path, "rb")
   if file == nil then
      error("cannot open the request body " .. path .. ": " .. tostring(err))
   end
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = args[2] or "application/json"
end

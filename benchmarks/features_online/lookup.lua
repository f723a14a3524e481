-- GETs one entity's current features per request, the entity drawn uniformly from e0 … e(N-1).
-- The features_online benchmark runs, e.g.
--
--   wrk -t1 -c32 -d10s --latency -s benchmarks/features_online/lookup.lua \
--       http://127.0.0.1:8080 -- features 10000
--
-- Arguments after `--`: VIEW ENTITIES.

function init(args)
   view = args[1] or "features"
   entities = tonumber(args[2] or "10000")
   math.randomseed(7)
end

function request()
   return wrk.format("GET", "/v1/features/" .. view .. "/e" .. math.random(0, entities - 1))
end

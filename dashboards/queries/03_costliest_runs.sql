-- name: Costliest runs
-- description: The 50 runs (traces) that spent the most, with their step counts and duration.
SELECT trace_id,
       arg_min(agent_name, start_time) AS agent,
       round(sum(cost_usd), 6) AS spend_usd,
       count(*) AS steps,
       count(*) FILTER (WHERE kind = 'llm') AS llm_calls,
       min(start_time) AS started,
       date_diff('second', min(start_time), max(end_time)) AS duration_s
FROM steps
GROUP BY trace_id
ORDER BY spend_usd DESC NULLS LAST
LIMIT 50

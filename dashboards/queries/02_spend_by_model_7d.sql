-- name: Spend by model, last 7 days
-- description: Daily USD per provider and model over the last week.
SELECT date_trunc('day', start_time) AS day,
       provider,
       model,
       round(sum(cost_usd), 6) AS spend_usd,
       count(*) AS llm_calls
FROM steps
WHERE kind = 'llm' AND start_time >= date_trunc('day', now() AT TIME ZONE 'UTC') - INTERVAL 6 DAY
GROUP BY ALL
ORDER BY day DESC, spend_usd DESC NULLS LAST

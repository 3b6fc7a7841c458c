-- name: Model calls per hour
-- description: LLM calls, tokens and spend per hour and agent over the last 24 hours (burn rate).
SELECT date_trunc('hour', start_time) AS hour,
       agent_name,
       count(*) AS llm_calls,
       sum(input_tokens + output_tokens) AS tokens,
       round(sum(cost_usd), 6) AS spend_usd
FROM steps
WHERE kind = 'llm' AND start_time >= (now() AT TIME ZONE 'UTC') - INTERVAL 24 HOUR
GROUP BY ALL
ORDER BY hour DESC, spend_usd DESC NULLS LAST

-- name: Spend by agent today
-- description: USD, model calls and tokens per agent since midnight UTC (LLM steps only; unpriced calls counted apart).
SELECT agent_name,
       round(sum(cost_usd), 6) AS spend_usd,
       count(*) AS llm_calls,
       count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens
FROM steps
WHERE kind = 'llm' AND start_time >= date_trunc('day', now() AT TIME ZONE 'UTC')
GROUP BY agent_name
ORDER BY spend_usd DESC NULLS LAST

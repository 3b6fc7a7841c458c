-- name: Unpriced models
-- description: Models whose calls have no known price (add them to the prices override file).
SELECT provider, model, count(*) AS calls, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, max(start_time) AS last_call
FROM steps
WHERE kind = 'llm' AND cost_usd IS NULL
GROUP BY ALL
ORDER BY calls DESC

-- name: Tool errors
-- description: Error rate and most common error type per tool over the last 24 hours.
SELECT tool_name,
       count(*) AS calls,
       count(*) FILTER (WHERE is_error) AS errors,
       round(100.0 * count(*) FILTER (WHERE is_error) / count(*), 1) AS error_pct,
       mode(error_type) FILTER (WHERE is_error) AS common_error
FROM steps
WHERE kind = 'tool' AND start_time >= (now() AT TIME ZONE 'UTC') - INTERVAL 24 HOUR
GROUP BY tool_name
ORDER BY errors DESC, calls DESC

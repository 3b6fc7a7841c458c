-- name: Repeated tool calls
-- description: The same tool with the same arguments called 3 or more times in one run — the signature of a loop.
SELECT trace_id,
       agent_name,
       tool_name,
       tool_args,
       count(*) AS calls,
       min(start_time) AS first_call,
       max(start_time) AS last_call
FROM steps
WHERE kind = 'tool'
GROUP BY ALL
HAVING count(*) >= 3
ORDER BY calls DESC
LIMIT 100

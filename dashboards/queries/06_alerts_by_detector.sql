-- name: Alerts by detector
-- description: Alerts per detector, rule and severity over the last 7 days, with how many still fire.
SELECT detector,
       rule,
       severity,
       count(*) AS alerts,
       count(*) FILTER (WHERE state = 'firing') AS firing,
       max(updated_at) AS last_seen
FROM alerts
WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') - INTERVAL 6 DAY
GROUP BY ALL
ORDER BY alerts DESC

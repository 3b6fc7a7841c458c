-- name: Kill-switch audit trail
-- description: The latest 100 verdict changes: who or what killed, paused or resumed which scope, and why.
SELECT changed_at, scope_type, scope_value, action, state, actor, reason, alert_id
FROM verdict_audit
ORDER BY changed_at DESC
LIMIT 100

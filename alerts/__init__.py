"""Alerting: findings become alerts, notifications and verdicts."""

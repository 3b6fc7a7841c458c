"""Prometheus figures of what the agents do: spend per agent, alerts, verdicts.

The /metrics handler runs on the event loop, where DuckDB must not be touched, so the
collector serves the last `MetricsSnapshot` computed on a store reader thread by the
dashboard component (every `dashboard.metrics_refresh_s`, and on `settle()`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dashboards.data import MetricsSnapshot


class DashboardCollector(Collector):
    """Exposes the latest snapshot; `update` swaps it atomically (one reference assignment)."""

    def __init__(self) -> None:
        self.snapshot = MetricsSnapshot.empty()
        self.refreshed_at_s = 0.0

    def update(self, snapshot: MetricsSnapshot, at_s: float) -> None:
        """Serve `snapshot` from now on."""
        self.snapshot = snapshot
        self.refreshed_at_s = at_s

    def describe(self) -> list[Metric]:
        """No fixed description: series appear as agents do (keeps registration cheap)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of the current snapshot."""
        s = self.snapshot
        spend = CounterMetricFamily(
            "watchdog_agent_spend_usd",
            "Spend in USD of an agent's priced model calls, over all stored steps.",
            labels=["agent"],
        )
        for agent, usd in sorted(s.spend_total_usd.items()):
            spend.add_metric([agent], usd)
        yield spend
        today = GaugeMetricFamily(
            "watchdog_agent_spend_today_usd",
            "Spend in USD of an agent's model calls since midnight UTC.",
            labels=["agent"],
        )
        for agent, usd in sorted(s.spend_today_usd.items()):
            today.add_metric([agent], usd)
        yield today
        calls = CounterMetricFamily(
            "watchdog_agent_llm_calls",
            "Model calls of an agent, over all stored steps.",
            labels=["agent"],
        )
        for agent, n in sorted(s.llm_calls_total.items()):
            calls.add_metric([agent], n)
        yield calls
        alerts = CounterMetricFamily(
            "watchdog_alerts",
            "Alerts raised, by detector and severity.",
            labels=["detector", "severity"],
        )
        for (detector, severity), n in sorted(s.alerts_total.items()):
            alerts.add_metric([detector, severity], n)
        yield alerts
        firing = GaugeMetricFamily(
            "watchdog_alerts_firing",
            "Alerts currently firing, by detector and severity.",
            labels=["detector", "severity"],
        )
        for (detector, severity), n in sorted(s.alerts_open.items()):
            firing.add_metric([detector, severity], n)
        yield firing
        verdicts = GaugeMetricFamily(
            "watchdog_verdicts_active",
            "Verdicts in force, by state and scope type.",
            labels=["state", "scope_type"],
        )
        for (state, scope_type), n in sorted(s.verdicts_active.items()):
            verdicts.add_metric([state, scope_type], n)
        yield verdicts
        age = GaugeMetricFamily(
            "watchdog_dashboard_metrics_refreshed_timestamp_seconds",
            "When the figures above were last computed (Unix time).",
        )
        age.add_metric([], self.refreshed_at_s)
        yield age


def build_registry(collector: DashboardCollector) -> CollectorRegistry:
    """A registry holding only `collector`, for `Daemon.metric_registries`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry

"""The values the alert pipeline passes between stages: labels, notifications, reasons.

An alert's labels identify and route it (Alertmanager's model); its summary and evidence
describe it. A `Notification` is one group's state as one receiver is about to see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from watchdog.alertstore import Alert
from watchdog.model import severity_rank
from watchdog.verdicts import Verdict

NotifyReason = Literal[
    "first", "new_alerts", "escalated", "resolved", "silenced", "verdict", "repeat"
]


def alert_labels(a: Alert) -> dict[str, str]:
    """Return the labels of an alert: the names routes, silences and `group_by` use."""
    return {
        "alertname": a.rule,
        "rule": a.rule,
        "detector": a.detector,
        "severity": a.severity,
        "agent": a.agent_name,
        "service": a.service_name,
        "session": a.session_id or "",
        "trace": a.trace_id or "",
    }


def epoch(dt: datetime) -> float:
    """Convert a naive-UTC datetime (as DuckDB stores them) to Unix seconds."""
    return dt.replace(tzinfo=UTC).timestamp()


def naive_utc(ts: float) -> datetime:
    """Convert Unix seconds to the naive-UTC datetime DuckDB TIMESTAMP columns hold."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def primary_alert(alerts: list[Alert]) -> Alert | None:
    """Pick the alert a message leads with: the most severe, then the most recently changed."""
    if not alerts:
        return None
    return max(alerts, key=lambda a: (severity_rank(a.severity), a.updated_at, a.id))


@dataclass(frozen=True, slots=True)
class CostSoFar:
    """Spend recorded in `steps` for the primary alert's session and run (USD)."""

    session_usd: float | None
    run_usd: float | None
    steps: int


@dataclass(frozen=True, slots=True)
class Notification:
    """One group's state for one receiver, and why the receiver is told now.

    `note` is one human sentence about the change (a thread reply in Slack); `silenced_by`
    describes the silence muting the group's alerts, when one does.
    """

    group_key: str
    receiver: str
    reason: NotifyReason
    note: str
    group_labels: Mapping[str, str]
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    silenced: tuple[Alert, ...]
    verdict: Verdict | None
    at: datetime
    run_url: str | None = None
    cost: CostSoFar | None = None
    silenced_by: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """Every alert of the group the receiver is shown: firing, silenced, resolved."""
        return self.firing + self.silenced + self.resolved

    @property
    def primary(self) -> Alert | None:
        """The alert the message leads with (a firing one when any fires)."""
        return primary_alert(list(self.firing)) or primary_alert(list(self.alerts))

    @property
    def status(self) -> Literal["firing", "silenced", "resolved"]:
        """The group's state: firing while any alert fires unmuted, then silenced, else resolved."""
        if self.firing:
            return "firing"
        return "silenced" if self.silenced else "resolved"

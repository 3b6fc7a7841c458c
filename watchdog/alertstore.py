"""Findings become rows of the `alerts` table, deduplicated by a stable fingerprint.

The same condition re-asserted (same detector, rule, scope and key) updates its open
alert instead of adding a row; a higher severity escalates it. Every change is handed to
the alert listeners (verdict policy, notifiers, dashboard stream) in commit order.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb

from watchdog.model import Finding, severity_rank
from watchdog.store import Store

logger = logging.getLogger(__name__)

AlertChange = Literal["new", "escalated", "repeat", "resolved"]


def fingerprint(f: Finding) -> str:
    """A stable id of the condition a finding describes (not of the finding itself)."""
    parts = [f.detector, f.rule, f.agent_name, f.session_id or "", f.key]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Alert:
    """One row of the `alerts` table."""

    id: str
    created_at: datetime
    updated_at: datetime
    detector: str
    rule: str
    severity: str
    service_name: str
    agent_name: str
    session_id: str | None
    trace_id: str | None
    summary: str
    evidence: dict[str, Any]
    state: str
    fingerprint: str
    resolved_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """What happened to an alert: created, escalated, re-asserted or resolved."""

    alert: Alert
    change: AlertChange
    finding: Finding | None


AlertListener = Callable[[AlertEvent], Awaitable[None] | None]

_COLUMNS = (
    "id, created_at, updated_at, detector, rule, severity, service_name, agent_name, "
    "session_id, trace_id, summary, evidence, state, fingerprint, resolved_at"
)


def _row_to_alert(row: Sequence[Any]) -> Alert:
    evidence = row[11]
    return Alert(
        id=row[0],
        created_at=row[1],
        updated_at=row[2],
        detector=row[3],
        rule=row[4],
        severity=row[5],
        service_name=row[6] or "",
        agent_name=row[7] or "",
        session_id=row[8],
        trace_id=row[9],
        summary=row[10],
        evidence=json.loads(evidence) if isinstance(evidence, str) else (evidence or {}),
        state=row[12],
        fingerprint=row[13],
        resolved_at=row[14],
    )


class AlertStore:
    """Persists findings as alerts and tells listeners about every change."""

    def __init__(self, store: Store, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._store = store
        self._clock_ns = clock_ns
        self._listeners: list[AlertListener] = []
        # Open alerts by fingerprint; rebuilt from the table at start so a restart neither
        # duplicates an open alert nor forgets it.
        self._open: dict[str, Alert] = {}
        self._lock = asyncio.Lock()

    def subscribe(self, listener: AlertListener) -> None:
        """Call `listener` with every AlertEvent, after the change is committed."""
        self._listeners.append(listener)

    async def load(self) -> None:
        """Rebuild the open-alert index from the `alerts` table."""
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE state = 'firing'"
            ).fetchall()
        )
        self._open = {a.fingerprint: a for a in map(_row_to_alert, rows)}

    def open_alerts(self) -> list[Alert]:
        """Alerts currently firing."""
        return list(self._open.values())

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock_ns() / 1e9, UTC).replace(tzinfo=None)

    async def record(self, findings: Sequence[Finding]) -> list[AlertEvent]:
        """Store `findings` (one transaction) and notify listeners; return the events."""
        if not findings:
            return []
        async with self._lock:
            now = self._now()
            events: list[AlertEvent] = []
            writes: list[tuple[str, Alert]] = []
            for f in findings:
                fp = fingerprint(f)
                current = self._open.get(fp)
                evidence = {**dict(f.evidence), "span_ids": list(f.span_ids)}
                if current is None:
                    alert = Alert(
                        id=uuid.uuid4().hex[:16],
                        created_at=now,
                        updated_at=now,
                        detector=f.detector,
                        rule=f.rule,
                        severity=f.severity,
                        service_name=f.service_name,
                        agent_name=f.agent_name,
                        session_id=f.session_id,
                        trace_id=f.trace_id,
                        summary=f.summary,
                        evidence=evidence,
                        state="firing",
                        fingerprint=fp,
                    )
                    writes.append(("insert", alert))
                    events.append(AlertEvent(alert, "new", f))
                else:
                    escalated = severity_rank(f.severity) > severity_rank(current.severity)
                    alert = replace(
                        current,
                        updated_at=now,
                        severity=f.severity if escalated else current.severity,
                        summary=f.summary if escalated else current.summary,
                        evidence=evidence if escalated else current.evidence,
                    )
                    writes.append(("update", alert))
                    events.append(AlertEvent(alert, "escalated" if escalated else "repeat", f))
                self._open[fp] = alert
            await self._store.write(lambda cur: _apply(cur, writes))
        await self._notify(events)
        return events

    async def resolve(self, alert_id: str, reason: str = "") -> AlertEvent | None:
        """Mark a firing alert resolved; returns None if it is not open."""
        async with self._lock:
            current = next((a for a in self._open.values() if a.id == alert_id), None)
            if current is None:
                return None
            now = self._now()
            alert = replace(current, state="resolved", updated_at=now, resolved_at=now)
            await self._store.write(lambda cur: _apply(cur, [("update", alert)]))
            del self._open[alert.fingerprint]
        event = AlertEvent(alert, "resolved", None)
        await self._notify([event])
        return event

    async def get(self, alert_id: str) -> Alert | None:
        """Read one alert by id."""
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", [alert_id]
            ).fetchall()
        )
        return _row_to_alert(rows[0]) if rows else None

    async def _notify(self, events: list[AlertEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    result = listener(event)
                    if result is not None:
                        await result
                except Exception:  # one listener's bug must not stop the others
                    logger.exception("alert listener %r failed", listener)


def _apply(cur: duckdb.DuckDBPyConnection, writes: list[tuple[str, Alert]]) -> None:
    for op, a in writes:
        evidence = json.dumps(a.evidence, default=str)
        if op == "insert":
            cur.execute(
                f"INSERT INTO alerts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    a.id,
                    a.created_at,
                    a.updated_at,
                    a.detector,
                    a.rule,
                    a.severity,
                    a.service_name,
                    a.agent_name,
                    a.session_id,
                    a.trace_id,
                    a.summary,
                    evidence,
                    a.state,
                    a.fingerprint,
                    a.resolved_at,
                ],
            )
        else:
            cur.execute(
                "UPDATE alerts SET updated_at = ?, severity = ?, summary = ?, evidence = ?, "
                "state = ?, resolved_at = ? WHERE id = ?",
                [a.updated_at, a.severity, a.summary, evidence, a.state, a.resolved_at, a.id],
            )

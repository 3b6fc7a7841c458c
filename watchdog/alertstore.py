"""Findings become rows of the `alerts` table, deduplicated by a stable fingerprint.

The same condition re-asserted (same detector, rule, scope and key) updates its open
alert instead of adding a row; a higher severity escalates it. Every change is handed to
the alert listeners (verdict policy, notifiers, dashboard stream) in commit order.

Once started with a supervisor, listeners are called from a dispatch task fed by a
bounded queue (`watchdog.listeners.Lane`): `record()` returns once the change is
committed and queued, so an alert storm and a slow listener (the policy writes verdicts)
do not hold up the detection engine, beyond back-pressure when the queue is full.
Listeners are called in subscription order (the verdict policy first, so a notifier
sees the verdict an alert caused) with batches of the events waiting, in commit order.
Ordinary events wait up to `linger_s` to gather into a batch; an event a listener marks
urgent (the policy: one that stops or refuses an agent) is dispatched at once, with
everything committed before it. `settle()` waits until every event so far has been
handled. Without a supervisor, or before `start()`, listeners are called inline.
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
from typing import Any, Literal, NamedTuple

import duckdb

from watchdog.bulk import insert_rows, update_rows
from watchdog.lifecycle import Supervisor
from watchdog.listeners import Lane, notify
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


class _Subscriber(NamedTuple):
    deliver: Callable[[Sequence[AlertEvent]], Awaitable[None]]
    urgent: Callable[[AlertEvent], bool] | None
    name: str


class AlertStore:
    """Persists findings as alerts and tells listeners about every change."""

    name = "alerts"

    def __init__(
        self,
        store: Store,
        clock_ns: Callable[[], int] = time.time_ns,
        *,
        supervisor: Supervisor | None = None,
        max_queued: int = 4096,
        max_batch: int = 512,
        linger_s: float = 0.05,
        stop_drain_s: float = 3.0,
    ) -> None:
        self._store = store
        self._clock_ns = clock_ns
        self._supervisor = supervisor
        self._stop_drain_s = stop_drain_s
        self._subscribers: list[_Subscriber] = []
        self._announced = 0
        self._lane = Lane(
            self._deliver,
            name="alert listeners",
            urgent=self._is_urgent,
            max_queued=max_queued,
            max_batch=max_batch,
            linger_s=linger_s,
        )
        # Open alerts by fingerprint; rebuilt from the table at start so a restart neither
        # duplicates an open alert nor forgets it.
        self._open: dict[str, Alert] = {}
        self._lock = asyncio.Lock()

    def subscribe(
        self, listener: AlertListener, *, urgent: Callable[[AlertEvent], bool] | None = None
    ) -> None:
        """Call `listener` with every AlertEvent, after the change is committed, in order.

        Listeners are called in subscription order for each batch of events. Once the
        store is started they run on its dispatch task, so a listener must not wait for
        this store's `record()` or `resolve()`. `urgent(event)` true means "do not wait
        to batch this one" (see `subscribe_batches`).
        """

        async def deliver(events: Sequence[AlertEvent]) -> None:
            for event in events:
                await notify([listener], event, what="alert")

        self._subscribers.append(_Subscriber(deliver, urgent, f"alert listener {listener!r}"))

    def subscribe_batches(
        self,
        listener: Callable[[Sequence[AlertEvent]], Awaitable[None]],
        *,
        urgent: Callable[[AlertEvent], bool] | None = None,
    ) -> None:
        """Like `subscribe`, but hand `listener` every event waiting at once, in order.

        Ordinary events wait up to `linger_s` for more to batch with (a storm becomes a
        few batches: one transaction each for the verdict policy); an event `urgent`
        picks is handed over at once, with everything committed before it.
        """
        self._subscribers.append(_Subscriber(listener, urgent, f"alert listener {listener!r}"))

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start dispatching on a task (without a supervisor listeners stay inline)."""
        if self._supervisor is not None:
            self._lane.start(self._supervisor, "alerts:dispatch")

    async def settle(self) -> None:
        """Return once every listener has handled every event announced so far."""
        await self._lane.settle()

    async def stop(self) -> None:
        """Let the queue drain (bounded), then call listeners inline again. Idempotent."""
        dropped = await self._lane.stop(self._stop_drain_s)
        if dropped:
            logger.warning("alert listeners stopped with %d events unhandled", dropped)

    @property
    def queued(self) -> int:
        """Alert events waiting for the listeners."""
        return self._lane.queued

    @property
    def announced(self) -> int:
        """How many alert events were handed to the listeners so far (settle loops use it)."""
        return self._announced

    def _is_urgent(self, event: AlertEvent) -> bool:
        return any(s.urgent is not None and s.urgent(event) for s in self._subscribers)

    async def _deliver(self, events: Sequence[AlertEvent]) -> None:
        for sub in list(self._subscribers):
            try:
                await sub.deliver(events)
            except Exception:  # one listener's bug must not stop the others
                logger.exception("%s failed on %d events", sub.name, len(events))

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
            if self._lane.running:  # queued under the lock: listeners see commit order
                await self._enqueue(events)
                return events
        await self._enqueue(events)  # not started: delivered inline, outside the lock
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
            if self._lane.running:
                await self._enqueue([event])
                return event
        await self._enqueue([event])
        return event

    async def get(self, alert_id: str) -> Alert | None:
        """Read one alert by id."""
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", [alert_id]
            ).fetchall()
        )
        return _row_to_alert(rows[0]) if rows else None

    async def _enqueue(self, events: list[AlertEvent]) -> None:
        self._announced += len(events)
        for event in events:
            await self._lane.put(event)  # waits while the queue is full; inline if stopped


_UPDATED = "updated_at, severity, summary, evidence, state, resolved_at"


def _apply(cur: duckdb.DuckDBPyConnection, writes: list[tuple[str, Alert]]) -> None:
    # Only the last state of each alert is written; one inserted in this batch is inserted
    # as it stands at the end (bulk statements must not name a row twice).
    final: dict[str, Alert] = {}
    inserted: set[str] = set()
    for op, a in writes:
        final[a.id] = a
        if op == "insert":
            inserted.add(a.id)
    inserts, updates = [], []
    for a in final.values():
        evidence = json.dumps(a.evidence, default=str)
        if a.id in inserted:
            inserts.append(
                [a.id, a.created_at, a.updated_at, a.detector, a.rule, a.severity,
                 a.service_name, a.agent_name, a.session_id, a.trace_id, a.summary, evidence,
                 a.state, a.fingerprint, a.resolved_at]
            )  # fmt: skip
        else:
            updates.append(
                [a.updated_at, a.severity, a.summary, evidence, a.state, a.resolved_at, a.id]
            )
    insert_rows(cur, "alerts", _COLUMNS, inserts)
    update_rows(cur, "alerts", "id", _UPDATED, updates)

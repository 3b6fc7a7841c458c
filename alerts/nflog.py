"""The notification log: what each receiver was last told about each group, in DuckDB.

It is the memory the dedup stage decides from, so it is written after every successful
delivery and read back at start: a restart neither repeats a message nor forgets that an
incident is still open (its Slack channel and `ts` live in `receiver_state`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from watchdog.store import Store

logger = logging.getLogger(__name__)

_COLUMNS = (
    "group_key, receiver, group_labels, firing, resolved, silenced, verdict, receiver_state, "
    "first_notified_at, last_notified_at, notifications"
)


@dataclass(frozen=True, slots=True)
class NflogEntry:
    """The last notification a receiver got for a group.

    `firing` holds `alert_id:severity` strings, so an escalation reads as a change;
    `resolved` and `silenced` hold alert ids. An entry whose `firing` is empty closes the
    incident: the next firing alert starts a new one (a new Slack message).
    """

    group_key: str
    receiver: str
    group_labels: Mapping[str, str]
    firing: frozenset[str]
    resolved: frozenset[str]
    silenced: frozenset[str]
    verdict: str
    receiver_state: Mapping[str, Any]
    first_notified_at: datetime
    last_notified_at: datetime
    notifications: int = 1

    @property
    def is_open(self) -> bool:
        """True while the incident this entry describes has firing or muted alerts."""
        return bool(self.firing or self.silenced)

    @property
    def notified_ids(self) -> set[str]:
        """Ids of every alert the receiver has been shown in this incident."""
        return {f.split(":", 1)[0] for f in self.firing} | set(self.silenced) | set(self.resolved)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One row of `alert_deliveries`: a delivery's outcome."""

    group_key: str
    receiver: str
    reason: str
    outcome: str  # sent | failed | dropped | disabled
    attempts: int
    sent_at: datetime
    error: str | None = None
    alert_ids: Sequence[str] = field(default_factory=tuple)


def _row_to_entry(row: Sequence[Any]) -> NflogEntry:
    def load(v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    return NflogEntry(
        group_key=row[0],
        receiver=row[1],
        group_labels=load(row[2]) or {},
        firing=frozenset(load(row[3]) or ()),
        resolved=frozenset(load(row[4]) or ()),
        silenced=frozenset(load(row[5]) or ()),
        verdict=row[6] or "",
        receiver_state=load(row[7]) or {},
        first_notified_at=row[8],
        last_notified_at=row[9],
        notifications=int(row[10]),
    )


class NotificationLog:
    """Entries by (group, receiver), mirrored in memory; writes go through the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._entries: dict[tuple[str, str], NflogEntry] = {}

    async def load(self) -> None:
        """Read every entry of an open incident (closed ones matter to nobody)."""
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM alert_notifications "
                "WHERE json_array_length(firing) > 0 OR json_array_length(silenced) > 0"
            ).fetchall()
        )
        self._entries = {(e.group_key, e.receiver): e for e in map(_row_to_entry, rows)}

    def get(self, group_key: str, receiver: str) -> NflogEntry | None:
        """Return the last entry for (group, receiver), if any."""
        return self._entries.get((group_key, receiver))

    def open_entries(self) -> list[NflogEntry]:
        """Entries whose incident is still open (the dispatcher rebuilds groups from them)."""
        return [e for e in self._entries.values() if e.is_open]

    async def record(self, entry: NflogEntry, delivery: DeliveryRecord) -> None:
        """Persist `entry` and its delivery row in one transaction, then remember it."""

        def write(cur: duckdb.DuckDBPyConnection) -> None:
            cur.execute(
                f"INSERT OR REPLACE INTO alert_notifications ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    entry.group_key,
                    entry.receiver,
                    json.dumps(dict(entry.group_labels)),
                    json.dumps(sorted(entry.firing)),
                    json.dumps(sorted(entry.resolved)),
                    json.dumps(sorted(entry.silenced)),
                    entry.verdict,
                    json.dumps(dict(entry.receiver_state)),
                    entry.first_notified_at,
                    entry.last_notified_at,
                    entry.notifications,
                ],
            )
            _insert_delivery(cur, delivery)

        await self._store.write(write)
        if entry.is_open:
            self._entries[(entry.group_key, entry.receiver)] = entry
        else:
            self._entries.pop((entry.group_key, entry.receiver), None)

    async def log_delivery(self, delivery: DeliveryRecord) -> None:
        """Persist a delivery outcome that changes no entry (a failure, a drop)."""
        await self._store.write(lambda cur: _insert_delivery(cur, delivery))


def _insert_delivery(cur: duckdb.DuckDBPyConnection, d: DeliveryRecord) -> None:
    cur.execute(
        "INSERT INTO alert_deliveries (id, sent_at, group_key, receiver, reason, outcome, "
        "attempts, error, alert_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            uuid.uuid4().hex[:16],
            d.sent_at,
            d.group_key,
            d.receiver,
            d.reason,
            d.outcome,
            d.attempts,
            (d.error or "")[:500] or None,
            json.dumps(list(d.alert_ids)),
        ],
    )

"""Silences: matchers plus a time window that mute matching alerts, stored in DuckDB.

A silence is never deleted: ending it early records who ended it and when, so the
`silences` table is its own audit trail. The active set is kept in memory (a handful of
rows) and listeners hear about every change so muted groups are re-evaluated at once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import duckdb

from alerts.matchers import Matcher, matches_all, parse_matchers
from alerts.model import epoch, naive_utc
from watchdog.store import Store
from watchdog.verdicts import iso

logger = logging.getLogger(__name__)

_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_SILENCE_S = 90 * 86_400  # a forgotten silence must not hide an agent forever


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `1h`, `2d`, `1h30m` or a bare number of seconds.

    Raises ValueError for anything else, zero, or more than 90 days.
    """
    t = text.strip().lower()
    if t.replace(".", "", 1).isdigit():
        seconds = float(t)
    else:
        m = _DURATION_RE.match(t)
        if m is None or not t:
            raise ValueError(f"bad duration {text!r}: use e.g. 30m, 1h, 2d or 1h30m")
        d, h, mi, s = (int(g or 0) for g in m.groups())
        seconds = float(d * 86_400 + h * 3600 + mi * 60 + s)
    if seconds <= 0:
        raise ValueError("duration must be positive")
    if seconds > MAX_SILENCE_S:
        raise ValueError("duration must be at most 90d")
    return seconds


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes alerts whose labels match every matcher between `starts_at` and its end.

    Datetimes are naive UTC. `expired_at` is set when someone ended it early.
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_by: str | None = None
    expired_at: datetime | None = None

    @property
    def end(self) -> datetime:
        """When it stops muting: its planned end, or the moment it was ended early."""
        return min(self.ends_at, self.expired_at) if self.expired_at else self.ends_at

    def is_active(self, now: datetime) -> bool:
        """Tell whether it mutes now: started and not yet ended."""
        return self.starts_at <= now < self.end

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Tell whether it is active and every matcher matches `labels`."""
        return self.is_active(now) and matches_all(self.matchers, labels)

    def describe(self) -> str:
        """One line for people: matchers, end time and author."""
        ms = ", ".join(str(m) for m in self.matchers)
        return f"{ms} until {self.end:%Y-%m-%d %H:%M} UTC by {self.created_by}"

    def to_json(self, now: datetime) -> dict[str, Any]:
        """Render the silence as the API shows it."""
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": iso(self.created_at),
            "expired_by": self.expired_by,
            "expired_at": iso(self.expired_at),
            "active": self.is_active(now),
        }


SilenceListener = Callable[[Silence], None]

_COLUMNS = (
    "id, matchers, starts_at, ends_at, created_by, comment, created_at, expired_by, expired_at"
)


def _row_to_silence(row: Sequence[Any]) -> Silence:
    raw = json.loads(row[1]) if isinstance(row[1], str) else row[1]
    return Silence(
        id=row[0],
        matchers=parse_matchers(raw),
        starts_at=row[2],
        ends_at=row[3],
        created_by=row[4],
        comment=row[5] or "",
        created_at=row[6],
        expired_by=row[7],
        expired_at=row[8],
    )


class SilenceStore:
    """Creates, ends and answers questions about silences; every change is persisted first."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._silences: dict[str, Silence] = {}
        self._listeners: list[SilenceListener] = []

    def now(self) -> datetime:
        """Read the store's clock as a naive-UTC datetime."""
        return naive_utc(self._clock())

    def subscribe(self, listener: SilenceListener) -> None:
        """Call `listener(silence)` after every create or early end (keep it quick)."""
        self._listeners.append(listener)

    async def load(self) -> None:
        """Load silences that have not ended yet (ended ones stay in the table only)."""
        now = self.now()

        def read(cur: duckdb.DuckDBPyConnection) -> list[Any]:
            return cur.execute(
                f"SELECT {_COLUMNS} FROM silences WHERE expired_at IS NULL AND ends_at > ?",
                [now],
            ).fetchall()

        rows = await self._store.read(read)
        loaded = {}
        for row in rows:
            try:
                s = _row_to_silence(row)
            except ValueError:  # a hand-edited row must not stop the daemon
                logger.warning("ignoring silence %s with unparsable matchers", row[0])
                continue
            loaded[s.id] = s
        self._silences = loaded

    async def add(
        self,
        matchers: Sequence[str],
        *,
        duration_s: float,
        created_by: str,
        comment: str = "",
        starts_at: datetime | None = None,
    ) -> Silence:
        """Create a silence from matcher strings; raise ValueError on bad input."""
        parsed = parse_matchers(matchers)
        if not parsed:
            raise ValueError("a silence needs at least one matcher")
        if not 0 < duration_s <= MAX_SILENCE_S:
            raise ValueError("duration must be positive and at most 90d")
        if not created_by:
            raise ValueError("created_by is required")
        now = self.now()
        start = starts_at or now
        silence = Silence(
            id=uuid.uuid4().hex[:12],
            matchers=parsed,
            starts_at=start,
            ends_at=start + timedelta(seconds=duration_s),
            created_by=created_by,
            comment=comment[:500],
            created_at=now,
        )
        await self._store.write(
            lambda cur: cur.execute(
                f"INSERT INTO silences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    silence.id,
                    json.dumps([str(m) for m in parsed]),
                    silence.starts_at,
                    silence.ends_at,
                    created_by,
                    silence.comment,
                    now,
                    None,
                    None,
                ],
            )
        )
        self._silences[silence.id] = silence
        logger.info("silence %s created by %s: %s", silence.id, created_by, silence.describe())
        self._emit(silence)
        return silence

    async def expire(self, silence_id: str, *, actor: str) -> Silence | None:
        """End a silence now; None when no such silence is still running."""
        current = self._silences.get(silence_id)
        now = self.now()
        if current is None or current.end <= now:
            return None
        ended = replace(current, expired_by=actor, expired_at=now)
        await self._store.write(
            lambda cur: cur.execute(
                "UPDATE silences SET expired_by = ?, expired_at = ? WHERE id = ?",
                [actor, now, silence_id],
            )
        )
        del self._silences[silence_id]
        logger.info("silence %s ended early by %s", silence_id, actor)
        self._emit(ended)
        return ended

    def active(self) -> list[Silence]:
        """Silences muting now, soonest-ending first."""
        now = self.now()
        return sorted((s for s in self._silences.values() if s.is_active(now)), key=lambda s: s.end)

    def muting(self, labels: Mapping[str, str], now: datetime) -> Silence | None:
        """Find the longest-running active silence that mutes `labels`, if any."""
        hits = [s for s in self._silences.values() if s.mutes(labels, now)]
        return max(hits, key=lambda s: s.end) if hits else None

    def next_change_s(self) -> float | None:
        """Unix time of the next start or end of a loaded silence (the dispatcher wakes then)."""
        now = self.now()
        times = [t for s in self._silences.values() for t in (s.starts_at, s.end) if t > now]
        return epoch(min(times)) if times else None

    def prune(self) -> None:
        """Forget ended silences (they stay in the table)."""
        now = self.now()
        self._silences = {k: s for k, s in self._silences.items() if s.end > now}

    async def history(self, limit: int = 100) -> list[Silence]:
        """Read the newest silences, ended ones included (for the API and CLI)."""
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM silences ORDER BY created_at DESC LIMIT ?", [limit]
            ).fetchall()
        )
        out = []
        for row in rows:
            try:
                out.append(_row_to_silence(row))
            except ValueError:
                continue
        return out

    def _emit(self, silence: Silence) -> None:
        for listener in self._listeners:
            try:
                listener(silence)
            except Exception:  # one listener's bug must not stop the others
                logger.exception("silence listener %r failed", listener)

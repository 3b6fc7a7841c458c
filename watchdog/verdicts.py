"""The verdict store: kill / pause / deny / warn per scope, persisted, audited, observable.

Guarantees:

- One verdict per scope (`agent`, `session` or `trace`), stored in the `verdicts` table,
  so a verdict survives a restart (`load()` rebuilds the in-memory index at start).
- Every change — set, clear, expiry, and a policy's dry-run — writes a `verdict_audit`
  row naming the actor (`detector:<rule>` with its alert id, `cli`, `api`, `dashboard`,
  `slack:<user>`, `system:expiry`) and the reason, in the same transaction as the change.
- `kill` is sticky: it has no expiry and only a person (any actor not starting with
  `detector:` or `system:`) can clear it or replace it with a weaker state. Detectors
  only ever escalate a scope.
- `pause` lasts until cleared or until its ttl (the store's default when none given).
  `deny` refuses every action of the scope until cleared or its ttl ends; the run itself
  may continue (the guard raises ActionDenied, not AgentHalted). `warn` only informs.
- `effective()` is synchronous and in-memory (the guard API answers from it without
  touching DuckDB); an expired verdict is never served even if the sweeper is late.
- Listeners get a `VerdictChange` after the change is committed, in commit order.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import duckdb

from watchdog.bulk import insert_rows
from watchdog.errors import WatchdogError
from watchdog.lifecycle import Supervisor
from watchdog.listeners import cancel, nap, notify
from watchdog.store import Store

logger = logging.getLogger(__name__)

ScopeType = Literal["agent", "session", "trace"]
SCOPE_TYPES: tuple[ScopeType, ...] = ("agent", "session", "trace")
VerdictState = Literal["kill", "pause", "deny", "warn"]
VERDICT_STATES: tuple[VerdictState, ...] = ("warn", "deny", "pause", "kill")
ChangeAction = Literal["set", "clear", "expire", "dry-run"]

# Strength orders the states; a more specific scope wins a tie (a trace's own verdict
# says more about that run than its agent's).
_STATE_RANK: dict[str, int] = {"warn": 1, "deny": 2, "pause": 3, "kill": 4}
_SCOPE_RANK: dict[str, int] = {"agent": 0, "session": 1, "trace": 2}
_AUTOMATIC_PREFIXES = ("detector:", "system:", "policy:")


def state_rank(state: str) -> int:
    """Order verdict states so that kill > pause > deny > warn (unknown ranks 0)."""
    return _STATE_RANK.get(state, 0)


def is_person(actor: str) -> bool:
    """Tell whether `actor` names a person's channel (cli, api, dashboard, slack:<user>)."""
    return not actor.startswith(_AUTOMATIC_PREFIXES)


class VerdictError(WatchdogError):
    """A verdict change was refused (bad scope/state, or an automatic actor clearing a kill)."""


class Scope(NamedTuple):
    """What a verdict applies to: every step of an agent, a session, or one run (trace)."""

    type: ScopeType
    value: str

    def to_json(self) -> dict[str, str]:
        """`{"type": …, "value": …}` as the guard API shows it."""
        return {"type": self.type, "value": self.value}


def make_scope(scope_type: str, value: str) -> Scope:
    """Validate and build a Scope; raises VerdictError on an unknown type or empty value."""
    if scope_type not in SCOPE_TYPES:
        raise VerdictError(
            f"scope type must be one of {', '.join(SCOPE_TYPES)}, not {scope_type!r}"
        )
    if not isinstance(value, str) or not value:
        raise VerdictError(f"{scope_type} must be a non-empty string")
    return Scope(scope_type, value)  # type: ignore[arg-type]


def utcnow_naive(clock: Callable[[], float]) -> datetime:
    """`clock()` (Unix seconds) as a naive UTC datetime, the form DuckDB TIMESTAMP stores."""
    return datetime.fromtimestamp(clock(), UTC).replace(tzinfo=None)


def iso(dt: datetime | None) -> str | None:
    """Format a naive-UTC datetime as ISO 8601 with a `Z` (None stays None)."""
    return None if dt is None else dt.isoformat(timespec="milliseconds") + "Z"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The standing verdict of one scope. Datetimes are naive UTC."""

    scope: Scope
    state: VerdictState
    reason: str
    actor: str
    set_at: datetime
    alert_id: str | None = None
    expires_at: datetime | None = None

    def is_expired(self, now: datetime) -> bool:
        """Tell whether `expires_at` has passed at `now`."""
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        """Render the verdict as the guard API and the SSE stream show it."""
        return {
            "verdict": self.state,
            "scope": self.scope.to_json(),
            "reason": self.reason,
            "alert_id": self.alert_id,
            "actor": self.actor,
            "set_at": iso(self.set_at),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """One committed change of a scope's verdict (or a dry-run record of one).

    `verdict` is what stands after the change (None after a clear or expiry; for a
    dry-run, what would have been set); `previous` what stood before.
    """

    seq: int
    action: ChangeAction
    scope: Scope
    verdict: Verdict | None
    previous: Verdict | None
    actor: str
    reason: str
    alert_id: str | None
    at: datetime

    @property
    def state(self) -> str:
        """The state in force after the change: the verdict's state, or `allow`."""
        if self.action == "dry-run":
            return self.previous.state if self.previous else "allow"
        return self.verdict.state if self.verdict else "allow"

    def to_json(self) -> dict[str, Any]:
        """Render the change as one SSE event / webhook body."""
        return {
            "seq": self.seq,
            "action": self.action,
            "scope": self.scope.to_json(),
            "verdict": self.state,
            "verdict_detail": self.verdict.to_json() if self.verdict else None,
            "previous": self.previous.state if self.previous else "allow",
            "actor": self.actor,
            "reason": self.reason,
            "alert_id": self.alert_id,
            "at": iso(self.at),
        }


VerdictListener = Callable[[VerdictChange], Awaitable[None] | None]


class VerdictRequest(NamedTuple):
    """One `set` for `VerdictStore.set_many`: the arguments `set()` takes."""

    scope: Scope | tuple[str, str]
    state: str
    actor: str
    reason: str
    alert_id: str | None = None
    ttl_s: float | None = None


_COLUMNS = "scope_type, scope_value, state, reason, alert_id, set_by, set_at, expires_at"


def _row_to_verdict(row: Sequence[Any]) -> Verdict:
    return Verdict(
        scope=Scope(row[0], row[1]),
        state=row[2],
        reason=row[3] or "",
        alert_id=row[4],
        actor=row[5],
        set_at=row[6],
        expires_at=row[7],
    )


class VerdictStore:
    """Kill-switch and pause state per scope, with its audit trail and change listeners."""

    name = "verdicts"

    def __init__(
        self,
        store: Store,
        supervisor: Supervisor | None = None,
        *,
        clock: Callable[[], float] = time.time,
        default_pause_ttl_s: float | None = 3600.0,
        default_deny_ttl_s: float | None = 300.0,
    ) -> None:
        self._store = store
        self._supervisor = supervisor
        self._clock = clock
        self.default_pause_ttl_s = default_pause_ttl_s
        self.default_deny_ttl_s = default_deny_ttl_s
        self._verdicts: dict[Scope, Verdict] = {}
        self._listeners: list[VerdictListener] = []
        self._lock = asyncio.Lock()
        self._seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loaded = False

    # -- lifecycle -------------------------------------------------------------------
    async def load(self) -> None:
        """Rebuild the in-memory index from the `verdicts` table (idempotent)."""
        rows = await self._store.read(
            lambda cur: cur.execute(f"SELECT {_COLUMNS} FROM verdicts").fetchall()
        )
        self._verdicts = {v.scope: v for v in map(_row_to_verdict, rows)}
        self._loaded = True
        if self._verdicts:
            logger.info(
                "verdicts restored: %s",
                ", ".join(
                    f"{v.scope.type}={v.scope.value}:{v.state}" for v in self._verdicts.values()
                ),
            )

    async def start(self) -> None:
        """Load (if the daemon has not) and start the expiry sweeper."""
        if not self._loaded:
            await self.load()
        if self._supervisor is not None and self._task is None:
            self._task = self._supervisor.spawn(self._sweep_forever(), name="verdict-expiry")

    async def stop(self) -> None:
        """Stop the sweeper; safe before start and twice. State is already on disk."""
        task, self._task = self._task, None
        await cancel(task)

    # -- reading ---------------------------------------------------------------------
    def now(self) -> datetime:
        """Return the store's clock as a naive UTC datetime."""
        return utcnow_naive(self._clock)

    @property
    def seq(self) -> int:
        """The sequence number of the last change (0 before any); SSE clients resume by it."""
        return self._seq

    def get(self, scope: Scope) -> Verdict | None:
        """Return the unexpired verdict standing on exactly `scope`, if any."""
        v = self._verdicts.get(scope)
        return None if v is None or v.is_expired(self.now()) else v

    def all(self) -> list[Verdict]:
        """Every unexpired verdict, strongest first."""
        now = self.now()
        live = [v for v in self._verdicts.values() if not v.is_expired(now)]
        return sorted(live, key=lambda v: (-state_rank(v.state), v.scope))

    def effective(
        self, agent: str | None = None, session: str | None = None, trace: str | None = None
    ) -> Verdict | None:
        """Return the strongest unexpired verdict over the given agent, session and trace scopes."""
        now = self.now()
        best: Verdict | None = None
        for scope in (
            Scope("agent", agent) if agent else None,
            Scope("session", session) if session else None,
            Scope("trace", trace) if trace else None,
        ):
            if scope is None:
                continue
            v = self._verdicts.get(scope)
            if v is None or v.is_expired(now):
                continue
            if best is None or (state_rank(v.state), _SCOPE_RANK[v.scope.type]) > (
                state_rank(best.state),
                _SCOPE_RANK[best.scope.type],
            ):
                best = v
        return best

    async def audit(self, scope: Scope | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Return the newest audit rows (of `scope`, or of all scopes), newest first."""
        sql = (
            "SELECT id, changed_at, scope_type, scope_value, action, state, actor, reason, "
            "alert_id FROM verdict_audit"
        )
        params: list[Any] = []
        if scope is not None:
            sql += " WHERE scope_type = ? AND scope_value = ?"
            params = [scope.type, scope.value]
        sql += " ORDER BY changed_at DESC, id DESC LIMIT ?"
        params.append(int(limit))
        rows = await self._store.read(lambda cur: cur.execute(sql, params).fetchall())
        keys = (
            "id",
            "changed_at",
            "scope_type",
            "scope_value",
            "action",
            "state",
            "actor",
            "reason",
            "alert_id",
        )
        return [
            {k: (iso(v) if isinstance(v, datetime) else v) for k, v in zip(keys, r, strict=True)}
            for r in rows
        ]

    # -- listeners -------------------------------------------------------------------
    def subscribe(self, listener: VerdictListener) -> None:
        """Call `listener` with every VerdictChange after it is committed (keep it quick)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: VerdictListener) -> None:
        """Stop calling `listener` (SSE connections leave)."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    # -- changing --------------------------------------------------------------------
    async def set(
        self,
        scope: Scope | tuple[str, str],
        state: str,
        *,
        actor: str,
        reason: str,
        alert_id: str | None = None,
        ttl_s: float | None = None,
    ) -> Verdict:
        """Set `state` on `scope`; returns the verdict that stands afterwards.

        An automatic actor (`detector:`/`policy:`/`system:`) never weakens a standing
        stronger verdict: the standing one is returned unchanged and nothing is written.
        Raises VerdictError on a bad scope, state or ttl.
        """
        request = VerdictRequest(scope, state, actor, reason, alert_id, ttl_s)
        return (await self.set_many([request]))[0]

    async def set_many(self, requests: Sequence[VerdictRequest]) -> list[Verdict]:
        """Apply several `set`s in order, in one transaction; return what stands after each.

        Each request behaves exactly as `set()` would one after another (a later one sees
        the earlier ones); the listeners get one change per verdict written, in order.
        Raises VerdictError, writing nothing, if any request is invalid.
        """
        checked = [self._check(r) for r in requests]
        results: list[Verdict] = []
        changes: list[VerdictChange] = []
        async with self._lock:
            now = self.now()
            written: dict[Scope, Verdict] = {}
            sets: list[tuple[Verdict, Verdict | None]] = []
            for r, (sc, ttl_s) in zip(requests, checked, strict=True):
                previous = written.get(sc) or self._live(sc, now)
                if (
                    previous is not None
                    and not is_person(r.actor)
                    and state_rank(previous.state) > state_rank(r.state)
                ):
                    results.append(previous)
                    continue
                # One microsecond apart, so that the audit's changed_at keeps their order.
                at = now + timedelta(microseconds=len(sets))
                verdict = Verdict(
                    scope=sc,
                    state=r.state,  # type: ignore[arg-type]
                    reason=r.reason,
                    actor=r.actor,
                    set_at=at,
                    alert_id=r.alert_id,
                    expires_at=at + timedelta(seconds=ttl_s) if ttl_s is not None else None,
                )
                written[sc] = verdict
                sets.append((verdict, previous))
                results.append(verdict)
            if sets:
                standing, audited = list(written.values()), [v for v, _ in sets]
                await self._store.write(lambda cur: _write_sets(cur, standing, audited))
                self._verdicts.update(written)
                changes = [
                    self._change("set", v.scope, v, prev, v.actor, v.reason, v.alert_id, v.set_at)
                    for v, prev in sets
                ]
        if changes:
            self._wake.set()
        for change in changes:
            await self._notify(change)
        return results

    def _check(self, r: VerdictRequest) -> tuple[Scope, float | None]:
        """Validate one request; return its scope and effective ttl."""
        sc = make_scope(*r.scope)
        if r.state not in _STATE_RANK:
            raise VerdictError(f"state must be one of {', '.join(VERDICT_STATES)}, not {r.state!r}")
        if not r.actor:
            raise VerdictError("actor is required")
        if r.state == "kill" and r.ttl_s is not None:
            raise VerdictError("a kill is sticky until a person resumes it; it takes no ttl")
        if r.ttl_s is not None and r.ttl_s <= 0:
            raise VerdictError("ttl_s must be positive")
        if r.ttl_s is not None:
            return sc, r.ttl_s
        return sc, {"pause": self.default_pause_ttl_s, "deny": self.default_deny_ttl_s}.get(r.state)

    async def clear(
        self, scope: Scope | tuple[str, str], *, actor: str, reason: str
    ) -> Verdict | None:
        """Remove the verdict of `scope`; returns the verdict that was cleared, or None.

        Raises VerdictError when an automatic actor tries to clear a kill (only a person
        resumes a killed scope).
        """
        sc = make_scope(*scope)
        if not actor:
            raise VerdictError("actor is required")
        async with self._lock:
            now = self.now()
            previous = self._verdicts.get(sc)
            if previous is None:
                return None
            if previous.state == "kill" and not is_person(actor):
                raise VerdictError(f"{actor} cannot clear a kill; only a person resumes it")
            action: ChangeAction = "expire" if previous.is_expired(now) else "clear"

            def delete(cur: duckdb.DuckDBPyConnection) -> None:
                cur.execute(
                    "DELETE FROM verdicts WHERE scope_type = ? AND scope_value = ?",
                    [sc.type, sc.value],
                )
                _audit(cur, now, sc, action, previous.state, actor, reason, previous.alert_id)

            await self._store.write(delete)
            del self._verdicts[sc]
            change = self._change(action, sc, None, previous, actor, reason, previous.alert_id, now)
        await self._notify(change)
        return previous

    async def record_dry_run(
        self,
        scope: Scope | tuple[str, str],
        state: str,
        *,
        actor: str,
        reason: str,
        alert_id: str | None = None,
    ) -> VerdictChange:
        """Audit what a policy would have set, without setting it (per-rule dry-run)."""
        sc = make_scope(*scope)
        async with self._lock:
            now = self.now()
            previous = self._live(sc, now)

            def write(cur: duckdb.DuckDBPyConnection) -> None:
                _audit(cur, now, sc, "dry-run", state, actor, reason, alert_id)

            await self._store.write(write)
            would = Verdict(sc, state, reason, actor, now, alert_id)  # type: ignore[arg-type]
            change = self._change("dry-run", sc, would, previous, actor, reason, alert_id, now)
        await self._notify(change)
        return change

    async def expire_due(self) -> int:
        """Clear every verdict whose ttl has passed (audited as `system:expiry`); return how many."""
        now = self.now()
        due = [v.scope for v in self._verdicts.values() if v.is_expired(now)]
        for sc in due:
            await self.clear(sc, actor="system:expiry", reason="ttl elapsed")
        return len(due)

    # -- internals -------------------------------------------------------------------
    def _live(self, scope: Scope, now: datetime) -> Verdict | None:
        v = self._verdicts.get(scope)
        return None if v is None or v.is_expired(now) else v

    def _change(
        self,
        action: ChangeAction,
        scope: Scope,
        verdict: Verdict | None,
        previous: Verdict | None,
        actor: str,
        reason: str,
        alert_id: str | None,
        at: datetime,
    ) -> VerdictChange:
        self._seq += 1
        return VerdictChange(
            self._seq, action, scope, verdict, previous, actor, reason, alert_id, at
        )

    async def _notify(self, change: VerdictChange) -> None:
        await notify(self._listeners, change, what="verdict")

    async def _sweep_forever(self) -> None:
        while True:
            await self.expire_due()
            now = self.now()
            expiries = [v.expires_at for v in self._verdicts.values() if v.expires_at is not None]
            # Sleep until the next expiry, woken early by a new verdict; capped so a clock
            # jump is noticed within a minute.
            wait_s = 60.0
            if expiries:
                wait_s = min(wait_s, max((min(expiries) - now).total_seconds(), 0.0) + 0.01)
            await nap(self._wake, wait_s)


_UPSERT_SET = (
    "ON CONFLICT (scope_type, scope_value) DO UPDATE SET state = excluded.state, "
    "reason = excluded.reason, alert_id = excluded.alert_id, set_by = excluded.set_by, "
    "set_at = excluded.set_at, expires_at = excluded.expires_at"
)
_AUDIT_COLUMNS = "id, changed_at, scope_type, scope_value, action, state, actor, reason, alert_id"


def _write_sets(
    cur: duckdb.DuckDBPyConnection, standing: list[Verdict], audited: list[Verdict]
) -> None:
    """Upsert `standing` (one per scope) and audit every verdict of `audited` as a `set`."""
    rows = [
        [v.scope.type, v.scope.value, v.state, v.reason, v.alert_id, v.actor, v.set_at,
         v.expires_at]
        for v in standing
    ]  # fmt: skip
    audits = [
        [uuid.uuid4().hex[:16], v.set_at, v.scope.type, v.scope.value, "set", v.state, v.actor,
         v.reason, v.alert_id]
        for v in audited
    ]  # fmt: skip
    insert_rows(cur, "verdicts", _COLUMNS, rows, _UPSERT_SET)
    insert_rows(cur, "verdict_audit", _AUDIT_COLUMNS, audits)


def _audit(
    cur: duckdb.DuckDBPyConnection,
    now: datetime,
    scope: Scope,
    action: str,
    state: str | None,
    actor: str,
    reason: str,
    alert_id: str | None,
) -> None:
    cur.execute(
        f"INSERT INTO verdict_audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [uuid.uuid4().hex[:16], now, scope.type, scope.value, action, state, actor, reason,
         alert_id],
    )  # fmt: skip


__all__ = [
    "SCOPE_TYPES",
    "VERDICT_STATES",
    "Scope",
    "ScopeType",
    "Verdict",
    "VerdictChange",
    "VerdictError",
    "VerdictListener",
    "VerdictRequest",
    "VerdictState",
    "VerdictStore",
    "is_person",
    "make_scope",
    "state_rank",
]

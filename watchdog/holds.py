"""Held actions: a risky tool call waits out a window in which a person can cancel it.

Guarantees:

- A tool matching `enforcement.risky_tools` or a `hold_rules` entry gets a `Hold` (id,
  `release_at`) instead of an allow; the hold is persisted in `holds` before the answer.
- Within the window, `cancel()` (API, CLI, Slack through `cancel` / `cancel_scope`)
  decides it `cancelled`; afterwards the release task decides it `released`. A hold is
  decided exactly once and the decision (who, when, why) is persisted and announced to
  the listeners; `wait()` returns as soon as it is decided.
- At release time a standing `kill` or `deny` on the hold's agent, session or trace
  cancels it instead (actor `system:verdict`): nothing held is released into a killed run.
- After a restart, holds whose window ended while the daemon was down are cancelled
  (`system:restart`): nobody could have cancelled them, so a risky action fails closed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import duckdb

from watchdog.lifecycle import Supervisor
from watchdog.listeners import cancel, nap, notify
from watchdog.settings import EnforcementSettings
from watchdog.store import Store
from watchdog.verdicts import Scope, VerdictStore, iso, utcnow_naive

logger = logging.getLogger(__name__)

HoldState = Literal["pending", "released", "cancelled"]
_MAX_ARGS_CHARS = 4000
_DECIDED_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Hold:
    """One held tool call and, once decided, who decided it. Datetimes are naive UTC."""

    id: str
    created_at: datetime
    release_at: datetime
    agent: str
    session: str | None
    trace: str | None
    tool: str
    args: str | None
    rule: str
    state: HoldState = "pending"
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None

    def in_scope(self, scope: Scope) -> bool:
        """Tell whether the hold belongs to `scope` (its agent, session or trace)."""
        mine = {"agent": self.agent, "session": self.session, "trace": self.trace}
        return mine.get(scope.type) == scope.value

    def to_json(self) -> dict[str, Any]:
        """Render the hold as the guard API shows it."""
        return {
            "hold_id": self.id,
            "state": self.state,
            "agent": self.agent,
            "session": self.session,
            "trace": self.trace,
            "tool": self.tool,
            "args": self.args,
            "rule": self.rule,
            "created_at": iso(self.created_at),
            "release_at": iso(self.release_at),
            "decided_at": iso(self.decided_at),
            "decided_by": self.decided_by,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class HoldEvent:
    """A hold was created (`held`) or decided (`released` / `cancelled`)."""

    hold: Hold
    change: Literal["held", "released", "cancelled"]


HoldListener = Callable[[HoldEvent], Awaitable[None] | None]

_COLUMNS = (
    "id, created_at, release_at, agent_name, session_id, trace_id, tool_name, tool_args, "
    "rule, state, decided_at, decided_by, reason"
)


def _row_to_hold(r: Sequence[Any]) -> Hold:
    return Hold(*r)


def args_text(args: Mapping[str, Any] | None) -> str | None:
    """Serialize tool arguments for storage (bounded; None stays None)."""
    if args is None:
        return None
    text = json.dumps(args, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= _MAX_ARGS_CHARS else text[:_MAX_ARGS_CHARS] + "…"


class HoldRules:
    """Which tools are risky and which calls are held, from `enforcement` settings."""

    def __init__(self, settings: EnforcementSettings) -> None:
        self._settings = settings

    def is_risky(self, tool: str | None) -> bool:
        """Tell whether `tool` is risky (held, and failing closed when watchdog is down)."""
        if not tool:
            return False
        patterns = [*self._settings.risky_tools, *(r.tool for r in self._settings.hold_rules)]
        return any(fnmatch.fnmatchcase(tool, p) for p in patterns)

    def match(
        self, agent: str, tool: str | None, args: Mapping[str, Any] | None
    ) -> tuple[str, float] | None:
        """Return (rule name, window in s) of the first rule holding this call, or None."""
        if not tool:
            return None
        for i, rule in enumerate(self._settings.hold_rules):
            if not fnmatch.fnmatchcase(tool, rule.tool) or not fnmatch.fnmatchcase(
                agent, rule.agent
            ):
                continue
            if all(_arg_matches(args, k, g) for k, g in rule.args.items()):
                return f"hold_rules[{i}]", rule.delay_s or self._settings.hold_delay_s
        for pattern in self._settings.risky_tools:
            if fnmatch.fnmatchcase(tool, pattern):
                return f"risky_tools:{pattern}", self._settings.hold_delay_s
        return None


def _arg_matches(args: Mapping[str, Any] | None, key: str, glob: str) -> bool:
    if args is None or key not in args:
        return False
    value = args[key]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return fnmatch.fnmatchcase(text, glob)


class HoldManager:
    """Creates, decides, persists and announces held actions."""

    name = "holds"

    def __init__(
        self,
        store: Store,
        verdicts: VerdictStore,
        supervisor: Supervisor | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._verdicts = verdicts
        self._supervisor = supervisor
        self._clock = clock
        self._pending: dict[str, Hold] = {}
        self._decided: OrderedDict[str, Hold] = OrderedDict()
        self._done: dict[str, asyncio.Event] = {}
        self._listeners: list[HoldListener] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Load pending holds (cancelling those whose window passed) and start releasing."""
        if self._started:
            return
        self._started = True
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM holds WHERE state = 'pending' ORDER BY release_at"
            ).fetchall()
        )
        now = self.now()
        for hold in map(_row_to_hold, rows):
            self._pending[hold.id] = hold
            self._done[hold.id] = asyncio.Event()
            if hold.release_at <= now:
                await self._decide(
                    hold.id,
                    "cancelled",
                    "system:restart",
                    "the hold window ended while watchdog was down",
                )
        if self._supervisor is not None:
            self._task = self._supervisor.spawn(self._release_forever(), name="hold-release")

    async def stop(self) -> None:
        """Stop the release task; pending holds stay pending on disk. Idempotent."""
        task, self._task = self._task, None
        await cancel(task)

    async def settle(self) -> None:
        """Return at once: decisions are persisted before they are announced."""

    # -- reading ---------------------------------------------------------------------
    def now(self) -> datetime:
        """Return the manager's clock as a naive UTC datetime."""
        return utcnow_naive(self._clock)

    def pending(self) -> list[Hold]:
        """Return the undecided holds, soonest release first."""
        return sorted(self._pending.values(), key=lambda h: h.release_at)

    async def get(self, hold_id: str) -> Hold | None:
        """Return a hold by id (memory first, then the table)."""
        hold = self._pending.get(hold_id) or self._decided.get(hold_id)
        if hold is not None:
            return hold
        rows = await self._store.read(
            lambda cur: cur.execute(
                f"SELECT {_COLUMNS} FROM holds WHERE id = ?", [hold_id]
            ).fetchall()
        )
        return _row_to_hold(rows[0]) if rows else None

    async def wait(self, hold_id: str, timeout_s: float) -> Hold | None:
        """Wait up to `timeout_s` for the hold to be decided; return it (None if unknown)."""
        event = self._done.get(hold_id)
        if event is not None and not event.is_set():
            try:
                async with asyncio.timeout(max(timeout_s, 0.0)):
                    await event.wait()
            except TimeoutError:
                pass
        return await self.get(hold_id)

    def subscribe(self, listener: HoldListener) -> None:
        """Call `listener` with every HoldEvent after it is persisted (keep it quick)."""
        self._listeners.append(listener)

    # -- changing --------------------------------------------------------------------
    async def hold(
        self,
        *,
        agent: str,
        session: str | None,
        trace: str | None,
        tool: str,
        args: Mapping[str, Any] | None,
        rule: str,
        delay_s: float,
    ) -> Hold:
        """Create and persist a pending hold that is released after `delay_s` unless cancelled."""
        now = self.now()
        hold = Hold(
            id=uuid.uuid4().hex[:16],
            created_at=now,
            release_at=now + timedelta(seconds=delay_s),
            agent=agent,
            session=session,
            trace=trace,
            tool=tool,
            args=args_text(args),
            rule=rule,
        )
        async with self._lock:
            await self._store.write(lambda cur: _insert(cur, hold))
            self._pending[hold.id] = hold
            self._done[hold.id] = asyncio.Event()
        self._wake.set()
        await self._notify(HoldEvent(hold, "held"))
        return hold

    async def cancel(self, hold_id: str, *, actor: str, reason: str = "") -> Hold | None:
        """Cancel a pending hold; return it as it stands afterwards (None if unknown).

        A hold already decided is returned unchanged: a late cancel cannot undo a release.
        """
        if hold_id in self._pending:
            decided = await self._decide(hold_id, "cancelled", actor, reason or "cancelled")
            if decided is not None:
                return decided
        return await self.get(hold_id)

    async def cancel_scope(self, scope: Scope, *, actor: str, reason: str = "") -> list[Hold]:
        """Cancel every pending hold of `scope` (an agent, session or trace); return them."""
        out = []
        for hold in [h for h in self._pending.values() if h.in_scope(scope)]:
            decided = await self._decide(hold.id, "cancelled", actor, reason or "cancelled")
            if decided is not None:
                out.append(decided)
        return out

    async def release_due(self) -> int:
        """Decide every pending hold whose window has passed; return how many."""
        now = self.now()
        due = [h for h in self._pending.values() if h.release_at <= now]
        for hold in due:
            v = self._verdicts.effective(hold.agent, hold.session, hold.trace)
            if v is not None and v.state in ("kill", "deny"):
                await self._decide(
                    hold.id,
                    "cancelled",
                    "system:verdict",
                    f"{v.state} on {v.scope.type}: {v.reason}",
                )
            else:
                await self._decide(hold.id, "released", "system:timer", "nobody cancelled in time")
        return len(due)

    # -- internals -------------------------------------------------------------------
    async def _decide(self, hold_id: str, state: HoldState, actor: str, reason: str) -> Hold | None:
        async with self._lock:
            hold = self._pending.get(hold_id)
            if hold is None:
                return None
            decided = replace(
                hold, state=state, decided_at=self.now(), decided_by=actor, reason=reason
            )
            await self._store.write(lambda cur: _update(cur, decided))
            del self._pending[hold_id]
            self._decided[hold_id] = decided
            while len(self._decided) > _DECIDED_KEPT:
                old, _ = self._decided.popitem(last=False)
                self._done.pop(old, None)
            event = self._done.get(hold_id)
            if event is not None:
                event.set()
        logger.info(
            "hold %s (%s of %s) %s by %s: %s", hold_id, hold.tool, hold.agent, state, actor, reason
        )
        await self._notify(HoldEvent(decided, state))  # type: ignore[arg-type]
        return decided

    async def _notify(self, event: HoldEvent) -> None:
        await notify(self._listeners, event, what="hold")

    async def _release_forever(self) -> None:
        while True:
            await self.release_due()
            now = self.now()
            wait_s = 60.0
            if self._pending:
                soonest = min(h.release_at for h in self._pending.values())
                wait_s = min(wait_s, max((soonest - now).total_seconds(), 0.0) + 0.005)
            await nap(self._wake, wait_s)


def _insert(cur: duckdb.DuckDBPyConnection, h: Hold) -> None:
    cur.execute(
        f"INSERT INTO holds ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            h.id,
            h.created_at,
            h.release_at,
            h.agent,
            h.session,
            h.trace,
            h.tool,
            h.args,
            h.rule,
            h.state,
            h.decided_at,
            h.decided_by,
            h.reason,
        ],
    )


def _update(cur: duckdb.DuckDBPyConnection, h: Hold) -> None:
    cur.execute(
        "UPDATE holds SET state = ?, decided_at = ?, decided_by = ?, reason = ? WHERE id = ?",
        [h.state, h.decided_at, h.decided_by, h.reason, h.id],
    )

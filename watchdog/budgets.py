"""Budgets that hold: a guard check reserves its estimated cost against every cap at once.

Guarantees:

- `reserve()` is synchronous and runs on the event loop, so the test-and-add over all the
  caps that apply (run, session, agent/day, total/day from `settings.budgets`) is atomic:
  any number of concurrent checks against one cap let through at most the cap.
  Amounts are kept in integer nano-dollars so that fifty reservations of $0.01 fit a
  $0.50 cap exactly (floating point would refuse the fiftieth or admit a fifty-first).
- Spend is what committed steps cost (`on_commit`, fed by the batch writer). A step with a
  cost settles the oldest open reservation of its run (else its session, else an
  agent-only reservation): the reservation is dropped and the real cost counts instead.
- A reservation nobody settles is released after `reservation_ttl_s` (a failed or
  cancelled call should not hold budget forever); `release()` drops one early.
- Day caps are per UTC day of the step's start; spend of runs and sessions is kept for
  the sessions seen in the last two days, bounded by `max_tracked` (least recent dropped).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from watchdog.model import Committed, Step
from watchdog.settings import BudgetSettings
from watchdog.store import Store

logger = logging.getLogger(__name__)

NANO = 1_000_000_000
_DAY_S = 86_400


def to_nano(usd: float) -> int:
    """Convert USD to integer nano-dollars (rounded)."""
    return round(usd * NANO)


def utc_day(ts_s: float) -> str:
    """Return the UTC calendar day of a Unix time as `YYYY-MM-DD`."""
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%d")


@dataclass(slots=True)
class Reservation:
    """Budget set aside for one checked action until its real cost arrives."""

    id: str
    agent: str
    session: str | None
    trace: str | None
    tool: str | None
    amount: int  # nano-dollars
    day: str
    expires_s: float
    keys: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """The answer of `reserve`: allowed with a reservation id, or refused with the cap."""

    allowed: bool
    reservation_id: str | None = None
    cap: str | None = None
    limit_usd: float | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    asked_usd: float = 0.0

    @property
    def reason(self) -> str:
        """Explain a refusal in one line (empty when allowed)."""
        if self.allowed:
            return ""
        return (
            f"budget_exceeded: {self.cap} cap ${self.limit_usd:.4f} "
            f"(spent ${self.spent_usd:.4f}, reserved ${self.reserved_usd:.4f}, "
            f"asked ${self.asked_usd:.4f})"
        )

    def to_json(self) -> dict[str, object]:
        """Render the decision for the guard API's `budget` field."""
        return {
            "allowed": self.allowed,
            "cap": self.cap,
            "limit_usd": self.limit_usd,
            "spent_usd": round(self.spent_usd, 9),
            "reserved_usd": round(self.reserved_usd, 9),
            "asked_usd": round(self.asked_usd, 9),
        }


class _Lru(OrderedDict[str, int]):
    """Spend per key, dropping the least recently touched beyond `cap` entries."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def add(self, key: str, amount: int) -> None:
        self[key] = self.get(key, 0) + amount
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


class BudgetLedger:
    """Committed spend and open reservations per run, session, agent/day and day."""

    name = "budgets"

    def __init__(
        self,
        budgets: BudgetSettings,
        *,
        reservation_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        max_tracked: int = 100_000,
    ) -> None:
        self._budgets = budgets
        self._ttl_s = reservation_ttl_s
        self._clock = clock
        self._trace = _Lru(max_tracked)
        self._session = _Lru(max_tracked)
        self._agent_day: dict[tuple[str, str], int] = {}
        self._total_day: dict[str, int] = {}
        self._reserved: dict[tuple[str, str], int] = {}
        self._open: dict[str, Reservation] = {}
        self._ids = itertools.count(1)
        # [from, to) in Unix seconds, and the UTC day every time in it belongs to.
        self._day_span: tuple[float, float, str] = (0.0, 0.0, "")
        self.denied = 0
        self.expired = 0

    # -- loading ---------------------------------------------------------------------
    async def load(self, store: Store) -> None:
        """Rebuild today's spend and recent runs' and sessions' spend from `steps`."""
        now = self._clock()
        since = datetime.fromtimestamp(now - 2 * _DAY_S, UTC).replace(tzinfo=None)
        today = utc_day(now)

        def read(cur: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], ...]:
            q = "FROM steps WHERE cost_usd IS NOT NULL AND start_time >= ?"
            per_trace = cur.execute(
                f"SELECT trace_id, sum(cost_usd) {q} GROUP BY 1 ORDER BY max(start_time)", [since]
            ).fetchall()
            per_session = cur.execute(
                f"SELECT session_id, sum(cost_usd) {q} GROUP BY 1 ORDER BY max(start_time)",
                [since],
            ).fetchall()
            per_agent = cur.execute(
                f"SELECT agent_name, sum(cost_usd) {q} AND strftime(start_time, '%Y-%m-%d') = ? "
                "GROUP BY 1",
                [since, today],
            ).fetchall()
            return per_trace, per_session, per_agent

        per_trace, per_session, per_agent = await store.read(read)
        for key, usd in per_trace:
            self._trace.add(str(key), to_nano(float(usd)))
        for key, usd in per_session:
            self._session.add(str(key), to_nano(float(usd)))
        for agent, usd in per_agent:
            amount = to_nano(float(usd))
            self._agent_day[(str(agent), today)] = amount
            self._total_day[today] = self._total_day.get(today, 0) + amount

    # -- reading ---------------------------------------------------------------------
    def spent_usd(
        self, agent: str, session: str | None = None, trace: str | None = None
    ) -> dict[str, float]:
        """Return committed spend per level that applies (for status and tests)."""
        day = utc_day(self._clock())
        out = {
            "agent_day": self._agent_day.get((agent, day), 0) / NANO,
            "total_day": self._total_day.get(day, 0) / NANO,
        }
        if session:
            out["session"] = self._session.get(session, 0) / NANO
        if trace:
            out["run"] = self._trace.get(trace, 0) / NANO
        return out

    @property
    def open_reservations(self) -> int:
        """Count the reservations waiting to be settled."""
        return len(self._open)

    # -- reserving -------------------------------------------------------------------
    def _levels(
        self, agent: str, session: str | None, trace: str | None, day: str
    ) -> Iterable[tuple[str, float | None, tuple[str, str], int]]:
        caps = self._budgets.caps_for(agent)
        if trace:
            yield "per_run_usd", caps.per_run_usd, ("trace", trace), self._trace.get(trace, 0)
        if session:
            yield (
                "per_session_usd",
                caps.per_session_usd,
                ("session", session),
                self._session.get(session, 0),
            )
        yield (
            "per_agent_day_usd",
            caps.per_agent_day_usd,
            ("agent", f"{agent}\x1f{day}"),
            self._agent_day.get((agent, day), 0),
        )
        yield (
            "total_day_usd",
            self._budgets.total_day_usd,
            ("total", day),
            self._total_day.get(day, 0),
        )

    def reserve(
        self,
        agent: str,
        session: str | None,
        trace: str | None,
        est_cost_usd: float,
        tool: str | None = None,
    ) -> BudgetDecision:
        """Reserve `est_cost_usd` against every cap that applies, or refuse without reserving.

        A cap already used up refuses even a zero estimate: the next call would exceed it.
        """
        now = self._clock()
        self.expire(now)
        day = utc_day(now)
        asked = max(to_nano(est_cost_usd), 0)
        keys: list[tuple[str, str]] = []
        for cap_name, limit, key, spent in self._levels(agent, session, trace, day):
            keys.append(key)
            if limit is None:
                continue
            reserved = self._reserved.get(key, 0)
            limit_n = to_nano(limit)
            if spent + reserved + asked > limit_n or (asked == 0 and spent + reserved >= limit_n):
                self.denied += 1
                return BudgetDecision(
                    False,
                    cap=cap_name,
                    limit_usd=limit,
                    spent_usd=spent / NANO,
                    reserved_usd=reserved / NANO,
                    asked_usd=asked / NANO,
                )
        if asked == 0:
            return BudgetDecision(True)
        rid = f"r{next(self._ids)}-{int(now * 1000) % 100_000_000}"
        res = Reservation(
            rid, agent, session, trace, tool, asked, day, now + self._ttl_s, tuple(keys)
        )
        self._open[rid] = res
        for key in keys:
            self._reserved[key] = self._reserved.get(key, 0) + asked
        return BudgetDecision(True, reservation_id=rid, asked_usd=asked / NANO)

    def release(self, reservation_id: str) -> bool:
        """Drop an open reservation (the action was not taken); False when unknown."""
        res = self._open.pop(reservation_id, None)
        if res is None:
            return False
        self._unreserve(res)
        return True

    def expire(self, now: float | None = None) -> int:
        """Release every reservation past its ttl; return how many."""
        now = self._clock() if now is None else now
        due = [r for r in self._open.values() if r.expires_s <= now]
        for r in due:
            del self._open[r.id]
            self._unreserve(r)
        self.expired += len(due)
        return len(due)

    def _unreserve(self, res: Reservation) -> None:
        for key in res.keys:
            left = self._reserved.get(key, 0) - res.amount
            if left > 0:
                self._reserved[key] = left
            else:
                self._reserved.pop(key, None)

    # -- settling --------------------------------------------------------------------
    def on_commit(self, notice: Committed) -> None:
        """Count the cost of committed steps and settle their reservations (quick, sync)."""
        for step in notice.steps:
            if step.cost_usd is not None and step.cost_usd > 0:
                self._settle(step)

    def _day_of(self, ts_s: float) -> str:
        """`utc_day(ts_s)`, formatted once per day: a step's day is almost always today's."""
        lo, hi, day = self._day_span
        if lo <= ts_s < hi:
            return day
        day = utc_day(ts_s)
        # Within a second of midnight fromtimestamp's rounding decides: ask it every time.
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        self._day_span = (start + 1.0, start + _DAY_S - 1.0, day)
        return day

    def _settle(self, step: Step) -> None:
        amount = to_nano(step.cost_usd or 0.0)
        day = self._day_of(step.start_time_ns / 1e9)
        self._trace.add(step.trace_id, amount)
        self._session.add(step.session_id, amount)
        self._agent_day[(step.agent_name, day)] = (
            self._agent_day.get((step.agent_name, day), 0) + amount
        )
        self._total_day[day] = self._total_day.get(day, 0) + amount
        if len(self._total_day) > 3:  # keep only recent days
            for old in sorted(self._total_day)[:-3]:
                del self._total_day[old]
                for k in [k for k in self._agent_day if k[1] == old]:
                    del self._agent_day[k]
        if not self._open:
            return  # nothing reserved: nothing to settle
        match = self._match(step)
        if match is not None:
            del self._open[match.id]
            self._unreserve(match)

    def _match(self, step: Step) -> Reservation | None:
        best: tuple[int, int, Reservation] | None = None
        for order, r in enumerate(self._open.values()):
            if r.agent != step.agent_name:
                continue
            if r.trace is not None:
                rank = 0 if r.trace == step.trace_id else -1
            elif r.session is not None:
                rank = 1 if r.session == step.session_id else -1
            else:
                rank = 2
            if rank < 0:
                continue
            # Prefer the reservation made for this tool (or for a model call, one with no
            # tool); among equals the oldest, since calls usually finish in order.
            same_tool = (r.tool or None) == (step.tool_name if step.kind == "tool" else None)
            score = (rank * 2 + (0 if same_tool else 1), order)
            if best is None or score < best[:2]:
                best = (score[0], score[1], r)
        return best[2] if best else None

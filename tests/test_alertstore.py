"""The alert store's listener queues: record() is not held up by listeners, beyond a bound.

Real DuckDB file, real supervisor, the real policy and verdict store; listeners that
block on a gate stand for slow ones (a Slack call, a verdict write under load).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from watchdog.alertstore import AlertEvent, AlertStore
from watchdog.lifecycle import Supervisor
from watchdog.model import Finding
from watchdog.policy import AlertPolicy
from watchdog.settings import PolicySettings
from watchdog.store import Store
from watchdog.verdicts import VerdictChange, VerdictStore


def finding(i: int, severity: str = "warn", **kw: Any) -> Finding:
    base: dict[str, Any] = dict(
        detector="loop",
        rule="repeat",
        severity=severity,
        summary=f"looping {i}",
        agent_name="bot",
        session_id=f"s{i}",
        trace_id=f"t{i}",
        key="k",
    )
    return Finding(**{**base, **kw})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "a.duckdb")
    await asyncio.to_thread(s.open)
    yield s
    await asyncio.to_thread(s.close)


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    sup = Supervisor()
    yield sup
    await sup.cancel_all()


class Gated:
    """A listener that records what it saw and waits for `gate` before returning."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen: list[str] = []
        self.handled: list[str] = []

    async def __call__(self, event: AlertEvent) -> None:
        self.seen.append(event.alert.summary)
        await self.gate.wait()
        self.handled.append(event.alert.summary)


async def until(predicate: Any) -> None:
    """Yield to the loop until `predicate()` holds (bounded by the test's own timeout)."""
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_record_returns_before_a_slow_listener_and_settle_waits_for_it(
    store: Store, supervisor: Supervisor
) -> None:
    alerts = AlertStore(store, supervisor=supervisor, linger_s=0)
    slow = Gated()
    after: list[str] = []
    alerts.subscribe(slow)
    alerts.subscribe(lambda e: after.append(e.alert.summary))
    await alerts.start()
    events = await alerts.record([finding(1), finding(2)])
    assert [e.change for e in events] == ["new", "new"]
    # Committed and returned, though the listener has not finished the first event.
    rows = await store.read(lambda c: c.execute("SELECT count(*) FROM alerts").fetchall())
    assert rows == [(2,)]
    settling = asyncio.ensure_future(alerts.settle())
    await until(lambda: slow.seen == ["looping 1"])
    assert not settling.done() and slow.handled == [] and after == []
    slow.gate.set()
    await settling
    # Commit order, and listeners in subscription order.
    assert slow.handled == after == ["looping 1", "looping 2"]
    await alerts.stop()


async def test_a_full_queue_holds_record_back(store: Store, supervisor: Supervisor) -> None:
    alerts = AlertStore(store, supervisor=supervisor, max_queued=2, linger_s=0)
    slow = Gated()
    alerts.subscribe(slow)
    await alerts.start()
    await alerts.record([finding(1)])
    await until(lambda: slow.seen == ["looping 1"])  # being handled: no longer queued
    await alerts.record([finding(2)])
    await alerts.record([finding(3)])
    assert alerts.queued == 2
    fourth = asyncio.ensure_future(alerts.record([finding(4)]))
    # Its row is committed, then it waits for room in the queue (the bound).
    await until(lambda: any(a.summary == "looping 4" for a in alerts.open_alerts()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not fourth.done() and alerts.queued == 2
    slow.gate.set()
    await fourth
    await alerts.settle()
    assert slow.handled == [f"looping {i}" for i in (1, 2, 3, 4)]
    await alerts.stop()


async def test_an_urgent_event_is_dispatched_at_once_with_everything_before_it(
    store: Store, supervisor: Supervisor
) -> None:
    alerts = AlertStore(store, supervisor=supervisor, linger_s=3600)
    batches: list[list[str]] = []

    async def on_batch(events: Sequence[AlertEvent]) -> None:
        batches.append([e.alert.summary for e in events])

    alerts.subscribe_batches(on_batch, urgent=lambda e: e.alert.severity == "kill")
    await alerts.start()
    await alerts.record([finding(1), finding(2)])
    for _ in range(50):
        await asyncio.sleep(0)
    assert batches == []  # ordinary events wait to gather into a batch
    await alerts.record([finding(3, "kill"), finding(4)])
    await until(lambda: batches)
    assert batches == [["looping 1", "looping 2", "looping 3", "looping 4"]]  # order kept
    await alerts.stop()  # drains without lingering


async def test_a_failing_listener_or_urgency_check_loses_nothing_else(
    store: Store, supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = AlertStore(store, supervisor=supervisor)
    seen: list[str] = []

    def broken(event: AlertEvent) -> None:
        raise RuntimeError("listener bug")

    def urgent(event: AlertEvent) -> bool:
        raise RuntimeError("predicate bug")

    alerts.subscribe(broken)
    alerts.subscribe(lambda e: seen.append(e.alert.summary), urgent=urgent)
    await alerts.start()
    await alerts.record([finding(1), finding(2)])
    await alerts.settle()
    assert seen == ["looping 1", "looping 2"]
    assert "listener bug" in caplog.text and "predicate bug" in caplog.text
    await alerts.record([finding(3)])  # the lanes are still running
    await alerts.settle()
    assert seen[-1] == "looping 3"
    await alerts.stop()


async def test_stop_drains_the_queues_then_listeners_are_called_inline(
    store: Store, supervisor: Supervisor
) -> None:
    alerts = AlertStore(store, supervisor=supervisor)
    seen: list[str] = []
    alerts.subscribe(lambda e: seen.append(e.alert.summary))
    await alerts.start()
    await alerts.record([finding(i) for i in range(5)])
    await alerts.stop()
    assert seen == [f"looping {i}" for i in range(5)]
    await alerts.record([finding(9)])  # stopped: delivered before record returns
    assert seen[-1] == "looping 9"
    await alerts.stop()  # idempotent


async def test_a_storm_is_written_in_bulk_and_batched_to_a_batch_listener(
    store: Store, supervisor: Supervisor
) -> None:
    alerts = AlertStore(store, supervisor=supervisor, max_batch=256)
    batches: list[list[tuple[str, str]]] = []

    async def on_batch(events: Sequence[AlertEvent]) -> None:
        batches.append([(e.alert.summary, e.change) for e in events])

    alerts.subscribe_batches(on_batch)
    await alerts.start()
    storm = [finding(i) for i in range(300)]
    await alerts.record(storm)  # 300 inserts: one Arrow statement
    # The same conditions again: 150 repeats and 150 escalations (one bulk UPDATE), and a
    # finding about an alert created in the same call (inserted as it stands at the end).
    again = [finding(i, "kill" if i % 2 else "warn") for i in range(300)]
    events = await alerts.record([*again, finding(1000), finding(1000, "pause")])
    assert [e.change for e in events[:4]] == ["repeat", "escalated", "repeat", "escalated"]
    await alerts.settle()
    flat = [item for b in batches for item in b]
    assert len(flat) == 602 and len(batches) <= 6  # a storm is a few batches, not 602 calls
    assert flat[:300] == [(f"looping {i}", "new") for i in range(300)]
    rows = await store.read(
        lambda c: c.execute(
            "SELECT session_id, severity, summary, evidence, state FROM alerts ORDER BY session_id"
        ).fetchall()
    )
    assert len(rows) == 301
    by_session = {r[0]: r for r in rows}
    assert by_session["s7"][1:3] == ("kill", "looping 7")
    assert by_session["s8"][1] == "warn"
    assert json.loads(by_session["s7"][3])["span_ids"] == []
    assert by_session["s1000"][1:3] == ("pause", "looping 1000")
    await alerts.stop()


async def test_the_policy_handles_a_storm_in_order_in_few_transactions_then_notifiers(
    store: Store, supervisor: Supervisor
) -> None:
    verdicts = VerdictStore(store, supervisor)
    await verdicts.load()
    changes: list[VerdictChange] = []
    verdicts.subscribe(changes.append)
    writes: list[int] = []
    real_write = store.write

    async def counting_write(fn: Any) -> Any:
        writes.append(1)
        return await real_write(fn)

    store.write = counting_write  # type: ignore[method-assign]
    alerts = AlertStore(store, supervisor=supervisor)
    policy = AlertPolicy(PolicySettings.model_validate({}), verdicts)
    alerts.subscribe_batches(policy.on_alerts, urgent=policy.stops_agents)
    # A notifier subscribed after the policy sees the verdict each alert caused.
    seen_with_verdict: list[str | None] = []
    alerts.subscribe(
        lambda e: seen_with_verdict.append(
            getattr(verdicts.effective("bot", e.alert.session_id), "state", None)
        )
    )
    await alerts.start()
    storm = [finding(i) for i in range(400)]
    await alerts.record([*storm, finding(400, "kill")])  # the kill committed last
    await alerts.settle()
    assert [(c.state, c.scope.value) for c in changes] == [
        *(("warn", f"s{i}") for i in range(400)),
        ("kill", "s400"),
    ]
    assert len(writes) == 2  # the alerts, then every verdict with its audit row
    assert seen_with_verdict == ["warn"] * 400 + ["kill"]
    audit = await store.read(
        lambda c: c.execute(
            "SELECT scope_value, state FROM verdict_audit ORDER BY changed_at"
        ).fetchall()
    )
    assert audit == [(f"s{i}", "warn") for i in range(400)] + [("s400", "kill")]
    assert len(verdicts.all()) == 401
    await alerts.stop()

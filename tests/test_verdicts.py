"""The verdict store: strength order, stickiness, expiry, audit trail, restart survival."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonThread
from watchdog.lifecycle import Supervisor
from watchdog.store import Store
from watchdog.verdicts import Scope, VerdictChange, VerdictError, VerdictRequest, VerdictStore


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "v.duckdb")
    s.open()
    yield s  # type: ignore[misc]
    s.close()


async def test_effective_picks_strongest_then_most_specific(store: Store) -> None:
    vs = VerdictStore(store)
    await vs.load()
    assert vs.effective("a", "s", "t") is None
    await vs.set(("agent", "a"), "warn", actor="cli", reason="look")
    await vs.set(("trace", "t"), "warn", actor="cli", reason="closer look")
    v = vs.effective("a", "s", "t")
    assert v is not None and v.scope == Scope("trace", "t")
    await vs.set(("session", "s"), "pause", actor="api", reason="hold on")
    assert vs.effective("a", "s", "t").state == "pause"  # type: ignore[union-attr]
    await vs.set(("agent", "a"), "kill", actor="api", reason="stop")
    assert vs.effective("a", "s", "t").state == "kill"  # type: ignore[union-attr]
    # Another agent's scopes are unaffected.
    assert vs.effective("b", "s2", "t2") is None


async def test_kill_is_sticky_against_detectors(store: Store) -> None:
    vs = VerdictStore(store)
    await vs.load()
    await vs.set(
        ("session", "s"), "kill", actor="detector:loop.repeat", reason="loop", alert_id="al1"
    )
    # A detector never weakens it, nor clears it.
    kept = await vs.set(("session", "s"), "warn", actor="detector:spend.burn", reason="meh")
    assert kept.state == "kill" and kept.alert_id == "al1"
    with pytest.raises(VerdictError):
        await vs.clear(("session", "s"), actor="detector:loop.repeat", reason="quiet now")
    with pytest.raises(VerdictError):
        await vs.set(("session", "s"), "kill", actor="cli", reason="x", ttl_s=5)
    # A person resumes it.
    cleared = await vs.clear(("session", "s"), actor="cli", reason="fixed the prompt")
    assert cleared is not None and cleared.state == "kill"
    assert vs.effective(session="s") is None
    assert await vs.clear(("session", "s"), actor="cli", reason="again") is None


async def test_pause_expires_and_expiry_is_audited(store: Store) -> None:
    clock = Clock()
    vs = VerdictStore(store, clock=clock, default_pause_ttl_s=60)
    await vs.load()
    changes: list[VerdictChange] = []
    vs.subscribe(changes.append)
    await vs.set(("agent", "a"), "pause", actor="api", reason="wait")
    clock.t += 59
    assert vs.effective("a").state == "pause"  # type: ignore[union-attr]
    clock.t += 2
    assert vs.effective("a") is None  # served as expired before any sweep
    assert await vs.expire_due() == 1
    assert [c.action for c in changes] == ["set", "expire"]
    assert changes[-1].state == "allow" and changes[-1].actor == "system:expiry"
    assert [c.seq for c in changes] == [1, 2]
    rows = await vs.audit(Scope("agent", "a"))
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("expire", "system:expiry"),
        ("set", "api"),
    ]


async def test_bad_input_is_refused(store: Store) -> None:
    vs = VerdictStore(store)
    await vs.load()
    with pytest.raises(VerdictError):
        await vs.set(("tenant", "x"), "kill", actor="cli", reason="")
    with pytest.raises(VerdictError):
        await vs.set(("agent", ""), "kill", actor="cli", reason="")
    with pytest.raises(VerdictError):
        await vs.set(("agent", "a"), "explode", actor="cli", reason="")
    assert store.query("SELECT count(*) FROM verdict_audit") == [(0,)]


async def test_dry_run_is_audited_but_not_served(store: Store) -> None:
    vs = VerdictStore(store)
    await vs.load()
    change = await vs.record_dry_run(
        ("session", "s"), "kill", actor="detector:loop.repeat", reason="would kill", alert_id="a9"
    )
    assert change.action == "dry-run" and change.state == "allow"
    assert vs.effective(session="s") is None
    assert store.query("SELECT action, state, alert_id FROM verdict_audit") == [
        ("dry-run", "kill", "a9")
    ]


async def test_verdicts_survive_reopen(tmp_path: Path) -> None:
    s1 = Store(tmp_path / "v.duckdb")
    s1.open()
    vs = VerdictStore(s1, Supervisor())
    await vs.start()
    await vs.set(("agent", "a"), "kill", actor="detector:loop.repeat", reason="loop", alert_id="x")
    await vs.stop()
    await vs.stop()  # idempotent
    s1.close()

    s2 = Store(tmp_path / "v.duckdb")
    s2.open()
    vs2 = VerdictStore(s2)
    await vs2.load()
    v = vs2.effective("a")
    assert v is not None and (v.state, v.actor, v.alert_id) == ("kill", "detector:loop.repeat", "x")
    s2.close()


def test_daemon_exposes_verdicts_and_restores_them(
    daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    d1 = daemon_factory(data_dir=tmp_path / "d")
    d1.call(d1.d.verdicts.set(("session", "s1"), "kill", actor="cli", reason="test"))
    d1.stop()
    d2 = daemon_factory(data_dir=tmp_path / "d")
    v = d2.d.verdicts.effective(session="s1")
    assert v is not None and v.state == "kill"
    assert d2.query("SELECT action, actor FROM verdict_audit") == [("set", "cli")]


async def test_set_many_is_set_after_set_in_one_transaction(store: Store) -> None:
    vs = VerdictStore(store)
    await vs.load()
    changes: list[VerdictChange] = []
    vs.subscribe(changes.append)
    auto = "detector:loop.repeat"
    requests = [VerdictRequest(("session", f"s{i}"), "warn", auto, "storm") for i in range(6)]
    requests += [
        VerdictRequest(("session", "s0"), "kill", auto, "worse", alert_id="a1"),
        VerdictRequest(("session", "s0"), "warn", auto, "a weaker one never wins"),
        VerdictRequest(("agent", "bot"), "pause", "cli", "hold on", ttl_s=30),
    ]
    got = await vs.set_many(requests)  # more than a handful: the bulk path
    assert [v.state for v in got] == ["warn"] * 6 + ["kill", "kill", "pause"]
    assert [(c.scope.value, c.state) for c in changes] == [
        *((f"s{i}", "warn") for i in range(6)),
        ("s0", "kill"),
        ("bot", "pause"),
    ]
    assert changes[6].previous is not None and changes[6].previous.state == "warn"
    rows = await store.read(
        lambda c: c.execute(
            "SELECT scope_value, state, expires_at IS NOT NULL FROM verdicts ORDER BY scope_value"
        ).fetchall()
    )
    assert rows == [("bot", "pause", True), ("s0", "kill", False)] + [
        (f"s{i}", "warn", False) for i in range(1, 6)
    ]
    audit = await store.read(
        lambda c: c.execute(
            "SELECT scope_value, state FROM verdict_audit ORDER BY changed_at"
        ).fetchall()
    )
    assert audit == [(c.scope.value, c.state) for c in changes]  # changed_at keeps the order
    # One bad request refuses the batch: nothing written, nothing announced.
    with pytest.raises(VerdictError):
        await vs.set_many(
            [
                VerdictRequest(("session", "x"), "warn", auto, "ok"),
                VerdictRequest(("nope", "y"), "warn", auto, "bad"),
            ]
        )
    assert vs.get(Scope("session", "x")) is None and len(changes) == 8
    # A restart reads back what the bulk path wrote.
    again = VerdictStore(store)
    await again.load()
    assert {(v.scope.value, v.state) for v in again.all()} == {
        (v.scope.value, v.state) for v in vs.all()
    }

"""The detection engine against a real daemon: wiring, isolation, bounded state, restore, config."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.engine import DetectorEngine
from tests.agents.corpus import AgentSim
from tests.conftest import ROOT, DaemonThread, otel_provider
from watchdog.detection import DetectorSettings, History, StepContext
from watchdog.model import Committed, Finding, Step


@dataclass
class _Count:
    steps: int = 0


class CountingDetector:
    """Counts steps per session and reports every third one (a real plugin, for the engine)."""

    name = "count"

    def new_state(self) -> _Count:
        return _Count()

    def observe(self, state: _Count, step: Step, ctx: StepContext) -> Sequence[Finding]:
        state.steps += 1
        if state.steps % 3:
            return ()
        return (
            Finding(
                detector="count",
                rule="every_third",
                severity="info",
                summary=f"session {step.session_id} reached {state.steps} steps",
                agent_name=step.agent_name,
                session_id=step.session_id,
                trace_id=step.trace_id,
                span_ids=(step.span_id,),
                evidence={"steps": state.steps},
                key=str(state.steps),
            ),
        )


class RaisingDetector:
    """Raises on every step."""

    name = "boom"

    def new_state(self) -> None:
        return None

    def observe(self, state: None, step: Step, ctx: StepContext) -> Sequence[Finding]:
        raise RuntimeError("detector bug")


class PeriodicCounter:
    """A periodic detector that reports the number of steps in the store."""

    name = "periodic"
    interval_s = 3600.0

    async def run(self, history: History, now_ns: int) -> Sequence[Finding]:
        ((n,),) = await history.query("SELECT count(*) FROM steps")
        return (
            Finding(
                detector="periodic",
                rule="step_count",
                severity="info",
                summary=f"{n} steps stored",
                agent_name="-",
                key="count",
                evidence={"steps": n},
            ),
        )


def attach_engine(d: DaemonThread, *detectors: object, **settings: Any) -> DetectorEngine:
    """A second engine on the daemon's real store, alert store and writer, with `detectors`."""
    engine = DetectorEngine(
        DetectorSettings(**settings), d.d.store, d.d.alerts.record, d.d.supervisor
    )
    for det in detectors:
        engine.add(det)
    d.d.writer.subscribe(engine.on_commit)
    d.call(engine.start())
    return engine


def send_steps(url: str, session: str, n: int, agent: str = "bot") -> None:
    sim = AgentSim(otel_provider(url, service=agent), agent, session)
    with sim.run("count things"):
        for i in range(n):
            sim.tool("count", {"i": i}, {"ok": i})


def alerts(d: DaemonThread, detector: str) -> list[tuple[Any, ...]]:
    return d.query(
        "SELECT rule, severity, session_id, evidence FROM alerts WHERE detector = ? ORDER BY created_at",
        [detector],
    )


def test_engine_is_wired_into_the_daemon(daemon: DaemonThread) -> None:
    engine = daemon.d.services["detectors"]
    assert isinstance(engine, DetectorEngine)
    assert engine in daemon.d.components
    send_steps(daemon.url, "s-wired", 2)
    daemon.settle()
    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    # Two tool steps plus the run's invoke_agent step.
    assert "watchdog_detector_steps_total 3.0" in text


def test_findings_become_alerts_and_a_raising_detector_stops_nothing(daemon: DaemonThread) -> None:
    engine = attach_engine(daemon, RaisingDetector(), CountingDetector())
    send_steps(daemon.url, "s-iso", 5)  # 5 tools + 1 agent span = 6 steps
    daemon.settle()
    daemon.call(engine.settle())
    rows = alerts(daemon, "count")
    assert [json.loads(r[3])["steps"] for r in rows] == [3, 6]
    assert all(r[2] == "s-iso" for r in rows)
    assert engine.metrics.errors.labels("boom")._value.get() == 6
    daemon.call(engine.stop())


def test_session_state_is_bounded_and_rebuilt_when_a_session_returns(daemon: DaemonThread) -> None:
    engine = attach_engine(daemon, CountingDetector(), max_sessions=2)
    send_steps(daemon.url, "s-a", 1)  # 2 steps
    send_steps(daemon.url, "s-b", 1)
    send_steps(daemon.url, "s-c", 1)  # evicts s-a
    daemon.settle()
    daemon.call(engine.settle())
    assert engine.metrics.evictions._value.get() == 1
    send_steps(daemon.url, "s-a", 0)  # 1 more step: s-a's 3rd, counted only if rebuilt
    daemon.settle()
    daemon.call(engine.settle())
    assert engine.metrics.rehydrations._value.get() == 1
    assert [r[2] for r in alerts(daemon, "count")] == ["s-a"]
    daemon.call(engine.stop())


def test_state_survives_a_restart(
    daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    d = daemon_factory(data_dir=tmp_path / "d")
    send_steps(d.url, "s-r", 1)  # 2 steps before the restart
    d.settle()
    d.stop()
    d2 = daemon_factory(data_dir=tmp_path / "d")
    engine = attach_engine(d2, CountingDetector())  # rebuilt from the store at start
    send_steps(d2.url, "s-r", 0)  # the 3rd step
    d2.settle()
    d2.call(engine.settle())
    assert [json.loads(r[3])["steps"] for r in alerts(d2, "count")] == [3]
    d2.call(engine.stop())


def test_periodic_detectors_run_at_start_and_record(daemon: DaemonThread) -> None:
    send_steps(daemon.url, "s-p", 3)
    daemon.settle()
    engine = attach_engine(daemon, PeriodicCounter())
    assert [json.loads(r[3])["steps"] for r in alerts(daemon, "periodic")] == [4]
    daemon.call(engine.stop())
    daemon.call(engine.stop())  # idempotent


class TickingDetector:
    """A periodic detector on a short interval that signals its second run."""

    name = "tick"
    interval_s = 0.2

    def __init__(self) -> None:
        self.runs = 0
        self.second = asyncio.Event()

    async def run(self, history: History, now_ns: int) -> Sequence[Finding]:
        self.runs += 1
        if self.runs >= 2:
            self.second.set()
        return ()


def test_the_scheduler_runs_periodic_detectors_on_the_event_loop(daemon: DaemonThread) -> None:
    ticker = TickingDetector()
    engine = attach_engine(daemon, ticker)  # run 1 happens in start()
    daemon.call(asyncio.wait_for(ticker.second.wait(), 20))  # run 2 comes from APScheduler
    assert ticker.runs >= 2
    assert engine.metrics.errors.labels("tick")._value.get() == 0
    daemon.call(engine.stop())


def test_stop_before_start_is_safe(daemon: DaemonThread) -> None:
    engine = DetectorEngine(
        DetectorSettings(), daemon.d.store, daemon.d.alerts.record, daemon.d.supervisor
    )
    daemon.call(engine.stop())
    daemon.call(engine.settle())


def _check_config(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "watchdog.yaml"
    path.write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_check_config_names_a_bad_threshold_by_its_path(tmp_path: Path) -> None:
    bad = _check_config(tmp_path, "detectors:\n  loop:\n    repeat:\n      pause: -1\n")
    assert bad.returncode == 2
    assert "detectors.loop.repeat.pause" in bad.stderr
    unknown = _check_config(tmp_path, "detectors:\n  loop:\n    repaet: {pause: 4}\n")
    assert unknown.returncode == 2
    assert "detectors.loop.repaet" in unknown.stderr
    order = _check_config(
        tmp_path, "detectors:\n  agents:\n    bot:\n      loop:\n        repeat: {pause: 9}\n"
    )
    assert order.returncode == 2
    assert "agents.bot.loop.repeat" in order.stderr and "warn < pause < kill" in order.stderr
    good = _check_config(
        tmp_path, "detectors:\n  agents:\n    bot:\n      loop:\n        repeat: {pause: 6}\n"
    )
    assert good.returncode == 0, good.stderr


def test_per_agent_overrides_replace_only_what_they_name() -> None:
    s = DetectorSettings.model_validate(
        {"agents": {"bot": {"loop": {"repeat": {"pause": 6}}, "spend": {"zscore": {"warn": 5}}}}}
    )
    bot = s.for_agent("bot")
    assert (bot.loop.repeat.warn, bot.loop.repeat.pause, bot.loop.repeat.kill) == (3, 6, 8)
    assert bot.loop.repeat_error == s.loop.repeat_error
    assert bot.spend.zscore.warn == 5
    assert s.for_agent("other") is s


def test_the_detection_backlog_is_bounded_in_steps_and_the_writer_waits(
    daemon: DaemonThread,
) -> None:
    engine = DetectorEngine(
        DetectorSettings(max_queued_steps=3),
        daemon.d.store,
        daemon.d.alerts.record,
        daemon.d.supervisor,
    )
    counter = CountingDetector()
    engine.add(counter)
    now = time.time_ns()
    steps = [
        Step(f"{i:032x}", f"{i:016x}", "", now, now, "svc", "bot", "s-backlog", "tool")
        for i in range(1, 5)
    ]

    async def scenario() -> tuple[bool, bool]:
        await engine.on_commit(Committed(steps[:2], 2, now))  # 2 of 3 queued: accepted
        second = asyncio.ensure_future(engine.on_commit(Committed(steps[2:], 2, now)))
        await asyncio.sleep(0.05)
        waited = not second.done()  # 2 + 2 > 3: the writer waits for detection
        await engine.start()
        await asyncio.wait_for(second, 10)
        await engine.settle()
        drained = engine._queued_steps == 0
        await engine.stop()
        return waited, drained

    assert daemon.call(scenario()) == (True, True)

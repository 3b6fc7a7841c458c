"""The dispatcher's timing and lifecycle on a real DuckDB store with a hand-driven clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.dispatch import AlertingMetrics, Dispatcher
from alerts.matchers import Matcher, parse_matchers
from alerts.nflog import NotificationLog
from alerts.receivers import LogReceiver
from alerts.routing import build_routes
from alerts.silences import SilenceStore, parse_duration
from watchdog.alertstore import AlertStore
from watchdog.model import Finding
from watchdog.settings import AlertingSettings
from watchdog.store import Store
from watchdog.verdicts import Scope, VerdictStore

T0 = 1_800_000_000.0


def finding(**kw: Any) -> Finding:
    base: dict[str, Any] = dict(
        detector="loop",
        rule="repeat",
        severity="warn",
        summary="looping",
        agent_name="bot",
        session_id="s1",
        trace_id="t1",
        key="k1",
    )
    return Finding(**{**base, **kw})


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Pipeline:
    """The alerting parts around one store, driven tick by tick."""

    def __init__(self, store: Store, clock: Clock, **alerting: Any) -> None:
        self.store, self.clock = store, clock
        self.settings = AlertingSettings(**alerting)
        self.alerts = AlertStore(store, clock_ns=lambda: int(clock() * 1e9))
        self.verdicts = VerdictStore(store, clock=clock)
        self.silences = SilenceStore(store, clock)
        self.nflog = NotificationLog(store)
        self.d = Dispatcher(
            settings=self.settings,
            root=build_routes(self.settings, "log"),
            receivers={"log": LogReceiver()},
            alerts=self.alerts,
            verdicts=self.verdicts,
            silences=self.silences,
            nflog=self.nflog,
            store=store,
            metrics=AlertingMetrics(),
            clock=clock,
        )
        self.alerts.subscribe(self.d.on_alert)
        self.verdicts.subscribe(self.d.on_verdict)
        self.silences.subscribe(self.d.on_silence)

    async def start(self) -> None:
        await self.alerts.load()
        await self.verdicts.load()
        await self.silences.load()
        await self.nflog.load()
        await self.d.load()
        self.d.running = True

    async def at(self, seconds: float) -> list[str]:
        """Move the clock to T0 + seconds, tick, deliver; return the reasons sent now."""
        before = len(self.reasons())
        self.clock.t = T0 + seconds
        await self.d.tick(self.clock.t)
        for worker in self.d.workers.values():
            while worker.pending:
                key, _ = worker.pending.popitem(last=False)
                await self.d.deliver(worker, key)
        return self.reasons()[before:]

    def reasons(self) -> list[str]:
        return [
            r[0]
            for r in self.store.query(
                "SELECT reason FROM alert_deliveries ORDER BY sent_at, reason"
            )
        ]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "w.duckdb")
    await asyncio.to_thread(s.open)
    yield s
    await asyncio.to_thread(s.close)


async def make(store: Store, **alerting: Any) -> Pipeline:
    p = Pipeline(store, Clock(), **alerting)
    await p.start()
    return p


async def test_group_wait_interval_and_repeat(store: Store) -> None:
    p = await make(
        store, group_wait_s=30, group_interval_s=300, repeat_interval_s=3600, resolve_after_s=None
    )
    await p.alerts.record([finding()])
    assert await p.at(0) == []
    assert await p.at(29) == []
    assert await p.at(30) == ["first"]
    # A second alert joins the group; it waits for the group interval.
    p.clock.t = T0 + 40
    await p.alerts.record([finding(session_id="s2", key="k2")])
    assert await p.at(40) == []
    assert await p.at(329) == []
    assert await p.at(330) == ["new_alerts"]
    # Re-asserted findings are not news, however often.
    for t in (400, 500, 600):
        p.clock.t = T0 + t
        await p.alerts.record([finding(), finding(session_id="s2", key="k2")])
        assert await p.at(t) == []
    # Still firing after the repeat interval: one reminder.
    assert await p.at(330 + 3600) == ["repeat"]
    assert await p.at(330 + 3601) == []


async def test_quiet_alert_resolves_and_the_group_is_dropped(store: Store) -> None:
    p = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=60)
    await p.alerts.record([finding()])
    assert await p.at(0) == ["first"]
    assert await p.at(59) == []
    assert await p.at(60) == ["resolved"]  # resolved and told on the same tick
    assert store.query("SELECT state FROM alerts") == [("resolved",)]
    assert p.d.groups == {}
    assert p.nflog.open_entries() == []


async def test_a_reasserted_alert_resolves_only_after_it_went_quiet(store: Store) -> None:
    p = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=60)
    await p.alerts.record([finding()])
    assert await p.at(0) == ["first"]
    p.clock.t = T0 + 50
    await p.alerts.record([finding()])  # the detector still sees it: quiet from t=50 on
    assert await p.at(60) == []
    assert store.query("SELECT state FROM alerts") == [("firing",)]
    assert await p.at(109) == []
    assert await p.at(110) == ["resolved"]
    assert p.d.groups == {}


async def test_a_person_clearing_a_verdict_resolves_its_alert(store: Store) -> None:
    p = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=None)
    events = await p.alerts.record([finding(severity="pause")])
    alert_id = events[0].alert.id
    await p.verdicts.set(
        Scope("session", "s1"), "pause", actor="detector:repeat", reason="x", alert_id=alert_id
    )
    assert await p.at(0) == ["first"]
    # Expiry by the system does not end the incident.
    await p.verdicts.clear(Scope("session", "s1"), actor="system:expiry", reason="ttl")
    assert await p.at(1) == ["verdict"]
    assert store.query("SELECT state FROM alerts") == [("firing",)]
    await p.verdicts.set(
        Scope("session", "s1"), "kill", actor="slack:U1", reason="x", alert_id=alert_id
    )
    assert await p.at(2) == ["verdict"]
    await p.verdicts.clear(Scope("session", "s1"), actor="slack:U1", reason="handled")
    await p.at(3)
    assert store.query("SELECT state FROM alerts") == [("resolved",)]
    assert "resolved" in p.reasons()


async def test_silenced_alerts_wait_until_the_silence_ends(store: Store) -> None:
    p = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=None)
    await p.silences.add(['agent="bot"'], duration_s=600, created_by="cli")
    await p.alerts.record([finding()])
    assert await p.at(0) == []
    assert await p.at(599) == []
    assert await p.at(600) == ["first"]  # the silence ended: the alert is told


async def test_a_silence_on_a_told_alert_updates_the_incident_once(store: Store) -> None:
    p = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=None)
    await p.alerts.record([finding()])
    assert await p.at(0) == ["first"]
    s = await p.silences.add(["detector=loop"], duration_s=3600, created_by="slack:U1")
    assert await p.at(1) == ["silenced"]
    await p.alerts.record([finding(severity="kill")])
    assert await p.at(2) == []  # muted alerts escalating are not sent
    await p.silences.expire(s.id, actor="cli")
    assert await p.at(3) == ["new_alerts"]


async def test_a_restart_rebuilds_groups_from_the_log(store: Store) -> None:
    p = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=None)
    events = await p.alerts.record([finding()])
    assert await p.at(0) == ["first"]
    # Resolved while "down": the new pipeline still tells the receiver.
    await p.alerts.resolve(events[0].alert.id)
    p2 = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=None)
    assert await p2.at(1) == ["resolved"]
    p3 = await make(store, group_wait_s=0, group_interval_s=0, resolve_after_s=None)
    assert await p3.at(2) == []


def test_routes_first_match_wins_unless_continue() -> None:
    settings = AlertingSettings(
        receivers=[{"name": "oncall", "log": True}, {"name": "audit", "log": True}],
        routes=[
            {
                "matchers": ['severity="kill"'],
                "receiver": "audit",
                "continue_matching": True,
                "group_by": ["agent"],
            },
            {"matchers": ["severity=~kill|pause"], "receiver": "oncall", "group_wait_s": 0},
            {"matchers": ["agent=prod-bot"], "receiver": "oncall"},
        ],
    )
    root = build_routes(settings, "log")

    def receivers(**labels: str) -> list[str]:
        return [r.receiver for r in root.match(labels)]

    assert receivers(severity="kill", agent="x") == ["audit", "oncall"]
    assert receivers(severity="pause", agent="prod-bot") == ["oncall"]  # first match wins
    assert receivers(severity="warn", agent="prod-bot") == ["oncall"]
    assert receivers(severity="warn", agent="other") == ["log"]  # the root takes the rest
    kill_route = root.match({"severity": "kill"})[1]
    assert kill_route.group_wait_s == 0 and kill_route.repeat_interval_s == 14_400  # inherited
    a, _ = kill_route.group_key({"agent": "a", "detector": "loop"})
    b, _ = kill_route.group_key({"agent": "a", "detector": "spend"})
    c, _ = kill_route.group_key({"agent": "b", "detector": "loop"})
    assert a != b and a != c


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("agent=bot", {"agent": "bot"}, True),
        ('agent="bot"', {"agent": "bot-2"}, False),
        ("agent!=bot", {}, True),
        ("agent=~bot.*", {"agent": "bot-2"}, True),
        ("agent=~bot", {"agent": "robot"}, False),  # regexes match the whole value
        ("agent!~prod-.*", {"agent": "prod-1"}, False),
        ('session=""', {}, True),
        (r'agent="a \"quoted\" name"', {"agent": 'a "quoted" name'}, True),
    ],
)
def test_matchers(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("bad", ["agent", "foo=bar", "agent=~(", "=x", "agent==x y"])
def test_bad_matchers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_matchers([bad])


@given(st.text(max_size=30), st.sampled_from(["=", "!="]))
def test_matcher_text_round_trips(value: str, op: str) -> None:
    m = Matcher("agent", op, value)
    back = Matcher.parse(str(m))
    assert back == m
    assert back.matches({"agent": value}) is (op == "=")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172_800), ("1h30m", 5400), ("600", 600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0", "1y", "h", "-5m", "91d"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)

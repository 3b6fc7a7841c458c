"""Spend detector rules through the real receiver: caps, burn rate, z-score, bloat, unpriced."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.spend import RULES
from tests.agents.corpus import AgentSim, new_id
from tests.conftest import DaemonThread, make_settings, otel_provider

NS = 10**9

SPEND_SETTINGS: dict[str, Any] = {
    "budgets": {
        "per_run_usd": 1.0,
        "per_session_usd": 1.5,
        "per_agent_day_usd": 100.0,
        "agents": {"day-bot": {"per_agent_day_usd": 2.0}, "burner": {"per_agent_day_usd": 24.0}},
    },
}


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("spend"), **SPEND_SETTINGS)).start()
    yield d
    d.stop()


def sim(d: DaemonThread, agent: str = "bot", **kw: Any) -> AgentSim:
    return AgentSim(otel_provider(d.url, service=agent), agent, new_id("sess"), **kw)


def spend_alerts(
    d: DaemonThread, where: str, *params: Any
) -> list[tuple[str, str, dict[str, Any]]]:
    """(rule, severity, evidence) of matching spend alerts, oldest first."""
    d.settle()
    rows = d.query(
        "SELECT rule, severity, evidence FROM alerts WHERE detector = 'spend' AND "
        f"{where} ORDER BY created_at, rule",
        list(params),
    )
    return [(r, s, json.loads(e)) for r, s, e in rows]


def test_rule_table_is_complete() -> None:
    ids = [r.rule for r in RULES]
    assert ids == ["run_cap", "session_cap", "agent_day_cap", "total_day_cap", "burn_rate",
                   "cost_zscore", "context_bloat", "unpriced"]  # fmt: skip


# -- caps --------------------------------------------------------------------------------


def test_run_cap_warns_at_each_fraction_once_and_pauses_on_the_crossing_call(
    wd: DaemonThread,
) -> None:
    a = sim(wd)
    with a.run("research"):
        spans = [a.chat("step", cost_usd=0.3) for _ in range(3)]  # 0.3, 0.6, 0.9
        assert [(r, s, e["fraction"]) for r, s, e in spend_alerts(
            wd, "trace_id = ? AND rule = 'run_cap'", a.trace_id)] == [
            ("run_cap", "warn", 0.5), ("run_cap", "warn", 0.8)]  # fmt: skip
        crossing = a.chat("step", cost_usd=0.3)  # 1.2 ≥ 1.0: the cap
        a.chat("step", cost_usd=0.01)  # no new alert below the kill fraction
    rows = spend_alerts(wd, "trace_id = ? AND rule = 'run_cap'", a.trace_id)
    assert [(s, e["fraction"]) for _, s, e in rows] == [
        ("warn", 0.5),
        ("warn", 0.8),
        ("pause", 1.0),
    ]
    cap = rows[-1][2]
    # Exact: the alert names the call that crossed the cap, not a later one.
    assert cap["span_ids"] == [crossing] and cap["spent_usd"] == pytest.approx(1.2)
    assert spans[1] in rows[0][2]["span_ids"]


def test_run_cap_escalates_to_kill_past_the_kill_fraction(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("research"):
        a.chat("big", cost_usd=1.1)
        a.chat("bigger", cost_usd=0.5)  # 1.6 ≥ 1.5 × cap
    rows = spend_alerts(wd, "trace_id = ? AND rule = 'run_cap'", a.trace_id)
    assert [(s, e["fraction"]) for _, s, e in rows] == [("kill", 1.5)]


def test_a_run_under_its_cap_is_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("research"):
        for _ in range(4):
            a.chat("step", cost_usd=0.1)
    assert spend_alerts(wd, "session_id = ?", a.session) == []


def test_session_cap_adds_up_runs(wd: DaemonThread) -> None:
    a = sim(wd)
    for _ in range(2):
        with a.run("answer"):
            a.chat("a", cost_usd=0.45)
            a.chat("b", cost_usd=0.3)  # run 0.75 < 1.0; session 0.75 then 1.5
    rows = spend_alerts(wd, "session_id = ? AND rule = 'session_cap'", a.session)
    assert [(s, e["fraction"]) for _, s, e in rows] == [("warn", 0.5), ("pause", 1.0)]


def test_agent_day_cap_uses_the_agents_override(wd: DaemonThread) -> None:
    for _ in range(3):
        a = sim(wd, "day-bot")
        with a.run("task"):
            a.chat("x", cost_usd=0.7)  # 0.7, 1.4, 2.1 over three sessions; cap 2.0
    rows = spend_alerts(wd, "agent_name = 'day-bot' AND rule = 'agent_day_cap'")
    assert [(s, e["fraction"]) for _, s, e in rows] == [("warn", 0.5), ("pause", 1.0)]
    assert rows[-1][2]["cap_usd"] == 2.0


def test_total_day_cap_and_its_marks_survive_a_restart(
    daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    settings = {"budgets": {"total_day_usd": 1.0}}
    d = daemon_factory(data_dir=tmp_path / "t", **settings)
    for agent in ("alpha", "beta"):
        s = AgentSim(otel_provider(d.url), agent)
        with s.run("go"):
            s.chat("x", cost_usd=0.3)  # 0.3 then 0.6 → 50 % fires
    rows = spend_alerts(d, "rule = 'total_day_cap'")
    assert [(r, s) for r, s, _ in rows] == [("total_day_cap", "warn")]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert rows[0][2]["mark"] == f"total_day:{today}:0.5"
    assert d.query("SELECT agent_name FROM alerts WHERE rule = 'total_day_cap'") == [("*",)]
    d.stop()
    d2 = daemon_factory(data_dir=tmp_path / "t", **settings)
    s = AgentSim(otel_provider(d2.url), "gamma")
    with s.run("go"):
        s.chat("x", cost_usd=0.05)  # 0.65: no second 50 % warning after the restart
        s.chat("x", cost_usd=0.2)  # 0.85: the 80 % warning, counted from the restored total
    rows = spend_alerts(d2, "rule = 'total_day_cap'")
    assert [(s, e["fraction"]) for _, s, e in rows] == [("warn", 0.5), ("warn", 0.8)]
    assert rows[-1][2]["spent_usd"] == pytest.approx(0.85)


# -- burn rate ---------------------------------------------------------------------------


def test_burn_rate_fires_when_both_windows_of_a_pair_run_hot(wd: DaemonThread) -> None:
    # Daily budget $24 → $1/h allowed. $15 over the last hour (with $1.25 in the last five
    # minutes) is 15× on both windows of the 14.4× pair.
    start = time.time_ns() - 3600 * NS
    a = sim(wd, "burner", clock_ns=start, step_ns=60 * NS)
    with a.run("batch"):
        for _ in range(60):
            a.chat("x", cost_usd=0.25)
    rows = spend_alerts(wd, "agent_name = 'burner' AND rule = 'burn_rate'")
    assert len(rows) == 1
    _, sev, ev = rows[0]
    assert sev == "warn" and ev["rate"] == 14.4 and ev["long_s"] == 3600
    assert ev["long_burn"] >= 14.4 and ev["short_burn"] >= 14.4


def test_spending_fast_only_in_the_short_window_is_quiet(wd: DaemonThread) -> None:
    # $1.3 in the last five minutes (15.6×) but only $1.3 in the hour: the long window is cool.
    start = time.time_ns() - 300 * NS
    a = sim(wd, "burner2", clock_ns=start, step_ns=20 * NS)
    with a.run("batch"):
        for _ in range(13):
            a.chat("x", cost_usd=0.1)
    assert spend_alerts(wd, "agent_name = 'burner2' AND rule = 'burn_rate'") == []


# -- z-score -------------------------------------------------------------------------------


def _history(d: DaemonThread, agent: str, runs: int) -> None:
    past = time.time_ns() - 6 * 3600 * NS
    for n in range(runs):  # finished runs costing 0.010 .. 0.014
        h = sim(d, agent, clock_ns=past + n * 60 * NS)
        with h.run("usual"):
            h.chat("x", cost_usd=0.010 + 0.001 * (n % 5))
    d.settle()
    d.call(d.d.services["detectors"].run_periodic_now())


def test_a_run_far_above_the_agents_usual_cost_is_flagged(wd: DaemonThread) -> None:
    _history(wd, "steady", 30)
    usual, odd = sim(wd, "steady"), sim(wd, "steady")
    with usual.run("usual"):
        usual.chat("x", cost_usd=0.013)
    with odd.run("odd"):
        odd.chat("x", cost_usd=0.02)
        crossing = odd.chat("x", cost_usd=0.2)
    assert spend_alerts(wd, "trace_id = ?", usual.trace_id) == []
    rows = spend_alerts(wd, "trace_id = ? AND rule = 'cost_zscore'", odd.trace_id)
    assert len(rows) == 1 and rows[0][1] == "warn"
    ev = rows[0][2]
    assert ev["z"] >= 3.5 and ev["history_runs"] == 30 and ev["span_ids"] == [crossing]


def test_cold_start_guard_keeps_a_new_agent_quiet(wd: DaemonThread) -> None:
    _history(wd, "newbie", 10)
    odd = sim(wd, "newbie")
    with odd.run("odd"):
        odd.chat("x", cost_usd=0.5)
    assert spend_alerts(wd, "trace_id = ? AND rule = 'cost_zscore'", odd.trace_id) == []


# -- context bloat -----------------------------------------------------------------------


def test_input_growing_without_new_results_is_context_bloat(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("think"):
        for i in range(8):
            a.chat(f"thought {i}", input_tokens=1000 + 400 * i, cost_usd=0.001)
            a.tool("read_file", {"path": "notes.md"}, "same notes")
    rows = spend_alerts(wd, "session_id = ? AND rule = 'context_bloat'", a.session)
    # The first read is new information; the six calls after the second read are not.
    assert [(s, e["calls"], e["from_tokens"]) for _, s, e in rows] == [("warn", 6, 1400)]


def test_input_growing_with_new_tool_results_is_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("research"):
        for i in range(10):
            a.chat(f"thought {i}", input_tokens=1000 + 400 * i, cost_usd=0.001)
            a.tool("read_file", {"path": f"chapter{i}.md"}, f"chapter {i} text")
    assert spend_alerts(wd, "session_id = ?", a.session) == []


# -- unpriced ------------------------------------------------------------------------------


def test_a_model_without_a_price_is_reported_once(wd: DaemonThread) -> None:
    a = sim(wd, "lab", model="acme-secret-model-9")
    with a.run("x"):
        for _ in range(3):
            a.chat("hello")
    rows = spend_alerts(wd, "agent_name = 'lab' AND rule = 'unpriced'")
    assert len(rows) == 1 and rows[0][2]["model"] == "acme-secret-model-9"
    assert wd.query(
        "SELECT count(*) FROM steps WHERE agent_name = 'lab' AND cost_usd IS NULL AND kind = 'llm'"
    ) == [(3,)]


def test_a_priced_model_is_not_reported(wd: DaemonThread) -> None:
    a = sim(wd, "priced", model="gpt-4o-mini")
    with a.run("x"):
        a.chat("hello")
    assert spend_alerts(wd, "agent_name = 'priced'") == []
    ((cost,),) = wd.query("SELECT cost_usd FROM steps WHERE agent_name = 'priced' AND kind = 'llm'")
    assert cost is not None and cost > 0

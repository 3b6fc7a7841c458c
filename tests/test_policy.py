"""The alert policy's scope for alerts about every agent (agent `*`).

A total-day cap or all-agent burn rate is global. No verdict scope names every agent, and
a verdict on agent `*` would stop nobody, so the policy acts on the session, else the run,
that crossed the line — even when configured to act on agents — and the guard's budget
reservation refuses every other agent's new spend past the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from detectors.spend import ALL_AGENTS as SPEND_ALL_AGENTS
from tests.agents.corpus import AgentSim
from tests.conftest import DaemonThread, otel_provider
from watchdog.alertstore import Alert, AlertEvent
from watchdog.guard import ActionDenied, Guard
from watchdog.policy import ALL_AGENTS, AlertPolicy, scope_for
from watchdog.settings import PolicySettings
from watchdog.store import Store
from watchdog.verdicts import Scope, VerdictStore

T = datetime(2027, 1, 15, 12, 0, 0)


def alert(
    *,
    agent: str = ALL_AGENTS,
    session: str | None = None,
    trace: str | None = "t-crossing",
    rule: str = "total_day_cap",
    severity: str = "pause",
) -> Alert:
    return Alert(
        id="al-1",
        created_at=T,
        updated_at=T,
        detector="spend",
        rule=rule,
        severity=severity,
        service_name="",
        agent_name=agent,
        session_id=session,
        trace_id=trace,
        summary="*: all agents' day spend $1.10 reached 100% of its $1.00 cap",
        evidence={},
        state="firing",
        fingerprint="fp",
    )


def test_the_detector_and_the_policy_agree_on_the_all_agents_name() -> None:
    assert SPEND_ALL_AGENTS == ALL_AGENTS == "*"


@pytest.mark.parametrize("how", ["auto", "session", "trace", "agent"])
def test_an_all_agents_alert_never_gets_an_agent_scope(how: str) -> None:
    assert scope_for(alert(), how) == Scope("trace", "t-crossing")
    assert scope_for(alert(session="s-9"), how) == (
        Scope("trace", "t-crossing") if how == "trace" else Scope("session", "s-9")
    )
    assert scope_for(alert(trace=None), how) is None


def test_one_agents_alert_still_gets_its_agent_scope() -> None:
    assert scope_for(alert(agent="bot", rule="agent_day_cap"), "agent") == Scope("agent", "bot")
    assert scope_for(alert(agent="bot", trace=None), "auto") == Scope("agent", "bot")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "p.duckdb")
    s.open()
    yield s
    s.close()


async def test_the_policy_pauses_the_crossing_run_not_agent_star(store: Store) -> None:
    vs = VerdictStore(store)
    await vs.load()
    policy = AlertPolicy(PolicySettings.model_validate({"scope": "agent"}), vs)
    await policy.on_alert(AlertEvent(alert(), "new", None))
    assert [(v.scope, v.state, v.actor) for v in vs.all()] == [
        (Scope("trace", "t-crossing"), "pause", "detector:spend.total_day_cap")
    ]
    assert vs.effective(agent=ALL_AGENTS) is None
    # With no run or session named, nothing is set (and nothing is audited).
    await policy.on_alert(AlertEvent(alert(trace=None, severity="kill"), "escalated", None))
    assert len(vs.all()) == 1
    audit = await vs.audit()
    assert [(a["scope_type"], a["action"]) for a in audit] == [("trace", "set")]


def test_a_total_day_cap_pauses_the_run_that_crossed_it_and_budgets_refuse_the_rest(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    d = daemon_factory(
        budgets={"total_day_usd": 1.0},
        # Even an explicit agent scope must not become a verdict on agent "*".
        enforcement={"policy": {"rules": {"spend.total_day_cap": {"scope": "agent"}}}},
    )
    first = AgentSim(otel_provider(d.url), "alpha")
    with first.run("go"):
        first.chat("x", cost_usd=0.45)
    second = AgentSim(otel_provider(d.url), "beta")
    with second.run("go"):
        second.chat("x", cost_usd=0.65)  # 1.10 ≥ 1.00: this run crossed the total cap
    d.settle()
    assert d.query(
        "SELECT agent_name, severity, trace_id FROM alerts WHERE rule = 'total_day_cap' "
        "ORDER BY created_at"
    ) == [("*", "pause", second.trace_id)]
    rows = d.query("SELECT scope_type, scope_value, state, set_by FROM verdicts")
    assert rows == [("trace", second.trace_id, "pause", "detector:spend.total_day_cap")]
    # Every other agent is held to the cap by the budget reservation, not by a verdict.
    with (
        Guard(d.url, agent="gamma", session="g-1", cache="off") as guard,
        pytest.raises(ActionDenied) as refused,
    ):
        guard.check(est_cost_usd=0.01)
    assert refused.value.answer["budget"]["cap"] == "total_day_usd"
    assert d.d.verdicts.effective("gamma", "g-1") is None

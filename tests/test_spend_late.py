"""Late and replayed spans in the spend detector: never a crash, counted where they belong.

A span whose end is before yesterday (UTC) counts for its run and session only; one from
yesterday counts toward yesterday, whose cap findings are reported at `warn` (that day's
budget has reset, so nothing is stopped for it); neither inflates today's burn rate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from detectors.spend import ALL_AGENTS, SpendDetector
from tests.agents.corpus import AgentSim
from tests.conftest import DaemonThread, otel_provider
from watchdog.detection import DetectorSettings, SpendRules, StepContext
from watchdog.model import Finding, Step
from watchdog.settings import BudgetSettings

NS = 10**9
DAY_NS = 86_400 * NS
NOW_NS = 1_800_000_000 * NS + 12 * 3600 * NS  # noon UTC, far from a day boundary


def llm_step(end_ns: int, cost: float, *, trace: str = "t1", span: str = "s1") -> Step:
    return Step(
        trace_id=trace,
        span_id=span,
        parent_span_id="",
        start_time_ns=end_ns - NS,
        end_time_ns=end_ns,
        service_name="svc",
        agent_name="bot",
        session_id="sess-1",
        kind="llm",
        model="gpt-4o-mini",
        cost_usd=cost,
        price_source="genai-prices",
    )


def detector(**budgets: Any) -> SpendDetector:
    return SpendDetector(BudgetSettings.model_validate(budgets))


RULES = DetectorSettings.model_validate({})


def observe(det: SpendDetector, step: Step, now_ns: int = NOW_NS) -> list[Finding]:
    return list(det.observe(det.new_state(), step, StepContext(now_ns, RULES)))


# -- the detector on its own -----------------------------------------------------------------


def test_a_span_from_days_ago_is_the_first_step_seen() -> None:
    # The first observe trims the kept days; the old day must not be read after that
    # (this raised KeyError before: the finding of the run cap was lost with it).
    det = detector(per_run_usd=1.0, per_agent_day_usd=2.0, total_day_usd=3.0)
    findings = observe(det, llm_step(NOW_NS - 3 * DAY_NS, 1.2))
    assert [(f.rule, f.severity) for f in findings] == [("run_cap", "pause")]
    assert det.day_totals == {}  # that day is not kept: nothing re-grows


def test_an_old_span_after_today_was_seen_leaves_the_day_totals_alone() -> None:
    det = detector(per_agent_day_usd=2.0)
    observe(det, llm_step(NOW_NS - NS, 0.5, span="today"))
    assert observe(det, llm_step(NOW_NS - 5 * DAY_NS, 5.0, span="old")) == []
    today = NOW_NS // DAY_NS
    assert det.day_totals == {("bot", today): 0.5, (ALL_AGENTS, today): 0.5}


def test_a_late_span_from_yesterday_counts_for_yesterday_and_only_warns() -> None:
    det = detector(per_agent_day_usd=2.0, total_day_usd=10.0)
    observe(det, llm_step(NOW_NS - NS, 0.5, span="today"))
    late = observe(det, llm_step(NOW_NS - DAY_NS, 2.5, span="late"))
    assert [(f.rule, f.severity, f.evidence["fraction"]) for f in late] == [
        ("agent_day_cap", "warn", 1.0),  # a pause on a closed day would stop nothing useful
    ]
    assert late[0].evidence["closed_day"] is True and "that day is over" in late[0].summary
    yesterday, today = NOW_NS // DAY_NS - 1, NOW_NS // DAY_NS
    assert det.day_totals[("bot", yesterday)] == 2.5
    assert det.day_totals[("bot", today)] == 0.5  # today's cap is not touched by it
    # Today's own crossing is still enforced.
    now = observe(det, llm_step(NOW_NS, 1.6, span="today2"))
    assert [(f.rule, f.severity) for f in now if f.rule.endswith("_cap")] == [
        ("agent_day_cap", "pause")
    ]


def test_a_span_older_than_a_burn_window_does_not_count_as_spend_now() -> None:
    # $24/day → $1/h allowed. $20 spent three hours ago is outside the 1 h and 5 min
    # windows; adding it to their newest bucket made a replay look like a 14.4× burn.
    det = SpendDetector(
        BudgetSettings.model_validate({"per_agent_day_usd": 24.0}),
        SpendRules.model_validate({}),
    )
    observe(det, llm_step(NOW_NS - 60 * NS, 0.01, span="now"))
    old = observe(det, llm_step(NOW_NS - 3 * 3600 * NS, 20.0, span="old"))
    assert [f.rule for f in old if f.rule == "burn_rate"] == []
    burn = det.burn["bot"]
    assert burn.windows[3600 * NS].expire(NOW_NS) == 0.01
    assert burn.windows[6 * 3600 * NS].expire(NOW_NS) == 20.01  # inside the 6 h window


# -- through the real receiver ---------------------------------------------------------------


def test_a_replayed_span_from_days_ago_is_detected_not_crashed_on(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    d = daemon_factory(budgets={"per_run_usd": 1.0, "per_agent_day_usd": 2.0})
    old = AgentSim(otel_provider(d.url), "replayer", clock_ns=time.time_ns() - 3 * DAY_NS)
    with old.run("old task"):
        crossing = old.chat("expensive", cost_usd=1.2)  # the first step this daemon sees
    late = AgentSim(otel_provider(d.url), "replayer", clock_ns=time.time_ns() - DAY_NS)
    with late.run("yesterday's task"):
        late.chat("late", cost_usd=0.9)
        late_crossing = late.chat("late", cost_usd=0.9)  # its day: 1.8 of 2.0 = 90 %
    d.settle()
    engine = d.d.services["detectors"]
    assert engine.metrics.errors.labels("spend")._value.get() == 0
    rows = d.query(
        "SELECT trace_id, rule, severity, evidence FROM alerts WHERE detector = 'spend' "
        "ORDER BY created_at, rule"
    )
    got = [(t, r, s, json.loads(e)) for t, r, s, e in rows]
    old_run = [(r, s) for t, r, s, _ in got if t == old.trace_id]
    assert old_run == [("run_cap", "pause")]
    assert [e["span_ids"] for t, r, _, e in got if t == old.trace_id] == [[crossing]]
    day = [(r, s, e) for t, r, s, e in got if t == late.trace_id and r == "agent_day_cap"]
    assert [(r, s, e["fraction"], e.get("closed_day")) for r, s, e in day] == [
        ("agent_day_cap", "warn", 0.8, True)
    ]
    assert day[0][2]["span_ids"] == [late_crossing]

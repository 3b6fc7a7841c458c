"""Budget reservations: atomic against every cap, settled by real spend, expiring when unsettled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, DaemonProcess, http_json
from watchdog.budgets import BudgetLedger
from watchdog.model import Committed, Step
from watchdog.settings import BudgetSettings

T0 = 1_800_000_000.0  # 2027-01-15, mid-day UTC


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ledger(clock: Clock | None = None, ttl_s: float = 300, **caps: object) -> BudgetLedger:
    return BudgetLedger(
        BudgetSettings.model_validate(caps), reservation_ttl_s=ttl_s, clock=clock or Clock()
    )


def step(cost: float, *, agent: str = "a", session: str = "s", trace: str = "t", at: float = T0,
         kind: str = "llm", tool: str | None = None) -> Step:  # fmt: skip
    ns = int(at * 1e9)
    return Step(
        trace_id=trace, span_id=f"{ns:x}", parent_span_id="", start_time_ns=ns, end_time_ns=ns,
        service_name=agent, agent_name=agent, session_id=session, kind=kind,  # type: ignore[arg-type]
        cost_usd=cost, tool_name=tool,
    )  # fmt: skip


def commit(led: BudgetLedger, *steps: Step) -> None:
    led.on_commit(Committed(list(steps), len(steps), 0))


def test_fifty_cents_of_one_cent_reservations_fit_exactly() -> None:
    led = ledger(per_session_usd=0.5)
    allowed = [led.reserve("a", "s", None, 0.01).allowed for _ in range(100)]
    # Integer nano-dollars: exactly 50, not 49 (float drift) nor 51.
    assert allowed.count(True) == 50
    refused = led.reserve("a", "s", None, 0.01)
    assert not refused.allowed and refused.cap == "per_session_usd"
    assert refused.reserved_usd == 0.5 and refused.reason.startswith("budget_exceeded")
    # Another session is not affected.
    assert led.reserve("a", "s2", None, 0.01).allowed


def test_every_cap_that_applies_is_checked() -> None:
    led = ledger(per_run_usd=1.0, per_session_usd=2.0, per_agent_day_usd=3.0, total_day_usd=4.0)
    assert led.reserve("a", "s1", "t1", 1.0).allowed
    assert led.reserve("a", "s1", "t1", 0.5).cap == "per_run_usd"
    assert led.reserve("a", "s1", "t2", 1.0).allowed
    assert led.reserve("a", "s1", "t3", 0.5).cap == "per_session_usd"
    assert led.reserve("a", "s2", "t4", 1.0).allowed
    assert led.reserve("a", "s3", "t5", 0.5).cap == "per_agent_day_usd"
    assert led.reserve("b", "s4", "t6", 1.0).allowed
    assert led.reserve("c", "s5", "t7", 0.5).cap == "total_day_usd"


def test_per_agent_override_replaces_the_defaults() -> None:
    led = ledger(per_session_usd=0.1, agents={"big": {"per_session_usd": 10.0}})
    assert not led.reserve("small", "s", None, 0.2).allowed
    assert led.reserve("big", "s2", None, 5.0).allowed


def test_real_cost_settles_the_reservation() -> None:
    led = ledger(per_session_usd=1.0)
    d = led.reserve("a", "s", "t", 0.6)
    assert d.allowed and led.open_reservations == 1
    assert not led.reserve("a", "s", "t", 0.5).allowed
    commit(led, step(0.1, trace="t"))  # the call cost less than estimated
    assert led.open_reservations == 0
    assert led.spent_usd("a", "s", "t")["session"] == 0.1
    assert led.reserve("a", "s", "t", 0.9).allowed
    # Spent up to the cap: even a zero estimate is refused now.
    commit(led, step(0.9, trace="t"))
    assert not led.reserve("a", "s", "t", 0.0).allowed


def test_settlement_prefers_the_run_then_the_same_tool() -> None:
    led = ledger()
    r_other = led.reserve("a", "s", "t-other", 0.1).reservation_id
    r_llm = led.reserve("a", "s", "t", 0.1).reservation_id
    r_tool = led.reserve("a", "s", "t", 0.1, tool="search").reservation_id
    commit(led, step(0.05, trace="t", kind="tool", tool="search"))
    left = set(led._open)
    assert left == {r_other, r_llm} and r_tool not in left


def test_unsettled_reservations_expire_and_release_gives_back() -> None:
    clock = Clock()
    led = ledger(clock, ttl_s=60, per_session_usd=1.0)
    assert led.reserve("a", "s", None, 0.7).allowed
    assert not led.reserve("a", "s", None, 0.7).allowed
    clock.t += 61
    assert led.reserve("a", "s", None, 0.7).allowed  # the first one expired
    assert led.expired == 1
    d = led.reserve("a", "s2", None, 0.7)
    assert led.release(d.reservation_id or "")
    assert not led.release(d.reservation_id or "")
    assert led.reserve("a", "s2", None, 1.0).allowed


def test_day_caps_reset_at_utc_midnight() -> None:
    clock = Clock(T0)
    led = ledger(clock, total_day_usd=1.0)
    commit(led, step(1.0, at=T0))
    assert not led.reserve("a", "s9", None, 0.1).allowed
    clock.t = T0 + 86_400
    assert led.reserve("a", "s9", None, 0.1).allowed


def test_capped_agent_cannot_exceed_its_budget_with_100_concurrent_checks(tmp_path: Path) -> None:
    config = tmp_path / "watchdog.yaml"
    config.write_text(yaml.safe_dump({"budgets": {"per_session_usd": 0.5}}))
    daemon = DaemonProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "tests/agents/guard_budget_agent.py"), "--url", daemon.url,
             "--agent", "capped", "--session", "sess-1", "--n", "100", "--est", "0.01",
             "--real-cost", "0.004", "--rounds", "2"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        rounds = [json.loads(line) for line in out.stdout.splitlines()]
        # Round 1: 100 concurrent $0.01 checks against $0.50 → exactly 50 through.
        assert rounds[0] == {"round": 1, "allowed": 50, "denied": 50, "caps": ["per_session_usd"]}
        # The 50 calls really cost $0.004 each ($0.20); their spans settled the
        # reservations, so $0.30 is left: exactly 30 of the next 100 get through.
        assert rounds[1] == {"round": 2, "allowed": 30, "denied": 70, "caps": ["per_session_usd"]}
        status, rows = http_json(
            "POST", daemon.url + "/api/sql",
            {"sql": "SELECT count(*), round(sum(cost_usd), 6) FROM steps WHERE session_id = 'sess-1'"},
        )  # fmt: skip
        assert status == 200 and rows["rows"] == [[80, 0.32]]
        assert sum(r["allowed"] for r in rounds) * 0.004 <= 0.5
    finally:
        daemon.terminate()

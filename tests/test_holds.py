"""Held actions: cancelled by a person inside the window, released when nobody acts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, DaemonProcess, DaemonThread, http_json
from watchdog.guard import ActionDenied, Guard, HeldAction
from watchdog.holds import HoldRules
from watchdog.settings import EnforcementSettings
from watchdog.verdicts import Scope


def start_agent(url: str, tool: str = "send_email", agent: str = "mailer") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/agents/guard_hold_agent.py"), "--url", url,
         "--agent", agent, "--tool", tool],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_pending(url: str, timeout_s: float = 60) -> dict[str, Any]:
    """Poll the hold list until the agent's hold shows up (waiting, not asserting a time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = http_json("GET", url + "/api/v1/holds")
        assert status == 200
        if body["pending"]:
            return dict(body["pending"][0])
        time.sleep(0.05)
    raise AssertionError("no hold appeared")


def finish(agent: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = agent.communicate(timeout=120)
    assert agent.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_rules_match_tools_agents_and_arguments() -> None:
    rules = HoldRules(
        EnforcementSettings.model_validate(
            {
                "risky_tools": ["delete_*"],
                "hold_delay_s": 10,
                "hold_rules": [
                    {"tool": "send_*", "args": {"to": "*@customers.example"}, "delay_s": 120},
                    {"tool": "refund", "agent": "billing-*"},
                ],
            }
        )
    )
    assert rules.match("a", "delete_user", {}) == ("risky_tools:delete_*", 10)
    assert rules.match("a", "send_email", {"to": "x@customers.example"}) == ("hold_rules[0]", 120)
    assert rules.match("a", "send_email", {"to": "me@staff.example"}) is None
    assert rules.match("billing-eu", "refund", None) == ("hold_rules[1]", 10)
    assert rules.match("support", "refund", None) is None
    assert rules.is_risky("send_sms") and rules.is_risky("refund") and not rules.is_risky("search")


def test_person_cancels_a_held_action_inside_its_window(tmp_path: Path) -> None:
    config = tmp_path / "watchdog.yaml"
    config.write_text(
        yaml.safe_dump({"enforcement": {"risky_tools": ["send_*"], "hold_delay_s": 600}})
    )
    daemon = DaemonProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        agent = start_agent(daemon.url)
        hold = wait_for_pending(daemon.url)
        assert (hold["tool"], hold["agent"], hold["state"]) == ("send_email", "mailer", "pending")
        assert "all-customers@example.com" in hold["args"]
        cancel = subprocess.run(
            [sys.executable, "-m", "watchdog", "hold", "cancel", hold["hold_id"],
             "--reason", "wrong audience", "--url", daemon.url],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stderr
        result = finish(agent)
        assert result["outcome"] == "denied" and result["called"] is False
        assert "cancelled by cli: wrong audience" in result["reason"]
        # A second cancel is too late and says so; the decision stands.
        again = http_json("POST", daemon.url + f"/api/v1/holds/{hold['hold_id']}/cancel", {})[1]
        assert again["cancelled"] is True and again["hold"]["decided_by"] == "cli"
        rows = http_json(
            "POST", daemon.url + "/api/sql",
            {"sql": "SELECT state, decided_by, reason FROM holds"},
        )[1]["rows"]  # fmt: skip
        assert rows == [["cancelled", "cli", "wrong audience"]]
    finally:
        daemon.terminate()


def test_held_action_is_released_when_nobody_acts(tmp_path: Path) -> None:
    config = tmp_path / "watchdog.yaml"
    config.write_text(
        yaml.safe_dump({"enforcement": {"hold_rules": [{"tool": "send_email", "delay_s": 0.5}]}})
    )
    daemon = DaemonProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        result = finish(start_agent(daemon.url))
        assert result["outcome"] == "sent" and result["called"] is True
        rows = http_json(
            "POST", daemon.url + "/api/sql",
            {"sql": "SELECT state, decided_by, rule, decided_at >= release_at FROM holds"},
        )[1]["rows"]  # fmt: skip
        assert rows == [["released", "system:timer", "hold_rules[0]", True]]
    finally:
        daemon.terminate()


def test_kill_during_the_window_cancels_the_hold(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    d = daemon_factory(enforcement={"risky_tools": ["pay_*"], "hold_delay_s": 0.3})
    status, ans = http_json(
        "POST", d.url + "/api/v1/check", {"agent": "payer", "session": "s", "tool": "pay_invoice"}
    )
    assert status == 200 and ans["verdict"] == "hold" and ans["risky"] is True
    http_json("POST", d.url + "/api/v1/kill", {"session": "s", "reason": "fraud suspected"})
    got = http_json("GET", d.url + f"/api/v1/holds/{ans['hold_id']}?wait=30")[1]
    assert got["hold"]["state"] == "cancelled" and got["hold"]["decided_by"] == "system:verdict"
    assert got["verdict"] == "kill"


def test_slack_cancel_hook_cancels_by_scope(daemon_factory: Callable[..., DaemonThread]) -> None:
    d = daemon_factory(enforcement={"risky_tools": ["send_*"], "hold_delay_s": 600})
    ids = [
        http_json("POST", d.url + "/api/v1/check", {"agent": "m", "session": s, "tool": "send_x"})[
            1
        ]["hold_id"]
        for s in ("s1", "s1", "s2")
    ]
    cancel = d.d.services["cancel_holds"]
    cancelled = d.call(cancel(Scope("session", "s1"), actor="slack:U123"))
    assert sorted(h.id for h in cancelled) == sorted(ids[:2])
    assert [h.id for h in d.d.services["holds"].pending()] == [ids[2]]
    assert {h.decided_by for h in cancelled} == {"slack:U123"}


def test_hold_window_that_ended_while_down_fails_closed(
    daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    data = tmp_path / "d"
    d1 = daemon_factory(data_dir=data)
    holds = d1.d.services["holds"]
    hold = d1.call(
        holds.hold(agent="m", session="s", trace=None, tool="send_x", args={"a": 1}, rule="t",
                   delay_s=600)
    )  # fmt: skip
    d1.call(holds.stop())
    # The window ends while no daemon runs: move it into the past on disk.
    d1.call(
        d1.d.store.write(
            lambda cur: cur.execute("UPDATE holds SET release_at = release_at - INTERVAL 1 HOUR")
        )
    )
    d1.stop()
    d2 = daemon_factory(data_dir=data)
    got = http_json("GET", d2.url + f"/api/v1/holds/{hold.id}")[1]["hold"]
    assert (got["state"], got["decided_by"]) == ("cancelled", "system:restart")


def test_cancelled_hold_gives_its_budget_back(daemon_factory: Callable[..., DaemonThread]) -> None:
    d = daemon_factory(
        budgets={"per_session_usd": 0.5},
        enforcement={"risky_tools": ["order_*"], "hold_delay_s": 600},
    )
    guard = Guard(d.url, agent="buyer", session="s", timeout_s=10.0, cache="off")
    outcome: list[BaseException] = []

    def buy() -> None:
        try:
            guard.check(tool="order_parts", args={"qty": 500}, est_cost_usd=0.3)
        except ActionDenied as err:
            outcome.append(err)

    t = threading.Thread(target=buy)
    t.start()
    hold = wait_for_pending(d.url)
    http_json("POST", d.url + f"/api/v1/holds/{hold['hold_id']}/cancel", {"reason": "too many"})
    t.join(60)
    assert outcome and "cancelled by api: too many" in str(outcome[0])
    # The $0.30 reserved for the cancelled order is free again: $0.40 fits a $0.50 cap.
    assert guard.check(tool="llm", est_cost_usd=0.4).verdict == "allow"
    guard.close()


def test_on_hold_tells_the_agent_while_a_person_can_still_cancel(
    daemon_factory: Callable[..., DaemonThread], caplog: pytest.LogCaptureFixture
) -> None:
    d = daemon_factory(enforcement={"risky_tools": ["send_*"], "hold_delay_s": 600})
    guard = Guard(d.url, agent="mailer", session="s", timeout_s=10.0, cache="off")
    told: list[tuple[HeldAction, str]] = []

    def broken(held: HeldAction) -> None:
        raise RuntimeError("callback bug")

    def cancel_it(held: HeldAction) -> None:
        # Runs before the guard waits: the hold exists and is still pending.
        told.append(
            (held, http_json("GET", d.url + f"/api/v1/holds/{held.hold_id}")[1]["hold"]["state"])
        )
        http_json("POST", d.url + f"/api/v1/holds/{held.hold_id}/cancel", {"reason": "not now"})

    guard.on_hold(broken)  # a failing callback is logged; the others still run
    guard.on_hold(cancel_it)
    with pytest.raises(ActionDenied) as denied:
        guard.check(tool="send_email", args={"to": "all@customers.example"})
    guard.close()
    ((held, state_then),) = told
    assert state_then == "pending" and held.tool == "send_email"
    assert held.answer["verdict"] == "hold" and held.release_at and "send_*" in str(held.reason)
    assert "cancelled by api: not now" in str(denied.value)
    assert "on_hold callback failed" in caplog.text

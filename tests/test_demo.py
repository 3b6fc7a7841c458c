"""`watchdog demo --once`, headless: every failure mode caught and acted on, normal agents quiet.

The demo runs once per module as a subprocess with `--data-dir` in a temporary directory
(it starts its own daemon, fake LLM and five agent processes). Its printed report and its
JSON report are checked, and then — independently of the demo's own judgement — the
daemon's DuckDB file is opened read-only and the alerts, verdict changes, holds and steps
of each run are checked against what should have happened.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest
import yaml

from tests.conftest import ROOT
from watchdog.demo.fake_llm import FakeLLM, Reply
from watchdog.demo.scenarios import DEMO_CONFIG, LOOP_KILL_AT, RUN_CAP_USD, WAITLIST_SIZE
from watchdog.settings import load_settings
from watchdog.store import Store


@dataclass
class DemoRun:
    proc: subprocess.CompletedProcess[str]
    data: Path
    report: dict[str, Any]
    db: duckdb.DuckDBPyConnection

    def run(self, agent: str, phase: str, index: int = 1) -> dict[str, Any]:
        return next(
            r
            for r in self.report["runs"]
            if r["agent"] == agent and r["phase"] == phase and r["index"] == index
        )

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, list(params)).fetchall()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    data = tmp_path_factory.mktemp("demo") / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "watchdog", "demo", "--once", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env(),
    )  # fmt: skip
    report = json.loads((data / "demo-report.json").read_text())
    store = Store(data / "watchdog.duckdb", read_only=True)
    store.open()
    try:
        yield DemoRun(proc, data, report, store.con)
    finally:
        store.close()


def test_demo_once_exits_0_and_reports_every_failure_caught(demo: DemoRun) -> None:
    out = demo.proc.stdout
    assert demo.proc.returncode == 0, out + demo.proc.stderr
    for mode in ("LOOP", "DRIFT", "CONTEXT", "SPEND"):
        assert f"[caught] {mode}" in out, out
    assert "[quiet] QUIET" in out and "MISSED" not in out
    assert "demo result: PASS - 4 of 4 failure modes caught; normal runs quiet" in out
    # It says where to look: three `watchdog sql` commands, which run as printed.
    commands = [shlex.split(line) for line in out.splitlines() if "watchdog sql --data-dir" in line]
    assert len(commands) == 3
    for argv in commands:
        assert argv[:3] == ["watchdog", "sql", "--data-dir"]
        ran = subprocess.run(
            [sys.executable, "-m", "watchdog", *argv[1:], "--format", "json"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env(),
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout), argv
    assert demo.report["ok"] is True
    assert [c["mode"] for c in demo.report["checks"]] == [
        "loop",
        "drift",
        "context",
        "spend",
        "quiet",
    ]


def test_loop_agent_is_killed_by_the_loop_detector_and_halted_by_its_guard(demo: DemoRun) -> None:
    run = demo.run("invoice-bot", "failure")
    assert run["end"]["outcome"] == "halted" and run["end"]["verdict"] == "kill", run["end"]
    alerts = demo.rows(
        "SELECT detector, rule, severity FROM alerts WHERE trace_id = ?", run["trace"]
    )
    assert ("loop", "repeat_error", "kill") in alerts
    sets = demo.rows(
        "SELECT state, actor, scope_type FROM verdict_audit WHERE action = 'set' AND scope_value = ?",
        run["session"],
    )
    assert ("kill", "detector:loop.repeat_error", "session") in sets
    calls = demo.rows(
        "SELECT count(*) FROM steps WHERE trace_id = ? AND tool_name = 'fetch_invoice' AND is_error",
        run["trace"],
    )[0][0]
    # It ran up to the kill rung, and stopped long before the model's twelve retries.
    assert LOOP_KILL_AT <= calls < 12


def test_drifting_agent_is_flagged_and_paused_before_publishing(demo: DemoRun) -> None:
    run = demo.run("research-bot", "failure")
    assert run["end"]["outcome"] == "halted" and run["end"]["verdict"] == "pause", run["end"]
    alerts = demo.rows(
        "SELECT detector, rule, evidence->>'tool' FROM alerts WHERE trace_id = ?", run["trace"]
    )
    assert ("drift", "intent_action", "update_page") in alerts
    sets = demo.rows(
        "SELECT state, actor FROM verdict_audit WHERE action = 'set' AND scope_value = ?",
        run["session"],
    )
    assert ("pause", "detector:drift.intent_action") in sets
    tools = [r[0] for r in demo.rows(
        "SELECT tool_name FROM steps WHERE trace_id = ? AND kind = 'tool' ORDER BY start_time",
        run["trace"],
    )]  # fmt: skip
    assert "publish_page" not in tools
    assert 1 <= tools.count("update_page") < 6


def test_wrong_price_email_is_held_before_sending_and_cancelled(demo: DemoRun) -> None:
    run = demo.run("email-agent", "failure")
    assert run["end"]["outcome"] == "finished" and run["end"]["emails_sent"] == 0
    holds = demo.rows(
        "SELECT tool_name, state, decided_by, rule, tool_args FROM holds WHERE session_id = ?",
        run["session"],
    )
    assert len(holds) == 1
    tool, state, decided_by, rule, args = holds[0]
    assert (tool, state, decided_by) == ("send_email", "cancelled", "api")
    assert rule.split(".")[0] in ("context", "rule")  # held for a detector's finding
    assert "customer001@example.com" in args and "$39" in args
    # The check's findings, as the agent received them with the hold.
    check = next(c for c in demo.report["checks"] if c["mode"] == "context")
    found = " ".join(check["found"])
    assert "context.ungrounded_figure" in found
    assert "rule.bulk_send_over_50" in found or "context.fan_out_recipients" in found
    # The email never went out: no send_email step in the run; each normal reply sent one.
    sent = demo.rows(
        "SELECT count(*) FROM steps WHERE trace_id = ? AND tool_name = 'send_email'", run["trace"]
    )[0][0]
    assert sent == 0
    for i in (1, 2, 3):
        normal = demo.run("email-agent", "normal", i)
        assert normal["end"]["emails_sent"] == 1
    assert WAITLIST_SIZE == 200


def test_runaway_spend_is_stopped_by_the_run_cap(demo: DemoRun) -> None:
    run = demo.run("report-bot", "failure")
    end = run["end"]
    assert end["outcome"] == "stopped" and end["budget"]["cap"] == "per_run_usd", end
    cost, calls, unpriced = demo.rows(
        "SELECT sum(cost_usd), count(*), count(*) FILTER (WHERE price_source = 'unpriced') "
        "FROM steps WHERE trace_id = ? AND kind = 'llm'",
        run["trace"],
    )[0]
    assert unpriced == 0 and calls >= 3
    assert RUN_CAP_USD / 2 < cost <= RUN_CAP_USD  # it did run up, and never past the cap
    rules = demo.rows("SELECT rule, severity FROM alerts WHERE trace_id = ?", run["trace"])
    assert ("run_cap", "warn") in rules


def test_normal_agents_raise_nothing(demo: DemoRun) -> None:
    normal = [r for r in demo.report["runs"] if r["role"] == "normal"]
    assert {(r["agent"], len([n for n in normal if n["agent"] == r["agent"]])) for r in normal} == {
        ("faq-bot", 2), ("research-bot", 5), ("email-agent", 3),
    }  # fmt: skip
    scopes = [r["session"] for r in normal] + [r["trace"] for r in normal]
    marks = ", ".join("?" * len(scopes))
    assert demo.rows(
        f"SELECT rule, summary FROM alerts WHERE session_id IN ({marks}) OR trace_id IN ({marks}) "
        "OR agent_name = 'faq-bot'",
        *scopes, *scopes,
    ) == []  # fmt: skip
    assert demo.rows(f"SELECT * FROM verdict_audit WHERE scope_value IN ({marks})", *scopes) == []
    assert demo.rows(f"SELECT * FROM holds WHERE session_id IN ({marks})", *scopes) == []
    assert all(r["end"]["outcome"] == "finished" for r in normal)
    # They did real work: every model call is in the store, priced.
    priced = demo.rows(
        f"SELECT count(*), count(cost_usd) FROM steps WHERE kind = 'llm' AND session_id IN ({marks})",
        *scopes,
    )[0]
    assert priced[0] == priced[1] > 20


def test_demo_settings_are_valid_settings(tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "watchdog", "demo", "--print-config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env(),
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout == DEMO_CONFIG
    config.write_text(out.stdout)
    settings = load_settings(config)
    assert settings.budgets.caps_for("report-bot").per_run_usd == RUN_CAP_USD
    assert settings.detectors.loop.repeat_error.kill == LOOP_KILL_AT
    assert yaml.safe_load(out.stdout)["enforcement"]["policy"]["rules"]["drift.intent_action"]


def test_demo_without_its_extra_names_the_install_command() -> None:
    # The agents' instrumentation missing: the demo says what to install instead of failing.
    code = (
        "import sys; sys.modules['openinference.instrumentation.openai'] = None; "
        "from watchdog.cli import main; sys.exit(main(['demo', '--once']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=_env(),
    )  # fmt: skip
    assert out.returncode == 2
    assert "pip install 'agent-watchdog[demo]'" in out.stderr
    assert "openinference-instrumentation-openai" in out.stderr


def test_fake_llm_serves_each_keys_script_and_bills_the_context() -> None:
    llm = FakeLLM().start()
    try:
        llm.script("a", [Reply.call("lookup_price", {"plan": "Pro"}), Reply.say("It is $49.")])
        llm.script("b", [Reply.say("Hello.")])
        a = openai.OpenAI(base_url=llm.base_url, api_key="a", max_retries=0)
        b = openai.OpenAI(base_url=llm.base_url, api_key="b", max_retries=0)
        short = [{"role": "user", "content": "price?"}]
        first = a.chat.completions.create(model="gpt-4o-mini", messages=short)  # type: ignore[arg-type]
        call = first.choices[0].message.tool_calls
        assert call is not None and call[0].function.name == "lookup_price"  # type: ignore[union-attr]
        assert (
            b.chat.completions.create(model="gpt-4o-mini", messages=short)
            .choices[0]
            .message.content
            == "Hello."
        )  # type: ignore[arg-type]
        long = [{"role": "user", "content": "x" * 4000}]
        second = a.chat.completions.create(model="gpt-4o-mini", messages=long)  # type: ignore[arg-type]
        assert second.choices[0].message.content == "It is $49."
        assert first.usage is not None and second.usage is not None
        assert second.usage.prompt_tokens > first.usage.prompt_tokens + 900  # ~chars / 4
        # A used-up script answers the done text, without tool calls.
        third = a.chat.completions.create(model="gpt-4o-mini", messages=short)  # type: ignore[arg-type]
        assert (
            third.choices[0].message.content == "Done." and not third.choices[0].message.tool_calls
        )
        assert llm.calls("a") == 3 and llm.calls("b") == 1
    finally:
        llm.stop()
        llm.stop()  # idempotent

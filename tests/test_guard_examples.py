"""The two examples run for real: a plain agent and an OpenAI Agents SDK agent, each against a
watchdog subprocess and a local fake of OpenAI's chat-completions API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, DaemonProcess, http_json
from tests.fakes.llm import FakeLLM, Reply


def start(tmp_path: Path, config: dict[str, Any]) -> DaemonProcess:
    path = tmp_path / "watchdog.yaml"
    path.write_text(yaml.safe_dump(config))
    return DaemonProcess(tmp_path / "data", "--config", str(path)).start()


def example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def rows(url: str, sql: str) -> list[list[Any]]:
    return list(http_json("POST", url + "/api/sql", {"sql": sql})[1]["rows"])


def test_plain_agent_example_holds_then_sends(tmp_path: Path) -> None:
    d = start(tmp_path, {"enforcement": {"risky_tools": ["send_*"], "hold_delay_s": 0.3}})
    try:
        with FakeLLM() as llm:
            llm.enqueue(
                Reply.tool_call("get_order_status", {"order_id": "A-1017"}),
                Reply.tool_call("send_email", {"to": "c-42@example.com", "body": "Shipped!"}),
                Reply.text("Done: the customer knows."),
            )
            out = example(
                "plain_agent.py", "--watchdog", d.url, "--base-url", llm.base_url,
                "--session", "plain-1", "--sync-export",
            )  # fmt: skip
        assert "email to c-42@example.com" in out and "agent: Done" in out
        assert "run finished; 5 steps" in out  # 3 model calls + 2 tools, all checked
        assert rows(d.url, "SELECT tool_name, state, decided_by FROM holds") == [
            ["send_email", "released", "system:timer"]
        ]
        kinds = rows(
            d.url,
            "SELECT kind, count(*) FROM steps WHERE session_id = 'plain-1' GROUP BY 1 ORDER BY 1",
        )
        assert kinds == [["agent", 1], ["llm", 3], ["tool", 2]]
    finally:
        d.terminate()


def test_openai_agents_sdk_example_is_stopped_by_the_loop_detector(tmp_path: Path) -> None:
    pytest.importorskip("agents")
    # Its tool results are captured, so `repeat_same_result` is the rule that fires; both
    # ladders skip the pause rung so the run goes warn → kill without a person.
    ladder = {"warn": 2, "pause": None, "kill": 4}
    d = start(tmp_path, {"detectors": {"loop": {"repeat": ladder, "repeat_same_result": ladder}}})
    try:
        # A model stuck on one tool call: the Agents SDK would run it up to max_turns.
        with FakeLLM(default=Reply.tool_call("get_order_status", {"order_id": "A-1017"})) as llm:
            out = example(
                "openai_agents_sdk.py", "--base-url", llm.base_url,
                env={"WATCHDOG_URL": d.url, "SESSION_ID": "sdk-1"},
            )  # fmt: skip
        assert "halted by watchdog" in out, out
        verdict = rows(d.url, "SELECT state, set_by FROM verdicts WHERE scope_value = 'sdk-1'")
        assert verdict[0][0] == "kill" and verdict[0][1].startswith("detector:loop.repeat")
        tools = rows(
            d.url, "SELECT count(*) FROM steps WHERE session_id = 'sdk-1' AND kind = 'tool'"
        )[0][0]
        assert 4 <= tools < 50  # stopped well before max_turns
        # A restarted run on the killed session stops before its first model call.
        with FakeLLM() as llm:
            out = example(
                "openai_agents_sdk.py", "--base-url", llm.base_url,
                env={"WATCHDOG_URL": d.url, "SESSION_ID": "sdk-1"},
            )  # fmt: skip
            assert llm.requests == []
        assert "halted by watchdog before starting" in out
    finally:
        d.terminate()

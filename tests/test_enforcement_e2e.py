"""End to end in subprocesses: a looping agent is stopped by the loop detector through its guard;
a kill survives a daemon restart; resume is audited; an unauthenticated kill is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, DaemonProcess, http_json
from tests.test_guard_api import SseReader
from watchdog.guard import AgentHalted, Guard

LOOP_CONFIG = {
    # The loop ladder without its pause rung, so the run goes warn → kill on its own.
    "detectors": {"loop": {"repeat": {"warn": 3, "pause": None, "kill": 5}}},
}


def sql(url: str, query: str, token: str | None = None) -> list[list[Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body = http_json("POST", url + "/api/sql", {"sql": query}, headers)
    assert status == 200 and body["ok"], body
    return list(body["rows"])


def run_agent(url: str, session: str, *extra: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests/agents/looping_agent.py"), "--url", url,
         "--agent", "support-bot", "--session", session, *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def loop_daemon(tmp_path: Path) -> Any:
    config = tmp_path / "watchdog.yaml"
    config.write_text(yaml.safe_dump(LOOP_CONFIG))
    d = DaemonProcess(tmp_path / "data", "--config", str(config)).start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.terminate()


def test_looping_agent_is_stopped_by_the_loop_detector_through_its_guard(loop_daemon: Any) -> None:
    url = loop_daemon.url
    # Watch the verdict stream from outside, to learn the kill's sequence number.
    sse = SseReader(url)
    assert sse.next_event()[0] == "snapshot"
    changes: list[dict[str, Any]] = []

    def watch() -> None:
        try:
            while True:
                _, data, _ = sse.next_event()
                changes.append(data)
                if data["verdict"] == "kill":
                    return
        except (OSError, ValueError):
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    lines = run_agent(url, "conv-loop")
    steps, last = lines[:-1], lines[-1]
    watcher.join(30)
    sse.close()

    # The agent was halted by a kill that the loop detector set through the policy.
    assert last["halted"] is True and last["verdict"] == "kill", last
    assert last["steps"] == len(steps) >= 5  # it looped at least up to the kill rung
    kills = [c for c in changes if c["verdict"] == "kill"]
    assert len(kills) == 1
    kill = kills[0]
    assert kill["actor"] == "detector:loop.repeat" and kill["alert_id"]
    assert kill["scope"] == {"type": "session", "value": "conv-loop"}
    # No step after the kill verdict: every step the agent executed was allowed by an
    # answer given before the kill existed (its sequence number is below the kill's).
    assert all(s["seq"] < kill["seq"] for s in steps), (steps, kill["seq"])
    # What the agent did is exactly what watchdog stored: no step slipped past the guard.
    stored = sql(
        url, "SELECT count(*) FROM steps WHERE kind = 'tool' AND session_id = 'conv-loop'"
    )[0][0]
    assert stored == len(steps)
    alert = sql(url, f"SELECT detector, rule, severity FROM alerts WHERE id = '{kill['alert_id']}'")
    assert alert == [["loop", "repeat", "kill"]]
    audit = sql(
        url,
        "SELECT action, state, actor, alert_id FROM verdict_audit "
        "WHERE scope_value = 'conv-loop' ORDER BY changed_at",
    )
    assert audit[-1] == ["set", "kill", "detector:loop.repeat", kill["alert_id"]]
    assert audit[0][:3] == ["set", "warn", "detector:loop.repeat"]

    # The kill is sticky: the agent restarted on the same session stops before any step.
    again = run_agent(url, "conv-loop")
    assert again == [{**again[0], "halted": True, "steps": 0}] and again[0]["verdict"] == "kill"
    assert sql(url, "SELECT count(*) FROM steps WHERE kind = 'tool' AND session_id = 'conv-loop'")[
        0
    ][0] == len(steps)


def test_kill_survives_restart_resume_is_audited_and_unauthenticated_kill_is_refused(
    tmp_path: Path,
) -> None:
    token = "e2e-token-123"
    env = {"WATCHDOG_API_TOKEN": token}
    data = tmp_path / "data"
    d = DaemonProcess(data, env=env).start()
    try:
        # No token: refused, nothing set.
        status, body = http_json("POST", d.url + "/api/v1/kill", {"agent": "support-bot"})
        assert status == 401 and token not in json.dumps(body)
        refused = cli("kill", "--agent", "support-bot", "--url", d.url)
        assert refused.returncode == 1 and "bearer token" in refused.stderr
        assert sql(d.url, "SELECT count(*) FROM verdict_audit", token) == [[0]]
        # With the token (read from WATCHDOG_API_TOKEN, like a deployment would).
        ok = cli(
            "kill", "--agent", "support-bot", "--reason", "runaway spend", "--url", d.url, env=env
        )
        assert ok.returncode == 0, ok.stderr
    finally:
        assert d.terminate() == 0

    d2 = DaemonProcess(data, env=env).start()
    try:
        status = cli("status", "--json", "--url", d2.url, env=env)
        verdicts = json.loads(status.stdout)["verdicts"]
        assert [(v["verdict"], v["scope"]["value"], v["actor"]) for v in verdicts] == [
            ("kill", "support-bot", "cli")
        ]
        guard = Guard(d2.url, agent="support-bot", session="any", token=token, timeout_s=10.0)
        with pytest.raises(AgentHalted) as err:
            guard.check(tool="search")
        assert "runaway spend" in err.value.reason
        resumed = cli(
            "resume",
            "--agent",
            "support-bot",
            "--reason",
            "budget raised",
            "--url",
            d2.url,
            env=env,
        )
        assert resumed.returncode == 0 and "was kill" in resumed.stdout
        assert guard.check(tool="search").verdict == "allow"
        guard.close()
        audit = sql(
            d2.url,
            "SELECT action, state, actor, reason FROM verdict_audit ORDER BY changed_at",
            token,
        )
        assert audit == [
            ["set", "kill", "cli", "runaway spend"],
            ["clear", "kill", "cli", "budget raised"],
        ]
    finally:
        d2.terminate()

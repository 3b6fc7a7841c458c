"""The guard API, the alert policy and the push actuators against a real daemon on a free port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, DaemonThread, http_json
from watchdog.alertstore import AlertEvent
from watchdog.guard import verify_signature
from watchdog.model import Finding


def post(d: DaemonThread, path: str, payload: Any, **headers: str) -> tuple[int, Any]:
    return http_json("POST", d.url + path, payload, headers)


def finding(severity: str, rule: str = "repeat", session: str = "s1", **kw: Any) -> Finding:
    return Finding(
        detector="loop",
        rule=rule,
        severity=severity,  # type: ignore[arg-type]
        summary=f"{rule} x{severity}",
        agent_name="bot",
        session_id=session,
        trace_id="t" * 32,
        key="k",
        **kw,
    )


class SseReader:
    """A plain http.client reader of the verdict stream, for asserting what it sends."""

    def __init__(self, url: str, query: str = "") -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        self.conn.request("GET", "/api/v1/verdicts/stream" + query)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type", "").startswith("text/event-stream")

    def next_event(self) -> tuple[str, dict[str, Any], str]:
        event, data, ident = "message", "", ""
        while True:
            line = self.resp.readline().decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if not line:
                if data:
                    return event, json.loads(data), ident
                continue
            key, _, value = line.partition(": ")
            if key == "event":
                event = value
            elif key == "data":
                data = value
            elif key == "id":
                ident = value

    def close(self) -> None:
        self.conn.close()


# -- guard API -------------------------------------------------------------------------
def test_check_follows_the_verdict_of_the_strongest_scope(daemon: DaemonThread) -> None:
    body = {"agent": "bot", "session": "s1", "tool": "search", "args": {"q": "x"}}
    status, ans = post(daemon, "/api/v1/check", body)
    assert status == 200
    assert ans["verdict"] == "allow" and ans["scope"] is None and ans["reason"] is None
    daemon.call(daemon.d.verdicts.set(("agent", "bot"), "warn", actor="cli", reason="watch it"))
    assert post(daemon, "/api/v1/check", body)[1]["verdict"] == "warn"
    daemon.call(daemon.d.verdicts.set(("session", "s1"), "deny", actor="cli", reason="no"))
    ans = post(daemon, "/api/v1/check", body)[1]
    assert (ans["verdict"], ans["scope"]) == ("deny", {"type": "session", "value": "s1"})
    # Another session of the same agent only sees the agent's warn.
    other = post(daemon, "/api/v1/check", {**body, "session": "s2"})[1]
    assert other["verdict"] == "warn"
    status, v = http_json("GET", daemon.url + "/api/v1/verdict?agent=bot&session=s1")
    assert status == 200 and v["verdict"] == "deny" and v["alert_id"] is None


def test_kill_and_resume_are_audited_with_actor_and_reason(daemon: DaemonThread) -> None:
    status, ans = post(
        daemon, "/api/v1/kill", {"agent": "bot", "reason": "runaway", "actor": "cli"}
    )
    assert status == 200 and ans["ok"] and ans["verdict"] == "kill"
    assert post(daemon, "/api/v1/check", {"agent": "bot"})[1]["verdict"] == "kill"
    status, ans = post(daemon, "/api/v1/resume", {"agent": "bot", "reason": "prompt fixed"})
    assert status == 200 and ans["cleared"]["verdict"] == "kill"
    assert post(daemon, "/api/v1/check", {"agent": "bot"})[1]["verdict"] == "allow"
    rows = daemon.query(
        "SELECT action, state, actor, reason FROM verdict_audit ORDER BY changed_at"
    )
    assert rows == [("set", "kill", "cli", "runaway"), ("clear", "kill", "api", "prompt fixed")]
    # Resuming what is not there is harmless and says so.
    assert post(daemon, "/api/v1/resume", {"agent": "bot"})[1]["cleared"] is None


@pytest.mark.parametrize(
    ("path", "payload", "needle"),
    [
        ("/api/v1/check", {"session": "s"}, "agent"),
        ("/api/v1/check", {"agent": "a", "est_cost_usd": -1}, "est_cost_usd"),
        ("/api/v1/check", {"agent": "a", "args": [1, 2]}, "args"),
        ("/api/v1/check", ["not", "an", "object"], "(body)"),
        ("/api/v1/kill", {"agent": "a", "session": "b"}, "exactly one"),
        ("/api/v1/kill", {"reason": "who?"}, "exactly one"),
        ("/api/v1/pause", {"agent": "a", "ttl_s": -5}, "ttl_s"),
    ],
)
def test_bad_bodies_get_400_and_change_nothing(
    daemon: DaemonThread, path: str, payload: Any, needle: str
) -> None:
    status, ans = post(daemon, path, payload)
    assert status == 400 and not ans["ok"] and needle in ans["error"]
    assert daemon.query("SELECT count(*) FROM verdict_audit") == [(0,)]


def test_malformed_json_gets_400(daemon: DaemonThread) -> None:
    parts = urllib.parse.urlsplit(daemon.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(
        "POST", "/api/v1/check", body=b"{nope", headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    assert resp.status == 400 and b"JSON" in resp.read()


def test_unauthenticated_kill_is_refused_when_a_token_is_set(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    d = daemon_factory(api_token="s3cret-token")
    payload = {"agent": "bot", "reason": "x"}
    status, ans = post(d, "/api/v1/kill", payload)
    assert status == 401 and "s3cret" not in json.dumps(ans)
    assert post(d, "/api/v1/kill", payload, Authorization="Bearer wrong")[0] == 401
    assert d.d.verdicts.effective("bot") is None
    assert d.query("SELECT count(*) FROM verdict_audit") == [(0,)]
    status, ans = post(d, "/api/v1/kill", payload, Authorization="Bearer s3cret-token")
    assert status == 200 and d.d.verdicts.effective("bot").state == "kill"  # type: ignore[union-attr]


def test_stream_sends_a_snapshot_then_every_change(daemon: DaemonThread) -> None:
    daemon.call(daemon.d.verdicts.set(("agent", "old"), "kill", actor="cli", reason="before"))
    sse = SseReader(daemon.url)
    try:
        event, data, ident = sse.next_event()
        assert event == "snapshot" and ident == "1"
        assert [v["scope"]["value"] for v in data["verdicts"]] == ["old"]
        post(daemon, "/api/v1/pause", {"session": "s9", "reason": "look", "ttl_s": 30})
        event, data, ident = sse.next_event()
        assert (event, ident, data["action"], data["verdict"]) == ("verdict", "2", "set", "pause")
        assert data["verdict_detail"]["expires_at"] is not None
        post(daemon, "/api/v1/resume", {"session": "s9"})
        event, data, _ = sse.next_event()
        assert (data["action"], data["verdict"], data["previous"]) == ("clear", "allow", "pause")
    finally:
        sse.close()


def test_stream_filter_only_sends_the_scopes_asked_for(daemon: DaemonThread) -> None:
    sse = SseReader(daemon.url, "?agent=mine")
    try:
        assert sse.next_event()[0] == "snapshot"
        post(daemon, "/api/v1/kill", {"agent": "theirs"})
        post(daemon, "/api/v1/kill", {"agent": "mine"})
        _, data, _ = sse.next_event()
        assert data["scope"] == {"type": "agent", "value": "mine"}
    finally:
        sse.close()


def test_stream_closes_when_the_daemon_stops(daemon_factory: Callable[..., DaemonThread]) -> None:
    d = daemon_factory()
    sse = SseReader(d.url)
    assert sse.next_event()[0] == "snapshot"
    d.stop()
    assert sse.resp.read() == b""  # the server ended the stream instead of hanging


# -- policy ----------------------------------------------------------------------------
def record(d: DaemonThread, *findings: Finding) -> list[AlertEvent]:
    """Record findings, then wait until every alert listener (the policy) handled them."""
    events = d.call(d.d.alerts.record(list(findings)))
    d.call(d.d.alerts.settle())
    return events


def test_policy_default_maps_severity_to_verdict_on_the_session(daemon: DaemonThread) -> None:
    vs = daemon.d.verdicts
    record(daemon, finding("info"))
    assert vs.effective("bot", "s1") is None
    record(daemon, finding("warn"))
    v = vs.effective("bot", "s1")
    assert v is not None and (v.state, v.scope.type, v.actor) == (
        "warn",
        "session",
        "detector:loop.repeat",
    )
    events = record(daemon, finding("kill"))
    assert events[0].change == "escalated"
    v = vs.effective("bot", "s1")
    assert v is not None and v.state == "kill" and v.alert_id == events[0].alert.id
    # The same alert re-asserted (`repeat`) sets nothing new.
    audited = daemon.query("SELECT count(*) FROM verdict_audit")
    assert record(daemon, finding("kill"))[0].change == "repeat"
    assert daemon.query("SELECT count(*) FROM verdict_audit") == audited == [(2,)]


def test_policy_rule_overrides_and_dry_run(daemon_factory: Callable[..., DaemonThread]) -> None:
    d = daemon_factory(
        enforcement={
            "policy": {
                "rules": {
                    "loop.repeat": {"dry_run": True},
                    "ping_pong": {"action": "pause", "scope": "agent", "ttl_s": 60},
                }
            }
        }
    )
    record(d, finding("kill"))
    assert d.d.verdicts.effective("bot", "s1") is None
    assert d.query("SELECT action, state, actor FROM verdict_audit") == [
        ("dry-run", "kill", "detector:loop.repeat")
    ]
    record(d, finding("warn", rule="ping_pong"))
    v = d.d.verdicts.effective("bot", "s1")
    assert v is not None and (v.state, v.scope.type, v.scope.value) == ("pause", "agent", "bot")
    assert v.expires_at is not None and (v.expires_at - v.set_at).total_seconds() == 60


def test_resolved_alert_clears_its_warn(daemon: DaemonThread) -> None:
    events = record(daemon, finding("warn"))
    assert daemon.d.verdicts.effective("bot", "s1") is not None
    daemon.call(daemon.d.alerts.resolve(events[0].alert.id))
    daemon.call(daemon.d.alerts.settle())
    assert daemon.d.verdicts.effective("bot", "s1") is None
    actions = daemon.query("SELECT action, actor, reason FROM verdict_audit ORDER BY changed_at")
    assert actions[-1] == ("clear", "detector:loop.repeat", "alert resolved")


# -- CLI -------------------------------------------------------------------------------
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_cli_kill_status_resume(daemon: DaemonThread) -> None:
    out = run_cli("kill", "--session", "s7", "--reason", "looping", "--url", daemon.url)
    assert out.returncode == 0, out.stderr
    assert "killed session s7" in out.stdout
    status = run_cli("status", "--url", daemon.url)
    assert status.returncode == 0 and "kill  session=s7  by cli" in status.stdout
    out = run_cli("resume", "--session", "s7", "--reason", "fixed", "--url", daemon.url)
    assert out.returncode == 0 and "was kill" in out.stdout
    assert daemon.query("SELECT action, actor, reason FROM verdict_audit ORDER BY changed_at") == [
        ("set", "cli", "looping"),
        ("clear", "cli", "fixed"),
    ]
    as_json = json.loads(run_cli("status", "--json", "--url", daemon.url).stdout)
    assert as_json["verdicts"] == [] and len(as_json["audit"]) == 2


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (
            "enforcement:\n  policy:\n    rules:\n      loop.repaet: {dry_run: true}\n",
            "enforcement.policy.rules.loop.repaet: loop has no rule 'repaet'",
        ),
        (
            "enforcement:\n  webhook:\n    url: http://127.0.0.1:9/c\n",
            "enforcement.webhook: Value error, secret is required",
        ),
        ("enforcement:\n  signal:\n    enabled: true\n", "enforcement.signal"),
        ("enforcement:\n  hold_delay_s: -1\n", "enforcement.hold_delay_s"),
        ("enforcement:\n  risky_tool: [x]\n", "enforcement.risky_tool"),
    ],
)
def test_check_config_names_the_bad_enforcement_field(
    tmp_path: Path, config: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    out = run_cli("check-config", "--config", str(path))
    assert out.returncode == 2 and needle in out.stderr, out.stderr


def test_check_config_accepts_a_full_enforcement_section(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(
        "enforcement:\n  risky_tools: [send_*]\n  hold_rules: [{tool: refund, delay_s: 60}]\n"
        "  policy: {rules: {loop.repeat: {dry_run: true}, my_rule: {action: deny}}}\n"
        "  webhook: {url: 'http://127.0.0.1:9/c', secret: s}\n"
        "  signal: {enabled: true, pid: 4242}\n"
    )
    out = run_cli("check-config", "--config", str(path))
    assert out.returncode == 0 and "config ok" in out.stdout, out.stderr
    assert "s\n" not in out.stdout  # the secret is not echoed


def test_cli_says_when_nothing_answers() -> None:
    out = run_cli("kill", "--agent", "a", "--url", "http://127.0.0.1:9")
    assert out.returncode == 2 and "no watchdog answers" in out.stderr


# -- push: webhook and signal ----------------------------------------------------------
class ControlEndpoint:
    """An agent's control URL: records signed POSTs; answers 503 to the first `fail` ones."""

    def __init__(self, fail: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail = fail
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.arrived:
                    outer.received.append((dict(self.headers), body))
                    failing = len(outer.received) <= outer.fail
                    outer.arrived.notify_all()
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/control"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout_s: float = 30) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= n, timeout_s)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def control() -> Iterator[ControlEndpoint]:
    c = ControlEndpoint(fail=2)
    yield c
    c.close()


def test_webhook_is_signed_and_retried(
    daemon_factory: Callable[..., DaemonThread], control: ControlEndpoint
) -> None:
    d = daemon_factory(
        enforcement={
            "webhook": {
                "url": "http://127.0.0.1:9/nobody",
                "agents": {"bot": control.url},
                "secret": "whsec-test",
                "backoff_initial_s": 0.05,
            }
        }
    )
    post(d, "/api/v1/kill", {"agent": "bot", "reason": "runaway"})
    control.wait_for(3)  # two 503s, then delivered
    headers, body = control.received[-1]
    assert headers["X-Watchdog-Attempt"] == "3"
    assert verify_signature(
        "whsec-test", body, headers["X-Watchdog-Timestamp"], headers["X-Watchdog-Signature"]
    )
    assert not verify_signature(
        "other-secret", body, headers["X-Watchdog-Timestamp"], headers["X-Watchdog-Signature"]
    )
    payload = json.loads(body)
    assert (payload["verdict"], payload["agent"], payload["reason"]) == ("kill", "bot", "runaway")
    assert payload["scope"] == {"type": "agent", "value": "bot"}
    # Every attempt carried the same signed body.
    assert len({b for _, b in control.received}) == 1


def test_signal_actuator_stops_and_continues_a_process(
    daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        pid_file = tmp_path / "agent.pid"
        pid_file.write_text(str(victim.pid))
        d = daemon_factory(enforcement={"signal": {"enabled": True, "pid_file": str(pid_file)}})

        def reaches(states: str) -> bool:
            # Signal delivery is asynchronous: wait for the state rather than read it once.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = Path(f"/proc/{victim.pid}/stat").read_text().split(") ")[1][0]
                if state in states:
                    return True
                time.sleep(0.01)
            return False

        post(d, "/api/v1/pause", {"agent": "bot", "reason": "freeze"})
        assert reaches("T")  # stopped by SIGSTOP
        post(d, "/api/v1/resume", {"agent": "bot", "reason": "thaw"})
        assert reaches("SR")  # continued by SIGCONT
        post(d, "/api/v1/kill", {"agent": "bot", "reason": "stop"})
        assert victim.wait(30) == -signal.SIGTERM
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_signal_actuator_is_off_by_default_and_maps_changes_to_signals() -> None:
    from datetime import datetime

    from alerts.actuators import AgentIndex, SignalActuator
    from watchdog.settings import SignalActuatorSettings
    from watchdog.verdicts import Scope, Verdict, VerdictChange

    scope = Scope("agent", "bot")
    now = datetime(2027, 1, 1)

    def change(new: str | None, old: str | None) -> VerdictChange:
        v = Verdict(scope, new, "r", "cli", now) if new else None  # type: ignore[arg-type]
        p = Verdict(scope, old, "r", "cli", now) if old else None  # type: ignore[arg-type]
        return VerdictChange(1, "set" if new else "clear", scope, v, p, "cli", "r", None, now)

    off = SignalActuator(SignalActuatorSettings(), AgentIndex())
    off.on_verdict(change("kill", None))
    assert off.sent == []  # disabled: nothing sent, whatever the change
    armed = SignalActuator(
        SignalActuatorSettings(enabled=True, pid=4242, agents=["other"]), AgentIndex()
    )
    assert armed.signal_for(change("kill", "warn")) == "SIGTERM"
    assert armed.signal_for(change("pause", None)) == "SIGSTOP"
    assert armed.signal_for(change(None, "pause")) == "SIGCONT"
    assert armed.signal_for(change("warn", "pause")) == "SIGCONT"
    assert armed.signal_for(change("kill", "kill")) is None
    assert armed.signal_for(change("warn", None)) is None
    armed.on_verdict(change("kill", None))
    assert armed.sent == []  # a verdict on an agent it was not configured for

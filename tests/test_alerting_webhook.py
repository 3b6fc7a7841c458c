"""The generic webhook receiver: HMAC-signed JSON, retries, routing by labels."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import DaemonThread
from watchdog.model import Finding

SECRET = "whsec-test-5f4dcc3b5aa765d6"
LOOP = Finding(
    detector="loop",
    rule="repeat",
    severity="warn",
    summary="looping",
    agent_name="bot",
    session_id="s1",
    trace_id="t1",
    key="k",
)


class Hook:
    """A local HTTP endpoint standing in for a team's alert webhook."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append((self.path, dict(self.headers), body))
                status, headers = hook.answers.pop(0) if hook.answers else (200, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/team-a"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, _, b in self.received]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()


def hook_settings(hook: Hook, **alerting: Any) -> dict[str, Any]:
    return {
        "alerting": {
            "group_wait_s": 0,
            "group_interval_s": 0,
            "retry_initial_s": 0.05,
            "receivers": [{"name": "team-hook", "webhook": {"url": hook.url, "secret": SECRET}}],
            "receiver": "team-hook",
            **alerting,
        }
    }


def test_webhook_gets_signed_json_on_each_state_change(
    daemon_factory: Callable[..., DaemonThread], hook: Hook
) -> None:
    d = daemon_factory(**hook_settings(hook))
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    d.call(d.d.alerts.record([LOOP]))  # a repeat: nothing new
    d.settle()
    assert len(hook.received) == 1
    path, headers, body = hook.received[0]
    assert path == "/hooks/team-a" and headers["Content-Type"] == "application/json"
    expected = hmac.new(
        SECRET.encode(), headers["X-Watchdog-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["X-Watchdog-Signature"], "v1=" + expected)
    payload = json.loads(body)
    assert payload["status"] == "firing" and payload["reason"] == "first"
    assert payload["group_labels"] == {"agent": "bot", "detector": "loop"}
    assert payload["alerts"][0]["labels"]["session"] == "s1"
    assert payload["alerts"][0]["summary"] == "looping"

    d.call(d.d.alerts.resolve(payload["alerts"][0]["id"]))
    d.settle()
    assert [b["status"] for b in hook.bodies()] == ["firing", "resolved"]


def test_webhook_retries_honour_retry_after(
    daemon_factory: Callable[..., DaemonThread], hook: Hook
) -> None:
    hook.answers = [(503, {"Retry-After": "1"}), (200, {})]
    d = daemon_factory(**hook_settings(hook))
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    assert len(hook.received) == 2
    assert d.query("SELECT outcome, attempts FROM alert_deliveries") == [("sent", 2)]


def test_a_gone_webhook_is_disabled_with_an_alert(
    daemon_factory: Callable[..., DaemonThread], hook: Hook
) -> None:
    hook.answers = [(410, {})]
    d = daemon_factory(**hook_settings(hook))
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    assert len(hook.received) == 1
    rows = d.query("SELECT summary FROM alerts WHERE rule = 'receiver_disabled'")
    assert rows and "team-hook (webhook) disabled" in rows[0][0] and hook.url not in rows[0][0]


def test_routes_send_kills_to_the_webhook_and_the_rest_to_the_log(
    daemon_factory: Callable[..., DaemonThread], hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    settings = hook_settings(
        hook, receiver="log", routes=[{"matchers": ['severity="kill"'], "receiver": "team-hook"}]
    )
    d = daemon_factory(**settings)
    d.call(d.d.alerts.record([LOOP]))
    d.call(d.d.alerts.record([dataclasses.replace(LOOP, agent_name="bot-2", severity="kill")]))
    d.settle()
    assert [b["alerts"][0]["labels"]["agent"] for b in hook.bodies()] == ["bot-2"]
    assert "agent=bot session=s1: looping" in caplog.text  # the warn went to the log


def test_check_config_reports_bad_alerting_settings(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    from watchdog.errors import ConfigError
    from watchdog.registry import validate_config
    from watchdog.settings import load_settings

    with pytest.raises(ConfigError, match=r"alerting.routes.0.matchers"):
        load_settings(None, alerting={"routes": [{"matchers": ["colour=red"]}]})
    with pytest.raises(ConfigError, match=r"undefined receiver 'pager'"):
        load_settings(None, alerting={"receiver": "pager"})
    with pytest.raises(ConfigError, match=r"alerting.receivers.0: .*exactly one"):
        load_settings(None, alerting={"receivers": [{"name": "x"}]})
    # `slack` without a token: valid syntax, refused by the same check `run` makes.
    with pytest.raises(ConfigError, match=r"alerting.receiver: receiver 'slack' is not available"):
        validate_config(load_settings(None, alerting={"receiver": "slack"}))

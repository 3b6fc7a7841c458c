"""No Slack token, signing secret, webhook URL or webhook secret reaches a log or an answer."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.agents.corpus import AgentSim, new_id
from tests.conftest import ROOT, DaemonProcess, DaemonThread, http_json, otel_provider
from tests.fakes.slack import (
    SIGNING_SECRET,
    TOKEN,
    FakeSlack,
    signed_headers,
    watchdog_slack_settings,
)
from watchdog.model import Finding

HOOK_PATH = "/services/T000/B000/hookpathsecret9d2f"
HOOK_URL = f"http://127.0.0.1:9{HOOK_PATH}"  # nothing listens on port 9: deliveries fail
HOOK_SECRET = "whsec-0a1b2c3d4e5f-never-logged"
SECRETS = (TOKEN, SIGNING_SECRET, HOOK_PATH, HOOK_SECRET, "hookpathsecret")

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


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def settings_with_hook(fake: FakeSlack) -> dict[str, Any]:
    s = watchdog_slack_settings(
        fake,
        retry_initial_s=0.01,
        retry_max_attempts=2,
        disable_after_failures=1,
        receivers=[{"name": "hook", "webhook": {"url": HOOK_URL, "secret": HOOK_SECRET}}],
        routes=[{"receiver": "hook", "continue_matching": True}, {"receiver": "slack"}],
    )
    return s


def slash(
    url: str, text: str, secret: str = SIGNING_SECRET, user: str = "UADMIN"
) -> tuple[int, str]:
    raw = urlencode(
        {"command": "/watchdog", "text": text, "user_id": user, "channel_id": "C1"}
    ).encode()
    req = urllib.request.Request(
        f"{url}/slack/commands", data=raw, method="POST", headers=signed_headers(secret, raw)
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:8]}… leaked"


def test_no_secret_in_logs_or_answers(
    daemon_factory: Callable[..., DaemonThread],
    fake_slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    d = daemon_factory(**settings_with_hook(fake_slack))
    answers: list[str] = []
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    # Slack worked, the webhook failed and was disabled, and Slack was told so.
    assert [p.body["text"].split(":")[0] for p in fake_slack.posts()] == [
        "[firing] warn loop/repeat agent bot",
        "[firing] info rule/receiver_disabled agent watchdog",
    ]
    fake_slack.fail_next(None, "invalid_auth", times=5)
    d.call(d.d.alerts.record([dataclasses.replace(LOOP, severity="kill")]))
    d.settle()
    for secret in ("wrong", SIGNING_SECRET):
        for user in ("UADMIN", "USTRANGER"):
            answers.append(str(slash(d.url, "kill agent bot", secret=secret, user=user)))
    answers.append(json.dumps(http_json("GET", f"{d.url}/api/v1/alerting")))
    answers.append(json.dumps(d.query("SELECT * FROM alerts"), default=str))
    answers.append(json.dumps(d.query("SELECT * FROM alert_deliveries"), default=str))
    with urllib.request.urlopen(f"{d.url}/metrics", timeout=30) as resp:
        answers.append(resp.read().decode())
    d.stop()

    # The flows really ran: both receivers failed and were disabled, commands answered.
    assert "alert receiver hook (webhook) disabled" in caplog.text
    assert "alert receiver slack (slack) disabled" in caplog.text
    assert any("401" in a for a in answers) and any("killed agent" in a for a in answers)
    assert "Sending a request" in caplog.text  # slack_sdk's own debug lines were captured
    assert_clean(caplog.text)
    for record in caplog.records:
        assert_clean(str(record.args))
    for a in answers:
        assert_clean(a)


def test_no_secret_in_a_daemon_process_output(fake_slack: FakeSlack, tmp_path: Path) -> None:
    env = {
        "WATCHDOG_LOG_LEVEL": "DEBUG",
        "WATCHDOG_SLACK__BOT_TOKEN": TOKEN,
        "WATCHDOG_SLACK__SIGNING_SECRET": SIGNING_SECRET,
        "WATCHDOG_SLACK__CHANNEL": "#alerts",
        "WATCHDOG_SLACK__BASE_URL": fake_slack.base_url,
        "WATCHDOG_SLACK__ALLOWED_USERS": '["UADMIN"]',
        "WATCHDOG_ALERTING__GROUP_WAIT_S": "0",
        "WATCHDOG_ALERTING__RETRY_INITIAL_S": "0.01",
        "WATCHDOG_ALERTING__RETRY_MAX_ATTEMPTS": "2",
        "WATCHDOG_ALERTING__RECEIVERS": json.dumps(
            [{"name": "hook", "webhook": {"url": HOOK_URL, "secret": HOOK_SECRET}}]
        ),
        "WATCHDOG_ALERTING__ROUTES": json.dumps(
            [{"receiver": "hook", "continue_matching": True}, {"receiver": "slack"}]
        ),
    }
    check = subprocess.run(
        [sys.executable, "-m", "watchdog", "check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert check.returncode == 0, check.stderr
    proc = DaemonProcess(tmp_path / "data", env=env).start()
    try:
        agent = AgentSim(otel_provider(proc.url, service="bot"), "bot", new_id("sess"))
        with agent.run("weather"):
            for _ in range(4):
                agent.tool("get_weather", {"city": "Paris"}, None)
        fake_slack.wait_for(lambda: len(fake_slack.posts()) == 1)
        assert slash(proc.url, "status", secret="wrong")[0] == 401
        assert slash(proc.url, "kill agent bot")[0] == 200
    finally:
        assert proc.terminate() == 0
    output = "".join(proc.lines) + check.stdout + check.stderr
    assert "receiver hook failed group" in output  # the webhook failures were logged...
    assert_clean(output)  # ...without its URL or secret, and no Slack secret either

"""Silences through the API, the CLI and Slack; they mute, expire and survive a restart."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import ROOT, DaemonThread, http_json
from tests.fakes.slack import FakeSlack, signed_headers, watchdog_slack_settings
from watchdog.model import Finding

LOOP = Finding(
    detector="loop",
    rule="repeat",
    severity="warn",
    summary="looping",
    agent_name="bot",
    session_id="s1",
    key="k",
)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def d(daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack) -> DaemonThread:
    return daemon_factory(**watchdog_slack_settings(fake_slack))


def test_api_silence_mutes_then_expiring_it_lets_the_alert_through(
    d: DaemonThread, fake_slack: FakeSlack
) -> None:
    status, body = http_json(
        "POST",
        f"{d.url}/api/v1/silences",
        {
            "matchers": ["agent=bot", 'detector=~"loop|drift"'],
            "duration": "2h",
            "comment": "deploying",
            "actor": "dashboard",
        },
    )
    assert status == 200, body
    silence = body["silence"]
    assert silence["matchers"] == ['agent="bot"', 'detector=~"loop|drift"']
    assert silence["created_by"] == "dashboard" and silence["active"] is True
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    assert fake_slack.calls() == []
    # Another agent is not muted.
    d.call(d.d.alerts.record([dataclasses.replace(LOOP, agent_name="other")]))
    d.settle()
    assert len(fake_slack.posts()) == 1

    status, body = http_json("DELETE", f"{d.url}/api/v1/silences/{silence['id']}")
    assert status == 200 and body["silence"]["expired_by"] == "api"
    d.settle()
    assert len(fake_slack.posts()) == 2  # bot's alert, held by the silence, is told now
    _, listed = http_json("GET", f"{d.url}/api/v1/silences")
    assert listed["silences"] == []
    _, history = http_json("GET", f"{d.url}/api/v1/silences?all=1")
    assert [s["id"] for s in history["silences"]] == [silence["id"]]
    assert history["silences"][0]["active"] is False


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"matchers": ["nolabel"]}, "bad matcher"),
        ({"matchers": ["agent=~("]}, "bad regex"),
        ({"matchers": ["owner=me"]}, "unknown label"),
        ({"matchers": []}, "matchers"),
        ({"matchers": ["agent=bot"], "duration": "forever"}, "bad duration"),
        ({"matchers": ["agent=bot"], "duration_s": -5}, "duration"),
    ],
)
def test_api_refuses_bad_silences(d: DaemonThread, payload: dict[str, object], error: str) -> None:
    status, body = http_json("POST", f"{d.url}/api/v1/silences", payload)
    assert status == 400 and error in body["error"]
    assert d.query("SELECT count(*) FROM silences") == [(0,)]


def test_expiring_an_unknown_silence_is_404(d: DaemonThread) -> None:
    status, body = http_json("POST", f"{d.url}/api/v1/silences/nope/expire", {})
    assert status == 404 and body["ok"] is False


def test_silences_need_the_api_token_when_one_is_set(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    d = daemon_factory(api_token="t0ken-for-api")
    status, _ = http_json("POST", f"{d.url}/api/v1/silences", {"matchers": ["agent=a"]})
    assert status == 401
    status, _ = http_json(
        "POST",
        f"{d.url}/api/v1/silences",
        {"matchers": ["agent=a"]},
        headers={"Authorization": "Bearer t0ken-for-api"},
    )
    assert status == 200


def test_silences_survive_a_restart(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    settings = watchdog_slack_settings(fake_slack)
    d1 = daemon_factory(data_dir=tmp_path / "data", **settings)
    http_json("POST", f"{d1.url}/api/v1/silences", {"matchers": ["agent=bot"], "duration": "1h"})
    d1.stop()
    d2 = daemon_factory(data_dir=tmp_path / "data", **settings)
    d2.call(d2.d.alerts.record([LOOP]))
    d2.settle()
    assert fake_slack.calls() == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "silence", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_adds_lists_and_expires(d: DaemonThread) -> None:
    added = run_cli(
        "add", "agent=bot", "severity!=kill", "--for", "30m", "--comment", "maint", "--url", d.url
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[0]
    assert 'agent="bot" severity!="kill"' in added.stdout and "# maint" in added.stdout
    assert d.query("SELECT created_by, epoch(ends_at) - epoch(starts_at) FROM silences") == [
        ("cli", 1800)
    ]
    listed = run_cli("list", "--url", d.url)
    assert silence_id in listed.stdout and "active" in listed.stdout
    expired = run_cli("expire", silence_id, "--url", d.url)
    assert expired.returncode == 0 and "ended" in expired.stdout
    assert "(no silences)" in run_cli("list", "--url", d.url).stdout
    bad = run_cli("add", "agent", "--url", d.url)
    assert bad.returncode == 1 and "bad matcher" in bad.stderr


def test_cli_without_a_daemon_says_so(tmp_path: Path) -> None:
    result = run_cli("list", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "no watchdog answers" in result.stderr


def test_slack_silence_commands(d: DaemonThread, fake_slack: FakeSlack) -> None:
    def slash(text: str) -> str:
        raw = urlencode(
            {
                "command": "/watchdog",
                "text": text,
                "user_id": "UADMIN",
                "channel_id": "C0ALERTS",
                "trigger_id": f"t{time.monotonic_ns()}",
            }
        ).encode()
        req = urllib.request.Request(
            f"{d.url}/slack/commands",
            data=raw,
            method="POST",
            headers=signed_headers(
                watchdog_slack_settings(fake_slack)["slack"]["signing_secret"], raw
            ),
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.loads(resp.read())["text"])

    text = slash("silence agent=bot detector=loop 2h flaky tool")
    assert "silenced" in text
    row = d.query(
        "SELECT id, matchers, created_by, comment, epoch(ends_at) - epoch(starts_at) FROM silences"
    )[0]
    assert json.loads(row[1]) == ['agent="bot"', 'detector="loop"']
    assert row[2:] == ("slack:UADMIN", "flaky tool", 7200)
    assert row[0] in slash("silence list")
    assert "ended" in slash(f"silence expire {row[0]}")
    assert slash("silence list") == "No active silences."
    assert "at least one matcher" in slash("silence 2h")

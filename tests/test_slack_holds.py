"""Held actions in Slack: posted at once with a Cancel button, updated when decided."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import DaemonThread, http_json
from tests.fakes.slack import SIGNING_SECRET, FakeSlack, signed_headers, watchdog_slack_settings


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def daemon_with_holds(
    factory: Callable[..., DaemonThread], fake: FakeSlack, delay_s: float = 600
) -> DaemonThread:
    return factory(
        enforcement={"risky_tools": ["send_*"], "hold_delay_s": delay_s},
        **watchdog_slack_settings(fake),
    )


def hold(d: DaemonThread, session: str = "s1") -> str:
    status, body = http_json(
        "POST",
        f"{d.url}/api/v1/check",
        {"agent": "mailer", "session": session, "tool": "send_email", "args": {"to": "all"}},
    )
    assert status == 200 and body["verdict"] == "hold", body
    return str(body["hold_id"])


def signed_post(d: DaemonThread, path: str, fields: dict[str, str]) -> int:
    raw = urlencode(fields).encode()
    req = urllib.request.Request(
        f"{d.url}{path}", data=raw, method="POST", headers=signed_headers(SIGNING_SECRET, raw)
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def click_cancel(d: DaemonThread, fake: FakeSlack, value: str, user: str = "UADMIN") -> None:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user},
        "trigger_id": f"t{time.monotonic_ns()}",
        "channel": {"id": "C0ALERTS"},
        "response_url": fake.response_url("hold"),
        "actions": [{"action_id": "watchdog_cancel_hold", "value": value}],
    }
    assert signed_post(d, "/slack/interactions", {"payload": json.dumps(payload)}) == 200
    d.settle()


def test_held_action_is_posted_and_cancelled_from_slack(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    d = daemon_with_holds(daemon_factory, fake_slack)
    hold_id = hold(d)
    d.settle()
    [post] = fake_slack.posts()
    assert post.body["text"].startswith("[pending] held action send_email of mailer")
    assert '{\\"to\\": \\"all\\"}' in json.dumps(post.body["blocks"])  # the arguments are shown
    actions = next(b for b in post.body["blocks"] if b["type"] == "actions")
    value = actions["elements"][0]["value"]
    assert json.loads(value) == {"hold": hold_id}

    # A user not allowed cannot cancel it.
    click_cancel(d, fake_slack, value, user="UINTRUDER")
    assert "you may not" in fake_slack.responses("hold")[-1].body["text"]
    assert [h.id for h in d.d.services["holds"].pending()] == [hold_id]

    click_cancel(d, fake_slack, value)
    assert d.d.services["holds"].pending() == []
    assert "cancelled held `send_email`" in fake_slack.responses("hold")[-1].body["text"]
    update = fake_slack.updates(post.answer["ts"])[-1].body
    assert update["text"].startswith("[cancelled]") and "slack:UADMIN" in update["text"]
    assert not [b for b in update["blocks"] if b["type"] == "actions"]  # no button left
    row = d.query("SELECT state, decided_by FROM holds WHERE id = ?", [hold_id])
    assert row == [("cancelled", "slack:UADMIN")]

    # A second click is too late and changes nothing.
    click_cancel(d, fake_slack, value)
    assert "already cancelled" in fake_slack.responses("hold")[-1].body["text"]


def test_a_released_hold_updates_its_message(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    d = daemon_with_holds(daemon_factory, fake_slack, delay_s=0.5)
    hold(d)
    fake_slack.wait_for(lambda: len(fake_slack.updates()) == 1)
    assert fake_slack.updates()[0].body["text"].startswith("[released]")


def test_killing_from_slack_cancels_the_scopes_held_actions(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    d = daemon_with_holds(daemon_factory, fake_slack)
    hold(d, "s1")
    hold(d, "s1")
    keep = hold(d, "s2")
    fields = {
        "command": "/watchdog",
        "text": "kill session s1",
        "user_id": "UADMIN",
        "channel_id": "C0ALERTS",
    }
    assert signed_post(d, "/slack/commands", fields) == 200
    d.settle()
    assert [h.id for h in d.d.services["holds"].pending()] == [keep]
    decided = d.query("SELECT decided_by FROM holds WHERE session_id = 's1'")
    assert decided == [("slack:UADMIN",), ("slack:UADMIN",)]
    fields["text"] = "cancel session s2"
    assert signed_post(d, "/slack/commands", fields) == 200
    d.settle()
    assert d.d.services["holds"].pending() == []

"""Signed slash commands and button clicks against a real daemon; verdicts and their audit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import DaemonThread
from tests.fakes.slack import SIGNING_SECRET, FakeSlack, signed_headers, watchdog_slack_settings
from watchdog.model import Finding
from watchdog.verdicts import Scope

LOOP = Finding(
    detector="loop",
    rule="repeat",
    severity="warn",
    summary="search called 5 times",
    agent_name="research-bot",
    session_id="sess-1",
    trace_id="0af7651916cd43dd8448eb211c80319c",
    evidence={"tool": "search"},
    key="search",
)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def d(daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack) -> DaemonThread:
    return daemon_factory(**watchdog_slack_settings(fake_slack, allowed_users=("UADMIN",)))


def post_signed(
    url: str,
    fields: dict[str, str],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    extra: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, str]:
    raw = urlencode(fields).encode()
    headers = {**signed_headers(secret, raw, timestamp), **(extra or {})}
    req = urllib.request.Request(
        url, data=body if body is not None else raw, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def command(
    d: DaemonThread,
    fake: FakeSlack,
    text: str,
    user: str = "UADMIN",
    channel: str = "C0ALERTS",
    **kw: Any,
) -> tuple[int, dict[str, Any] | str]:
    fields = {
        "command": "/watchdog",
        "text": text,
        "user_id": user,
        "user_name": "someone",
        "channel_id": channel,
        "team_id": "T0FAKE",
        "trigger_id": f"trig-{time.monotonic_ns()}",
        "response_url": fake.response_url("cmd"),
    }
    status, body = post_signed(f"{d.url}/slack/commands", fields, **kw)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def click(
    d: DaemonThread,
    fake: FakeSlack,
    action_id: str,
    value: str,
    user: str = "UADMIN",
    trigger: str | None = None,
) -> int:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": "T0FAKE"},
        "team": {"id": "T0FAKE", "domain": "fake"},
        "api_app_id": "A0APP",
        "trigger_id": trigger or f"trig-{time.monotonic_ns()}",
        "container": {"type": "message", "message_ts": "1", "channel_id": "C0ALERTS"},
        "channel": {"id": "C0ALERTS", "name": "alerts"},
        "response_url": fake.response_url("btn"),
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "watchdog_actions",
                "value": value,
                "action_ts": str(time.time()),
            }
        ],
    }
    status, _ = post_signed(f"{d.url}/slack/interactions", {"payload": json.dumps(payload)})
    d.settle()
    return status


def audit(d: DaemonThread) -> list[tuple[Any, ...]]:
    return d.query(
        "SELECT action, scope_type, scope_value, state, actor FROM verdict_audit "
        "ORDER BY changed_at"
    )


def button_value(fake: FakeSlack, action_id: str) -> str:
    actions = next(b for b in fake.posts()[-1].body["blocks"] if b["type"] == "actions")
    return str(next(e["value"] for e in actions["elements"] if e["action_id"] == action_id))


def test_slash_kill_and_resume_are_audited_as_the_slack_user(
    d: DaemonThread, fake_slack: FakeSlack
) -> None:
    status, body = command(d, fake_slack, "kill session sess-9 stuck in a loop")
    assert status == 200 and isinstance(body, dict)
    assert body["response_type"] == "in_channel"
    assert "killed session `sess-9` (stuck in a loop)" in body["text"]
    v = d.d.verdicts.effective(session="sess-9")
    assert v is not None and v.state == "kill" and v.actor == "slack:UADMIN"
    status, body = command(d, fake_slack, "resume session sess-9")
    assert status == 200 and "resumed session `sess-9`" in body["text"]  # type: ignore[index]
    assert d.d.verdicts.effective(session="sess-9") is None
    assert audit(d) == [
        ("set", "session", "sess-9", "kill", "slack:UADMIN"),
        ("clear", "session", "sess-9", "kill", "slack:UADMIN"),
    ]


def test_kill_infers_agent_or_session_from_what_was_seen(
    d: DaemonThread, fake_slack: FakeSlack
) -> None:
    d.call(d.d.alerts.record([LOOP]))
    _, body = command(d, fake_slack, "kill research-bot")
    assert "killed agent `research-bot`" in body["text"]  # type: ignore[index]
    _, body = command(d, fake_slack, "pause sess-1")
    assert "paused session `sess-1`" in body["text"]  # type: ignore[index]
    _, body = command(d, fake_slack, "kill nobody-knows")
    assert "no agent, session or run named `nobody-knows`" in body["text"]  # type: ignore[index]
    assert {(r[1], r[2]) for r in audit(d) if r[4] == "slack:UADMIN"} == {
        ("agent", "research-bot"),
        ("session", "sess-1"),
    }


@pytest.mark.parametrize(
    "how",
    ["wrong secret", "stale", "future", "tampered body", "no headers", "bad timestamp"],
)
def test_bad_or_stale_signatures_are_refused_and_change_nothing(
    d: DaemonThread, fake_slack: FakeSlack, how: str
) -> None:
    fields = {
        "command": "/watchdog",
        "text": "kill session sess-1",
        "user_id": "UADMIN",
        "channel_id": "C0ALERTS",
    }
    raw = urlencode(fields).encode()
    kw: dict[str, Any] = {}
    if how == "wrong secret":
        kw["secret"] = "not-the-secret"
    elif how == "stale":
        kw["timestamp"] = int(time.time()) - 301
    elif how == "future":
        kw["timestamp"] = int(time.time()) + 301
    elif how == "tampered body":
        kw["body"] = raw.replace(b"sess-1", b"sess-2")
    elif how == "no headers":
        kw["extra"] = {"X-Slack-Signature": "", "X-Slack-Request-Timestamp": ""}
    elif how == "bad timestamp":
        kw["extra"] = {"X-Slack-Request-Timestamp": "yesterday"}
    for path in ("/slack/commands", "/slack/interactions"):
        status, body = post_signed(f"{d.url}{path}", fields, **kw)
        assert status == 401, (how, body)
        assert json.loads(body) == {"ok": False, "error": "invalid or stale Slack signature"}
        assert SIGNING_SECRET not in body
    d.settle()
    assert d.d.verdicts.all() == []
    assert audit(d) == []


def test_a_signature_within_the_window_is_accepted(d: DaemonThread, fake_slack: FakeSlack) -> None:
    status, body = command(d, fake_slack, "status", timestamp=int(time.time()) - 290)
    assert status == 200 and "Open alerts" in body["text"]  # type: ignore[index]


def test_users_not_allowed_are_refused(d: DaemonThread, fake_slack: FakeSlack) -> None:
    for text in ("kill session sess-1", "resume session sess-1", "silence agent=x 1h"):
        status, body = command(d, fake_slack, text, user="UINTRUDER", channel="CRANDOM")
        assert status == 200 and isinstance(body, dict)
        assert "you may not" in body["text"] and "UINTRUDER" in body["text"]
    assert d.d.verdicts.all() == [] and audit(d) == []
    assert d.query("SELECT count(*) FROM silences") == [(0,)]
    # Read-only commands are fine for anyone in the workspace.
    status, body = command(d, fake_slack, "status", user="UINTRUDER")
    assert status == 200 and "Open alerts" in body["text"]  # type: ignore[index]


def test_members_of_allowed_channels_may_act(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    settings = watchdog_slack_settings(fake_slack, allowed_users=())
    settings["slack"]["allowed_channels"] = ["COPS"]
    d = daemon_factory(**settings)
    _, body = command(d, fake_slack, "kill agent bot-1", user="UANY", channel="COPS")
    assert "killed agent `bot-1`" in body["text"]  # type: ignore[index]
    _, body = command(d, fake_slack, "kill agent bot-2", user="UANY", channel="CELSEWHERE")
    assert "you may not" in body["text"]  # type: ignore[index]
    assert [v.scope.value for v in d.d.verdicts.all()] == ["bot-1"]


def test_buttons_trip_and_clear_verdicts_and_update_the_message(
    d: DaemonThread, fake_slack: FakeSlack
) -> None:
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    ts = fake_slack.posts()[0].answer["ts"]
    alert_id = d.query("SELECT id FROM alerts")[0][0]

    assert click(d, fake_slack, "watchdog_kill", button_value(fake_slack, "watchdog_kill")) == 200
    v = d.d.verdicts.effective("research-bot", "sess-1")
    assert v is not None and (v.state, v.scope, v.actor, v.alert_id) == (
        "kill",
        Scope("session", "sess-1"),
        "slack:UADMIN",
        alert_id,
    )
    follow = fake_slack.responses("btn")[-1].body
    assert "killed session `sess-1`" in follow["text"] and follow["replace_original"] is False
    # The living message shows who killed it; the thread says so.
    assert "*kill* on session `sess-1` by slack:UADMIN" in json.dumps(
        fake_slack.updates(ts)[-1].body["blocks"]
    )
    assert (
        "Verdict: kill on session sess-1 by slack:UADMIN" in fake_slack.replies(ts)[-1].body["text"]
    )

    # Resume clears the verdict and ends the incident.
    click(d, fake_slack, "watchdog_resume", button_value(fake_slack, "watchdog_resume"))
    assert d.d.verdicts.effective("research-bot", "sess-1") is None
    assert "resumed session `sess-1`" in fake_slack.responses("btn")[-1].body["text"]
    assert d.query("SELECT state FROM alerts") == [("resolved",)]
    assert fake_slack.updates(ts)[-1].body["text"].startswith("[resolved]")
    assert [r[:2] + r[3:] for r in audit(d) if r[4] == "slack:UADMIN"] == [
        ("set", "session", "kill", "slack:UADMIN"),
        ("clear", "session", "kill", "slack:UADMIN"),
    ]
    assert len(fake_slack.posts()) == 1


def test_silence_button_mutes_the_group_for_an_hour(d: DaemonThread, fake_slack: FakeSlack) -> None:
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    ts = fake_slack.posts()[0].answer["ts"]
    click(d, fake_slack, "watchdog_silence_1h", button_value(fake_slack, "watchdog_silence_1h"))
    rows = d.query("SELECT matchers, created_by, epoch(ends_at) - epoch(starts_at) FROM silences")
    assert len(rows) == 1
    assert json.loads(rows[0][0]) == ['agent="research-bot"', 'detector="loop"']
    assert rows[0][1:] == ("slack:UADMIN", 3600)
    assert "Silenced:" in fake_slack.replies(ts)[-1].body["text"]
    calls = len(fake_slack.calls())
    # Muted: a new alert of the same group sends nothing.
    d.call(
        d.d.alerts.record(
            [
                dataclasses.replace(
                    LOOP, severity="kill", summary="worse", session_id="sess-2", key="x"
                )
            ]
        )
    )
    d.settle()
    assert len(fake_slack.calls()) == calls


def test_buttons_of_users_not_allowed_change_nothing(
    d: DaemonThread, fake_slack: FakeSlack
) -> None:
    d.call(d.d.alerts.record([LOOP]))
    d.settle()
    for action in ("watchdog_kill", "watchdog_pause", "watchdog_resume", "watchdog_silence_1h"):
        assert (
            click(d, fake_slack, action, button_value(fake_slack, action), user="UINTRUDER") == 200
        )
        assert "you may not" in fake_slack.responses("btn")[-1].body["text"]
    assert [v for v in d.d.verdicts.all() if v.actor.startswith("slack:")] == []
    assert [r for r in audit(d) if r[4].startswith("slack:")] == []
    assert d.query("SELECT count(*) FROM silences") == [(0,)]


def test_slack_retries_of_the_same_request_act_once(d: DaemonThread, fake_slack: FakeSlack) -> None:
    fields = {
        "command": "/watchdog",
        "text": "kill agent bot-1",
        "user_id": "UADMIN",
        "channel_id": "C0ALERTS",
        "trigger_id": "trig-once",
        "response_url": fake_slack.response_url("cmd"),
    }
    assert post_signed(f"{d.url}/slack/commands", fields)[0] == 200
    assert (
        post_signed(f"{d.url}/slack/commands", fields, extra={"X-Slack-Retry-Num": "1"})[0] == 200
    )
    d.settle()
    assert len(audit(d)) == 1


def test_slow_work_is_acknowledged_then_answered_through_response_url(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    d = daemon_factory(**watchdog_slack_settings(fake_slack, slack_ack_s=0.2))
    # Hold the store's writer thread so the kill cannot commit within the ack budget.
    gate = threading.Event()
    blocked = asyncio.run_coroutine_threadsafe(d.d.store.write(lambda cur: gate.wait(30)), d.loop)
    try:
        status, body = command(d, fake_slack, "kill agent bot-1")
        assert status == 200 and body == {"response_type": "ephemeral", "text": "Working on it…"}
        assert fake_slack.responses("cmd") == []
    finally:
        gate.set()
        blocked.result(30)
    d.settle()
    follow = fake_slack.responses("cmd")
    assert len(follow) == 1 and "killed agent `bot-1`" in follow[0].body["text"]
    assert d.d.verdicts.effective("bot-1") is not None


def test_status_top_and_help(d: DaemonThread, fake_slack: FakeSlack) -> None:
    d.call(d.d.alerts.record([LOOP]))
    d.call(
        d.d.store.write(
            lambda cur: cur.execute(
                "INSERT INTO step_records (trace_id, span_id, parent_span_id, start_time, end_time, "
                "service_name, agent_name, session_id, kind, cost_usd, price_source, is_error) VALUES "
                "('t', 's', '', now(), now(), 'svc', 'research-bot', 'sess-1', 'llm', 1.5, 'override', false)"
            )
        )
    )
    _, body = command(d, fake_slack, "status")
    assert "*Open alerts:* 1 (1 warn)" in body["text"]  # type: ignore[index]
    _, body = command(d, fake_slack, "top")
    assert "`research-bot` $1.5000 · 1 steps · 1 sessions · 1 open alerts" in body["text"]  # type: ignore[index]
    _, body = command(d, fake_slack, "")
    assert "/watchdog* commands" in body["text"]  # type: ignore[index]


def test_inbound_is_off_without_a_signing_secret(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    settings = watchdog_slack_settings(fake_slack)
    settings["slack"]["signing_secret"] = None
    d = daemon_factory(**settings)
    status, body = command(d, fake_slack, "kill agent a")
    assert status == 503 and d.d.verdicts.all() == []
    assert body == {"ok": False, "error": "Slack signing secret is not configured"}


def test_buttons_on_an_alert_about_every_agent_never_stop_agent_star(
    d: DaemonThread, fake_slack: FakeSlack
) -> None:
    # The total-day cap is about every agent (agent "*"): the buttons act on the run that
    # crossed it, and with no session or run they set nothing and say why.
    total = dataclasses.replace(
        LOOP,
        detector="spend",
        rule="total_day_cap",
        summary="all agents spent $51 today",
        agent_name="*",
        session_id=None,
        key="total",
    )
    d.call(d.d.alerts.record([total]))
    d.settle()
    assert click(d, fake_slack, "watchdog_pause", button_value(fake_slack, "watchdog_pause")) == 200
    v = d.d.verdicts.effective("research-bot", None, LOOP.trace_id)
    assert v is not None and (v.state, v.scope) == ("pause", Scope("trace", LOOP.trace_id))

    d.call(d.d.alerts.record([dataclasses.replace(total, trace_id=None, key="total-2")]))
    d.settle()
    value = json.loads(button_value(fake_slack, "watchdog_kill"))
    alert_id = d.query("SELECT id FROM alerts WHERE trace_id IS NULL")[0][0]
    value["alert"] = alert_id
    assert click(d, fake_slack, "watchdog_kill", json.dumps(value)) == 200
    reply = fake_slack.responses("btn")[-1].body["text"]
    assert "about every agent" in reply
    assert all(v.scope.type != "agent" for v in d.d.verdicts.all())

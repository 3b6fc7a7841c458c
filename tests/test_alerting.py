"""Incident flow through a real daemon to the real slack_sdk client and a fake Slack API."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.corpus import AgentSim, new_id
from tests.conftest import DaemonThread, http_json, otel_provider
from tests.fakes.slack import FakeSlack, watchdog_slack_settings
from watchdog.model import Finding
from watchdog.verdicts import Scope

LOOP = Finding(
    detector="loop",
    rule="repeat",
    severity="warn",
    summary="search called 5 times with the same arguments",
    agent_name="research-bot",
    service_name="research-svc",
    session_id="sess-1",
    trace_id="0af7651916cd43dd8448eb211c80319c",
    span_ids=("b7ad6b7169203331",),
    evidence={"tool": "search", "count": 5},
    key="search:abc",
)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def record(d: DaemonThread, *findings: Finding) -> None:
    d.call(d.d.alerts.record(list(findings)))
    d.settle()


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def test_one_post_per_incident_then_updates_in_place_until_resolved(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    d = daemon_factory(**watchdog_slack_settings(fake_slack))
    # Cost so far comes from the steps table.
    d.call(
        d.d.store.write(
            lambda cur: cur.execute(
                "INSERT INTO step_records (trace_id, span_id, parent_span_id, start_time, end_time, "
                "service_name, agent_name, session_id, kind, cost_usd, price_source, is_error) VALUES "
                "(?, 's1', '', now(), now(), 'research-svc', 'research-bot', 'sess-1', 'llm', 0.25, "
                "'genai-prices', false)",
                [LOOP.trace_id],
            )
        )
    )

    record(d, LOOP)
    posts = fake_slack.posts()
    assert len(posts) == 1
    post = posts[0]
    assert (
        post.headers["Authorization"]
        == "Bearer " + watchdog_slack_settings(fake_slack)["slack"]["bot_token"]
    )
    assert post.body["channel"] == "#alerts"
    text = blocks_text(post.body["blocks"])
    for expected in (
        "research-bot",
        "sess-1",
        "search called 5 times",
        "$0.2500",
        f"{d.url}/runs/{LOOP.trace_id}",
    ):
        assert expected in text, expected
    evidence = next(
        b["text"]["text"]
        for b in post.body["blocks"]
        if b.get("text", {}).get("text", "").startswith("*Evidence*")
    )
    assert '"tool": "search"' in evidence and '"count": 5' in evidence
    actions = next(b for b in post.body["blocks"] if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]][:4] == [
        "Kill",
        "Pause",
        "Resume",
        "Silence 1h",
    ]
    ts = post.answer["ts"]

    # The same finding again is not news: nothing is sent.
    record(d, LOOP, LOOP)
    assert len(fake_slack.calls()) == 1

    # Escalation: the same message is updated, the thread says why.
    record(d, dataclasses.replace(LOOP, severity="pause"))
    assert len(fake_slack.posts()) == 1
    assert len(fake_slack.updates(ts)) == 1
    assert "Escalated to pause" in fake_slack.replies(ts)[0].body["text"]

    # A verdict on the session is shown in the message.
    d.call(d.d.verdicts.set(Scope("session", "sess-1"), "kill", actor="cli", reason="runaway"))
    d.settle()
    assert len(fake_slack.updates(ts)) == 2
    assert "*kill* on session `sess-1` by cli" in blocks_text(
        fake_slack.updates(ts)[-1].body["blocks"]
    )
    assert "Verdict: kill on session sess-1 by cli" in fake_slack.replies(ts)[-1].body["text"]

    # Acknowledged through the API: resolved, still the same message.
    alert_id = d.query("SELECT id FROM alerts")[0][0]
    status, body = http_json("POST", f"{d.url}/api/v1/alerts/{alert_id}/resolve", {})
    assert status == 200 and body["state"] == "resolved"
    d.settle()
    assert len(fake_slack.posts()) == 1
    last = fake_slack.updates(ts)[-1].body
    assert last["text"].startswith("[resolved]")
    assert "Resolved:" in fake_slack.replies(ts)[-1].body["text"]
    # The incident is closed in the notification log.
    assert d.query("SELECT firing FROM alert_notifications")[0][0] == "[]"

    # The condition coming back is a new incident: a new message.
    record(d, LOOP)
    assert len(fake_slack.posts()) == 2
    assert fake_slack.posts()[1].answer["ts"] != ts


def test_grouping_by_agent_and_detector_shares_one_message(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    d = daemon_factory(**watchdog_slack_settings(fake_slack))
    record(d, LOOP)
    record(d, dataclasses.replace(LOOP, session_id="sess-2", key="other"))
    record(d, dataclasses.replace(LOOP, detector="spend", rule="session_cap", key="cap"))
    posts = fake_slack.posts()
    assert len(posts) == 2  # loop group, spend group
    ts = posts[0].answer["ts"]
    assert "Alerts in this group (2)" in blocks_text(fake_slack.messages[ts].blocks)
    assert "New: search called" in fake_slack.replies(ts)[0].body["text"]


def test_group_wait_batches_and_a_restart_mid_incident_neither_resends_nor_loses(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # Long group interval: the escalation below is held back when the daemon stops.
    settings = watchdog_slack_settings(fake_slack, group_interval_s=3600)
    d = daemon_factory(data_dir=data, **settings)
    record(d, LOOP)
    assert len(fake_slack.posts()) == 1
    ts = fake_slack.posts()[0].answer["ts"]
    record(d, dataclasses.replace(LOOP, severity="kill"))
    assert fake_slack.updates() == []  # waiting for the group interval
    d.stop()

    # Restart: nothing is re-posted, and the held escalation is delivered to the same message.
    d2 = daemon_factory(data_dir=data, **settings)
    d2.settle()
    assert len(fake_slack.posts()) == 1
    assert len(fake_slack.updates(ts)) == 1
    assert "Escalated to kill" in fake_slack.replies(ts)[0].body["text"]
    d2.stop()

    # A third start (now without the long interval) has nothing left to say.
    calls = len(fake_slack.calls())
    d3 = daemon_factory(data_dir=data, **watchdog_slack_settings(fake_slack))
    d3.settle()
    assert len(fake_slack.calls()) == calls
    # ...and resolving still updates the original message.
    alert_id = d3.query("SELECT id FROM alerts")[0][0]
    d3.call(d3.d.alerts.resolve(alert_id))
    d3.settle()
    assert fake_slack.updates(ts)[-1].body["text"].startswith("[resolved]")
    assert len(fake_slack.posts()) == 1


def test_a_finding_waiting_for_group_wait_is_sent_after_a_restart(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    d = daemon_factory(data_dir=data, **watchdog_slack_settings(fake_slack, group_wait_s=3600))
    record(d, LOOP)
    assert fake_slack.calls() == []
    d.stop()
    d2 = daemon_factory(data_dir=data, **watchdog_slack_settings(fake_slack))
    d2.settle()
    assert len(fake_slack.posts()) == 1


def test_rate_limited_post_is_retried_after_retry_after(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("chat.postMessage", "ratelimited", retry_after=1)
    d = daemon_factory(**watchdog_slack_settings(fake_slack))
    record(d, LOOP)
    calls = fake_slack.calls("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.95  # honoured Retry-After: 1
    assert len(fake_slack.posts()) == 1
    assert d.query("SELECT outcome, attempts FROM alert_deliveries") == [("sent", 2)]


def test_invalid_auth_disables_the_receiver_and_raises_an_alert(
    daemon_factory: Callable[..., DaemonThread],
    fake_slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_slack.fail_next(None, "invalid_auth", times=100)
    d = daemon_factory(**watchdog_slack_settings(fake_slack))
    record(d, LOOP)
    assert len(fake_slack.calls()) == 1  # no retry can fix a bad token
    status, body = http_json("GET", f"{d.url}/api/v1/alerting")
    assert status == 200
    slack = next(r for r in body["receivers"] if r["name"] == "slack")
    assert slack["disabled"] is True and "invalid_auth" in slack["disabled_reason"]
    rows = d.query("SELECT rule, agent_name, summary FROM alerts WHERE detector = 'rule'")
    assert rows and rows[0][0] == "receiver_disabled" and "invalid_auth" in rows[0][2]
    assert d.query("SELECT outcome FROM alert_deliveries") == [("disabled",)]
    assert "alert receiver slack (slack) disabled" in caplog.text
    # Later findings do not hammer a broken receiver.
    record(d, dataclasses.replace(LOOP, key="another"))
    assert len(fake_slack.calls()) == 1


def test_repeated_server_errors_back_off_then_disable(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next(None, "internal_error", status=500, times=100)
    d = daemon_factory(
        **watchdog_slack_settings(
            fake_slack, retry_initial_s=0.01, retry_max_attempts=2, disable_after_failures=2
        )
    )
    record(d, LOOP)
    # Two notifications of two attempts each (the second one group interval later), then
    # the receiver is disabled.
    fake_slack.wait_for(lambda: len(fake_slack.calls()) >= 4)
    d.settle()
    assert len(fake_slack.calls()) == 4
    outcomes = [r[0] for r in d.query("SELECT outcome FROM alert_deliveries ORDER BY sent_at")]
    assert outcomes.count("failed") == 2 and outcomes[-1] == "disabled"


def test_without_slack_alerts_go_to_the_log(
    daemon: DaemonThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    record(daemon, LOOP)
    # The default group wait is 30 s; the log receiver still gets nothing early.
    assert "search called 5 times" not in caplog.text
    status, body = http_json("GET", f"{daemon.url}/api/v1/alerting")
    assert status == 200
    assert [r["name"] for r in body["receivers"]] == ["log"]
    assert body["groups"] == 1


def test_log_receiver_writes_each_state_change(
    daemon_factory: Callable[..., DaemonThread], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    d = daemon_factory(alerting={"group_wait_s": 0, "group_interval_s": 0})
    record(d, LOOP)
    assert "alert group" in caplog.text and "New incident: search called 5 times" in caplog.text
    caplog.clear()
    record(d, LOOP)
    assert "search called" not in caplog.text  # a repeat is not a state change


def test_looping_agent_spans_make_one_living_slack_message(
    daemon_factory: Callable[..., DaemonThread], fake_slack: FakeSlack
) -> None:
    """Spans from the real OTel SDK → loop detector → alert → one Slack message, updated."""
    d = daemon_factory(**watchdog_slack_settings(fake_slack))
    agent = AgentSim(otel_provider(d.url, service="weather-bot"), "weather-bot", new_id("sess"))
    with agent.run("what is the weather in Paris?"):
        for _ in range(3):
            agent.tool("get_weather", {"city": "Paris"}, None)
        d.settle()
        posts = fake_slack.posts()
        assert len(posts) == 1
        ts = posts[0].answer["ts"]
        first = json.dumps(posts[0].body["blocks"])
        assert "weather-bot" in first and str(agent.session) in first
        assert f"/runs/{agent.trace_id}" in first and "get_weather" in first
        for _ in range(5):
            agent.tool("get_weather", {"city": "Paris"}, None)
        d.settle()
    d.settle()
    assert len(fake_slack.posts()) == 1  # one incident, one message
    updates = fake_slack.updates(ts)
    assert updates and updates[-1].body["text"].startswith("[firing] kill loop/repeat")
    assert any("Escalated to kill" in r.body["text"] for r in fake_slack.replies(ts))
    # Nothing else was sent: every other post is a reply in the incident's thread.
    others = [c for c in fake_slack.calls("chat.postMessage") if c.body.get("thread_ts") != ts]
    assert len(others) == 1

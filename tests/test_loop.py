"""Loop detector rules: each fires on a looping trace and stays quiet on its legit look-alike.

Every trace is sent by the real OTel SDK (OTLP/HTTP protobuf) to a real daemon, and the
assertion reads the `alerts` table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.loop import RULES
from tests.agents.corpus import AgentSim, new_id
from tests.conftest import DaemonThread, make_settings, otel_provider
from watchdog.detection import LoopRules

LOOP_SETTINGS: dict[str, Any] = {
    "detectors": {
        "loop": {"max_steps": {"warn": 40, "pause": 60, "kill": 80}},
        "agents": {
            "strict-bot": {"loop": {"repeat": {"warn": 2, "pause": 3, "kill": 4}}},
            "learner": {"loop": {"max_steps_learned_floor": 4}},
        },
    }
}


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    d = DaemonThread(make_settings(tmp_path_factory.mktemp("loop"), **LOOP_SETTINGS)).start()
    yield d
    d.stop()


def sim(d: DaemonThread, agent: str = "bot", **kw: Any) -> AgentSim:
    return AgentSim(otel_provider(d.url, service=agent), agent, new_id("sess"), **kw)


def found(d: DaemonThread, session: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """rule → (severity, evidence) of the session's loop alerts."""
    d.settle()
    rows = d.query(
        "SELECT rule, severity, evidence FROM alerts WHERE detector = 'loop' AND session_id = ?",
        [session],
    )
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for rule, severity, evidence in rows:
        assert rule not in out, f"two alerts for {rule} in one session"
        out[rule] = (severity, json.loads(evidence))
    return out


def severities(d: DaemonThread, session: str) -> dict[str, str]:
    return {rule: sev for rule, (sev, _) in found(d, session).items()}


def test_rule_table_lists_every_rule_with_its_setting() -> None:
    ids = [r.rule for r in RULES]
    assert len(ids) == len(set(ids))
    defaults = LoopRules.model_validate({})
    for r in RULES:
        assert r.setting.startswith("detectors.loop.")
        assert hasattr(defaults, r.setting.rsplit(".", 1)[1])


# -- L1 repeat ---------------------------------------------------------------------------


def test_repeat_climbs_warn_pause_kill_in_one_alert(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("find the weather"):
        for _ in range(3):
            a.tool("get_weather", {"city": "Paris", "request_id": new_id("r")}, None)
        assert severities(wd, a.session or "") == {"repeat": "warn"}
        for _ in range(2):
            a.tool("get_weather", {"city": "Paris", "request_id": new_id("r")}, None)
        assert severities(wd, a.session or "") == {"repeat": "pause"}
        spans = [a.tool("get_weather", {"city": "Paris"}, None) for _ in range(3)]
    sev, evidence = found(wd, a.session or "")["repeat"]
    assert sev == "kill"
    assert evidence["count"] == 8 and evidence["span_ids"][-1] == spans[-1]
    assert evidence["arguments"] == '{"city":"Paris"}'  # the request id was stripped


def test_retries_with_changed_arguments_are_not_a_repeat(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("search"):
        for q in ["paris weather", "paris weather today", "weather in paris france",
                  "paris forecast", "meteo paris", "paris temperature"]:  # fmt: skip
            a.act("web_search", {"q": q}, None)
    assert severities(wd, a.session or "") == {}


def test_a_person_asking_again_resets_the_counts(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("check the build"):
        for _ in range(2):
            a.act("ci_status", {"build": 7}, {"state": "failed"})
        a.user("please check the build again")
        for _ in range(2):
            a.act("ci_status", {"build": 7}, {"state": "failed"})
    # 4 identical calls and results in a row would pause; split by a user message, nothing.
    assert severities(wd, a.session or "") == {}


def test_a_person_typing_the_same_words_again_resets_the_counts(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("check the build"):
        a.user("try again")
        for _ in range(2):
            a.act("ci_status", {"build": 8}, {"state": "failed"})
        a.user("try again")  # the same last user message text, one more user message
        for _ in range(2):
            a.act("ci_status", {"build": 8}, {"state": "failed"})
    assert severities(wd, a.session or "") == {}


def test_a_shorter_history_with_the_same_last_message_is_not_a_new_turn(
    wd: DaemonThread,
) -> None:
    a = sim(wd)
    with a.run("check the build"):
        a.user("try again")
        for _ in range(2):
            a.act("ci_status", {"build": 9}, {"state": "failed"})
        a.history = a.history[1:]  # the agent drops the first request: fewer user messages
        for _ in range(2):
            a.act("ci_status", {"build": 9}, {"state": "failed"})
    assert severities(wd, a.session or "") == {"repeat_same_result": "pause"}


def test_per_agent_override_applies_only_to_that_agent(wd: DaemonThread) -> None:
    strict, normal = sim(wd, "strict-bot"), sim(wd, "bot")
    for s in (strict, normal):
        with s.run("weather"):
            for _ in range(3):
                s.tool("get_weather", {"city": "Oslo"}, None)
    assert severities(wd, strict.session or "") == {"repeat": "pause"}
    assert severities(wd, normal.session or "") == {"repeat": "warn"}


# -- L2 repeat + same result ---------------------------------------------------------------


def test_same_call_same_result_pauses_at_four(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("wait for deploy"):
        for _ in range(4):
            a.act("deploy_status", {"id": "d1"}, {"state": "pending", "checked_at": time.time()})
    sev, evidence = found(wd, a.session or "")["repeat_same_result"]
    assert sev == "pause" and evidence["count"] == 4


def test_polling_whose_result_changes_is_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("wait for deploy"):
        for pct in range(0, 100, 10):
            a.act("deploy_status", {"id": "d1"}, {"state": "running", "progress": pct})
    assert severities(wd, a.session or "") == {}


# -- L3 repeat + error ---------------------------------------------------------------------


def test_same_call_failing_three_times_pauses(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("read config"):
        for i in range(3):
            a.act("read_file", {"path": "/etc/app.yaml"}, f"ENOENT at {time.time()} #{i}",
                  error=True)  # fmt: skip
    sev, evidence = found(wd, a.session or "")["repeat_error"]
    assert sev == "pause" and evidence["count"] == 3 and evidence["error_type"] == "ToolError"


def test_an_error_then_a_changed_retry_is_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("read config"):
        a.act("read_file", {"path": "/etc/app.yml"}, "ENOENT", error=True)
        a.act("read_file", {"path": "/etc/app.yaml"}, "ENOENT", error=True)
        a.act("read_file", {"path": "/srv/app/config.yaml"}, "port: 80")
        a.act("fetch", {"url": "https://x/a"}, "timeout", error=True)
        a.act("fetch", {"url": "https://x/a"}, "<html>ok</html>")
    assert severities(wd, a.session or "") == {}


# -- L4 cycle ------------------------------------------------------------------------------


def test_ab_ab_ab_with_unchanged_results_is_a_cycle(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("fix the test"):
        for _ in range(3):
            a.act("read_file", {"path": "app.py"}, "def f(): return 1")
            a.act("run_tests", {}, {"failed": 1, "duration_ms": 812})
    sev, evidence = found(wd, a.session or "")["cycle"]
    assert sev == "pause" and evidence["period"] == 2 and evidence["count"] == 3
    assert evidence["tools"] == ["read_file", "run_tests"]


def test_a_three_step_cycle_is_found(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("sync"):
        for _ in range(2):
            a.act("list_dir", {"path": "/in"}, ["a.csv"])
            a.act("read_file", {"path": "/in/a.csv"}, "x,y")
            a.act("write_file", {"path": "/out/a.csv", "content": "x,y"}, "ok")
    assert severities(wd, a.session or "").get("cycle") == "warn"


def test_alternating_calls_whose_results_change_are_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("fix the test"):
        for i in range(4):
            a.act("edit_file", {"path": "app.py", "patch": f"attempt {i}"}, "ok")
            a.act("run_tests", {}, {"failed": 4 - i})
    assert "cycle" not in severities(wd, a.session or "")


# -- L5 no progress ----------------------------------------------------------------------


def test_polling_without_progress_between_other_work(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("wait for the export, meanwhile tidy up"):
        for i in range(15):  # two polls, then other work: 20 polls in the last 30 calls
            a.tool("export_status", {"job": "e-1"}, {"state": "queued"})
            a.tool("export_status", {"job": "e-1"}, {"state": "queued"})
            a.tool("read_log", {"page": i}, {"lines": [f"line {i}"]})
    sev, evidence = found(wd, a.session or "")["no_progress"]
    assert sev == "pause" and evidence["count"] == 20 and evidence["window"] == 30


def test_paginated_reads_and_changing_polls_are_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("export all orders"):
        for page in range(19):
            a.tool("list_orders", {"page": page, "per_page": 50}, {"orders": [page * 50]})
            a.tool("export_status", {"job": "e-2"}, {"state": "running", "done": page * 4})
    assert severities(wd, a.session or "") == {}


# -- L6 duplicate side effect ------------------------------------------------------------


def test_sending_the_same_email_twice_pauses(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("tell bob the refund went through"):
        first = a.act("send_email", {"to": "bob@example.com", "body": "Refund done",
                                     "idempotency_key": new_id("k")}, {"status": "sent"})  # fmt: skip
        a.act("lookup_order", {"id": 7}, {"status": "refunded"})
        second = a.act("send_email", {"to": "bob@example.com", "body": "Refund done",
                                      "idempotency_key": new_id("k")}, {"status": "sent"})  # fmt: skip
    sev, evidence = found(wd, a.session or "")["side_effect_duplicate"]
    assert sev == "pause" and evidence["span_ids"] == [first, second]
    assert "bob@example.com" in evidence["target"]


def test_same_edit_to_different_files_and_a_failed_send_retried_are_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("rename the helper everywhere"):
        for path in ["a.py", "b.py", "c.py", "d.py"]:
            a.act("write_file", {"path": path, "content": "from util import helper"}, "ok")
        a.act("send_email", {"to": "ops@example.com", "body": "done"}, "SMTP 451", error=True)
        a.act("send_email", {"to": "ops@example.com", "body": "done"}, {"status": "sent"})
        a.act("send_email", {"to": "dev@example.com", "body": "done"}, {"status": "sent"})
    assert severities(wd, a.session or "") == {}


# -- L7 monologue / empty ------------------------------------------------------------------


def test_identical_messages_with_no_tool_between_pause_at_three(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("summarize"):
        for _ in range(3):
            a.chat("I will now summarize the document.")
    sev, evidence = found(wd, a.session or "")["monologue"]
    assert sev == "pause" and evidence["message"] == "I will now summarize the document."


def test_identical_messages_between_tool_calls_are_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("check each server"):
        for host in ["web1", "web2", "web3", "web4"]:
            a.chat("Let me check the next server.")
            a.tool("ping", {"host": host}, {"ok": True})
    assert severities(wd, a.session or "") == {}


def test_empty_responses_in_a_row_pause_at_three(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("answer"):
        for _ in range(3):
            a.chat("", output_tokens=0)
    assert severities(wd, a.session or "") == {"empty_response": "pause"}


def test_uncaptured_content_is_not_empty(wd: DaemonThread) -> None:
    a = sim(wd, capture_content=False)
    with a.run("answer"):
        for _ in range(5):
            a.chat(None, output_tokens=35)
    assert severities(wd, a.session or "") == {}


# -- L8 step caps --------------------------------------------------------------------------


def test_configured_step_cap(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("crawl"):
        for i in range(60):
            a.tool("fetch_page", {"url": f"https://example.com/{i}"}, f"page {i}")
    sev, evidence = found(wd, a.session or "")["max_steps"]
    assert sev == "pause" and evidence["steps"] == 60 and evidence["learned_p99"] is None


def test_a_run_below_the_cap_is_quiet(wd: DaemonThread) -> None:
    a = sim(wd)
    with a.run("crawl"):
        for i in range(39):
            a.tool("fetch_page", {"url": f"https://example.com/{i}"}, f"page {i}")
    assert severities(wd, a.session or "") == {}


def test_step_cap_learned_from_the_agents_history(wd: DaemonThread) -> None:
    past = time.time_ns() - 3 * 3600 * 10**9
    for n in range(30):  # 30 finished runs of 4-6 steps, three hours ago
        h = sim(wd, "learner", clock_ns=past + n * 60 * 10**9)
        with h.run("triage a ticket"):
            for i in range(4 + n % 3):
                h.tool("lookup", {"ticket": n, "i": i}, {"n": i})
    wd.settle()
    wd.call(wd.d.services["detectors"].run_periodic_now())
    quiet, loud = sim(wd, "learner"), sim(wd, "learner")
    with quiet.run("triage"):
        for i in range(5):
            quiet.tool("lookup", {"ticket": 99, "i": i}, {"n": i})
    with loud.run("triage"):
        for i in range(13):
            loud.tool("lookup", {"ticket": 100, "i": i}, {"n": i})
    assert severities(wd, quiet.session or "") == {}
    sev, evidence = found(wd, loud.session or "")["max_steps"]
    assert sev == "pause" and evidence["learned_p99"] == pytest.approx(6.0)
    assert evidence["caps"]["pause"] == pytest.approx(12.0)


# -- restart -------------------------------------------------------------------------------


def test_a_loop_is_counted_across_a_restart(
    daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    d = daemon_factory(data_dir=tmp_path / "r")
    session = new_id("sess")
    a = AgentSim(otel_provider(d.url), "bot", session)
    with a.run("weather"):
        for _ in range(3):
            a.tool("get_weather", {"city": "Rome"}, None)
    assert severities(d, session) == {"repeat": "warn"}
    d.stop()
    d2 = daemon_factory(data_dir=tmp_path / "r")
    b = AgentSim(otel_provider(d2.url), "bot", session, clock_ns=a.clock_ns)
    with b.run("weather"):
        for _ in range(2):
            b.tool("get_weather", {"city": "Rome"}, None)
    assert severities(d2, session) == {"repeat": "pause"}
    rows = d2.query("SELECT count(*) FROM alerts WHERE session_id = ?", [session])
    assert rows == [(1,)]  # the same alert escalated, not a second one

"""Goal-drift detector: fires / stays quiet per signal, through the real receiver and OTel SDK."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.drift import DriftDetector, validate_drift_context
from detectors.drift_judge import parse_verdict
from detectors.text import (
    LexicalScorer,
    classify_action,
    classify_intent,
    semantic_available,
    tokenize,
)
from tests.agents import drift_corpus as dc
from tests.conftest import DaemonThread, make_settings, otel_provider
from tests.fakes.llm import FakeLLM, Reply
from watchdog.detection import DetectorSettings
from watchdog.errors import ConfigError

RNG = random.Random(11)


@pytest.fixture(scope="session")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dc.build_history_db(tmp_path_factory.getbasetemp())


@pytest.fixture
def start(
    history_dir: Path, tmp_path: Path, daemon_factory: Callable[..., DaemonThread]
) -> Iterator[Callable[..., tuple[DaemonThread, dc.Sender]]]:
    """Start a daemon on a copy of the stored history, with test thresholds merged in."""
    senders: list[dc.Sender] = []

    def go(**detectors: Any) -> tuple[DaemonThread, dc.Sender]:
        merged = {**dc.TEST_DETECTORS, **detectors}
        for key in ("drift", "context"):
            merged[key] = {**dc.TEST_DETECTORS[key], **detectors.get(key, {})}
        data = dc.copy_history(history_dir, tmp_path / "data")
        d = daemon_factory(data_dir=data, detectors=merged)
        s = dc.Sender(d.url, lambda url, agent: otel_provider(url, service=agent))
        senders.append(s)
        return d, s

    yield go
    for s in senders:
        s.close()


def play(d: DaemonThread, s: dc.Sender, *runs: dc.RunSpec) -> list[dict[str, Any]]:
    """Send runs (now), wait for detection, return the drift/context/rule alerts."""
    s.send(list(runs), time.time_ns())
    d.settle()
    rows = d.query(
        "SELECT detector, rule, severity, summary, evidence, trace_id FROM alerts "
        "WHERE detector IN ('drift', 'context', 'rule') ORDER BY created_at"
    )
    return [
        {"detector": r[0], "rule": r[1], "severity": r[2], "summary": r[3],
         "evidence": json.loads(r[4]), "trace": r[5]}
        for r in rows
    ]  # fmt: skip


def loud(alerts: list[dict[str, Any]], trace: str | None = None) -> list[dict[str, Any]]:
    return [
        a for a in alerts
        if a["severity"] in ("warn", "pause", "kill") and (trace is None or a["trace"] == trace)
    ]  # fmt: skip


# -- pure pieces --------------------------------------------------------------------------------


def test_intent_and_action_classification() -> None:
    assert classify_intent("Find recent articles about enterprise pricing").is_read_only
    assert classify_intent("Where is my order ORD-1?").is_read_only
    assert not classify_intent("Find the article and update the pricing page").is_read_only
    assert not classify_intent("Free disk space by removing expired sessions").is_read_only
    assert classify_action("update_page") == "write"
    assert classify_action("sendEmail") == "send"
    assert classify_action("get_order") == "read"
    assert classify_action("run_sql", {"sql": "DELETE FROM users"}) == "delete"
    assert classify_action("run_sql", {"sql": "SELECT 1"}) == "read"
    assert classify_action("crm_sync", overrides={"crm_sync": "write"}) == "write"
    assert tokenize("searchArticles about Pricing") == ["search", "article", "pric"]


def test_lexical_scorer_weighs_the_agents_own_vocabulary() -> None:
    scorer = LexicalScorer()
    scorer.observe(
        "a", [f"search web query {t}" for t in ("solar", "battery", "pricing", "coral")] * 5
    )
    task = "Find articles about battery recycling"
    on = scorer.score("a", task, "search web battery recycling")
    off = scorer.score("a", task, "search web best pizza dough")
    assert on > 0.4 > off
    assert off == 0.0


def test_synonymous_verbs_share_a_token_and_distinct_actions_do_not() -> None:
    assert tokenize("removing expired sessions") == ["delete", "expir", "session"]
    assert tokenize("DELETE FROM sessions") == ["delete", "session"]
    assert tokenize("purged, erased, deleted") == ["delete"] * 3
    assert tokenize("Change the phone number") == tokenize("update phone number")
    assert tokenize("cancel archive restart scale") == ["cancel", "archive", "restart", "scale"]
    scorer = LexicalScorer()
    scorer.observe("a", [f"run sql SELECT count FROM {t}" for t in ("users", "orders")] * 5)
    task = "Free disk space by removing expired sessions"
    assert scorer.score("a", task, "run sql DELETE FROM sessions") > scorer.score(
        "a", task, "run sql DROP TABLE customers"
    )


def test_judge_verdict_parsing() -> None:
    v = parse_verdict(
        '```json\n{"aligned": false, "confidence": 0.82, "reason": "edits the site"}\n```'
    )
    assert v is not None and not v.aligned and v.confidence == pytest.approx(0.82)
    assert parse_verdict("I think it is fine") is None
    assert parse_verdict('{"aligned": "no", "confidence": 0.9}') is None
    assert parse_verdict('{"aligned": true, "confidence": 3}') is None


def test_check_config_reports_embedding_without_extra_and_judge_without_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = DetectorSettings.model_validate({"drift": {"judge": {"enabled": True}}})
    with pytest.raises(ConfigError, match=r"detectors\.drift\.judge\.base_url"):
        validate_drift_context(settings)
    monkeypatch.setattr("detectors.text.semantic_available", lambda: False)
    settings = DetectorSettings.model_validate({"drift": {"scorer": "embedding"}})
    with pytest.raises(ConfigError, match=r"detectors\.drift\.scorer: 'embedding' needs"):
        validate_drift_context(settings)
    # One scorer serves every agent: a per-agent choice is refused, not silently ignored.
    settings = DetectorSettings.model_validate(
        {"agents": {"x": {"drift": {"scorer": "embedding"}}}}
    )
    with pytest.raises(ConfigError, match=r"detectors\.agents\.x\.drift\.scorer: .*once"):
        validate_drift_context(settings)
    same = {"drift": {"scorer": "lexical"}, "agents": {"x": {"drift": {"scorer": "lexical"}}}}
    validate_drift_context(DetectorSettings.model_validate(same))


@pytest.mark.skipif(
    not semantic_available(), reason="the optional `semantic` extra is not installed"
)
def test_embedding_scorer_ranks_related_above_unrelated() -> None:
    from detectors.text import EmbeddingScorer

    scorer = EmbeddingScorer()
    task = "Summarize what is known about coral reef restoration"
    assert scorer.score("a", task, "search web coral reef restoration projects") > scorer.score(
        "a", task, "search web cheap flights to ibiza"
    )


# -- through the daemon ------------------------------------------------------------------------


def test_read_task_that_rewrites_the_website_fires_intent_action_and_new_tool(start: Any) -> None:
    d, s = start()
    run = dc.research_rewrite(RNG)
    alerts = play(d, s, run)
    rules: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if a["trace"] == run.trace_id:
            rules.setdefault(a["rule"], a)  # the first one: update_page comes before publish
    assert rules["intent_action"]["severity"] == "warn"
    assert rules["intent_action"]["evidence"]["tool"] == "update_page"
    assert rules["intent_action"]["evidence"]["task_source"] == "user_message"
    assert "Find relevant articles" in rules["intent_action"]["evidence"]["task"]
    assert "new_tool" in rules


def test_normal_runs_rare_tools_and_new_turns_stay_quiet(start: Any) -> None:
    d, s = start()
    runs = [dc.research_normal(RNG) for _ in range(3)]
    runs += [dc.research_rare(RNG), dc.research_new_turn(RNG), dc.support_normal(RNG)]
    alerts = play(d, s, *runs)
    assert loud(alerts) == []


def test_off_topic_steps_fire_off_task(start: Any) -> None:
    d, s = start()
    run = dc.research_off_topic(RNG)
    alerts = play(d, s, run)
    off = [a for a in alerts if a["rule"] == "off_task"]
    assert off and off[0]["severity"] == "warn" and off[0]["trace"] == run.trace_id
    assert off[0]["evidence"]["scorer"] == "lexical"
    assert min(x["relevance"] for x in off[0]["evidence"]["steps"]) < 0.1


def store_history(data: Path, runs: list[dc.RunSpec]) -> Path:
    """Store `runs` as history in `data` through a real daemon with detection off."""
    d = DaemonThread(make_settings(data, detectors={"enabled": False})).start()
    try:
        sender = dc.Sender(d.url, lambda url, agent: otel_provider(url, service=agent))
        sender.send(runs, dc.HISTORY_START_NS)
        sender.close()
        d.settle()
    finally:
        d.stop()
    return data


@pytest.fixture(scope="session")
def devops_history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 normal devops-bot runs stored through a real daemon (detection off).

    A history as long as the benchmark's: with it, the scorer before synonyms found
    "removing expired sessions" → `DELETE FROM sessions` below this agent's p5.
    """
    rng = random.Random(3)
    runs = [dc.devops_normal(rng) for _ in range(120)]
    return store_history(tmp_path_factory.getbasetemp() / "devops-history", runs)


def test_a_delete_that_does_what_the_task_says_is_not_off_task(
    devops_history_dir: Path, tmp_path: Path, daemon_factory: Callable[..., DaemonThread]
) -> None:
    # "removing expired sessions" then `DELETE FROM sessions`: on task (the missing WHERE
    # is the context rule's business, not drift's). A delete of something else shares
    # only the verb with the task, and still fires.
    data = dc.copy_history(devops_history_dir, tmp_path / "data")
    d = daemon_factory(data_dir=data)
    s = dc.Sender(d.url, lambda url, agent: otel_provider(url, service=agent))
    try:
        wipes = [dc.devops_delete_all(RNG) for _ in range(3)]
        other = dc.devops_delete_all(RNG)
        other.events[-1] = dc.Call(
            "run_sql", {"sql": "DELETE FROM invoices WHERE paid"}, {"rows_affected": 12}
        )
        other.events.append(dc.Call("run_sql", {"sql": "DROP TABLE customers"}, {"ok": True}))
        alerts = play(d, s, *wipes, other)
    finally:
        s.close()
    for wipe in wipes:
        assert [a["rule"] for a in loud(alerts, wipe.trace_id)] == ["bulk_delete_unfiltered"]
    off = [a for a in alerts if a["rule"] == "off_task" and a["trace"] == other.trace_id]
    assert off and off[0]["severity"] == "warn"
    assert [x["tool"] for x in off[0]["evidence"]["steps"]][-2:] == ["run_sql", "run_sql"]


@pytest.mark.skipif(
    not semantic_available(), reason="the optional `semantic` extra is not installed"
)
def test_embedding_scorer_learns_the_stored_history_and_fires_off_task(start: Any) -> None:
    # The daemon restores the history with the embedding scorer (batched), then scores
    # live steps one by one: an off-topic run fires, a normal one stays quiet.
    d, s = start(drift={"scorer": "embedding"})
    ok, bad = dc.research_normal(RNG), dc.research_off_topic(RNG)
    alerts = play(d, s, ok, bad)
    assert loud(alerts, ok.trace_id) == []
    off = [a for a in alerts if a["rule"] == "off_task" and a["trace"] == bad.trace_id]
    assert off and off[0]["evidence"]["scorer"] == "embedding"


def test_a_new_user_turn_resets_the_task(start: Any) -> None:
    d, s = start()
    run = dc.research_new_turn(RNG)
    alerts = play(d, s, run)
    assert [a for a in alerts if a["rule"] == "off_task"] == []


def test_explicit_task_attribute_is_the_task(start: Any) -> None:
    d, s = start()
    run = dc.research_rewrite(RNG)
    run.explicit_task = True
    alerts = play(d, s, run)
    found = [a for a in alerts if a["rule"] == "intent_action"]
    assert found and found[0]["evidence"]["task_source"] == "attribute"


def test_without_content_capture_structural_signals_say_so(start: Any) -> None:
    d, s = start()
    quiet = dc.research_blind_normal(RNG)
    blind = dc.research_blind_delete(RNG)
    alerts = play(d, s, quiet, blind)
    assert loud(alerts, quiet.trace_id) == []
    new = [a for a in alerts if a["rule"] == "new_tool" and a["trace"] == blind.trace_id]
    assert new and new[0]["severity"] == "warn"
    assert "content is not captured" in new[0]["summary"]
    assert new[0]["evidence"]["task_source"] == "none"


def test_declared_scope_deny_allow_and_read_only(start: Any) -> None:
    d, s = start(
        agents={
            "research-bot": {"drift": {"scope": {"deny_tools": ["publish_*"], "read_only": True}}},
            "devops-bot": {"drift": {"scope": {"allow_tools": ["get_*", "query_*"]}}},
        }
    )
    rewrite, ok = dc.research_rewrite(RNG), dc.research_normal(RNG)
    ops = dc.devops_normal(RNG)
    ops.events.append(dc.Call("restart_service", {"service": "auth"}, {"ok": True}))
    alerts = play(d, s, rewrite, ok, ops)
    by_rule = {(a["trace"], a["rule"]): a for a in alerts}
    assert by_rule[(rewrite.trace_id, "scope_denied")]["severity"] == "pause"
    assert by_rule[(rewrite.trace_id, "read_only_scope")]["severity"] == "pause"
    assert by_rule[(ops.trace_id, "scope_not_allowed")]["evidence"]["tool"] == "restart_service"
    assert loud(alerts, ok.trace_id) == []


def test_pre_action_check_applies_scope_and_intent(start: Any) -> None:
    d, s = start(agents={"research-bot": {"drift": {"scope": {"deny_tools": ["delete_*"]}}}})
    run = dc.research_normal(RNG)
    run.task = "Find recent articles about solar panel efficiency"
    play(d, s, run)
    drift: DriftDetector = d.d.services["drift"]
    found = drift.check_action("research-bot", run.session, "delete_page", {"page": "home"})
    assert {f.rule for f in found} >= {"scope_denied", "intent_action"}
    assert drift.check_action("research-bot", run.session, "search_web", {"query": "solar"}) == []


def test_judge_is_asked_only_when_suspicious_and_its_verdict_becomes_a_finding(start: Any) -> None:
    with FakeLLM() as llm:
        llm.enqueue(
            Reply(content='{"aligned": false, "confidence": 0.91, "reason": "rewrites the site"}')
        )
        judge = {"enabled": True, "base_url": llm.base_url, "api_key": "sk-test", "timeout_s": 5}
        d, s = start(drift={"judge": judge})
        quiet, bad = dc.research_normal(RNG), dc.research_rewrite(RNG)
        play(d, s, quiet)
        assert llm.requests == []  # nothing suspicious: the judge is never asked
        alerts = play(d, s, bad)
        assert len(llm.requests) >= 1
        body = llm.requests[0].body
        assert "Find relevant articles" in json.dumps(body["messages"])
        assert llm.requests[0].headers.get("Authorization") == "Bearer sk-test"
        judged = [a for a in alerts if a["rule"] == "judge_misaligned"]
        assert judged and judged[0]["evidence"]["confidence"] == pytest.approx(0.91)
        rows = d.query("SELECT aligned, confidence, agent_name FROM drift_judgements")
        assert rows and rows[0][0] is False and rows[0][2] == "research-bot"


def test_judge_answer_aligned_raises_nothing(start: Any) -> None:
    with FakeLLM() as llm:
        llm.default = Reply(content='{"aligned": true, "confidence": 0.95, "reason": "fine"}')
        d, s = start(drift={"judge": {"enabled": True, "base_url": llm.base_url}})
        alerts = play(d, s, dc.research_rewrite(RNG))
        assert llm.requests
        assert [a for a in alerts if a["rule"] == "judge_misaligned"] == []

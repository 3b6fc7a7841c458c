# ruff: noqa: F811  (pytest fixtures imported from tests.test_drift are redefined as parameters)
"""Unusual-context detector and declarative rules: fires / stays quiet per signal, real receiver."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detectors.context import (
    ContextProfiles,
    Figure,
    evaluate_proposed_action,
    is_empty_result,
    is_grounded,
    money_figures,
    recipient_count,
    recipients_of,
)
from detectors.context_profile import FieldProfile, ProfileThresholds, value_shape
from detectors.context_rules import RuleSubject, evaluate, load_rules, parse_rules
from detectors.drift import validate_drift_context
from tests.agents import drift_corpus as dc
from tests.conftest import DaemonThread, http_json, otel_provider
from tests.test_drift import history_dir, loud, play, start, store_history  # noqa: F401  (fixtures)
from watchdog.detection import DetectorSettings
from watchdog.drift_context import ContextRules
from watchdog.errors import ConfigError
from watchdog.model import Step

RNG = random.Random(5)


def rules_of(alerts: list[dict[str, Any]], trace: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if a["trace"] == trace:
            out.setdefault(a["rule"], a)
    return out


# -- pure pieces --------------------------------------------------------------------------------


def test_shapes_figures_recipients_and_empty_results() -> None:
    assert value_shape("Mary Smith") == "Aa Aa"
    assert value_shape("Mary-Jane Smith") == "Aa-Aa Aa"
    assert value_shape("ORD-12345") == "A-9"
    assert recipient_count({"to": ["a@x.io", "b@x.io"], "cc": "c@x.io, d@x.io"}, ["to", "cc"]) == 4
    assert recipient_count({"message": {"recipients": list(range(7))}}, ["recipients"]) == 7
    assert recipient_count('{"to": ["a@x.io", "b@x.io", "c@ex', ["to"]) == 2  # clipped JSON
    assert recipient_count({"query": "x"}, ["to"]) is None
    assert recipients_of({"to": ["a@x.io"], "cc": "c@x.io; d@x.io"}, ["to", "cc"]) == [
        "a@x.io", "c@x.io", "d@x.io"
    ]  # fmt: skip
    assert recipients_of({"msg": {"user_ids": [7, 8]}}, ["user_ids"]) == ["7", "8"]
    figs = money_figures({"amount": 39.5, "body": "Pro is $1,299.00/yr or 15% off"}, ["amount"])
    assert {(f.value, f.percent) for f in figs} == {(39.5, False), (1299.0, False), (15.0, True)}
    assert is_grounded(Figure("a", 49.0), [49.0])
    assert is_grounded(Figure("a", 79.98), [39.99, 2.0])  # unit price × quantity
    assert is_grounded(Figure("a", 39.2), [49.0, 20.0])  # 20 % discount
    assert is_grounded(Figure("a", 64.49), [24.5, 39.99])  # two line items
    assert not is_grounded(Figure("a", 39.0), [49.0, 1.0, 3.0])
    for empty in (
        "[]",
        '{"rows": []}',
        '{"contacts": []}',
        '{"orders": [], "count": 0}',
        "No results found.",
    ):
        assert is_empty_result(empty), empty
    for full in ('{"rows": [1]}', '{"tags": [], "name": "x"}', '{"count": 3}', "ok"):
        assert not is_empty_result(full), full


def test_field_profile_flags_sign_category_range_and_shape() -> None:
    th = ProfileThresholds(
        min_values_range=50, min_values_sign=10, min_values_category=10, min_values_shape=10
    )
    balance, currency, name = FieldProfile(), FieldProfile(), FieldProfile()
    for i in range(60):
        balance.learn(100.0 + i)
        currency.learn("USD" if i % 3 else "EUR")
        name.learn(f"{dc.FIRST[i % 12]} {dc.LAST[i // 12]}")  # 60 distinct: not a category
    anomaly = balance.check("$.balance", -5.0, th)
    assert anomaly is not None and anomaly.kind == "sign"
    anomaly = balance.check("$.balance", 10_000.0, th)
    assert anomaly is not None and anomaly.kind == "range"
    assert balance.check("$.balance", 120.0, th) is None
    anomaly = currency.check("$.currency", "XBT", th)
    assert anomaly is not None and anomaly.kind == "category"
    assert currency.check("$.currency", "USD", th) is None
    anomaly = name.check("$.name", "Ann-Marie Smith", th)
    assert anomaly is not None and anomaly.kind == "shape"
    assert balance.check("$.balance", "n/a", th) is not None  # type change


def test_rules_files_are_validated_with_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules\.0\.all\.0: .*needs a number"):
        parse_rules(
            "rules:\n  - {id: x_y, severity: warn, all: [{field: cost_usd, op: gt, value: high}]}",
            "f",
        )
    with pytest.raises(ConfigError, match=r"rules\.0\.all\.0\.field"):
        parse_rules("rules:\n  - {id: x_y, severity: warn, all: [{field: bogus, op: exists}]}", "f")
    with pytest.raises(ConfigError, match=r"rules\.0\.colour: Extra inputs"):
        parse_rules(
            "rules:\n  - {id: x_y, severity: warn, colour: red, all: [{field: tool, op: exists}]}",
            "f",
        )
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {id: Bad-Id, severity: warn, all: [{field: tool, op: exists}]}\n")
    settings = DetectorSettings.model_validate({"context": {"rules_files": [str(bad)]}})
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        validate_drift_context(settings)


def test_rule_evaluation_over_json_paths() -> None:
    rules = parse_rules(
        """
rules:
  - id: big_line_item
    severity: warn
    tools: ["create_*"]
    all:
      - {field: "args.lines[*].amount", op: gt, value: 1000}
      - {field: "result.status", op: in, value: [ok, created]}
""",
        "inline",
    )
    hit = RuleSubject("a", "tool", "create_invoice", "create",
                      {"lines": [{"amount": 5}, {"amount": 5000}]}, {"status": "ok"})  # fmt: skip
    miss = RuleSubject(
        "a", "tool", "create_invoice", "create", {"lines": [{"amount": 5}]}, {"status": "ok"}
    )
    other = RuleSubject(
        "a", "tool", "send_invoice", "send", {"lines": [{"amount": 5000}]}, {"status": "ok"}
    )
    assert [h.rule.id for h in evaluate(rules, hit)] == ["big_line_item"]
    assert evaluate(rules, miss) == [] and evaluate(rules, other) == []
    shipped = {r.id for r in load_rules([])}
    assert {"bulk_send_over_50", "negative_payment", "bulk_delete_unfiltered"} <= shipped
    assert "negative_payment" not in {r.id for r in load_rules([], disabled=["negative_payment"])}


def test_evaluate_proposed_action_is_pure_and_catches_the_wrong_price() -> None:
    base = dict(parent_span_id="", start_time_ns=1, end_time_ns=2, service_name="s",
                agent_name="support-bot", session_id="S", trace_id="T")  # fmt: skip
    history = [
        Step(span_id="1", kind="llm", user_message="How much is the Pro plan?", **base),  # type: ignore[arg-type]
        Step(span_id="2", kind="tool", tool_name="search_kb", tool_args='{"query": "pro"}',
             tool_result='{"plan": "Pro", "price": 49}', **base),  # type: ignore[arg-type]
    ]  # fmt: skip
    rules = ContextRules.model_validate({})
    profiles = ContextProfiles(ProfileThresholds())
    wrong = evaluate_proposed_action("support-bot", "S", "send_reply",
                                     {"to": ["a@x.io"], "body": "Pro costs $39/month"}, history,
                                     rules=rules, profiles=profiles)  # fmt: skip
    assert [f.rule for f in wrong] == ["ungrounded_figure"] and wrong[0].severity == "pause"
    right = evaluate_proposed_action("support-bot", "S", "send_reply",
                                     {"to": ["a@x.io"], "body": "Pro costs $49/month"}, history,
                                     rules=rules, profiles=profiles)  # fmt: skip
    assert right == []


# -- through the daemon ------------------------------------------------------------------------


def test_negative_balance_fires_sign_flip_and_normal_billing_stays_quiet(start: Any) -> None:
    d, s = start()
    bad, ok = dc.billing_negative(RNG), dc.billing_normal(RNG)
    alerts = play(d, s, ok, bad)
    found = rules_of(alerts, bad.trace_id)["sign_flip"]
    assert found["severity"] == "pause" and found["evidence"]["path"] == "result.balance"
    assert loud(alerts, ok.trace_id) == []


def test_unseen_currency_fires_unseen_category_at_pause_for_a_payment(start: Any) -> None:
    d, s = start()
    run = dc.billing_currency(RNG)
    found = rules_of(play(d, s, run), run.trace_id)["unseen_category"]
    assert found["evidence"]["value"] == "XBT" and found["severity"] == "pause"


def test_huge_invoice_fires_out_of_range(start: Any) -> None:
    d, s = start()
    run = dc.billing_huge_invoice(RNG)
    found = rules_of(play(d, s, run), run.trace_id)["out_of_range"]
    assert found["evidence"]["path"] == "result.items[*].amount"


def test_hyphenated_name_fires_unseen_shape(start: Any) -> None:
    d, s = start()
    run = dc.crm_hyphen(RNG)
    found = rules_of(play(d, s, run), run.trace_id)["unseen_shape"]
    assert "-" in found["evidence"]["value"]


def test_update_after_empty_lookup_fires_but_create_and_routine_replies_do_not(start: Any) -> None:
    d, s = start()
    bad = dc.crm_empty_delete(RNG)
    create = next(
        r for r in iter(lambda: dc.crm_normal(RNG), None) if r.label == "normal_empty_then_create"
    )
    reply = next(
        r for r in iter(lambda: dc.support_normal(RNG), None) if r.label == "normal_not_found_reply"
    )
    alerts = play(d, s, create, reply, bad)
    found = rules_of(alerts, bad.trace_id)["empty_then_destructive"]
    assert found["severity"] == "pause" and found["evidence"]["lookup_tool"] == "search_contacts"
    assert loud(alerts, create.trace_id) == [] and loud(alerts, reply.trace_id) == []


@pytest.fixture(scope="session")
def support_history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Normal support-bot runs in which no look-up ever came back empty."""
    rng = random.Random(3)
    runs = [r for r in (dc.support_normal(rng) for _ in range(60)) if r.label == "normal"]
    return store_history(tmp_path_factory.getbasetemp() / "support-history", runs[:40])


def _not_found_reply() -> dc.RunSpec:
    return next(
        r for r in iter(lambda: dc.support_normal(RNG), None) if r.label == "normal_not_found_reply"
    )


def test_a_not_found_reply_is_info_even_unseen_and_a_send_to_a_stranger_pauses(
    support_history_dir: Path, tmp_path: Path, daemon_factory: Callable[..., DaemonThread]
) -> None:
    # The history never had an empty get_order, so the pair get_order → send_reply is
    # unknown. Replying to the customer the run looked up is still the right answer (and
    # at info the run is learned, so the pair becomes routine); writing to anyone else
    # after the empty look-up is not.
    data = dc.copy_history(support_history_dir, tmp_path / "data")
    d = daemon_factory(data_dir=data, detectors=dc.TEST_DETECTORS)
    s = dc.Sender(d.url, lambda url, agent: otel_provider(url, service=agent))
    reply, stranger = _not_found_reply(), _not_found_reply()
    send = stranger.events[-1]
    assert isinstance(send, dc.Call)
    send.args = {**send.args, "to": ["someone.else@example.org"]}
    try:
        alerts = play(d, s, reply, stranger)
    finally:
        s.close()
    info = rules_of(alerts, reply.trace_id)["empty_then_destructive"]
    assert info["severity"] == "info" and info["evidence"]["recipients_in_run"] is True
    assert info["evidence"]["pair_seen_in_normal_runs"] == 0
    assert loud(alerts, reply.trace_id) == []
    found = rules_of(alerts, stranger.trace_id)["empty_then_destructive"]
    assert found["severity"] == "pause" and found["evidence"]["recipients_in_run"] is False


def test_reply_to_200_customers_fires_fan_out_and_the_shipped_rule(start: Any) -> None:
    d, s = start()
    bad = dc.support_mass_reply(RNG)
    ok = dc.support_normal(RNG)
    alerts = play(d, s, ok, bad)
    got = rules_of(alerts, bad.trace_id)
    assert got["fan_out_recipients"]["evidence"]["recipients"] == 200
    assert got["bulk_send_over_50"]["detector"] == "rule"
    assert got["bulk_send_over_50"]["severity"] == "pause"
    assert loud(alerts, ok.trace_id) == []


def test_charging_forty_accounts_fires_fan_out_run(start: Any) -> None:
    d, s = start()
    run = dc.billing_charge_everyone(RNG)
    found = rules_of(play(d, s, run), run.trace_id)["fan_out_run"]
    assert found["evidence"]["side_effect_calls"] > found["evidence"]["max_seen"] * 2


def test_wrong_price_fires_ungrounded_figure_and_derived_figures_stay_quiet(start: Any) -> None:
    d, s = start()
    bad, derived = dc.support_wrong_price(RNG), dc.support_discount(RNG)
    refund = dc.support_wrong_refund(RNG)
    alerts = play(d, s, derived, bad, refund)
    assert rules_of(alerts, bad.trace_id)["ungrounded_figure"]["severity"] == "pause"
    assert (
        rules_of(alerts, refund.trace_id)["ungrounded_figure"]["evidence"]["figures"][0]["path"]
        == "args.amount"
    )
    assert [
        a for a in alerts if a["trace"] == derived.trace_id and a["rule"] == "ungrounded_figure"
    ] == []


def test_unfiltered_delete_fires_the_shipped_rule(start: Any) -> None:
    d, s = start()
    run = dc.devops_delete_all(RNG)
    found = rules_of(play(d, s, run), run.trace_id)["bulk_delete_unfiltered"]
    assert found["detector"] == "rule" and found["severity"] == "pause"


def test_user_rules_file_replaces_a_shipped_rule_and_rules_can_be_disabled(
    start: Any, tmp_path: Path
) -> None:
    custom = tmp_path / "team.yaml"
    custom.write_text(
        "rules:\n"
        "  - id: bulk_send_over_50\n"
        "    description: our support bot never writes to more than one person\n"
        "    severity: warn\n"
        "    agents: [support-*]\n"
        "    actions: [send]\n"
        "    all: [{field: recipient_count, op: gt, value: 1}]\n"
    )
    d, s = start(
        context={"rules_files": [str(custom)], "disabled_rules": ["bulk_delete_unfiltered"]}
    )
    two = dc.support_normal(RNG)
    two.events = [
        dc.Call(
            "send_reply", {"to": ["a@example.com", "b@example.com"], "body": "Hi"}, {"sent": True}
        )
    ]
    wipe = dc.devops_delete_all(RNG)
    alerts = play(d, s, two, wipe)
    found = rules_of(alerts, two.trace_id)["bulk_send_over_50"]
    assert found["severity"] == "warn" and "one person" in found["summary"]
    assert "bulk_delete_unfiltered" not in rules_of(alerts, wipe.trace_id)


def test_guard_check_holds_a_wrong_price_email_before_it_is_sent(start: Any) -> None:
    d, s = start()
    run = dc.support_wrong_price(RNG)
    send = run.events.pop()  # the agent asks the guard before sending
    play(d, s, run)
    assert isinstance(send, dc.Call)
    status, body = http_json("POST", f"{d.url}/api/v1/check",
                             {"agent": "support-bot", "session": run.session, "tool": send.tool, "args": send.args})  # fmt: skip
    assert status == 200, body
    assert body["verdict"] == "hold", body
    assert any(f["rule"] == "ungrounded_figure" for f in body["findings"])
    ok_args = {**send.args, "body": "Thanks, we will get back to you."}
    status, body = http_json("POST", f"{d.url}/api/v1/check",
                             {"agent": "support-bot", "session": run.session, "tool": send.tool, "args": ok_args})  # fmt: skip
    assert body["verdict"] == "allow", body

"""Dashboard JSON API, live-update stream, metrics and canned queries against a real daemon.

Traces go in through the real receiver (the OTel SDK's OTLP/HTTP exporter); the expected
figures are computed here from what was sent, with genai-prices called directly.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.trace import Status, StatusCode

from dashboards.app import DashboardApp
from dashboards.queries import load_queries, parse_query
from tests.conftest import ROOT, DaemonThread, http_json, otel_provider
from watchdog.errors import ConfigError
from watchdog.model import Finding

# --- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Llm:
    model: str
    inp: int
    out: int
    provider: str = "openai"


@dataclass(frozen=True)
class Tool:
    name: str
    args: dict[str, Any]
    result: str
    error: bool = False


@dataclass
class SentRun:
    trace_id: str
    agent: str
    session: str
    steps: int  # root agent span included
    llm_calls: int
    tool_calls: int
    cost: float | None
    tokens: int
    errors: int
    span_ids: list[str] = field(default_factory=list)  # children, in order
    tool_spans: dict[str, str] = field(default_factory=dict)  # tool name → span id


def price(step: Llm) -> float | None:
    """The price of one call, straight from genai-prices (None when it has no price)."""
    try:
        return float(
            calc_price(
                Usage(input_tokens=step.inp, output_tokens=step.out),
                model_ref=step.model,
                provider_id=step.provider,
            ).total_price
        )
    except LookupError:
        return None


def send_run(
    url: str,
    *,
    service: str,
    agent: str,
    session: str,
    steps: list[Llm | Tool],
    start_ns: int,
) -> SentRun:
    """Send one run through the real OTel SDK: an agent span with one child per step."""
    provider = otel_provider(url, service=service)
    tracer = provider.get_tracer("dashboard-test")
    ident = {"gen_ai.agent.name": agent, "gen_ai.conversation.id": session}
    step_ns = 1_000_000_000
    root = tracer.start_span(
        f"invoke_agent {agent}",
        attributes={"gen_ai.operation.name": "invoke_agent", **ident},
        start_time=start_ns,
    )
    run = SentRun("", agent, session, 1, 0, 0, None, 0, 0)
    run.trace_id = format(root.get_span_context().trace_id, "032x")
    from opentelemetry import trace as otel_trace

    ctx = otel_trace.set_span_in_context(root)
    costs: list[float] = []
    for i, st in enumerate(steps):
        t0 = start_ns + (i + 1) * step_ns
        if isinstance(st, Llm):
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": st.provider,
                "gen_ai.request.model": st.model,
                "gen_ai.usage.input_tokens": st.inp,
                "gen_ai.usage.output_tokens": st.out,
                **ident,
            }
            span = tracer.start_span(
                f"chat {st.model}", context=ctx, attributes=attrs, start_time=t0
            )
            run.llm_calls += 1
            run.tokens += st.inp + st.out
            usd = price(st)
            if usd is not None:
                costs.append(usd)
        else:
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": st.name,
                "gen_ai.tool.call.arguments": json.dumps(st.args),
                "gen_ai.tool.call.result": st.result,
                **ident,
            }
            span = tracer.start_span(
                f"execute_tool {st.name}", context=ctx, attributes=attrs, start_time=t0
            )
            if st.error:
                span.set_status(Status(StatusCode.ERROR, "tool failed"))
                run.errors += 1
            run.tool_calls += 1
            run.tool_spans[st.name] = format(span.get_span_context().span_id, "016x")
        run.span_ids.append(format(span.get_span_context().span_id, "016x"))
        run.steps += 1
        span.end(end_time=t0 + 400_000_000)
    root.end(end_time=start_ns + (len(steps) + 1) * step_ns)
    provider.force_flush()
    provider.shutdown()
    run.cost = sum(costs) if costs else None
    return run


@dataclass
class Scenario:
    runs: dict[str, SentRun]
    llm: list[tuple[str, Llm]]  # (agent, call)
    alerts: dict[str, str] = field(default_factory=dict)  # name → alert id

    def spend_by(self, key: Callable[[str, Llm], str]) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for agent, call in self.llm:
            usd = price(call)
            out[key(agent, call)] += usd or 0.0
        return dict(out)

    def calls_by(self, key: Callable[[str, Llm], str]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for agent, call in self.llm:
            out[key(agent, call)] += 1
        return dict(out)

    @property
    def total_usd(self) -> float:
        return sum(self.spend_by(lambda a, c: "all").values())


PLAN: dict[str, tuple[str, str, str, list[Llm | Tool]]] = {
    # name: (service, agent, session, steps)
    "research-1": (
        "research-svc",
        "researcher",
        "sess-r1",
        [
            Llm("gpt-4o", 1200, 80),
            Tool("search_web", {"query": "enterprise pricing articles"}, "3 articles found"),
            Llm("gpt-4o", 2500, 150),
            Tool("fetch_page", {"url": "https://example.com/pricing"}, "<html>pricing</html>"),
        ],
    ),
    "research-2": (
        "research-svc",
        "researcher",
        "sess-r2",
        [
            Llm("gpt-4o-mini", 800, 40),
            Llm("gpt-4o-mini", 900, 60),
        ],
    ),
    "writer-1": (
        "writer-svc",
        "writer",
        "sess-w1",
        [
            Llm("gpt-4o-mini", 3000, 500),
            Tool(
                "update_page",
                {"page": "pricing", "body": "new text"},
                "permission denied",
                error=True,
            ),
            Llm("acme-unpriced-1", 100, 10, provider="acme"),
        ],
    ),
}


def seed(d: DaemonThread) -> Scenario:
    """Send the three runs, then record two alerts (one on a step) and resolve a third."""
    base = time.time_ns() - 90 * 1_000_000_000
    runs: dict[str, SentRun] = {}
    llm: list[tuple[str, Llm]] = []
    for i, (name, (service, agent, session, steps)) in enumerate(PLAN.items()):
        runs[name] = send_run(
            d.url,
            service=service,
            agent=agent,
            session=session,
            steps=steps,
            start_ns=base + i * 10_000_000_000,
        )
        llm += [(agent, s) for s in steps if isinstance(s, Llm)]
    d.settle()
    r1, w1 = runs["research-1"], runs["writer-1"]
    findings = [
        Finding(
            detector="loop",
            rule="repeated_tool_call",
            severity="warn",
            summary="search_web called again with the same query",
            agent_name="researcher",
            service_name="research-svc",
            session_id=r1.session,
            trace_id=r1.trace_id,
            span_ids=(r1.tool_spans["search_web"],),
            key="dash-loop",
            evidence={"tool": "search_web", "repeats": 3},
        ),
        Finding(
            detector="spend",
            rule="run_budget",
            severity="pause",
            summary="run spent more than its cap",
            agent_name="writer",
            service_name="writer-svc",
            session_id=w1.session,
            trace_id=w1.trace_id,
            key="dash-spend",
            evidence={"cap_usd": 0.001},
        ),
        Finding(
            detector="context",
            rule="empty_table",
            severity="info",
            summary="an empty table was read",
            agent_name="writer",
            service_name="writer-svc",
            session_id=w1.session,
            trace_id=w1.trace_id,
            key="dash-context",
        ),
    ]
    events = d.call(d.d.alerts.record(findings))
    ids = {e.alert.rule: e.alert.id for e in events}
    d.call(d.d.alerts.resolve(ids["empty_table"]))
    d.settle()
    return Scenario(runs, llm, ids)


# Only the findings recorded above raise alerts (no detectors), and only explicit actions
# set verdicts (the alert → verdict policy audits what it would do but sets nothing).
TEST_SETTINGS: dict[str, Any] = {
    "detectors": {"enabled": False},
    "enforcement": {"policy": {"dry_run": True}},
}


@pytest.fixture
def dash(daemon_factory: Callable[..., DaemonThread]) -> tuple[DaemonThread, Scenario]:
    d = daemon_factory(**TEST_SETTINGS)
    return d, seed(d)


def get(d: DaemonThread, path: str) -> Any:
    status, body = http_json("GET", d.url + path)
    assert status == 200, body
    assert body["ok"] is True
    return body


# --- overview -------------------------------------------------------------------------------


def test_overview_figures_match_what_was_sent(dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    o = get(d, "/api/dashboard/overview")
    today = o["today"]
    assert today["usd"] == pytest.approx(sc.total_usd, rel=1e-9)
    assert today["calls"] == len(sc.llm)
    assert today["unpriced_calls"] == 1
    assert today["input_tokens"] == sum(c.inp for _, c in sc.llm)
    by_agent = {a["agent"]: a["usd"] for a in today["by_agent"]}
    assert by_agent == pytest.approx(sc.spend_by(lambda a, c: a))
    by_model = {m["model"]: m["usd"] for m in today["by_model"]}
    assert by_model == pytest.approx(sc.spend_by(lambda a, c: c.model))
    assert {m["model"]: m["calls"] for m in today["by_model"]} == sc.calls_by(lambda a, c: c.model)
    assert o["runs_today"] == 3

    # The 24 h timeline holds the same money, split the same ways.
    tl = o["timeline"]
    assert len(tl["buckets"]) == 24
    assert {s["name"]: s["total_usd"] for s in tl["by_agent"]} == pytest.approx(
        sc.spend_by(lambda a, c: a)
    )
    assert sum(s["total_usd"] for s in tl["by_model"]) == pytest.approx(sc.total_usd)

    active = {r["trace_id"]: r for r in o["active_runs"]}
    assert set(active) == {r.trace_id for r in sc.runs.values()}
    for run in sc.runs.values():
        got = active[run.trace_id]
        assert got["steps"] == run.steps
        assert got["agent"] == run.agent
        assert got["cost_usd"] == pytest.approx(run.cost)
        assert got["verdict"] is None

    alerts = o["alerts"]
    assert alerts["count"] == 2
    assert alerts["by_severity"] == {"info": 0, "warn": 1, "pause": 1, "kill": 0}
    # strongest first
    assert [a["rule"] for a in alerts["items"]] == ["run_budget", "repeated_tool_call"]
    assert o["verdicts"] == []


def test_overview_shows_verdicts_and_run_verdicts(dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    r2 = sc.runs["research-2"]
    d.call(d.d.verdicts.set(("agent", "writer"), "kill", actor="cli", reason="runaway"))
    d.call(d.d.verdicts.set(("session", r2.session), "pause", actor="cli", reason="look first"))
    o = get(d, "/api/dashboard/overview")
    assert {(v["scope_type"], v["scope_value"], v["state"]) for v in o["verdicts"]} == {
        ("agent", "writer", "kill"),
        ("session", r2.session, "pause"),
    }
    verdicts = {r["trace_id"]: r["verdict"] for r in o["active_runs"]}
    assert verdicts[sc.runs["writer-1"].trace_id]["state"] == "kill"
    assert verdicts[sc.runs["writer-1"].trace_id]["scope"] == {"type": "agent", "value": "writer"}
    assert verdicts[r2.trace_id]["state"] == "pause"
    assert verdicts[sc.runs["research-1"].trace_id] is None


@pytest.mark.parametrize(
    ("query", "error"),
    [("range=1y", "range must be one of"), ("range=", "range must be one of")],
    ids=["unknown-range", "empty-range"],
)
def test_overview_rejects_bad_parameters(daemon: DaemonThread, query: str, error: str) -> None:
    status, body = http_json("GET", f"{daemon.url}/api/dashboard/overview?{query}")
    assert status == 400
    assert error in body["error"]


def test_overview_of_an_empty_store(daemon: DaemonThread) -> None:
    o = get(daemon, "/api/dashboard/overview?range=30d")
    assert o["today"]["usd"] == 0 and o["today"]["by_agent"] == []
    assert len(o["timeline"]["buckets"]) == 30
    assert o["active_runs"] == [] and o["alerts"]["count"] == 0


# --- runs -----------------------------------------------------------------------------------


def run_ids(body: dict[str, Any]) -> list[str]:
    return [r["trace_id"] for r in body["runs"]]


def test_runs_sort_by_every_column_and_filter(dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    runs = list(sc.runs.values())
    body = get(d, "/api/dashboard/runs")
    assert body["total"] == 3 and not body["truncated"]
    assert set(body["agents"]) == {"researcher", "writer"}
    by_id = {r["trace_id"]: r for r in body["runs"]}
    for run in runs:
        got = by_id[run.trace_id]
        assert (
            got["steps"],
            got["llm_calls"],
            got["tool_calls"],
            got["errors"],
            got["tokens"],
        ) == (
            run.steps,
            run.llm_calls,
            run.tool_calls,
            run.errors,
            run.tokens,
        )
        assert got["cost_usd"] == pytest.approx(run.cost)
    # newest first by default
    assert run_ids(body) == [sc.runs[n].trace_id for n in ("writer-1", "research-2", "research-1")]
    by_cost = sorted(runs, key=lambda r: -(r.cost or 0))
    assert run_ids(get(d, "/api/dashboard/runs?sort=cost")) == [r.trace_id for r in by_cost]
    assert run_ids(get(d, "/api/dashboard/runs?sort=cost&dir=asc")) == [
        r.trace_id for r in reversed(by_cost)
    ]
    by_steps = sorted(runs, key=lambda r: -r.steps)
    assert run_ids(get(d, "/api/dashboard/runs?sort=steps")) == [r.trace_id for r in by_steps]
    alerts = get(d, "/api/dashboard/runs?sort=alerts")
    # writer-1 has an open and a resolved alert, research-1 one, research-2 none
    assert [r["alerts"] for r in alerts["runs"]] == [2, 1, 0]
    assert alerts["runs"][0]["open_alerts"] == 1 and alerts["runs"][0]["max_severity"] == "pause"

    writer = get(d, "/api/dashboard/runs?agent=writer")
    assert run_ids(writer) == [sc.runs["writer-1"].trace_id] and writer["total"] == 1
    with_alerts = get(d, "/api/dashboard/runs?min_alerts=1&sort=cost&dir=asc")
    assert set(run_ids(with_alerts)) == {
        sc.runs["research-1"].trace_id,
        sc.runs["writer-1"].trace_id,
    }
    cheap_cut = (sc.runs["research-1"].cost or 0) - 1e-9
    assert run_ids(get(d, f"/api/dashboard/runs?min_cost={cheap_cut}&sort=cost")) == [
        r.trace_id for r in by_cost if (r.cost or 0) >= cheap_cut
    ]
    assert run_ids(get(d, "/api/dashboard/runs?min_steps=5")) == [sc.runs["research-1"].trace_id]
    prefix = sc.runs["research-2"].trace_id[:10]
    assert run_ids(get(d, f"/api/dashboard/runs?q={prefix}")) == [sc.runs["research-2"].trace_id]
    capped = get(d, "/api/dashboard/runs?limit=1&sort=steps")
    assert capped["total"] == 3 and capped["truncated"] and len(capped["runs"]) == 1
    assert get(d, "/api/dashboard/runs?since=1h")["total"] == 3


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("sort=drop_table", "sort must be one of"),
        ("dir=sideways", "dir must be one of"),
        ("min_cost=abc", "min_cost must be a number"),
        ("min_cost=-1", "non-negative"),
        ("min_steps=1.5", "min_steps must be an integer"),
        ("limit=999999", "limit must be between"),
        ("since=forever", "since must be one of"),
        ("q=not-hex%27%3B", "hex trace-id prefix"),
    ],
    ids=["sort", "dir", "cost-nan", "cost-negative", "steps-float", "limit", "since", "q"],
)
def test_runs_reject_bad_parameters(daemon: DaemonThread, query: str, error: str) -> None:
    status, body = http_json("GET", f"{daemon.url}/api/dashboard/runs?{query}")
    assert status == 400, body
    assert error in body["error"]


def test_run_detail_is_a_timeline_with_alerts_on_their_steps(
    dash: tuple[DaemonThread, Scenario],
) -> None:
    d, sc = dash
    r1 = sc.runs["research-1"]
    run = get(d, f"/api/dashboard/runs/{r1.trace_id}")
    assert run["steps"] == r1.steps and run["llm_calls"] == r1.llm_calls
    assert run["cost_usd"] == pytest.approx(r1.cost)
    items = run["items"]
    assert [it["kind"] for it in items] == ["agent", "llm", "tool", "llm", "tool"]
    assert [it["span_id"] for it in items[1:]] == r1.span_ids
    starts = [it["start"] for it in items]
    assert starts == sorted(starts)
    search = next(it for it in items if it["tool_name"] == "search_web")
    assert json.loads(search["tool_args"]) == {"query": "enterprise pricing articles"}
    assert search["tool_result"] == "3 articles found"
    assert len(search["alert_ids"]) == 1
    (alert,) = run["alerts"]
    assert alert["id"] == search["alert_ids"][0] == sc.alerts["repeated_tool_call"]
    assert alert["span_ids"] == [r1.tool_spans["search_web"]]
    assert alert["evidence"]["repeats"] == 3
    first_llm = items[1]
    assert (first_llm["model"], first_llm["input_tokens"], first_llm["output_tokens"]) == (
        "gpt-4o",
        1200,
        80,
    )
    assert first_llm["cost_usd"] == pytest.approx(price(Llm("gpt-4o", 1200, 80)))
    assert all(not it["alert_ids"] for it in items if it is not search)

    w1 = get(d, f"/api/dashboard/runs/{sc.runs['writer-1'].trace_id}")
    assert w1["errors"] == 1 and w1["unpriced_calls"] == 1
    assert {a["rule"]: a["state"] for a in w1["alerts"]} == {
        "run_budget": "firing",
        "empty_table": "resolved",
    }


@pytest.mark.parametrize(
    ("trace", "status"), [("0" * 32, 404), ("nothex", 400)], ids=["unknown", "not-hex"]
)
def test_run_detail_of_unknown_or_bad_trace(daemon: DaemonThread, trace: str, status: int) -> None:
    got, body = http_json("GET", f"{daemon.url}/api/dashboard/runs/{trace}")
    assert got == status and body["ok"] is False


# --- alerts ---------------------------------------------------------------------------------


def test_alerts_lists_open_and_recent(dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    body = get(d, "/api/dashboard/alerts")
    assert body["open"]["count"] == 2
    assert {a["id"] for a in body["open"]["items"]} == {
        sc.alerts["repeated_tool_call"],
        sc.alerts["run_budget"],
    }
    assert {a["id"]: a["state"] for a in body["recent"]} == {
        sc.alerts["repeated_tool_call"]: "firing",
        sc.alerts["run_budget"]: "firing",
        sc.alerts["empty_table"]: "resolved",
    }
    assert {(r["detector"], r["severity"], r["n"]) for r in body["open_by_detector"]} == {
        ("loop", "warn", 1),
        ("spend", "pause", 1),
    }


# --- canned queries and SQL -----------------------------------------------------------------


def test_every_canned_query_runs_through_the_sql_api(dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    listed = get(d, "/api/dashboard/queries")["queries"]
    assert [q["id"] for q in listed] == [q.id for q in load_queries()]
    assert len(listed) >= 8
    for q in listed:
        assert q["name"] and q["description"], q["id"]
        status, body = http_json("POST", d.url + "/api/sql", {"sql": q["sql"]})
        assert status == 200 and body["ok"], (q["id"], body)
    status, body = http_json("POST", d.url + "/api/sql", {"sql": listed[0]["sql"]})
    rows = {r[0]: r for r in body["rows"]}
    assert rows["researcher"][1] == pytest.approx(
        sc.spend_by(lambda a, c: a)["researcher"], abs=1e-6
    )
    assert rows["writer"][3] == 1  # the unpriced call


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("-- name: x\n-- owner: me\nSELECT 1", "unknown front-matter key 'owner'"),
        ("-- name: x\n-- description: y\n", "no SQL after the front-matter"),
    ],
    ids=["unknown-key", "no-sql"],
)
def test_canned_query_files_are_validated(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_query("bad", text)


def test_canned_query_front_matter_is_parsed() -> None:
    q = parse_query("q1", "-- name: Top\n-- description: the top ones\nSELECT 1\n-- trailing\n")
    assert (q.id, q.name, q.description, q.sql) == (
        "q1",
        "Top",
        "the top ones",
        "SELECT 1\n-- trailing",
    )


# --- metrics --------------------------------------------------------------------------------


def metric_lines(d: DaemonThread) -> dict[str, float]:
    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_expose_spend_alerts_and_verdicts(dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    d.call(d.d.verdicts.set(("agent", "writer"), "kill", actor="cli", reason="runaway"))
    d.settle()
    m = metric_lines(d)
    spend = sc.spend_by(lambda a, c: a)
    assert m['watchdog_agent_spend_usd_total{agent="researcher"}'] == pytest.approx(
        spend["researcher"]
    )
    assert m['watchdog_agent_spend_usd_total{agent="writer"}'] == pytest.approx(spend["writer"])
    assert m['watchdog_agent_spend_today_usd{agent="writer"}'] == pytest.approx(spend["writer"])
    assert m['watchdog_agent_llm_calls_total{agent="writer"}'] == 2
    assert m['watchdog_alerts_total{detector="loop",severity="warn"}'] == 1
    assert m['watchdog_alerts_total{detector="context",severity="info"}'] == 1
    assert m['watchdog_alerts_firing{detector="spend",severity="pause"}'] == 1
    assert m['watchdog_alerts_firing{detector="context",severity="info"}'] == 0
    assert m['watchdog_verdicts_active{scope_type="agent",state="kill"}'] == 1
    assert m["watchdog_dashboard_metrics_refreshed_timestamp_seconds"] > 0


# --- live updates ---------------------------------------------------------------------------


class EventReader:
    """Reads `/api/dashboard/events` in a thread and keeps each parsed event."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        req = urllib.request.Request(url + "/api/dashboard/events", headers=headers or {})
        self.resp = urllib.request.urlopen(req, timeout=30)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ended = threading.Event()
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event, data = "message", ""
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line:
                    if data:
                        with self.cond:
                            self.events.append((event, json.loads(data)))
                            self.cond.notify_all()
                    event, data = "message", ""
        except (OSError, ValueError):
            pass
        self.ended.set()

    def wait_for(
        self, pred: Callable[[tuple[str, dict[str, Any]]], bool], timeout_s: float = 15
    ) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: any(pred(e) for e in self.events), timeout_s), (
                self.events
            )


def test_event_stream_reports_commits_alerts_and_verdicts(daemon: DaemonThread) -> None:
    reader = EventReader(daemon.url)
    reader.wait_for(lambda e: e[0] == "hello")
    assert reader.resp.headers["Content-Type"].startswith("text/event-stream")
    send_run(
        daemon.url,
        service="s",
        agent="a",
        session="live-1",
        steps=[Llm("gpt-4o", 10, 1)],
        start_ns=time.time_ns(),
    )
    reader.wait_for(lambda e: e[0] == "change" and "steps" in e[1]["topics"])
    daemon.call(
        daemon.d.alerts.record(
            [
                Finding(
                    detector="loop", rule="r", severity="warn", summary="s", agent_name="a", key="k"
                ),
            ]
        )
    )
    reader.wait_for(lambda e: e[0] == "change" and "alerts" in e[1]["topics"])
    daemon.call(daemon.d.verdicts.set(("agent", "a"), "pause", actor="cli", reason="x"))
    reader.wait_for(lambda e: e[0] == "change" and "verdicts" in e[1]["topics"])
    seqs = [e[1]["seq"] for e in reader.events]
    assert seqs == sorted(seqs)
    # Shutdown ends the stream (the handler leaves its loop) and the count drops back.
    dash_app = daemon.d.services["dashboard"]
    assert dash_app._streams == 1
    daemon.stop()
    assert reader.ended.wait(10)
    assert dash_app._streams == 0


def test_event_streams_are_capped(daemon: DaemonThread) -> None:
    dash_app = daemon.d.services["dashboard"]
    assert isinstance(dash_app, DashboardApp)
    dash_app._streams = 32  # as if 32 pages were open
    status, body = http_json("GET", daemon.url + "/api/dashboard/events")
    assert status == 503 and "too many" in body["error"]
    dash_app._streams = 0


# --- pages, assets, auth --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/runs", "/runs/" + "ab" * 16, "/alerts", "/sql"])
def test_pages_are_self_contained_shells(daemon: DaemonThread, path: str) -> None:
    with urllib.request.urlopen(daemon.url + path, timeout=10) as resp:
        html = resp.read().decode()
        headers = resp.headers
    assert resp.status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    for asset in ("/assets/app.css", "/assets/favicon.svg", "/assets/js/common.js"):
        with urllib.request.urlopen(daemon.url + asset, timeout=10) as resp:
            assert resp.status == 200


def test_static_assets_reference_no_other_origin() -> None:
    from dashboards.app import STATIC_DIR

    for path in STATIC_DIR.rglob("*"):
        if path.suffix in (".js", ".css", ".html"):
            text = path.read_text()
            assert "://" not in text.replace("http://www.w3.org/2000/svg", ""), path


def test_page_for_a_non_trace_path_is_404(daemon: DaemonThread) -> None:
    status, _ = http_json("GET", daemon.url + "/runs/..%2F..%2Fetc")
    assert status == 404


def test_api_needs_the_token_when_one_is_set(daemon_factory: Callable[..., DaemonThread]) -> None:
    d = daemon_factory(api_token="s3cret-dash")
    for path in ("/api/dashboard/overview", "/api/dashboard/runs", "/api/dashboard/events"):
        status, body = http_json("GET", d.url + path)
        assert status == 401, path
        assert "s3cret" not in json.dumps(body)
    status, body = http_json(
        "GET", d.url + "/api/dashboard/overview", headers={"Authorization": "Bearer s3cret-dash"}
    )
    assert status == 200 and body["ok"]
    with urllib.request.urlopen(d.url + "/", timeout=10) as resp:  # the shell holds no data
        assert resp.status == 200


def test_dashboard_can_be_turned_off(daemon_factory: Callable[..., DaemonThread]) -> None:
    d = daemon_factory(dashboard={"enabled": False})
    status, _ = http_json("GET", d.url + "/api/dashboard/overview")
    assert status == 404
    assert "dashboard" not in d.d.services


async def test_component_stop_is_safe_before_start_and_twice(daemon: DaemonThread) -> None:
    comp = DashboardApp(daemon.d)
    await comp.stop()
    await comp.stop()
    assert comp.feed.closed


def test_grafana_dashboard_only_uses_metrics_the_daemon_exposes(
    dash: tuple[DaemonThread, Scenario],
) -> None:
    d, _ = dash
    d.call(d.d.verdicts.set(("agent", "writer"), "pause", actor="cli", reason="x"))
    d.settle()
    status, _ = http_json("POST", d.url + "/api/sql", {"sql": "SELECT 1"})  # one SQL sample
    assert status == 200
    exposed = {name.split("{")[0] for name in metric_lines(d)}
    board = json.loads((ROOT / "dashboards" / "grafana" / "watchdog.json").read_text())
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "agent"}
    used: set[str] = set()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            used |= set(re.findall(r"\bwatchdog_[a-z_]+", t["expr"]))
    assert used - exposed == set()
    assert {
        "watchdog_agent_spend_usd_total",
        "watchdog_alerts_firing",
        "watchdog_verdicts_active",
    } <= used


def test_verdict_set_by_the_alert_policy_shows_on_the_run(
    daemon_factory: Callable[..., DaemonThread],
) -> None:
    # Default enforcement policy: a `pause` alert pauses its session.
    d = daemon_factory(detectors={"enabled": False})
    run = send_run(
        d.url,
        service="s",
        agent="bot",
        session="sess-p",
        steps=[Llm("gpt-4o", 10, 1)],
        start_ns=time.time_ns() - 5_000_000_000,
    )
    d.settle()
    (event,) = d.call(
        d.d.alerts.record(
            [
                Finding(
                    detector="spend",
                    rule="run_budget",
                    severity="pause",
                    summary="over budget",
                    agent_name="bot",
                    session_id="sess-p",
                    trace_id=run.trace_id,
                    key="k",
                ),
            ]
        )
    )
    d.settle()
    (active,) = get(d, "/api/dashboard/overview")["active_runs"]
    assert active["verdict"]["state"] == "pause"
    assert active["verdict"]["alert_id"] == event.alert.id
    detail = get(d, f"/api/dashboard/runs/{run.trace_id}")
    assert detail["verdict"]["scope"] == {"type": "session", "value": "sess-p"}

"""The dashboard in real headless Chromium (Debian's package, driven by Playwright).

Traces arrive through the real receiver; every page must show the figures computed here
from what was sent, log no console error, and its screenshot is saved under
artifacts/screenshots/. The Kill button must trip a verdict the guard API then serves.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.conftest import ROOT, DaemonThread, http_json
from tests.test_dashboard import TEST_SETTINGS, Llm, Scenario, price, seed, send_run
from watchdog.guard import AgentHalted, Guard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SHOTS = ROOT / "artifacts" / "screenshots"

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (scripts/test installs it)",
)


def fmt_usd(v: float) -> str:
    """The page's fmtUsd: 4 decimals under $1, else 2, with thousands separators.

    Like the browser's Intl formatting, it rounds the shortest decimal form of the float
    half-to-even (0.01155 → 0.0116), not the float's exact binary value.
    """
    digits = 4 if abs(v) < 1 else 2
    exact = Decimal(repr(abs(v))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)
    return ("-$" if v < 0 else "$") + f"{exact:,}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class UI:
    """One browser page on one daemon, recording every console error and page error."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Page:
        self.page.goto(self.base + path)
        # Pages mark <body data-loaded> after their first successful render.
        self.page.wait_for_selector("body[data-loaded]", state="attached", timeout=15_000)
        return self.page

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors


def open_ui(browser: Browser, d: DaemonThread) -> Iterator[UI]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    ui = UI(page, d.url)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            ui.errors.append(f"console: {msg.text} @ {msg.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda err: ui.errors.append(f"pageerror: {err}"))
    try:
        yield ui
    finally:
        ctx.close()


@pytest.fixture
def dash(daemon_factory: Callable[..., DaemonThread]) -> tuple[DaemonThread, Scenario]:
    d = daemon_factory(**TEST_SETTINGS)
    return d, seed(d)


@pytest.fixture
def ui(browser: Browser, dash: tuple[DaemonThread, Scenario]) -> Iterator[UI]:
    yield from open_ui(browser, dash[0])


def value_of(page: Page, testid: str) -> float:
    return float(page.get_by_test_id(testid).get_attribute("data-value") or "nan")


# --- overview -------------------------------------------------------------------------------


def test_overview_renders_spend_runs_alerts(ui: UI, dash: tuple[DaemonThread, Scenario]) -> None:
    _, sc = dash
    page = ui.goto("/")
    assert value_of(page, "spend-today-value") == pytest.approx(sc.total_usd)
    expect(page.get_by_test_id("spend-today-value")).to_have_text(fmt_usd(sc.total_usd))
    expect(page.get_by_test_id("calls-today-value")).to_have_text(str(len(sc.llm)))
    expect(page.get_by_test_id("runs-today-value")).to_have_text("3")
    expect(page.get_by_test_id("open-alerts-count-value")).to_have_text("2")

    by_agent = sc.spend_by(lambda a, c: a)
    rows = page.locator("[data-testid=agent-row]")
    expect(rows).to_have_count(len(by_agent))
    for agent, usd in by_agent.items():
        row = page.locator(f"[data-testid=agent-row][data-agent='{agent}']")
        assert float(row.get_attribute("data-value") or "nan") == pytest.approx(usd)
        expect(row.locator("td").nth(1)).to_have_text(fmt_usd(usd))
        bar = page.locator(f"[data-testid=agent-spend][data-agent='{agent}']")
        assert float(bar.get_attribute("data-value") or "nan") == pytest.approx(usd)
    by_model = sc.spend_by(lambda a, c: c.model)
    calls_by_model = sc.calls_by(lambda a, c: c.model)
    priced_models = {c.model for _, c in sc.llm if price(c) is not None}
    for model, usd in by_model.items():
        row = page.locator(f"[data-testid=model-row][data-model='{model}']")
        # a model with no known price reads "unpriced", never "$0"
        expect(row.locator("td").nth(1)).to_have_text(
            fmt_usd(usd) if model in priced_models else "unpriced"
        )
        expect(row.locator("td").nth(2)).to_have_text(str(calls_by_model[model]))
    # the unpriced model is counted, not priced
    expect(
        page.locator("[data-testid=model-row][data-model='acme-unpriced-1'] td").nth(3)
    ).to_have_text("1")

    # spend over time: one legend entry per agent with that agent's total
    legend = page.get_by_test_id("timeline").locator("[data-series]")
    expect(legend).to_have_count(2)
    for agent, usd in by_agent.items():
        expect(page.get_by_test_id("timeline").locator(f"[data-series='{agent}']")).to_contain_text(
            fmt_usd(usd)
        )
    page.get_by_test_id("split").locator("button[data-value=model]").click()
    expect(page.get_by_test_id("timeline").locator("[data-series]")).to_have_count(
        len(priced_models)
    )

    active = page.locator("[data-testid=active-run]")
    expect(active).to_have_count(3)
    for run in sc.runs.values():
        row = page.locator(f"[data-testid=active-run][data-trace='{run.trace_id}']")
        expect(row.locator("td").nth(3)).to_have_text(str(run.steps))
        expect(row.locator("td").nth(4)).to_have_text(fmt_usd(run.cost or 0))
    expect(page.locator("[data-testid=open-alert]")).to_have_count(2)
    expect(page.get_by_test_id("verdicts")).to_contain_text("Nothing is killed or paused.")
    ui.shot("overview")
    ui.assert_clean()


def test_overview_updates_live_without_reload(ui: UI, dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    page = ui.goto("/")
    expect(page.get_by_test_id("runs-today-value")).to_have_text("3")
    expect(page.locator("#live")).to_have_class("live on")
    marker = page.locator("main h1").element_handle()
    extra = Llm("gpt-4o", 5000, 400)
    send_run(
        d.url,
        service="research-svc",
        agent="researcher",
        session="sess-live",
        steps=[extra],
        start_ns=time.time_ns() - 5_000_000_000,
    )
    d.call(d.d.verdicts.set(("agent", "writer"), "pause", actor="cli", reason="checking"))
    total = sc.total_usd + (price(extra) or 0)
    expect(page.get_by_test_id("spend-today-value")).to_have_text(fmt_usd(total))
    expect(page.get_by_test_id("runs-today-value")).to_have_text("4")
    verdict = page.locator("[data-testid=verdict][data-scope='agent:writer']")
    expect(verdict).to_have_attribute("data-state", "pause")
    assert marker is not None and marker.is_visible()  # the same document: no reload happened
    ui.assert_clean()


# --- runs -----------------------------------------------------------------------------------


def trace_order(page: Page) -> list[str]:
    return [
        r.get_attribute("data-trace") or "" for r in page.locator("[data-testid=run-row]").all()
    ]


def test_runs_page_sorts_and_filters(ui: UI, dash: tuple[DaemonThread, Scenario]) -> None:
    _, sc = dash
    page = ui.goto("/runs")
    rows = page.locator("[data-testid=run-row]")
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("runs-summary")).to_have_text("3 runs")
    for run in sc.runs.values():
        row = page.locator(f"[data-testid=run-row][data-trace='{run.trace_id}']")
        cells = row.locator("td")
        expect(cells.nth(4)).to_have_text(str(run.steps))
        expect(cells.nth(5)).to_have_text(str(run.llm_calls))
        expect(cells.nth(6)).to_have_text(f"{run.tokens:,}")
        expect(cells.nth(7)).to_have_text(fmt_usd(run.cost or 0))
        expect(cells.nth(8)).to_have_text(str(run.errors))

    by_cost = sorted(sc.runs.values(), key=lambda r: -(r.cost or 0))
    page.locator("th[data-sort=cost]").click()
    expect(page.locator("th[data-sort=cost]")).to_have_class("num sortable sorted desc")
    expect(rows.first).to_have_attribute("data-trace", by_cost[0].trace_id)
    assert trace_order(page) == [r.trace_id for r in by_cost]
    page.locator("th[data-sort=cost]").click()
    expect(rows.first).to_have_attribute("data-trace", by_cost[-1].trace_id)
    assert trace_order(page) == [r.trace_id for r in reversed(by_cost)]
    page.locator("th[data-sort=steps]").click()
    expect(rows.first).to_have_attribute("data-trace", sc.runs["research-1"].trace_id)

    page.get_by_test_id("filter-agent").select_option("writer")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-trace", sc.runs["writer-1"].trace_id)
    assert "agent=writer" in page.url
    page.get_by_test_id("filter-agent").select_option("")
    page.get_by_test_id("filter-alerts").check()
    expect(rows).to_have_count(2)
    assert set(trace_order(page)) == {sc.runs["research-1"].trace_id, sc.runs["writer-1"].trace_id}
    page.get_by_test_id("filter-alerts").uncheck()
    cut = sc.runs["research-1"].cost or 0
    page.get_by_test_id("filter-min-cost").fill(str(cut - 1e-9))
    page.get_by_test_id("filter-min-cost").press("Enter")
    expect(rows).to_have_count(sum(1 for r in sc.runs.values() if (r.cost or 0) >= cut - 1e-9))
    ui.shot("runs")
    # a deep link restores the filters
    page = ui.goto("/runs?agent=researcher&sort=cost&dir=asc")
    expect(rows).to_have_count(2)
    expect(page.get_by_test_id("filter-agent")).to_have_value("researcher")
    ui.assert_clean()


# --- run detail and the kill switch ---------------------------------------------------------


def guard_for(d: DaemonThread, agent: str, session: str) -> Guard:
    """The agent's side: the guard client it imports, asking this daemon (no local cache)."""
    return Guard(d.url, agent=agent, session=session, cache="off", timeout_s=10)


def guard_verdict(d: DaemonThread, agent: str, session: str) -> str:
    """What an agent asking the guard before its next action is told."""
    decision = guard_for(d, agent, session).verdict()
    assert decision.source == "watchdog"  # answered by the daemon, not a fallback
    return decision.verdict


def test_run_detail_timeline_and_kill_button(ui: UI, dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    r1 = sc.runs["research-1"]
    page = ui.goto(f"/runs/{r1.trace_id}")
    assert value_of(page, "run-cost-value") == pytest.approx(r1.cost)
    expect(page.get_by_test_id("run-cost-value")).to_have_text(fmt_usd(r1.cost or 0))
    expect(page.get_by_test_id("run-steps-value")).to_have_text(str(r1.steps))
    expect(page.get_by_test_id("run-tokens-value")).to_have_text(f"{r1.tokens:,}")
    expect(page.get_by_test_id("run-alert-count-value")).to_have_text("1")
    steps = page.locator("[data-testid=step]")
    expect(steps).to_have_count(r1.steps)
    assert [s.get_attribute("data-kind") for s in steps.all()] == [
        "agent",
        "llm",
        "tool",
        "llm",
        "tool",
    ]

    # the alert's evidence names the search_web span: it is shown on that step
    search = page.locator(f"[data-testid=step][data-span='{r1.tool_spans['search_web']}']")
    expect(search).to_have_attribute("data-alerts", "1")
    search.click()
    detail = page.locator(f"[data-testid=step-detail][data-span='{r1.tool_spans['search_web']}']")
    expect(detail.get_by_test_id("tool-args")).to_contain_text(
        '"query": "enterprise pricing articles"'
    )
    expect(detail.get_by_test_id("tool-result")).to_have_text("3 articles found")
    expect(detail.get_by_test_id("step-alert")).to_contain_text("repeated_tool_call")
    llm = page.locator(f"[data-testid=step][data-span='{r1.span_ids[0]}']")
    llm.click()
    llm_detail = page.locator(f"[data-testid=step-detail][data-span='{r1.span_ids[0]}']")
    expect(llm_detail).to_contain_text("openai / gpt-4o")
    expect(llm_detail).to_contain_text("1,200 in")
    expect(llm_detail.get_by_test_id("step-cost")).to_contain_text(
        fmt_usd(price(Llm("gpt-4o", 1200, 80)) or 0)
    )
    ui.shot("run")

    assert guard_verdict(d, "researcher", r1.session) == "allow"
    page.get_by_test_id("scope").select_option("agent:researcher")
    page.get_by_test_id("kill").click()
    page.get_by_test_id("kill-reason").fill("looping on search")
    page.get_by_test_id("kill-confirm").click()
    expect(page.get_by_test_id("controls").locator("[data-verdict]")).to_have_attribute(
        "data-verdict", "kill"
    )
    expect(page.locator("#flash")).to_contain_text("kill agent researcher")
    assert guard_verdict(d, "researcher", r1.session) == "kill"
    with pytest.raises(AgentHalted):  # the agent's next step is refused
        guard_for(d, "researcher", r1.session).check(tool="search_web", args={"query": "again"})
    audit = d.query(
        "SELECT actor, reason, state FROM verdict_audit WHERE scope_value = 'researcher'"
    )
    assert audit == [("dashboard", "looping on search", "kill")]
    ui.shot("run-killed")

    page.get_by_test_id("resume").click()
    page.get_by_test_id("resume-confirm").click()
    expect(page.get_by_test_id("controls").locator("[data-verdict]")).to_have_attribute(
        "data-verdict", "allow"
    )
    assert guard_verdict(d, "researcher", r1.session) == "allow"
    assert guard_for(d, "researcher", r1.session).check(tool="search_web").verdict == "allow"

    page.get_by_test_id("pause").click()
    page.get_by_test_id("pause-confirm").click()
    expect(page.get_by_test_id("controls").locator("[data-verdict]")).to_have_attribute(
        "data-verdict", "pause"
    )
    assert guard_verdict(d, "researcher", r1.session) == "pause"
    ui.assert_clean()


def test_unknown_run_says_so(ui: UI) -> None:
    page = ui.goto("/runs/" + "0" * 32)
    expect(page.get_by_test_id("run-summary")).to_contain_text("No spans of this run")
    # the 404 of the JSON call is the only console message allowed here
    assert all("404" in e for e in ui.errors), ui.errors


# --- alerts ---------------------------------------------------------------------------------


def test_alerts_page_lists_acknowledges_and_silences(
    ui: UI, dash: tuple[DaemonThread, Scenario]
) -> None:
    d, sc = dash
    page = ui.goto("/alerts")
    expect(page.get_by_test_id("alert-counts")).to_have_text("2 open (1 pause, 1 warn)")
    open_rows = page.locator("[data-testid=alert-row]")
    expect(open_rows).to_have_count(2)
    expect(open_rows.first).to_have_attribute("data-severity", "pause")  # strongest first
    recent = page.locator("[data-testid=recent-row]")
    expect(recent).to_have_count(3)
    expect(
        page.locator(f"[data-testid=recent-row][data-alert='{sc.alerts['empty_table']}']")
    ).to_have_attribute("data-state", "resolved")
    ui.shot("alerts")

    _, caps = http_json("GET", d.url + "/api/dashboard/capabilities")
    if "POST /api/v1/silences" not in caps["routes"]:
        # Without the alerting API the page still works, just without the buttons.
        expect(page.get_by_test_id("silence")).to_have_count(0)
        expect(page.get_by_test_id("ack")).to_have_count(0)
        ui.assert_clean()
        return
    loop_row = page.locator(
        f"[data-testid=alert-row][data-alert='{sc.alerts['repeated_tool_call']}']"
    )
    loop_row.get_by_test_id("silence").click()
    page.get_by_test_id("silence-confirm").click()
    expect(page.locator("[data-testid=silence-row]")).to_have_count(1)
    expect(page.get_by_test_id("silences")).to_contain_text('agent="researcher"')
    status, body = http_json("GET", d.url + "/api/v1/silences")
    assert status == 200 and len(body["silences"]) == 1
    assert set(body["silences"][0]["matchers"]) == {
        'agent="researcher"',
        'rule="repeated_tool_call"',
    }
    assert body["silences"][0]["created_by"] == "dashboard"

    loop_row.get_by_test_id("ack").click()
    expect(open_rows).to_have_count(1)
    expect(page.get_by_test_id("alert-counts")).to_have_text("1 open (1 pause)")
    assert d.query("SELECT state FROM alerts WHERE id = ?", [sc.alerts["repeated_tool_call"]]) == [
        ("resolved",)
    ]
    ui.shot("alerts-acted")
    ui.assert_clean()


# --- SQL ------------------------------------------------------------------------------------


def test_sql_page_runs_queries_and_exports_csv(ui: UI, dash: tuple[DaemonThread, Scenario]) -> None:
    d, sc = dash
    page = ui.goto("/sql")
    canned = page.locator("[data-testid=canned-query]")
    assert canned.count() >= 8
    page.locator("[data-testid=canned-query][data-query='01_spend_by_agent_today']").click()
    rows = page.locator("[data-testid=sql-row]")
    expect(rows).to_have_count(2)
    spend = sc.spend_by(lambda a, c: a)
    for row in rows.all():
        cells = row.locator("td")
        agent = cells.nth(0).inner_text()
        assert float(cells.nth(1).inner_text()) == pytest.approx(spend[agent], abs=1e-6)
    with page.expect_download() as dl:
        page.get_by_test_id("sql-csv").click()
    text = Path(dl.value.path()).read_text()
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0][:3] == ["agent_name", "spend_usd", "llm_calls"]
    assert {r[0]: float(r[1]) for r in parsed[1:]} == pytest.approx(spend, abs=1e-6)
    assert dl.value.suggested_filename == "watchdog-01_spend_by_agent_today.csv"

    editor = page.get_by_test_id("sql-editor")
    editor.fill(
        "SELECT trace_id, count(*) AS n FROM steps GROUP BY trace_id ORDER BY n DESC, trace_id"
    )
    editor.press("Control+Enter")
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("sql-meta")).to_contain_text("3 rows")
    expect(rows.first.locator("td").nth(1)).to_have_text(
        str(max(r.steps for r in sc.runs.values()))
    )
    ui.shot("sql")

    editor.fill("DELETE FROM steps")
    page.get_by_test_id("sql-run").click()
    expect(page.get_by_test_id("sql-error")).to_contain_text("only SELECT")
    assert d.query("SELECT count(*) FROM steps")[0][0] == sum(r.steps for r in sc.runs.values())
    # the refused query's 400 is the only console message allowed
    assert all("400" in e for e in ui.errors), ui.errors


# --- token ----------------------------------------------------------------------------------


def test_pages_ask_for_the_api_token_and_then_work(
    browser: Browser, daemon_factory: Callable[..., DaemonThread]
) -> None:
    d = daemon_factory(api_token="tok-for-the-browser", **TEST_SETTINGS)
    send_run(
        d.url,
        service="s",
        agent="solo",
        session="sess-t",
        steps=[Llm("gpt-4o", 1000, 100)],
        start_ns=time.time_ns() - 10_000_000_000,
    )
    d.settle()
    for ui in open_ui(browser, d):
        page = ui.page
        page.goto(d.url + "/")
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        page.locator("#token-input").fill("tok-for-the-browser")
        page.locator("#token-form button[value=save]").click()
        page.wait_for_selector("body[data-loaded]", state="attached")
        expect(page.get_by_test_id("spend-today-value")).to_have_text(
            fmt_usd(price(Llm("gpt-4o", 1000, 100)) or 0)
        )
        expect(page.locator("#live")).to_have_class("live on")
        # the token is remembered for the next page
        ui.goto("/runs")
        expect(page.locator("[data-testid=run-row]")).to_have_count(1)
        assert all("401" in e for e in ui.errors), ui.errors

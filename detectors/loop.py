"""The loop detector: repeated actions, cycles, no-progress polling, duplicate side effects.

Per session, counted after the last user message (a person re-asking resets every
count, as in OpenHands; a new message is a changed last user message or more user
messages in the input, so "try again" typed twice is two messages), each rule climbs a warn → pause → kill ladder whose defaults
are the thresholds of reference §B.1. Arguments and results are compared by
fingerprint: canonical JSON with volatile keys (ids, timestamps, request ids) removed
and ids/timestamps inside free text replaced, so a retry that only differs by a request
id is the same action. A finding is emitted once per ladder level reached, with a key
that stays the same while the condition escalates (one alert, escalated).

Stays quiet by construction on: paginated reads (arguments change), polling whose
result changes (results are part of every repeat key), retries with changed arguments,
the same edit applied to different files (arguments change), and a person asking again
(counts reset on a new user message).
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from watchdog.detection import (
    History,
    LoopRules,
    RuleInfo,
    StepContext,
    canonical_json,
    ladder_level,
    short_hash,
)
from watchdog.model import Finding, Severity, Step, severity_rank

__all__ = ["RULES", "LoopDetector", "LoopState"]

RULES: Final[tuple[RuleInfo, ...]] = (
    RuleInfo(
        "loop",
        "repeat",
        "The same tool with the same arguments, consecutively, "
        "results not captured (L1; Gemini CLI stops at 5).",
        "detectors.loop.repeat",
    ),
    RuleInfo(
        "loop",
        "repeat_same_result",
        "The same tool, arguments and result, consecutively (L2; OpenHands action+observation ×4).",
        "detectors.loop.repeat_same_result",
    ),
    RuleInfo(
        "loop",
        "repeat_error",
        "The same tool and arguments failing consecutively (L3; OpenHands action+error ×3).",
        "detectors.loop.repeat_error",
    ),
    RuleInfo(
        "loop",
        "cycle",
        "A cycle of period 2 to `cycle_max_period` (A-B-A-B) with "
        "unchanged results; the ladder counts full periods (L4).",
        "detectors.loop.cycle",
    ),
    RuleInfo(
        "loop",
        "no_progress",
        "The same call with the same result, not only "
        "consecutively, within the last `no_progress_window` tool calls (L5; OpenClaw).",
        "detectors.loop.no_progress",
    ),
    RuleInfo(
        "loop",
        "side_effect_duplicate",
        "A side-effecting tool (send, write, delete, "
        "pay… or configured) called again with the same target and arguments after it "
        "succeeded (L6).",
        "detectors.loop.side_effect_duplicate",
    ),
    RuleInfo(
        "loop",
        "monologue",
        "Identical assistant messages in a row with no tool call between them (L7).",
        "detectors.loop.monologue",
    ),
    RuleInfo(
        "loop",
        "empty_response",
        "Empty assistant messages in a row (L7).",
        "detectors.loop.empty_response",
    ),
    RuleInfo(
        "loop",
        "max_steps",
        "Steps (llm, tool, retrieval) in one run above the "
        "configured cap or the cap learned from the agent's history (p99, 2×p99, 4×p99).",
        "detectors.loop.max_steps",
    ),
)

_MAX_EVIDENCE_SPANS: Final = 12
_MAX_SIDE_EFFECTS: Final = 512
_MAX_RUNS: Final = 64
_MAX_EMITTED: Final = 1024
_STEP_KINDS: Final = frozenset({"llm", "tool", "retrieval"})
_WORD: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@dataclass(slots=True)
class _Call:
    tool: str
    key: str  # tool + argument fingerprint
    result: str  # result fingerprint ("-" when not captured)
    is_error: bool
    span_id: str

    @property
    def outcome(self) -> tuple[str, str, bool]:
        return (self.key, self.result, self.is_error)


@dataclass(slots=True)
class _Streak:
    key: tuple[Any, ...] | None = None
    count: int = 0
    spans: deque[str] = field(default_factory=lambda: deque(maxlen=_MAX_EVIDENCE_SPANS))

    def push(self, key: tuple[Any, ...] | None, span_id: str) -> int:
        if key is not None and key == self.key:
            self.count += 1
        else:
            self.key, self.count = key, (1 if key is not None else 0)
            self.spans.clear()
        self.spans.append(span_id)
        return self.count

    def reset(self) -> None:
        self.key, self.count = None, 0
        self.spans.clear()


@dataclass(slots=True)
class LoopState:
    """Per-session state; every container is bounded."""

    user_fp: str | None = None
    user_turns: int | None = None
    calls: deque[_Call] = field(default_factory=deque)
    repeat: _Streak = field(default_factory=_Streak)
    errors: _Streak = field(default_factory=_Streak)
    said: _Streak = field(default_factory=_Streak)
    empty: _Streak = field(default_factory=_Streak)
    side_effects: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)
    runs: OrderedDict[str, int] = field(default_factory=OrderedDict)
    # Highest ladder level already reported per (rule, key), so each level fires once.
    emitted: OrderedDict[tuple[str, str], int] = field(default_factory=OrderedDict)

    def after_user_message(self) -> None:
        """Forget everything counted since the previous user message (runs keep counting)."""
        self.calls.clear()
        self.repeat.reset()
        self.errors.reset()
        self.said.reset()
        self.empty.reset()
        self.side_effects.clear()
        self.emitted = OrderedDict((k, v) for k, v in self.emitted.items() if k[0] == "max_steps")


class _ToolClass:
    """Per-rules cache of which tool names have side effects (names repeat constantly)."""

    def __init__(self, rules: LoopRules) -> None:
        self.rules = rules
        self._verbs = frozenset(rules.side_effect_verbs)
        self._reads = frozenset(rules.read_verbs)
        self._read_nouns = frozenset(rules.read_nouns)
        self._extra = frozenset(rules.side_effect_tools)
        self._safe = frozenset(rules.safe_tools)
        self._volatile = frozenset(rules.volatile_keys)
        self.result_volatile = self._volatile | frozenset(rules.result_volatile_keys)
        self.suffixes = tuple(rules.result_volatile_suffixes)
        self._cache: dict[str, bool] = {}

    @property
    def volatile(self) -> frozenset[str]:
        return self._volatile

    def has_side_effects(self, tool: str) -> bool:
        cached = self._cache.get(tool)
        if cached is None:
            cached = self._classify(tool)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[tool] = cached
        return cached

    def _classify(self, tool: str) -> bool:
        if tool in self._safe:
            return False
        if tool in self._extra:
            return True
        words = [w.lower() for w in _WORD.findall(tool)]
        if not words or words[0] in self._reads or words[-1] in self._read_nouns:
            return False
        return any(w in self._verbs for w in words)


class LoopDetector:
    """Streaming loop rules per session, plus learned per-agent step caps (periodic)."""

    name = "loop"

    def __init__(self, rules: LoopRules | None = None, interval_s: float = 300.0) -> None:
        self.rules = rules or LoopRules.model_validate({})
        self.interval_s = interval_s
        # Per agent: (finished runs in the history window, p99 of steps per run).
        self.learned: dict[str, tuple[int, float]] = {}
        self._classes: dict[int, _ToolClass] = {}

    def new_state(self) -> LoopState:
        """Fresh per-session state."""
        return LoopState()

    # -- streaming ----------------------------------------------------------------------
    def observe(self, state: LoopState, step: Step, ctx: StepContext) -> Sequence[Finding]:
        """Update the session with `step`; return findings for ladder levels newly reached."""
        rules = ctx.rules.loop
        out: list[Finding] = []
        if step.kind == "llm":
            self._user_turn(state, step)
        if step.kind in _STEP_KINDS:
            self._count_run_step(state, step, rules, out)
        if step.kind == "tool":
            self._tool(state, step, rules, out)
        elif step.kind == "llm":
            self._message(state, step, rules, out)
        return out

    @staticmethod
    def _user_turn(state: LoopState, step: Step) -> None:
        """Reset the counts when `step` saw a user message the previous llm step did not."""
        new = False
        if step.user_message is not None:
            fp = short_hash(step.user_message)
            new = state.user_fp is not None and fp != state.user_fp
            state.user_fp = fp
        if step.user_turns is not None:
            # Only growth is a person speaking: a shorter history is the agent compacting
            # or truncating its context, which must not hide a loop.
            new = new or (state.user_turns is not None and step.user_turns > state.user_turns)
            state.user_turns = step.user_turns
        if new:
            state.after_user_message()

    def _classes_for(self, rules: LoopRules) -> _ToolClass:
        cls = self._classes.get(id(rules))
        if cls is None or cls.rules is not rules:
            if len(self._classes) > 1024:
                self._classes.clear()
            cls = self._classes[id(rules)] = _ToolClass(rules)
        return cls

    def _tool(self, state: LoopState, step: Step, rules: LoopRules, out: list[Finding]) -> None:
        classes = self._classes_for(rules)
        tool = step.tool_name or step.span_name or "?"
        args = canonical_json(step.tool_args, classes.volatile, rules.max_text_chars)
        result = canonical_json(
            step.tool_result,
            classes.result_volatile,
            rules.max_text_chars,
            volatile_suffixes=classes.suffixes,
            scrub_text=True,
        )
        call = _Call(
            tool=tool,
            key=f"{tool}({short_hash(args)})",
            result=short_hash(result),
            is_error=step.is_error,
            span_id=step.span_id,
        )
        state.calls.append(call)
        keep = max(rules.no_progress_window, rules.cycle_max_period * 8, 16)
        while len(state.calls) > keep:
            state.calls.popleft()

        # L1/L2/L3: consecutive repeats. Errors form their own streak, so a failing call
        # repeated is `repeat_error`, never also `repeat_same_result`.
        if call.is_error:
            state.repeat.reset()
            n = state.errors.push((call.key,), step.span_id)
            self._ladder(
                out,
                state,
                step,
                "repeat_error",
                rules.repeat_error,
                n,
                call.key,
                f"{tool} failed {n} times in a row with the same arguments",
                state.errors.spans,
                {"tool": tool, "arguments": _show(args), "error_type": step.error_type},
            )
        else:
            state.errors.reset()
            n = state.repeat.push((call.key, call.result), step.span_id)
            if call.result == "-":
                self._ladder(
                    out,
                    state,
                    step,
                    "repeat",
                    rules.repeat,
                    n,
                    call.key,
                    f"{tool} called {n} times in a row with the same arguments",
                    state.repeat.spans,
                    {"tool": tool, "arguments": _show(args)},
                )
            else:
                self._ladder(
                    out,
                    state,
                    step,
                    "repeat_same_result",
                    rules.repeat_same_result,
                    n,
                    call.key,
                    f"{tool} called {n} times in a row with the same arguments and the same result",
                    state.repeat.spans,
                    {"tool": tool, "arguments": _show(args), "result": _show(result)},
                )
        self._cycle(state, step, rules, out)
        self._no_progress(state, step, call, rules, out)
        if not call.is_error and classes.has_side_effects(tool):
            self._side_effect(state, step, call, args, rules, out)

    def _cycle(self, state: LoopState, step: Step, rules: LoopRules, out: list[Finding]) -> None:
        if not rules.cycle.enabled:
            return
        calls = state.calls
        outcomes = [c.outcome for c in calls]
        for k in range(2, rules.cycle_max_period + 1):
            if len(outcomes) < 2 * k:
                break
            block = outcomes[-k:]
            if _smallest_period(block) != k:
                continue  # a constant block is a repeat (L1/L2); ABAB inside k=4 is k=2
            periods = 1
            while len(outcomes) >= (periods + 1) * k and (
                outcomes[-(periods + 1) * k : -periods * k] == block
            ):
                periods += 1
            if periods < 2:
                continue
            names = [c.tool for c in list(calls)[-k:]]
            key = "cycle:" + short_hash(repr(_min_rotation([o[0] for o in block])))
            spans = [c.span_id for c in list(calls)[-periods * k :]][-_MAX_EVIDENCE_SPANS:]
            self._ladder(
                out,
                state,
                step,
                "cycle",
                rules.cycle,
                periods,
                key,
                f"tool calls cycle {' → '.join(names)} for {periods} rounds with unchanged results",
                spans,
                {"period": k, "tools": names},
            )
            return

    def _no_progress(
        self, state: LoopState, step: Step, call: _Call, rules: LoopRules, out: list[Finding]
    ) -> None:
        if call.result == "-" or call.is_error or not rules.no_progress.enabled:
            return
        window = list(state.calls)[-rules.no_progress_window :]
        same = [c for c in window if c.key == call.key and c.result == call.result]
        n = len(same)
        # Only consecutive repeats are L2's; this rule is for polling with other calls between.
        if n <= state.repeat.count:
            return
        self._ladder(
            out,
            state,
            step,
            "no_progress",
            rules.no_progress,
            n,
            call.key,
            f"{call.tool} returned the same result {n} times in the last {len(window)} tool calls",
            [c.span_id for c in same][-_MAX_EVIDENCE_SPANS:],
            {"tool": call.tool, "window": rules.no_progress_window},
        )

    def _side_effect(
        self,
        state: LoopState,
        step: Step,
        call: _Call,
        args: str | None,
        rules: LoopRules,
        out: list[Finding],
    ) -> None:
        target = args
        keys = rules.target_keys.get(call.tool)
        if keys:
            target = _select_keys(args, keys)
        mark = f"{call.tool}:{short_hash(target)}"
        spans = state.side_effects.get(mark)
        if spans is None:
            spans = state.side_effects[mark] = []
            while len(state.side_effects) > _MAX_SIDE_EFFECTS:
                state.side_effects.popitem(last=False)
        spans.append(step.span_id)
        del spans[:-_MAX_EVIDENCE_SPANS]
        n = len(spans)
        self._ladder(
            out,
            state,
            step,
            "side_effect_duplicate",
            rules.side_effect_duplicate,
            n,
            mark,
            f"{call.tool} ran {n} times with the same target: {_show(target, 80)}",
            spans,
            {"tool": call.tool, "target": _show(target)},
        )

    def _message(self, state: LoopState, step: Step, rules: LoopRules, out: list[Finding]) -> None:
        text = step.output_text
        is_empty = (text is not None and not text.strip()) or (
            text is None and step.output_tokens == 0
        )
        if is_empty:
            state.said.reset()
            n = state.empty.push(("empty",), step.span_id)
            self._ladder(
                out,
                state,
                step,
                "empty_response",
                rules.empty_response,
                n,
                "empty",
                f"the model returned {n} empty responses in a row",
                state.empty.spans,
                {"model": step.model},
            )
            return
        state.empty.reset()
        if text is None:
            return  # content not captured: nothing to compare
        fp = short_hash(" ".join(text.split()))
        n = state.said.push((fp,), step.span_id)
        self._ladder(
            out,
            state,
            step,
            "monologue",
            rules.monologue,
            n,
            fp,
            f"the model said the same thing {n} times in a row without calling a tool",
            state.said.spans,
            {"message": _show(text, 200)},
        )

    def _count_run_step(
        self, state: LoopState, step: Step, rules: LoopRules, out: list[Finding]
    ) -> None:
        if step.kind == "tool":
            state.said.reset()  # a tool call between messages ends a monologue
        n = state.runs.pop(step.trace_id, 0) + 1
        state.runs[step.trace_id] = n
        while len(state.runs) > _MAX_RUNS:
            state.runs.popitem(last=False)
        ladder = rules.max_steps
        learned = None
        if rules.max_steps_learned:
            runs, p99 = self.learned.get(step.agent_name, (0, 0.0))
            learned = p99 if runs >= rules.max_steps_min_runs else None
        if learned is not None:
            floor = rules.max_steps_learned_floor
            caps = [max(learned * m, floor) for m in (1, 2, 4)]
            configured = [ladder.warn, ladder.pause, ladder.kill]
            merged = [c if v is None else min(c, v) for c, v in zip(caps, configured, strict=True)]
            # Keep the ladder strictly ascending after taking minima level by level.
            for i in (1, 2):
                merged[i] = max(merged[i], merged[i - 1] + 1)
            ladder = ladder.model_copy(
                update={"warn": merged[0], "pause": merged[1], "kill": merged[2]}
            )
        cap = {"warn": ladder.warn, "pause": ladder.pause, "kill": ladder.kill}
        level = ladder_level(ladder, n)
        self._ladder(
            out,
            state,
            step,
            "max_steps",
            ladder,
            n,
            step.trace_id,
            f"run has {n} steps (cap {_fmt(cap.get(level or 'warn'))}"
            f"{', learned from history' if learned is not None else ''})",
            [step.span_id],
            {"steps": n, "learned_p99": learned, "caps": cap},
        )

    def _ladder(
        self,
        out: list[Finding],
        state: LoopState,
        step: Step,
        rule: str,
        ladder: Any,
        value: float,
        key: str,
        summary: str,
        spans: Sequence[str] | deque[str],
        evidence: dict[str, Any],
    ) -> None:
        level = ladder_level(ladder, value)
        if level is None:
            return
        rank = severity_rank(level)
        mark = (rule, key)
        if state.emitted.get(mark, -1) >= rank:
            return
        state.emitted[mark] = rank
        state.emitted.move_to_end(mark)
        while len(state.emitted) > _MAX_EMITTED:
            state.emitted.popitem(last=False)
        severity: Severity = level
        out.append(
            Finding(
                detector="loop",
                rule=rule,
                severity=severity,
                summary=f"{step.agent_name}: {summary}",
                agent_name=step.agent_name,
                service_name=step.service_name,
                session_id=step.session_id,
                trace_id=step.trace_id,
                span_ids=tuple(spans),
                evidence={
                    **evidence,
                    "count": value,
                    "level": level,
                    "thresholds": {"warn": ladder.warn, "pause": ladder.pause, "kill": ladder.kill},
                },
                key=key,
                value=float(value),
            )
        )

    # -- periodic: learned step caps ------------------------------------------------------
    async def run(self, history: History, now_ns: int) -> Sequence[Finding]:
        """Relearn each agent's p99 of steps per finished run (needs enough history)."""
        # The history window is the default rules'; each agent's minimum number of runs is
        # applied when its thresholds are used.
        rules = self.rules
        since_us = (now_ns - rules.history_days * 86_400 * 10**9) // 1000
        finished_us = (now_ns - 600 * 10**9) // 1000  # no step for 10 minutes: finished
        rows = await history.query(
            """
            SELECT agent_name, count(*) AS runs, quantile_cont(n, 0.99) AS p99 FROM (
                SELECT agent_name, trace_id, count(*) AS n FROM steps
                WHERE kind IN ('llm', 'tool', 'retrieval')
                  AND end_time >= make_timestamp(?::BIGINT)
                GROUP BY agent_name, trace_id
                HAVING max(end_time) < make_timestamp(?::BIGINT)
            ) GROUP BY agent_name
            """,
            [since_us, finished_us],
        )
        self.learned = {
            agent: (int(runs), float(p99))
            for agent, runs, p99 in rows
            if p99 is not None and math.isfinite(p99)
        }
        return ()


def _smallest_period(block: list[Any]) -> int:
    n = len(block)
    for p in range(1, n + 1):
        if n % p == 0 and block == block[:p] * (n // p):
            return p
    return n


def _min_rotation(items: list[str]) -> tuple[str, ...]:
    return min(tuple(items[i:] + items[:i]) for i in range(len(items)))


def _select_keys(args: str | None, keys: list[str]) -> str | None:
    if args is None:
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return args
    if not isinstance(value, dict):
        return args
    picked = {k: value[k] for k in keys if k in value}
    return json.dumps(picked, sort_keys=True, separators=(",", ":")) if picked else args


def _show(text: str | None, limit: int = 500) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"

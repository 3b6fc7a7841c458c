"""The goal-drift detector: the agent is solving a different problem than it was given (reference §B.2).

The task of a run is an explicit `watchdog.task` attribute when the agent sets one, else
the first user message of the current turn (`Step.user_message`); a new user turn
replaces the task and resets the windows, so a new request never looks like drift.
When message content is not captured (the OTel default) there is no task: only the
structural signals run, and every finding says so (`task_source: "none"`).

Signals, cheapest first (rule ids in `RULES`):

* `scope_denied` / `scope_not_allowed` / `read_only_scope`: declared scope per agent
  (`detectors.agents.<agent>.drift.scope`: tool allow/deny globs, read-only agent or
  read-only task patterns);
* `new_tool`: a tool this agent did not use in its previous `new_tool_runs` runs (info
  alone; warn when the call is also unrelated to the task, or when there is no task and
  the tool has side effects);
* `intent_action`: the task only asks to find/read/summarize/answer and the agent
  writes, sends, deletes, publishes or pays — unless that tool is routine for this
  agent's read-only tasks (a support bot answers by sending a reply);
* `off_task`: `off_task_min_steps` of the last `off_task_window` scored actions score
  below the `off_task_quantile` of the same tool's relevance in the agent's own
  history (TF-IDF over the agent's history by default, all-MiniLM-L6-v2 with the
  `semantic` extra); tools whose history says nothing (quantile ≤ floor) are skipped;
* `judge_misaligned`: the optional LLM judge (`detectors/drift_judge.py`), asked only
  when a cheaper signal is suspicious.

Profiles (tool sets per run, relevance quantiles, term frequencies) are learned from the
store at start and from each run that ends without a warn-or-worse finding.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from detectors.context_profile import (
    PendingRuns,
    RecentSessions,
    Reservoir,
    first_raised,
    normal_runs_sql,
)
from detectors.text import (
    DESTRUCTIVE_CLASSES,
    SIDE_EFFECT_CLASSES,
    ActionClass,
    EmbeddingScorer,
    Intent,
    LexicalScorer,
    RelevanceScorer,
    action_text,
    action_verbs,
    classify_action,
    classify_intent,
    glob_any,
    parse_json_object,
    tokenize,
)
from watchdog.detection import DetectorSettings, History, RuleInfo, StepContext
from watchdog.drift_context import DriftRules
from watchdog.errors import ConfigError
from watchdog.model import Finding, Severity, Step, severity_rank

__all__ = ["RULES", "DriftDetector", "DriftState", "JudgeRequest"]

RULES: Final[tuple[RuleInfo, ...]] = (
    RuleInfo(
        "drift",
        "scope_denied",
        "The agent called a tool its declared scope denies (`scope.deny_tools`).",
        "detectors.drift.scope.deny_severity",
    ),
    RuleInfo(
        "drift",
        "scope_not_allowed",
        "The agent called a tool outside its declared allowlist (`scope.allow_tools`).",
        "detectors.drift.scope.allow_severity",
    ),
    RuleInfo(
        "drift",
        "read_only_scope",
        "A side-effecting call by a read-only agent or in a task matching `scope.read_only_tasks`.",
        "detectors.drift.scope.deny_severity",
    ),
    RuleInfo(
        "drift",
        "new_tool",
        "A tool the agent did not use in its previous `new_tool_runs` runs (after "
        "`new_tool_min_runs` runs of history).",
        "detectors.drift.new_tool_severity",
    ),
    RuleInfo(
        "drift",
        "intent_action",
        "The task only asks to find/read/summarize/answer and the agent writes, sends, deletes, "
        "publishes or pays with a tool not routine for its read-only tasks.",
        "detectors.drift.intent_action_severity",
    ),
    RuleInfo(
        "drift",
        "off_task",
        "`off_task_min_steps` of the last `off_task_window` actions score below the "
        "`off_task_quantile` of the tool's relevance to the task in the agent's history.",
        "detectors.drift.off_task_severity",
    ),
    RuleInfo(
        "drift",
        "judge_misaligned",
        "The LLM judge found the recent actions misaligned with the task, with confidence "
        "≥ `judge.min_confidence`.",
        "detectors.drift.judge.severity",
    ),
)

# Finished runs learned per observed step at most: a burst of runs going idle together
# (the end of a traffic peak) is learned over the next steps instead of stalling one.
LEARN_PER_STEP: Final = 4

TaskSource = Literal["attribute", "user_message", "session", "none"]
_LLM_KEY: Final = "<llm>"
_NO_TASK_NOTE: Final = "task unknown: message content is not captured, structural signals only"


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """What the LLM judge is asked about: the task and the recent actions that looked suspicious."""

    agent: str
    service: str
    session: str
    trace: str
    span_ids: tuple[str, ...]
    task: str
    actions: tuple[str, ...]
    triggers: tuple[str, ...]
    turn: int


@dataclass(slots=True)
class _Scored:
    span_id: str
    tool: str
    score: float
    off: bool


@dataclass(slots=True)
class DriftState:
    """Per-session drift state: the task of the current turn and the recent scored actions."""

    trace_id: str = ""
    task: str | None = None
    task_source: TaskSource = "none"
    intent: Intent | None = None
    turn: int = 0
    window: deque[_Scored] = field(default_factory=lambda: deque(maxlen=20))
    run_tools: set[str] = field(default_factory=set)
    recent_actions: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    fired: set[str] = field(default_factory=set)
    judge_calls: int = 0
    judged_turn: int = -1

    def set_task(self, text: str, source: TaskSource) -> None:
        """Start a new turn with `text` as its task."""
        self.task = text
        self.task_source = source
        self.intent = classify_intent(text)
        self.turn += 1
        self.window.clear()
        self.recent_actions.clear()


@dataclass(slots=True)
class _Obs:
    """One scored action of a run, learned once the run ends normally."""

    key: str
    text: str
    score: float | None
    terms: list[str] | None = None  # tokenize(text), kept from scoring when it was done


@dataclass(slots=True)
class _RunFacts:
    tools: frozenset[str]
    read_only: bool


class DriftProfiles:
    """What the drift detector learned per agent: recent runs' tool sets and relevance quantiles."""

    def __init__(
        self, scorer: RelevanceScorer, max_runs: int = 500, max_agents: int = 2000
    ) -> None:
        self.scorer = scorer
        self._runs: OrderedDict[str, deque[_RunFacts]] = OrderedDict()
        self._scores: dict[tuple[str, str], Reservoir] = {}
        self._max_runs = max_runs
        self._max_agents = max_agents
        # Per (agent, runs looked back): what the last runs say, recomputed only when a
        # run is learned. The entry holds the newest run it was computed after, so a
        # changed deque (and only that) is noticed: every learned run is a new object.
        self._recent: dict[tuple[str, int], tuple[_RunFacts, frozenset[str]]] = {}
        self._reads: dict[tuple[str, int], tuple[_RunFacts, int, Counter[str]]] = {}

    def runs(self, agent: str) -> Sequence[_RunFacts]:
        """The agent's learned runs, oldest first."""
        return self._runs.get(agent, ())

    def recent_tools(self, agent: str, n: int) -> frozenset[str]:
        """Tools used in any of the agent's last `n` learned runs."""
        runs = self._runs.get(agent)
        if not runs:
            return frozenset()
        key = (agent, n)
        hit = self._recent.get(key)
        if hit is None or hit[0] is not runs[-1]:
            tools = frozenset().union(*(r.tools for r in list(runs)[-n:]))
            if len(self._recent) > 10_000:
                self._recent.clear()
            hit = self._recent[key] = (runs[-1], tools)
        return hit[1]

    def read_runs(self, agent: str, n: int) -> tuple[int, Counter[str]]:
        """Among the agent's last `n` learned runs: how many had a read-only task.

        Also per tool: in how many of those read-only runs it was used.
        """
        runs = self._runs.get(agent)
        if not runs:
            return 0, Counter()
        key = (agent, n)
        hit = self._reads.get(key)
        if hit is None or hit[0] is not runs[-1]:
            reads = [r for r in list(runs)[-n:] if r.read_only]
            uses: Counter[str] = Counter()
            for r in reads:
                uses.update(r.tools)
            if len(self._reads) > 10_000:
                self._reads.clear()
            hit = self._reads[key] = (runs[-1], len(reads), uses)
        return hit[1], hit[2]

    def scores(self, agent: str, key: str) -> Reservoir | None:
        """Relevance scores of one tool (or `*` for all) in the agent's normal runs."""
        return self._scores.get((agent, key))

    def learn_run(
        self, agent: str, task: str | None, read_only: bool, tools: set[str], obs: Sequence[_Obs]
    ) -> None:
        """Fold one normal run into the profiles."""
        runs = self._runs.get(agent)
        if runs is None:
            runs = self._runs[agent] = deque(maxlen=self._max_runs)
            if len(self._runs) > self._max_agents:
                self._runs.popitem(last=False)
        runs.append(_RunFacts(frozenset(tools), read_only))
        texts = [task] if task else []
        for o in obs:
            texts.append(o.text)
            if o.score is None:
                continue
            for key in (o.key, "*"):
                res = self._scores.get((agent, key))
                if res is None:
                    if len(self._scores) >= 100_000:
                        continue
                    res = self._scores[(agent, key)] = Reservoir(500)
                res.add(o.score)
        if not texts:
            return
        if isinstance(self.scorer, LexicalScorer):
            # The terms of a scored action were computed when it was scored.
            docs = [tokenize(task)] if task else []
            docs.extend(o.terms if o.terms is not None else tokenize(o.text) for o in obs)
            self.scorer.observe_terms(agent, docs)
        else:
            self.scorer.observe(agent, texts)


def _level(s: str) -> Severity:
    return s  # type: ignore[return-value]


@dataclass(slots=True)
class _Call:
    agent: str
    service: str
    session: str
    trace: str
    span_id: str
    tool: str
    action: ActionClass
    text: str
    verbs: frozenset[str] = frozenset()  # action_verbs(tool, args): its kind, not its subject
    terms: list[str] | None = None  # tokenize(text), once the lexical scorer needed it


class DriftDetector:
    """Streaming goal-drift detector with learned per-agent profiles and an optional judge hook."""

    name = "drift"

    def __init__(
        self,
        settings: DetectorSettings,
        *,
        scorer: RelevanceScorer | None = None,
        judge_sink: Callable[[JudgeRequest], bool] | None = None,
    ) -> None:
        base = settings.drift
        self._settings = settings
        if scorer is None:
            scorer = EmbeddingScorer() if base.scorer == "embedding" else LexicalScorer()
        self.scorer = scorer
        self.profiles = DriftProfiles(scorer)
        self._tool_classes = settings.context.tool_classes
        self._history_runs = base.history_runs
        self._judge_sink = judge_sink
        self._pending: PendingRuns[_Obs] = PendingRuns()
        self._run_meta: OrderedDict[str, tuple[str | None, bool, set[str]]] = OrderedDict()
        self._sessions: RecentSessions[DriftState] = RecentSessions(settings.max_sessions)

    def new_state(self) -> DriftState:
        """Fresh per-session state."""
        return DriftState()

    # -- streaming ----------------------------------------------------------------------
    def observe(self, state: DriftState, step: Step, ctx: StepContext) -> Sequence[Finding]:
        """Track the task; judge tool calls and assistant text against it and the agent's profile."""
        rules = ctx.rules.drift
        if not ctx.replay:
            self._sessions.remember(step.session_id, state)
            self._learn_finished(ctx.now_ns, int(rules.run_idle_s * 1e9), LEARN_PER_STEP)
        if step.trace_id != state.trace_id:
            state.trace_id = step.trace_id
            state.run_tools = set()
            state.fired = set()
            state.judge_calls = 0
            if state.task is not None:
                state.task_source = "session"
        self._track_task(state, step)
        tool = step.tool_name if step.kind == "tool" else None
        tool_call = bool(tool)
        if not ctx.replay:
            self._note_run(step, state)
            if not (tool_call and rules.enabled):
                # (A judged tool call refreshes its run when it is added as an observation.)
                self._pending.touch(step.trace_id, step.agent_name, ctx.now_ns)
        if not rules.enabled:
            return ()
        if tool:
            args = parse_json_object(step.tool_args)
            call = _Call(
                step.agent_name, step.service_name, step.session_id, step.trace_id, step.span_id,
                tool, classify_action(tool, args, self._tool_classes),
                action_text(tool, step.tool_args), action_verbs(tool, args),
            )  # fmt: skip
            found = self._judge_call(state, call, rules, ctx)
            state.run_tools.add(tool)
        elif step.kind == "llm" and step.output_text and not _looks_like_calls(step.output_text):
            call = _Call(
                step.agent_name, step.service_name, step.session_id, step.trace_id, step.span_id,
                _LLM_KEY, "read", step.output_text[:2000],
            )  # fmt: skip
            found = self._score_only(state, call, rules, ctx)
        else:
            return ()
        if not found:
            return ()
        return first_raised(found, state.fired, self._pending, step.trace_id, ctx.replay)

    def _track_task(self, state: DriftState, step: Step) -> None:
        if step.task:
            if step.task != state.task:
                state.set_task(step.task, "attribute")
        elif step.user_message and state.task_source != "attribute":
            if step.user_message != state.task:
                state.set_task(step.user_message, "user_message")
            elif state.task_source == "session":
                state.task_source = "user_message"

    def _note_run(self, step: Step, state: DriftState) -> None:
        meta = self._run_meta.get(step.trace_id)
        if meta is None:
            read_only = bool(state.intent and state.intent.is_read_only)
            meta = self._run_meta[step.trace_id] = (state.task, read_only, set())
            while len(self._run_meta) > 20_000:
                self._run_meta.popitem(last=False)
        elif meta[0] is None and state.task is not None:
            read_only = bool(state.intent and state.intent.is_read_only)
            meta = self._run_meta[step.trace_id] = (state.task, read_only, meta[2])
        if step.kind == "tool" and step.tool_name:
            meta[2].add(step.tool_name)

    def _learn_finished(self, now_ns: int, idle_ns: int, limit: int | None) -> None:
        for trace_id, agent, obs, _ in self._pending.sweep(now_ns, idle_ns, limit):
            meta = self._run_meta.pop(trace_id, None)
            if meta is not None:
                task, read_only, tools = meta
                self.profiles.learn_run(agent, task, read_only, tools, obs)

    def flush(self, now_ns: int) -> None:
        """Learn every pending run now (tests and the benchmark end runs explicitly)."""
        self._learn_finished(now_ns, -1, None)

    # -- signals ------------------------------------------------------------------------
    def _threshold(self, agent: str, key: str, rules: DriftRules) -> float | None:
        for k in (key, "*"):
            res = self.profiles.scores(agent, k)
            if res is not None and len(res) >= rules.off_task_min_samples:
                q = res.quantile(rules.off_task_quantile)
                return q if q > rules.off_task_floor else None
        return None

    def _score(
        self, state: DriftState, call: _Call, rules: DriftRules, ctx: StepContext
    ) -> tuple[float | None, bool]:
        """Relevance of the call to the task, and whether it is off task for this agent."""
        if state.task is None or not rules.off_task:
            return None, False
        scorer = self.scorer
        if isinstance(scorer, LexicalScorer):
            call.terms = tokenize(call.text)  # learned from too, if the run ends normally
            score = scorer.score_terms(call.agent, state.task, call.terms, call.verbs)
        else:
            score = scorer.score(call.agent, state.task, call.text)
        threshold = self._threshold(call.agent, call.tool, rules)
        off = threshold is not None and score < threshold * rules.off_task_margin
        if threshold is not None:
            state.window.append(_Scored(call.span_id, call.tool, score, off))
        return score, off

    def _score_only(
        self, state: DriftState, call: _Call, rules: DriftRules, ctx: StepContext
    ) -> list[Finding]:
        score, _ = self._score(state, call, rules, ctx)
        self._observe_for_learning(call, score, ctx)
        return self._off_task(state, call, rules)

    def _observe_for_learning(self, call: _Call, score: float | None, ctx: StepContext) -> None:
        if not ctx.replay:
            obs = _Obs(call.tool, call.text, score, call.terms)
            self._pending.add(call.trace, call.agent, ctx.now_ns, obs)

    def _judge_call(
        self, state: DriftState, call: _Call, rules: DriftRules, ctx: StepContext
    ) -> list[Finding]:
        out: list[Finding] = []
        scope = rules.scope
        tool = call.tool
        if glob_any(tool, scope.deny_tools):
            out.append(self._finding(state, call, "scope_denied", scope.deny_severity,
                                     f"{tool} is denied by this agent's declared scope",
                                     {"deny_tools": scope.deny_tools}, tool))  # fmt: skip
        elif scope.allow_tools is not None and not glob_any(tool, scope.allow_tools):
            out.append(self._finding(state, call, "scope_not_allowed", scope.allow_severity,
                                     f"{tool} is outside this agent's declared tools",
                                     {"allow_tools": scope.allow_tools}, tool))  # fmt: skip
        if call.action in SIDE_EFFECT_CLASSES and (
            scope.read_only
            or (
                state.task is not None
                and any(re.search(p, state.task) for p in scope.read_only_tasks)
            )
        ):
            why = (
                "the agent is declared read-only"
                if scope.read_only
                else "the task is declared read-only"
            )
            out.append(self._finding(state, call, "read_only_scope", scope.deny_severity,
                                     f"{tool} ({call.action}) but {why}",
                                     {"read_only_agent": scope.read_only,
                                      "read_only_tasks": scope.read_only_tasks}, tool))  # fmt: skip

        score, off = self._score(state, call, rules, ctx)
        triggers: list[str] = []
        runs = self.profiles.runs(call.agent)
        if (
            rules.new_tool
            and len(runs) >= rules.new_tool_min_runs
            and tool not in state.run_tools
            and tool not in self.profiles.recent_tools(call.agent, rules.new_tool_runs)
        ):
            new_severity: str = rules.new_tool_severity
            agent_q = self._threshold(call.agent, "*", rules)
            unrelated = score is not None and score < max(agent_q or 0.0, rules.off_task_floor)
            blind = state.task is None and call.action in DESTRUCTIVE_CLASSES
            if (unrelated or blind) and severity_rank(new_severity) < severity_rank("warn"):
                new_severity = "warn"
            why = "unrelated to the task" if unrelated else ("with side effects" if blind else "")
            out.append(self._finding(state, call, "new_tool", new_severity,
                                     f"{tool} was not used in this agent's previous "
                                     f"{min(len(runs), rules.new_tool_runs)} runs"
                                     + (f" ({why})" if why else ""),
                                     {"runs_checked": min(len(runs), rules.new_tool_runs),
                                      "relevance": score}, tool))  # fmt: skip
            triggers.append("new_tool")

        intent = state.intent
        if (
            rules.intent_action
            and intent is not None
            and intent.is_read_only
            and call.action in SIDE_EFFECT_CLASSES
            and (routine := self._routine_for_reads(call.agent, tool, rules)) is not True
        ):
            # Cold start (routine unknown): say it at info so the run can still be learned.
            severity = rules.intent_action_severity if routine is False else "info"
            out.append(self._finding(state, call, "intent_action", severity,
                                     f"the task asks to {'/'.join(intent.read_cues[:3])} but the "
                                     f"agent calls {tool} ({call.action})",
                                     {"read_cues": list(intent.read_cues), "relevance": score},
                                     tool))  # fmt: skip
            triggers.append("intent_action")
        if off:
            triggers.append("off_step")
        self._observe_for_learning(call, score, ctx)
        if self._judge_sink is not None and rules.judge.enabled:
            state.recent_actions.append(call.text[:300])  # only judge requests read them
        out.extend(self._off_task(state, call, rules))
        if triggers and state.task is not None:
            self._maybe_judge(state, call, rules, triggers)
        return out

    def _routine_for_reads(self, agent: str, tool: str, rules: DriftRules) -> bool | None:
        """Whether `tool` is routine in the agent's read-only tasks (None: too little history)."""
        reads, uses = self.profiles.read_runs(agent, rules.new_tool_runs)
        if reads < 5:
            return None
        share = uses[tool] / reads
        return share >= rules.routine_fraction

    def _off_task(self, state: DriftState, call: _Call, rules: DriftRules) -> list[Finding]:
        window = state.window
        if not window or not window[-1].off:
            return []  # the usual case, decided without copying the window
        recent = list(window)[-rules.off_task_window :]
        off = [s for s in recent if s.off]
        if len(off) < rules.off_task_min_steps or not recent[-1].off:
            return []
        return [
            self._finding(state, call, "off_task", rules.off_task_severity,
                          f"{len(off)} of the last {len(recent)} actions are unrelated to the task "
                          f"({self.scorer.name} relevance below this agent's "
                          f"p{rules.off_task_quantile * 100:g})",
                          {"scorer": self.scorer.name,
                           "steps": [{"span_id": s.span_id, "tool": s.tool,
                                      "relevance": round(s.score, 4)} for s in recent]},
                          f"turn{state.turn}",
                          span_ids=tuple(s.span_id for s in off))
        ]  # fmt: skip

    def _maybe_judge(
        self, state: DriftState, call: _Call, rules: DriftRules, triggers: list[str]
    ) -> None:
        judge = rules.judge
        if self._judge_sink is None or not judge.enabled or state.task is None:
            return
        if state.judge_calls >= judge.max_calls_per_run:
            return
        request = JudgeRequest(
            agent=call.agent, service=call.service, session=call.session, trace=call.trace,
            span_ids=(call.span_id,), task=state.task, actions=tuple(state.recent_actions),
            triggers=tuple(triggers), turn=state.turn,
        )  # fmt: skip
        if self._judge_sink(request):
            state.judge_calls += 1

    def _finding(
        self,
        state: DriftState,
        call: _Call,
        rule: str,
        severity: str,
        summary: str,
        evidence: Mapping[str, Any],
        key: str,
        *,
        span_ids: tuple[str, ...] | None = None,
    ) -> Finding:
        if state.task is None:
            summary = f"{summary} ({_NO_TASK_NOTE})"
        return Finding(
            detector="drift",
            rule=rule,
            severity=_level(severity),
            summary=summary,
            agent_name=call.agent,
            service_name=call.service,
            session_id=call.session,
            trace_id=call.trace,
            span_ids=span_ids or ((call.span_id,) if call.span_id else ()),
            evidence={
                "tool": call.tool if call.tool != _LLM_KEY else None,
                "action": call.action,
                "task": (state.task or "")[:500] or None,
                "task_source": state.task_source,
                **({"note": _NO_TASK_NOTE} if state.task is None else {}),
                **evidence,
            },
            key=key,
        )

    # -- pre-action ---------------------------------------------------------------------
    def check_action(
        self, agent: str, session: str | None, tool: str, args: Any, rules: DriftRules | None = None
    ) -> list[Finding]:
        """Judge a proposed tool call by scope and intent before it happens (for POST /api/v1/check).

        Pure with respect to the detector: nothing is learned or remembered.
        """
        r = rules or self._settings.for_agent(agent).drift
        state = self._sessions.get(session or "")
        shadow = DriftState()
        if state is not None:
            shadow.task, shadow.task_source, shadow.intent = (
                state.task,
                state.task_source,
                state.intent,
            )
            shadow.trace_id, shadow.run_tools = state.trace_id, set(state.run_tools)
        mapping = args if isinstance(args, Mapping) else None
        call = _Call(agent, "", session or "", shadow.trace_id, "", tool,
                     classify_action(tool, mapping, self._tool_classes),
                     action_text(tool, None) + " " + " ".join(str(v) for v in (mapping or {}).values()),
                     action_verbs(tool, mapping))  # fmt: skip
        quiet = r.model_copy(
            update={"off_task": False, "judge": r.judge.model_copy(update={"enabled": False})}
        )
        ctx = StepContext(now_ns=0, rules=DetectorSettings.model_validate({}), replay=True)
        return [f for f in self._judge_call(shadow, call, quiet, ctx) if f.rule != "off_task"]

    def _relevance(self, agent: str, task: str, text: str, verbs: frozenset[str]) -> float:
        """The scorer's relevance of an action's text to the task, as `_score` computes it."""
        if isinstance(self.scorer, LexicalScorer):
            return self.scorer.score(agent, task, text, verbs)
        return self.scorer.score(agent, task, text)

    # -- restore ------------------------------------------------------------------------
    async def restore(self, history: History, now_ns: int) -> None:
        """Learn tool sets and relevance quantiles from the latest normal runs in the store."""
        rows = await history.query(*learned_drift_sql(now_ns, self._history_runs))
        runs: list[_StoredRun] = []
        current: _StoredRun | None = None
        for agent, trace, kind, tool, args, output, user_message, explicit in rows:
            if current is None or (agent, trace) != (current.agent, current.trace):
                current = _StoredRun(agent, trace)
                runs.append(current)
            # The same turn logic as live: an explicit task wins, a new user message is a new turn.
            if explicit:
                current.task = explicit
            elif user_message and user_message != current.task:
                current.task = user_message
            if kind == "tool" and tool:
                current.tools.add(tool)
                verbs = action_verbs(tool, parse_json_object(args))
                current.actions.append((tool, action_text(tool, args), current.task, verbs))
            elif kind == "llm" and output and not _looks_like_calls(output):
                current.actions.append((_LLM_KEY, output[:2000], current.task, frozenset()))
        # In chunks the embedding cache holds: the texts of a chunk are embedded in batches
        # (one forward pass per text is several times slower), then scored from the cache.
        for start in range(0, len(runs), 200):
            chunk = runs[start : start + 200]
            if isinstance(self.scorer, EmbeddingScorer):
                self.scorer.embed(
                    [
                        t
                        for r in chunk
                        for _, text, task, _ in r.actions
                        if task
                        for t in (task, text)
                    ]
                )
            for r in chunk:
                obs = [
                    _Obs(key, text, self._relevance(r.agent, task, text, verbs) if task else None)
                    for key, text, task, verbs in r.actions
                ]
                read_only = bool(r.task and classify_intent(r.task).is_read_only)
                self.profiles.learn_run(r.agent, r.task, read_only, r.tools, obs)


@dataclass(slots=True)
class _StoredRun:
    """A run read back from the store: its task and, per action, (key, text, task then, verbs)."""

    agent: str
    trace: str
    task: str | None = None
    tools: set[str] = field(default_factory=set)
    actions: list[tuple[str, str, str | None, frozenset[str]]] = field(default_factory=list)


def _looks_like_calls(text: str) -> bool:
    """Return True when an assistant output is only requested tool calls (`name(args)` lines)."""
    # A clipped output (8 KiB) loses its closing parenthesis: the opening is enough.
    return all(_CALL_LINE.match(line.strip()) for line in text.splitlines() if line.strip())


_CALL_LINE: Final = re.compile(r"^[\w.\-]+\(")


def learned_drift_sql(now_ns: int, per_agent: int) -> tuple[str, list[Any]]:
    """SQL of the llm and tool steps of each agent's latest normal runs (no warn+ drift/context alert)."""
    return normal_runs_sql(
        now_ns, per_agent,
        "s.agent_name, s.trace_id, s.kind, s.tool_name, s.tool_args, s.output_text, "
        "s.user_message, s.task",
        "s.kind IN ('tool', 'llm', 'agent')",
    )  # fmt: skip


def validate_drift_context(settings: DetectorSettings) -> None:
    """Check what `watchdog run` would trip over: rules files, the semantic extra, the judge URL.

    Raises ConfigError with the dotted path of the setting at fault.
    """
    from detectors.context_rules import load_rules
    from detectors.text import semantic_available

    ctx = settings.context
    load_rules(ctx.rules_files, shipped=ctx.shipped_rules, disabled=ctx.disabled_rules)
    # One scorer serves every agent (it holds the model and every agent's history), so a
    # per-agent choice would be silently ignored: refuse it instead.
    for name, override in settings.agents.items():
        drift = override.drift
        if (
            drift is not None
            and "scorer" in drift.model_fields_set
            and drift.scorer != settings.drift.scorer
        ):
            raise ConfigError(
                f"detectors.agents.{name}.drift.scorer: the scorer is chosen once for all "
                f"agents; set detectors.drift.scorer instead"
            )
    if settings.drift.scorer == "embedding" and not semantic_available():
        raise ConfigError(
            "detectors.drift.scorer: 'embedding' needs the semantic extra "
            "(pip install 'agent-watchdog[semantic]')"
        )
    judge = settings.drift.judge
    if judge.enabled and not judge.base_url:
        raise ConfigError("detectors.drift.judge.base_url: required when the judge is enabled")

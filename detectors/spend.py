"""The spend detector: exact cost caps, burn rates, per-agent cost anomalies, context bloat.

Cost per step is `steps.cost_usd` of llm steps (priced at intake). Rules:

* caps (`settings.budgets`): per run, per session, per agent per UTC day and for all
  agents per UTC day. Each warn fraction (default 50/80/100 %) fires once per period
  (the run, the session, the day); 100 % is a pause, `kill_fraction` × cap a kill. The
  check runs on the step that crosses, so no further call lands before the alert.
* burn rate: multi-window pairs (SRE workbook) against the daily budget, for all agents
  (`total_day_usd`) and per agent (`per_agent_day_usd`); both windows must exceed.
* cost z-score: the run's cost so far against the agent's finished runs, robust z of
  log cost (Iglewicz & Hoaglin; MeanAD and median × k fallbacks); silent until the agent
  has `zscore_min_runs` runs of history (cold-start guard).
* context bloat: input tokens per call rising call after call with no new tool result
  or user message in between.
* unpriced: an llm call whose model has no price raises one alert per agent and model,
  so spend is never silently zero.

Day totals and burn windows are cross-session state rebuilt by `restore()` from `steps`;
fired marks are rebuilt from the `alerts` rows (evidence `mark`), so a restart neither
repeats nor forgets a warning.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

from watchdog.detection import History, RuleInfo, SpendRules, StepContext, ladder_level, short_hash
from watchdog.model import Finding, Severity, Step, severity_rank
from watchdog.policy import ALL_AGENTS
from watchdog.settings import BudgetSettings

__all__ = ["ALL_AGENTS", "RULES", "SpendDetector", "SpendState"]

RULES: Final[tuple[RuleInfo, ...]] = (
    RuleInfo(
        "spend",
        "run_cap",
        "A run's cost reached a warn fraction of "
        "budgets.per_run_usd (warn), the cap (pause) or kill_fraction × cap (kill).",
        "budgets.per_run_usd",
    ),
    RuleInfo(
        "spend",
        "session_cap",
        "The same for a session and budgets.per_session_usd.",
        "budgets.per_session_usd",
    ),
    RuleInfo(
        "spend",
        "agent_day_cap",
        "The same for an agent's UTC day and budgets.per_agent_day_usd.",
        "budgets.per_agent_day_usd",
    ),
    RuleInfo(
        "spend",
        "total_day_cap",
        "The same for all agents' UTC day and budgets.total_day_usd (agent_name '*').",
        "budgets.total_day_usd",
    ),
    RuleInfo(
        "spend",
        "burn_rate",
        "Spend rate over both windows of a pair above rate × "
        "the daily budget's allowed rate (14.4× 1h+5m, 6× 6h+30m).",
        "detectors.spend.burn_windows",
    ),
    RuleInfo(
        "spend",
        "cost_zscore",
        "A run's cost so far is an outlier against the agent's "
        "finished runs: robust z of log cost ≥ 3.5 and ≥ 2× the median run, with ≥ 30 "
        "runs of history (cold-start guard).",
        "detectors.spend.zscore",
    ),
    RuleInfo(
        "spend",
        "context_bloat",
        "Input tokens per call rose call after call with no "
        "new tool result or user message in between.",
        "detectors.spend.context_bloat",
    ),
    RuleInfo(
        "spend",
        "unpriced",
        "An llm call whose model has no known price (spend would "
        "read zero); once per agent and model.",
        "detectors.spend.unpriced",
    ),
)

_NS: Final = 1_000_000_000
_DAY_NS: Final = 86_400 * _NS
_BUCKET_NS: Final = 10 * _NS
_MAX_RUNS_PER_SESSION: Final = 256
_MAX_SEEN_RESULTS: Final = 512
_MAX_AGENTS: Final = 10_000
_MAX_MARKS: Final = 200_000


@lru_cache(maxsize=64)
def _day_name(index: int) -> str:
    return datetime.fromtimestamp(index * 86_400, UTC).strftime("%Y-%m-%d")


def _money(x: float) -> str:
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


@dataclass(slots=True)
class _Run:
    cost: float = 0.0
    marks: set[str] = field(default_factory=set)


@dataclass(slots=True)
class SpendState:
    """Per-session state: session and run totals, fired marks, context growth."""

    cost: float = 0.0
    marks: set[str] = field(default_factory=set)
    runs: OrderedDict[str, _Run] = field(default_factory=OrderedDict)
    last_input: int | None = None
    bloat_streak: int = 0
    bloat_base: int = 0
    bloat_spans: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    bloat_level: int = -1
    novel: bool = False
    user_fp: str | None = None
    seen_results: OrderedDict[str, None] = field(default_factory=OrderedDict)


class _Window:
    """A running sum over the last `length_ns`, in 10-second buckets."""

    __slots__ = ("buckets", "length_ns", "total")

    def __init__(self, length_ns: int) -> None:
        self.length_ns = length_ns
        self.buckets: deque[list[float]] = deque()
        self.total = 0.0

    def add(self, at_ns: int, amount: float) -> None:
        b = float(at_ns // _BUCKET_NS)
        if self.buckets and self.buckets[-1][0] >= b:
            self.buckets[-1][1] += amount  # late or same bucket: keep the sum exact
        else:
            self.buckets.append([b, amount])
        self.total += amount

    def expire(self, now_ns: int) -> float:
        horizon = (now_ns - self.length_ns) // _BUCKET_NS
        while self.buckets and self.buckets[0][0] < horizon:
            self.total -= self.buckets.popleft()[1]
        if not self.buckets:
            self.total = 0.0
        return max(self.total, 0.0)


class _Burn:
    """Burn-rate windows of one scope (an agent, or all agents)."""

    __slots__ = ("firing", "windows")

    def __init__(self) -> None:
        self.windows: dict[int, _Window] = {}
        self.firing: set[int] = set()

    def add(self, lengths: Sequence[int], at_ns: int, amount: float, now_ns: int) -> None:
        for length in lengths:
            w = self.windows.get(length)
            if w is None:
                w = self.windows[length] = _Window(length)
            # A late span older than a window never belongs to it (a window adds late
            # amounts to its newest bucket, which would count old spend as spend now).
            if at_ns >= now_ns - length:
                w.add(at_ns, amount)


class SpendDetector:
    """Streaming spend rules plus the periodic per-agent cost baseline."""

    name = "spend"

    def __init__(
        self,
        budgets: BudgetSettings,
        rules: SpendRules | None = None,
        interval_s: float = 300.0,
    ) -> None:
        self.budgets = budgets
        self.rules = rules or SpendRules.model_validate({})
        self.interval_s = interval_s
        self.day_totals: dict[tuple[str, int], float] = {}  # (agent or "*", UTC day) → USD
        self._today = -1
        self.marks: OrderedDict[str, None] = OrderedDict()  # day-period marks already fired
        self.unpriced_seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.burn: dict[str, _Burn] = {}
        # Per agent: (finished runs, median of log cost, robust scale or 0, fallback kind).
        self.baselines: dict[str, tuple[int, float, float, str]] = {}

    def new_state(self) -> SpendState:
        """Fresh per-session state."""
        return SpendState()

    # -- restore --------------------------------------------------------------------
    async def restore(self, history: History, now_ns: int) -> None:
        """Rebuild day totals, burn windows and fired marks from the store."""
        since = (now_ns // _DAY_NS - 1) * _DAY_NS
        rows = await history.query(
            """
            SELECT agent_name, epoch_ns(end_time) // ? AS day, sum(cost_usd)
            FROM steps WHERE kind = 'llm' AND cost_usd IS NOT NULL
              AND end_time >= make_timestamp(?::BIGINT)
            GROUP BY ALL
            """,
            [_DAY_NS, since // 1000],
        )
        self.day_totals.clear()
        for agent, day_index, total in rows:
            day = int(day_index)
            self.day_totals[(agent, day)] = self.day_totals.get((agent, day), 0.0) + total
            key = (ALL_AGENTS, day)
            self.day_totals[key] = self.day_totals.get(key, 0.0) + total
        longest = max((int(w.long_s * _NS) for w in self.rules.burn_windows), default=0)
        if longest:
            rows = await history.query(
                """
                SELECT agent_name, epoch_ns(end_time) // ? AS b, sum(cost_usd)
                FROM steps WHERE kind = 'llm' AND cost_usd IS NOT NULL
                  AND end_time >= make_timestamp(?::BIGINT)
                GROUP BY ALL ORDER BY b
                """,
                [_BUCKET_NS, (now_ns - longest) // 1000],
            )
            self.burn.clear()
            for agent, bucket, total in rows:
                at = int(bucket) * _BUCKET_NS
                lengths = self._burn_lengths(self.rules)
                if self.budgets.caps_for(agent).per_agent_day_usd is not None:
                    self._burn_scope(agent).add(lengths, at, float(total), now_ns)
                if self.budgets.total_day_usd is not None:
                    self._burn_scope(ALL_AGENTS).add(lengths, at, float(total), now_ns)
        rows = await history.query(
            """
            SELECT rule, agent_name, json_extract_string(evidence, '$.mark'),
                   json_extract_string(evidence, '$.model')
            FROM alerts WHERE detector = 'spend' AND created_at >= make_timestamp(?::BIGINT)
            """,
            [since // 1000],
        )
        for rule, agent, mark, model in rows:
            if mark:
                self._remember(mark)
            if rule == "unpriced":
                self.unpriced_seen[(agent, model or "")] = None

    # -- streaming ------------------------------------------------------------------
    def observe(self, state: SpendState, step: Step, ctx: StepContext) -> Sequence[Finding]:
        """Account the step's cost and check every spend rule it can trip."""
        rules = ctx.rules.spend
        out: list[Finding] = []
        if step.kind == "tool":
            fp = short_hash(step.tool_result) if step.tool_result is not None else None
            if fp is not None and fp not in state.seen_results:
                state.novel = True
                state.seen_results[fp] = None
                while len(state.seen_results) > _MAX_SEEN_RESULTS:
                    state.seen_results.popitem(last=False)
            return out
        if step.kind != "llm":
            return out
        if step.user_message is not None:
            fp = short_hash(step.user_message)
            if fp != state.user_fp:
                state.novel = True
                state.user_fp = fp
        self._bloat(state, step, rules, out)
        if step.cost_usd is None:
            if rules.unpriced and step.price_source == "unpriced" and not ctx.replay:
                self._unpriced(step, out)
            return out
        cost = step.cost_usd
        run = state.runs.pop(step.trace_id, None) or _Run()
        state.runs[step.trace_id] = run
        while len(state.runs) > _MAX_RUNS_PER_SESSION:
            state.runs.popitem(last=False)
        run.cost += cost
        state.cost += cost
        caps = self.budgets.caps_for(step.agent_name)
        if rules.caps_enabled:
            self._cap(
                out,
                step,
                rules,
                run.marks,
                "run_cap",
                caps.per_run_usd,
                run.cost,
                f"run:{step.trace_id}",
                "run",
            )
            self._cap(
                out,
                step,
                rules,
                state.marks,
                "session_cap",
                caps.per_session_usd,
                state.cost,
                f"session:{step.session_id}",
                "session",
            )
        self._zscore(out, step, rules, run)
        if ctx.replay:
            return ()  # day totals and burn windows were rebuilt by restore()
        end = min(step.end_time_ns, ctx.now_ns)
        self._trim_days(ctx.now_ns)
        day = end // _DAY_NS
        if day >= self._today - 1:
            self._day_caps(out, step, rules, caps.per_agent_day_usd, cost, day)
        # else: a late or replayed span from before yesterday. Its day is no longer kept
        # (restore() rebuilds yesterday and today only), so it counts for its run and
        # session above and nothing else: re-opening an old day would re-grow state that
        # was trimmed and could page about a day that closed long ago.
        self._burn_rate(
            out, step, (step.agent_name, caps.per_agent_day_usd, rules), end, ctx.now_ns
        )
        self._burn_rate(
            out, step, (ALL_AGENTS, self.budgets.total_day_usd, self.rules), end, ctx.now_ns
        )
        return out

    # -- caps -----------------------------------------------------------------------
    def _day_caps(
        self,
        out: list[Finding],
        step: Step,
        rules: SpendRules,
        agent_cap: float | None,
        cost: float,
        day: int,
    ) -> None:
        """Add the step to its UTC day (today or yesterday) and check the day caps.

        A late span from yesterday still counts toward yesterday (as restore() would count
        it), but that day is closed: its budget has reset, so stopping anything now would
        not protect it. Its cap findings are therefore capped at `warn` (reported, not
        enforced), with `closed_day` in the evidence.
        """
        for scope in (step.agent_name, ALL_AGENTS):
            key = (scope, day)
            self.day_totals[key] = self.day_totals.get(key, 0.0) + cost
        if not rules.caps_enabled:
            return
        day_name = _day_name(day)
        closed = day < self._today
        marks = _MarkView(self)
        self._cap(
            out,
            step,
            rules,
            marks,
            "agent_day_cap",
            agent_cap,
            self.day_totals[(step.agent_name, day)],
            f"agent_day:{step.agent_name}:{day_name}",
            f"day {day_name}",
            closed=closed,
        )
        self._cap(
            out,
            step,
            rules,
            marks,
            "total_day_cap",
            self.budgets.total_day_usd,
            self.day_totals[(ALL_AGENTS, day)],
            f"total_day:{day_name}",
            f"day {day_name}",
            all_agents=True,
            closed=closed,
        )

    def _cap(
        self,
        out: list[Finding],
        step: Step,
        rules: SpendRules,
        marks: set[str] | _MarkView,
        rule: str,
        cap: float | None,
        spent: float,
        scope: str,
        period: str,
        *,
        all_agents: bool = False,
        closed: bool = False,
    ) -> None:
        if cap is None:
            return
        levels: list[tuple[float, Severity]] = [
            (f, "warn") for f in self.budgets.warn_fractions if f < 1
        ]
        levels.append((1.0, "pause"))
        if rules.kill_fraction is not None:
            levels.append((rules.kill_fraction, "kill"))
        reached = [(f, sev) for f, sev in levels if spent >= f * cap]
        if not reached:
            return
        fraction, severity = reached[-1]
        mark = f"{scope}:{fraction:g}"
        if mark in marks:
            return
        for f, _ in reached:  # lower fractions crossed by the same step never fire later
            marks.add(f"{scope}:{f:g}")
        who = ALL_AGENTS if all_agents else step.agent_name
        what = {
            "run_cap": "run",
            "session_cap": "session",
            "agent_day_cap": "agent's day",
            "total_day_cap": "all agents' day",
        }[rule]
        summary = (
            f"{who}: {what} spend {_money(spent)} reached {fraction:.0%} of its {_money(cap)} cap"
        )
        evidence: dict[str, object] = {
            "mark": mark,
            "spent_usd": round(spent, 8),
            "cap_usd": cap,
            "fraction": fraction,
            "period": period,
            "step_cost_usd": step.cost_usd,
            "model": step.model,
        }
        if closed:  # see _day_caps: a late span of a day that is over is reported only
            severity = "warn"
            summary += " (late span; that day is over)"
            evidence["closed_day"] = True
        out.append(
            Finding(
                detector="spend",
                rule=rule,
                severity=severity,
                summary=summary,
                agent_name=who,
                service_name="" if all_agents else step.service_name,
                session_id=step.session_id if rule in ("run_cap", "session_cap") else None,
                trace_id=step.trace_id,
                span_ids=(step.span_id,),
                evidence=evidence,
                # Warn fractions are separate alerts; the cap and its kill are one alert
                # that escalates.
                key=f"{scope}:{fraction:g}" if fraction < 1 else f"{scope}:cap",
                value=spent,
            )
        )

    def _remember(self, mark: str) -> None:
        self.marks[mark] = None
        while len(self.marks) > _MAX_MARKS:
            self.marks.popitem(last=False)

    def _trim_days(self, now_ns: int) -> None:
        today = now_ns // _DAY_NS
        if today == self._today:
            return
        self._today = today
        for key in [k for k in self.day_totals if k[1] < today - 1]:
            del self.day_totals[key]

    # -- burn rate ------------------------------------------------------------------
    @staticmethod
    def _burn_lengths(rules: SpendRules) -> list[int]:
        lengths = {int(w.long_s * _NS) for w in rules.burn_windows}
        lengths |= {int(w.short_s * _NS) for w in rules.burn_windows}
        return sorted(lengths)

    def _burn_scope(self, scope: str) -> _Burn:
        burn = self.burn.get(scope)
        if burn is None:
            if len(self.burn) > _MAX_AGENTS:
                self.burn.clear()  # bounded: agent names come from emitters
            burn = self.burn[scope] = _Burn()
        return burn

    def _burn_rate(
        self,
        out: list[Finding],
        step: Step,
        target: tuple[str, float | None, SpendRules],
        at_ns: int,
        now_ns: int,
    ) -> None:
        scope, budget, rules = target
        if not rules.burn_windows or budget is None:
            return  # windows are kept only for scopes that have a daily budget
        burn = self._burn_scope(scope)
        burn.add(self._burn_lengths(rules), at_ns, step.cost_usd or 0.0, now_ns)
        allowed_per_ns = budget / _DAY_NS
        for i, pair in enumerate(rules.burn_windows):
            long_ns, short_ns = int(pair.long_s * _NS), int(pair.short_s * _NS)
            long_rate = burn.windows[long_ns].expire(now_ns) / long_ns / allowed_per_ns
            short_rate = burn.windows[short_ns].expire(now_ns) / short_ns / allowed_per_ns
            hot = long_rate >= pair.rate and short_rate >= pair.rate
            if not hot:
                burn.firing.discard(i)
                continue
            if i in burn.firing:
                continue
            burn.firing.add(i)
            who = "all agents" if scope == ALL_AGENTS else scope
            out.append(
                Finding(
                    detector="spend",
                    rule="burn_rate",
                    severity=pair.severity,
                    summary=(
                        f"{who} burning the daily budget {_money(budget)} at "
                        f"{min(long_rate, short_rate):.1f}× over {_span(pair.long_s)} "
                        f"and {_span(pair.short_s)} (alert at {pair.rate:g}×)"
                    ),
                    agent_name=scope,
                    service_name="" if scope == ALL_AGENTS else step.service_name,
                    trace_id=step.trace_id,
                    span_ids=(step.span_id,),
                    evidence={
                        "long_s": pair.long_s,
                        "short_s": pair.short_s,
                        "rate": pair.rate,
                        "long_burn": round(long_rate, 3),
                        "short_burn": round(short_rate, 3),
                        "daily_budget_usd": budget,
                    },
                    key=f"burn:{scope}:{pair.long_s:g}/{pair.short_s:g}",
                    value=min(long_rate, short_rate),
                )
            )

    # -- z-score --------------------------------------------------------------------
    def _zscore(self, out: list[Finding], step: Step, rules: SpendRules, run: _Run) -> None:
        base = self.baselines.get(step.agent_name)
        if base is None or run.cost <= 0 or not rules.zscore.enabled:
            return
        runs, median, scale, kind = base
        if runs < rules.zscore_min_runs:
            return  # cold start: too little history to call anything unusual
        x = math.log(run.cost)
        if x - median < math.log(rules.zscore_min_ratio):
            return  # a tight history makes small differences "significant"; ignore those
        if kind == "mad":
            z = 0.6745 * (x - median) / scale
        elif kind == "meanad":
            z = (x - median) / (1.253314 * scale)
        else:  # every finished run cost the same: anomalous above median × k
            first = rules.zscore.warn or 3.5
            z = first * (x - median) / math.log(rules.zscore_zero_mad_factor)
        level = ladder_level(rules.zscore, z)
        if level is None:
            return
        rank = severity_rank(level)
        mark = f"z:{rank}"
        if mark in run.marks:
            return
        run.marks.update(f"z:{r}" for r in range(rank + 1))
        out.append(
            Finding(
                detector="spend",
                rule="cost_zscore",
                severity=level,
                summary=(
                    f"{step.agent_name}: run cost {_money(run.cost)} is far above this agent's "
                    f"usual {_money(math.exp(median))} per run (robust z {z:.1f})"
                ),
                agent_name=step.agent_name,
                service_name=step.service_name,
                session_id=step.session_id,
                trace_id=step.trace_id,
                span_ids=(step.span_id,),
                evidence={
                    "run_cost_usd": round(run.cost, 8),
                    "median_run_cost_usd": math.exp(median),
                    "z": round(z, 3),
                    "history_runs": runs,
                    "method": kind,
                },
                key=f"z:{step.trace_id}",
                value=z,
            )
        )

    async def run(self, history: History, now_ns: int) -> Sequence[Finding]:
        """Recompute each agent's distribution of log cost per finished run."""
        rules = self.rules
        since_us = (now_ns - rules.zscore_history_days * _DAY_NS) // 1000
        finished_us = (now_ns - 600 * _NS) // 1000  # no step for 10 minutes: finished
        rows = await history.query(
            """
            SELECT agent_name, list(c) FROM (
                SELECT agent_name, trace_id, sum(cost_usd) AS c FROM steps
                WHERE kind = 'llm' AND cost_usd IS NOT NULL
                  AND end_time >= make_timestamp(?::BIGINT)
                GROUP BY agent_name, trace_id
                HAVING max(end_time) < make_timestamp(?::BIGINT) AND sum(cost_usd) > 0
            ) GROUP BY agent_name
            """,
            [since_us, finished_us],
        )
        baselines: dict[str, tuple[int, float, float, str]] = {}
        for agent, costs in rows:
            logs = [math.log(c) for c in costs if c and c > 0]
            if len(logs) < 2:
                continue
            median = statistics.median(logs)
            mad = statistics.median(abs(v - median) for v in logs)
            mean_ad = statistics.fmean(abs(v - median) for v in logs)
            if mad > 1e-12:
                baselines[agent] = (len(logs), median, mad, "mad")
            elif mean_ad > 1e-12:
                baselines[agent] = (len(logs), median, mean_ad, "meanad")
            else:
                baselines[agent] = (len(logs), median, 0.0, "constant")
        self.baselines = baselines
        return ()

    # -- context bloat --------------------------------------------------------------
    def _bloat(self, state: SpendState, step: Step, rules: SpendRules, out: list[Finding]) -> None:
        tokens = step.input_tokens
        if tokens is None:
            return
        growing = state.last_input is not None and tokens > state.last_input
        if growing and not state.novel:
            if state.bloat_streak == 0:
                state.bloat_base = state.last_input or tokens
            state.bloat_streak += 1
            state.bloat_spans.append(step.span_id)
        else:
            state.bloat_streak = 0
            state.bloat_spans.clear()
            state.bloat_level = -1
        state.novel = False
        state.last_input = tokens
        if state.bloat_streak == 0 or tokens < state.bloat_base * rules.context_bloat_min_growth:
            return
        level = ladder_level(rules.context_bloat, state.bloat_streak)
        if level is None or severity_rank(level) <= state.bloat_level:
            return
        state.bloat_level = severity_rank(level)
        out.append(
            Finding(
                detector="spend",
                rule="context_bloat",
                severity=level,
                summary=(
                    f"{step.agent_name}: input grew {state.bloat_base:,} → {tokens:,} tokens over "
                    f"{state.bloat_streak} calls with no new tool result"
                ),
                agent_name=step.agent_name,
                service_name=step.service_name,
                session_id=step.session_id,
                trace_id=step.trace_id,
                span_ids=tuple(state.bloat_spans),
                evidence={
                    "calls": state.bloat_streak,
                    "from_tokens": state.bloat_base,
                    "to_tokens": tokens,
                },
                key=f"bloat:{step.session_id}",
                value=float(state.bloat_streak),
            )
        )

    # -- unpriced -------------------------------------------------------------------
    def _unpriced(self, step: Step, out: list[Finding]) -> None:
        seen = (step.agent_name, step.model or "")
        if seen in self.unpriced_seen:
            return
        self.unpriced_seen[seen] = None
        while len(self.unpriced_seen) > _MAX_AGENTS:
            self.unpriced_seen.popitem(last=False)
        what = f"model {step.model!r}" if step.model else "a call without a model name"
        out.append(
            Finding(
                detector="spend",
                rule="unpriced",
                severity="warn",
                summary=(
                    f"{step.agent_name}: {what} has no known price; its spend is not counted "
                    "(add it to prices.overrides_file)"
                ),
                agent_name=step.agent_name,
                service_name=step.service_name,
                session_id=step.session_id,
                trace_id=step.trace_id,
                span_ids=(step.span_id,),
                evidence={"model": step.model or "", "provider": step.provider},
                key=f"unpriced:{step.model or ''}",
            )
        )


class _MarkView:
    """The detector's day-period marks seen as a set (shared by every session)."""

    def __init__(self, det: SpendDetector) -> None:
        self._det = det

    def __contains__(self, mark: object) -> bool:
        return mark in self._det.marks

    def add(self, mark: str) -> None:
        self._det._remember(mark)


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"

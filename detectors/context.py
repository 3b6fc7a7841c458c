"""The unusual-context detector: a sensible action in an abnormal situation (reference §B.4).

Signals, cheapest first, each a stable rule id (see `RULES`):

* per-field profiles learned per agent, tool and JSON path of arguments and results:
  `out_of_range`, `sign_flip` (a never-negative field goes negative: a negative
  balance), `zero_flip`, `unseen_category`, `unseen_shape` (a name with a hyphen),
  `type_change`;
* `empty_then_destructive`: a write/delete/send/publish/pay right after a look-up whose
  result was empty or an error, unless normal runs show that pair after an empty
  result; a send only to recipients already in the run (the "not found" reply to the
  person asking) is said at info;
* `fan_out_recipients`: one send-type call to far more recipients than this tool ever
  had (one reply to 200 customers); `fan_out_run`: far more side-effecting calls in one
  run than any run of this agent had;
* `ungrounded_figure`: a side-effecting call carrying an amount or price that appears in
  no tool result and no user message of the run (the wrong-pricing email);
* declarative rules (`detector="rule"`, the rule's own id) from
  `detectors/rules/context_rules.yaml` and the files in `detectors.context.rules_files`.

Profiles are learned from the `steps` history at start (`restore`) and from every run
that ends (idle for `detectors.drift.run_idle_s`) without a warn-or-worse finding, so an
anomaly never teaches the profile that it is normal. The same checks run before an
action happens through `ContextDetector.check_action` / `evaluate_proposed_action`,
which the guard's `POST /api/v1/check` can call.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from detectors.context_profile import (
    Anomaly,
    FieldBook,
    PendingRuns,
    ProfileThresholds,
    RecentSessions,
    Reservoir,
    first_raised,
    leaves,
    normal_runs_sql,
)
from detectors.context_rules import ContextRule, RuleIndex, RuleSubject, load_rules
from detectors.text import (
    DESTRUCTIVE_CLASSES,
    SIDE_EFFECT_CLASSES,
    ActionClass,
    classify_action,
    parse_json_object,
)
from watchdog.detection import DetectorSettings, History, RuleInfo, StepContext, parsed_json
from watchdog.drift_context import ContextRules
from watchdog.model import Finding, Severity, Step

__all__ = [
    "RULES",
    "ContextDetector",
    "ContextProfiles",
    "ContextState",
    "evaluate_proposed_action",
    "is_empty_result",
    "money_figures",
    "numbers_in",
    "recipient_count",
    "recipients_of",
]

RULES: Final[tuple[RuleInfo, ...]] = (
    RuleInfo(
        "context",
        "out_of_range",
        "A number outside Q(0.001) − 0.5·spread … Q(0.999) + 0.5·spread of its field "
        "(after `min_values_range` values).",
        "detectors.context.range_severity",
    ),
    RuleInfo(
        "context",
        "sign_flip",
        "A field never negative in `min_values_sign` values is negative (a negative balance).",
        "detectors.context.sign_severity",
    ),
    RuleInfo(
        "context",
        "zero_flip",
        "A field never zero in `min_values_sign` values is zero.",
        "detectors.context.zero_severity",
    ),
    RuleInfo(
        "context",
        "unseen_category",
        "A string value never seen in a field with at most `max_categories` values whose "
        "new-value rate is below `max_new_rate`.",
        "detectors.context.category_severity",
    ),
    RuleInfo(
        "context",
        "unseen_shape",
        "A string whose shape (letters/digits/punctuation) the field never had (a hyphen in a name).",
        "detectors.context.shape_severity",
    ),
    RuleInfo(
        "context",
        "type_change",
        "A field holds a JSON type it never held in `min_values_sign` values.",
        "detectors.context.type_severity",
    ),
    RuleInfo(
        "context",
        "empty_then_destructive",
        "A write/delete/send/publish/pay within `empty_lookback_steps` calls of a look-up "
        "that returned nothing or failed (info for a send only to recipients already in the run).",
        "detectors.context.empty_then_destructive_severity",
    ),
    RuleInfo(
        "context",
        "fan_out_recipients",
        "A call addressed to more than max(`fan_out_min_recipients`, largest seen × "
        "`fan_out_factor`) recipients.",
        "detectors.context.fan_out_severity",
    ),
    RuleInfo(
        "context",
        "fan_out_run",
        "A run with more than max(`fan_out_min_run_calls`, largest seen × `fan_out_factor`) "
        "side-effecting calls.",
        "detectors.context.fan_out_severity",
    ),
    RuleInfo(
        "context",
        "ungrounded_figure",
        "A side-effecting call carries an amount or price found in no tool result or user "
        "message of the run.",
        "detectors.context.ungrounded_severity",
    ),
)

_HIGH_RISK: Final = frozenset({"pay", "delete", "send"})
# Finished runs learned per observed step at most (see detectors/drift.py).
LEARN_PER_STEP: Final = 4
_MAX_GROUNDED: Final = 5000
_MAX_DERIVE: Final = 60
_MAX_TEXTS: Final = 64

# --- recipients -------------------------------------------------------------------------------

# Rules hold their key lists for the daemon's life: each is lowered once, not per call.
_LOWERED: dict[int, tuple[Iterable[str], frozenset[str]]] = {}


def _lowered(keys: Iterable[str]) -> frozenset[str]:
    hit = _LOWERED.get(id(keys))
    if hit is not None and hit[0] is keys:
        return hit[1]
    lowered = frozenset(k.lower() for k in keys)
    if isinstance(keys, list | tuple | frozenset):  # a generator is used up: do not keep it
        if len(_LOWERED) >= 1024:
            _LOWERED.clear()
        _LOWERED[id(keys)] = (keys, lowered)
    return lowered


_PLAIN: Final = (str, int, float, list, type(None))


def _is_mapping(value: Any) -> bool:
    """isinstance(value, Mapping), decided without the ABC check for JSON's plain types."""
    return isinstance(value, dict) or (not isinstance(value, _PLAIN) and isinstance(value, Mapping))


_ADDRESS_SPLIT: Final = re.compile(r"[,;]")
_EMAIL: Final = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def _recipient_fields(args: Mapping[Any, Any], keys: Iterable[str]) -> list[Any]:
    """The values under recipient keys, at the top level and one nested level."""
    wanted = _lowered(keys)
    out = []
    nested = [v for v in args.values() if _is_mapping(v)]
    for scope in (args, *nested):
        for key, value in scope.items():
            if (key.lower() if key.__class__ is str else str(key).lower()) in wanted:
                out.append(value)
    return out


def recipient_count(args: Any, keys: Iterable[str]) -> int | None:
    """Recipients a call addresses: list lengths / comma-separated items under recipient keys.

    Looks at the top level and one nested level (`{"message": {"to": [...]}}`). None when
    the arguments name no recipient at all.
    """
    if isinstance(args, str):
        # Arguments cut at 8 KiB by the receiver no longer parse: count the addresses
        # still visible, a lower bound that is plenty for a send to hundreds.
        n = len(_EMAIL.findall(args[:65536]))
        return n or None
    if not isinstance(args, Mapping):
        return None
    total: int | None = None
    for value in _recipient_fields(args, keys):
        if isinstance(value, list):
            n = len(value)
        elif isinstance(value, str):
            n = len([p for p in _ADDRESS_SPLIT.split(value) if p.strip()])
        elif isinstance(value, Mapping):
            n = len(value)
        else:
            continue
        total = (total or 0) + n
    return total


def recipients_of(args: Any, keys: Iterable[str]) -> list[str]:
    """The recipients a call addresses, as strings (the items `recipient_count` counts)."""
    if isinstance(args, str):
        return _EMAIL.findall(args[:65536])
    if not isinstance(args, Mapping):
        return []
    out: list[str] = []
    for value in _recipient_fields(args, keys):
        items = value if isinstance(value, list) else list(value) if _is_mapping(value) else [value]
        for item in items:
            if isinstance(item, str):
                out.extend(p.strip() for p in _ADDRESS_SPLIT.split(item) if p.strip())
            elif isinstance(item, int | float) and not isinstance(item, bool):
                out.append(f"{item:g}" if isinstance(item, float) else str(item))
            else:
                out.append(str(item))
    return out


# --- figures ----------------------------------------------------------------------------------

# A number not glued to a word or a dot: `-?` then `d{1,3}(,ddd)+` or `d+`, then `(.d+)?`.
# Written to start on its first character (a `-` or a digit, the look-behind checked
# after it), so the regex engine skips everything else without trying the look-behind
# at every position: 3x faster than the plain form, same matches.
_NUMBER: Final = re.compile(
    r"(?:-(?<![\w.]-)(?:\d{1,3}(?:,\d{3})+|\d+)|\d(?<![\w.]\d)(?:\d{0,2}(?:,\d{3})+|\d*))"
    r"(?:\.\d+)?"
)
_CURRENCY: Final = re.compile(
    r"[$€£]\s?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"|(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)\s?(?:USD|EUR|GBP|dollars?|euros?)\b"
    r"|(\d+(?:\.\d+)?)\s?%",
    re.I,
)


def _to_float(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numbers_in(text: str | None) -> list[float]:
    """Every number written in `text` (`1,299.00` → 1299.0), at most a few thousand."""
    if not text:
        return []
    text = text[:200_000]
    found = _NUMBER.findall(text)
    # Every match is a valid literal once its thousands separators are gone; only a
    # number of 300+ digits (inf) is dropped.
    values = [float(n) for n in found] if "," not in text else [_comma_float(n) for n in found]
    if len(found) <= _MAX_GROUNDED and (len(text) < 300 or max(map(len, found), default=0) < 300):
        return values
    return [v for v in values if math.isfinite(v)][:_MAX_GROUNDED]


def _comma_float(text: str) -> float:
    return float(text.replace(",", "")) if "," in text else float(text)


@dataclass(frozen=True, slots=True)
class Figure:
    """An amount in a call's arguments: where it is, its value, and whether it is a percentage."""

    path: str
    value: float
    percent: bool = False


def money_figures(args: Any, money_keys: Iterable[str]) -> list[Figure]:
    """Amounts a call carries: numbers under money keys, currency figures and percentages in text."""
    keys = _lowered(money_keys)
    out: list[Figure] = []
    stack: list[tuple[str, Any, str]] = [("args", args, "")]
    seen = 0
    while stack and seen < 500:
        path, value, key = stack.pop()
        seen += 1
        if isinstance(value, Mapping):
            for k, v in value.items():
                stack.append((f"{path}.{k}", v, str(k).lower()))
        elif isinstance(value, list):
            for v in value[:100]:
                stack.append((f"{path}[*]", v, key))
        elif isinstance(value, bool) or value is None:
            continue
        elif key in keys or key.endswith(("_price", "_amount", "_total", "_usd", "_cost")):
            number = (
                float(value)
                if isinstance(value, int | float)
                else _to_float(str(value).lstrip("$€£"))
            )
            if number is not None and number != 0:
                out.append(Figure(path, number))
        elif isinstance(value, str):
            for m in _CURRENCY.finditer(value[:20_000]):
                text = m.group(1) or m.group(2) or m.group(3)
                number = _to_float(text)
                if number is not None and number != 0:
                    out.append(Figure(path, number, percent=m.group(3) is not None))
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.005, 1e-6 * abs(b))


def is_grounded(fig: Figure, grounded: Sequence[float]) -> bool:
    """True when `fig` equals a grounded number, or a sum, quantity multiple or percentage of them.

    Agents legitimately add line items, multiply a unit price by a quantity and apply a
    stated discount; anything else a model writes into an outgoing amount is unexplained.
    """
    targets = [fig.value, fig.value / 100] if fig.percent else [fig.value]
    for g in grounded:
        for t in targets:
            if _close(t, g):
                return True
    recent = list(dict.fromkeys(grounded[-_MAX_DERIVE:]))
    v = fig.value
    for i, a in enumerate(recent):
        for b in recent[i:]:
            if _close(v, a + b):
                return True
            for base, qty in ((a, b), (b, a)):
                if qty.is_integer() and 2 <= qty <= 1000 and _close(v, base * qty):
                    return True
                if 0 < qty < 100 and (
                    _close(v, base * (1 - qty / 100)) or _close(v, base * qty / 100)
                ):
                    return True
    return False


# --- empty results ----------------------------------------------------------------------------

_EMPTY_TEXT: Final = re.compile(
    r"^\s*(?:|null|none|\[\s*\]|\{\s*\}|\"\"|no (?:results?|rows?|records?|matches?)(?: found)?\.?"
    r"|not found\.?|0 (?:results?|rows?|records?))\s*$",
    re.I,
)
_LIST_KEYS: Final = (
    "items",
    "results",
    "rows",
    "data",
    "records",
    "matches",
    "hits",
    "customers",
    "orders",
)
_COUNT_KEYS: Final = ("count", "total", "total_count", "num_results", "row_count", "rows_found")
_LIST_KEY_SET: Final = frozenset(_LIST_KEYS)
_COUNT_KEY_SET: Final = frozenset(_COUNT_KEYS)


def is_empty_result(text: str | None) -> bool:
    """True when a tool result says it found nothing (`[]`, `{"rows": []}`, `count: 0`, "no results")."""
    if text is None:
        return False
    if _EMPTY_TEXT.match(text[:200]):
        return True
    doc = parse_json_object(text)
    if doc is None:
        return False
    # One pass over the document (this runs on every tool result), for three tests:
    # the usual list keys are all empty lists; a small document of empty lists and
    # numbers; count keys all 0 and no list with items.
    named = counted = has_list = full = False
    named_empty = counts_zero = numeric = True
    for k, v in doc.items():
        is_list = isinstance(v, list)
        if k in _LIST_KEY_SET:
            named = True
            named_empty = named_empty and is_list and not v
        if k in _COUNT_KEY_SET:
            counted = True
            counts_zero = counts_zero and v == 0 and not isinstance(v, bool)
        if is_list:
            has_list = True
            full = full or bool(v)
        elif numeric and not (
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
        ):
            numeric = False
    if named and named_empty:
        return True
    if has_list and not full and len(doc) <= 3 and numeric:
        # {"contacts": []}, {"orders": [], "count": 0, "page": 1}: a list of nothing.
        return True
    return counted and counts_zero and not full


# --- learned profiles -------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolStats:
    calls: int = 0
    empties: int = 0
    recipients: Reservoir = field(default_factory=lambda: Reservoir(500))


@dataclass(slots=True)
class _RunObservation:
    """One tool call of a finished normal run, ready to be learned."""

    tool: str
    args: Any
    result: Any
    empty: bool | None  # None: the call failed
    recipients: int | None
    action: str = "read"
    # leaves(args), leaves(result) when they were walked already to check the call
    args_leaves: list[tuple[str, Any]] | None = None
    result_leaves: list[tuple[str, Any]] | None = None


class ContextProfiles:
    """Everything the context detector learned about each agent (bounded)."""

    def __init__(self, thresholds: ProfileThresholds, max_agents: int = 2000) -> None:
        self.fields = FieldBook(thresholds)
        self._tools: dict[tuple[str, str], _ToolStats] = {}
        self._run_calls: OrderedDict[str, Reservoir] = OrderedDict()
        self._after_empty: dict[tuple[str, str, str], int] = {}
        self._max_agents = max_agents
        self.runs_learned = 0

    def after_empty(self, agent: str, lookup: str, tool: str) -> int:
        """Normal runs in which `tool` followed an empty or failed `lookup`."""
        return self._after_empty.get((agent, lookup, tool), 0)

    def tool(self, agent: str, tool: str) -> _ToolStats | None:
        """Learned call statistics of one tool of one agent."""
        return self._tools.get((agent, tool))

    def run_calls(self, agent: str) -> Reservoir | None:
        """Side-effecting calls per run of an agent's normal runs."""
        return self._run_calls.get(agent)

    def learn_run(self, agent: str, calls: Sequence[_RunObservation], side_effects: int) -> None:
        """Fold one normal run into the profiles."""
        self.runs_learned += 1
        for c in calls:
            stats = self._tools.get((agent, c.tool))
            if stats is None:
                if len(self._tools) >= 100_000:
                    continue
                stats = self._tools[(agent, c.tool)] = _ToolStats()
            stats.calls += 1
            stats.empties += bool(c.empty)
            if c.recipients is not None:
                stats.recipients.add(c.recipients)
            if c.args is not None:
                self.fields.learn(agent, c.tool, "args", c.args, c.args_leaves)
            if c.result is not None:
                self.fields.learn(agent, c.tool, "result", c.result, c.result_leaves)
        for pair in _after_empty_pairs(calls, _LEARN_LOOKBACK):
            if len(self._after_empty) < 100_000 or (agent, *pair) in self._after_empty:
                key = (agent, *pair)
                self._after_empty[key] = self._after_empty.get(key, 0) + 1
        reservoir = self._run_calls.get(agent)
        if reservoir is None:
            reservoir = self._run_calls[agent] = Reservoir(1000)
            if len(self._run_calls) > self._max_agents:
                self._run_calls.popitem(last=False)
        reservoir.add(side_effects)


_LEARN_LOOKBACK: Final = 5


def _after_empty_pairs(calls: Sequence[_RunObservation], lookback: int) -> set[tuple[str, str]]:
    """(look-up tool, destructive tool) pairs where the tool followed an empty/failed look-up."""
    pairs: set[tuple[str, str]] = set()
    lookup: tuple[str, bool] | None = None
    since = 0
    for c in calls:
        since += 1
        if (
            c.action in DESTRUCTIVE_CLASSES
            and lookup is not None
            and lookup[1]
            and since <= lookback
        ):
            pairs.add((lookup[0], c.tool))
        if c.action == "read":
            lookup, since = (c.tool, c.empty is not False), 0
    return pairs


# --- per-session state ------------------------------------------------------------------------


@dataclass(slots=True)
class _Lookup:
    tool: str
    span_id: str
    empty: bool
    error: bool
    calls_since: int = 0


@dataclass(slots=True)
class ContextState:
    """What the context detector keeps per session: the current run's facts (bounded)."""

    trace_id: str = ""
    grounded: list[float] = field(default_factory=list)
    has_evidence: bool = False
    last_lookup: _Lookup | None = None
    side_effects: int = 0
    fired: set[str] = field(default_factory=set)
    # The last user message or task grounded and its numbers: every LLM step of a turn
    # carries the same message, so its numbers are read once.
    message: str | None = None
    message_numbers: list[float] = field(default_factory=list)
    # The run's tool arguments, results and messages (references, bounded): who the run
    # is about, looked up only when a send follows an empty look-up.
    texts: list[str] = field(default_factory=list)

    def start_run(self, trace_id: str) -> None:
        """Forget the previous run's facts: figures are grounded per run."""
        self.trace_id = trace_id
        self.grounded = []
        self.texts = []
        self.has_evidence = False
        self.last_lookup = None
        self.side_effects = 0
        self.fired = set()

    def remember(self, text: str | None) -> None:
        """Keep a text of the run for `knows` (the first `_MAX_TEXTS` of a run)."""
        if text and len(self.texts) < _MAX_TEXTS:
            self.texts.append(text)

    def knows(self, value: str) -> bool:
        """True when `value` (3+ characters) is in a text of the run or the current message."""
        if len(value) < 3:
            return False
        if self.message is not None and value in self.message:
            return True
        return any(value in t for t in self.texts)

    def ground(self, text: str | None) -> None:
        """Remember the numbers of a tool result or user message as grounded."""
        if not text:
            return
        self.remember(text)
        self.has_evidence = True
        room = _MAX_GROUNDED - len(self.grounded)
        if room > 0:
            self.grounded.extend(numbers_in(text)[:room])

    def ground_message(self, text: str | None) -> None:
        """`ground` for a user message or task, which repeats on every step of its turn."""
        if not text:
            return
        if text is not self.message and text != self.message:
            self.message, self.message_numbers = text, numbers_in(text)
        self.has_evidence = True
        room = _MAX_GROUNDED - len(self.grounded)
        if room > 0:
            self.grounded.extend(self.message_numbers[:room])


def _decode(text: str | None) -> Any:
    # Shared with the other detectors: a step's arguments and result are parsed once.
    return parsed_json(text)


def _level(s: str) -> Severity:
    return s  # type: ignore[return-value]


@dataclass(slots=True)
class _Proposed:
    """A tool call as the checks see it: a committed tool step or an action about to happen."""

    agent: str
    session: str | None
    trace: str | None
    span_id: str
    tool: str
    args: Any
    action: ActionClass
    service: str = ""
    cost_usd: float | None = None


def _finding(
    p: _Proposed,
    rule: str,
    severity: str,
    summary: str,
    evidence: Mapping[str, Any],
    key: str,
    *,
    detector: str = "context",
    value: float | None = None,
) -> Finding:
    return Finding(
        detector=detector,
        rule=rule,
        severity=_level(severity),
        summary=summary,
        agent_name=p.agent,
        service_name=p.service,
        session_id=p.session,
        trace_id=p.trace,
        span_ids=(p.span_id,) if p.span_id else (),
        evidence={"tool": p.tool, "action": p.action, **evidence},
        key=key,
        value=value,
    )


def _action_checks(
    p: _Proposed,
    state: ContextState,
    profiles: ContextProfiles,
    rules: ContextRules,
    declared: RuleIndex,
    recipients: int | None,
    *,
    result: Any = None,
    kind: str = "tool",
    is_error: bool = False,
    args_leaves: list[tuple[str, Any]] | None = None,
) -> list[Finding]:
    """Checks that judge an action by its arguments and the run so far (shared with the guard).

    `recipients` is `recipient_count(p.args, rules.recipient_keys)`, which the caller
    needs too, and `args_leaves` is `leaves(p.args)` when the caller has it.
    """
    out: list[Finding] = []
    # Declarative rules first: they are what the team wrote down about its own agents.
    if declared.scoped(p.agent, kind, p.tool, p.action):
        subject = RuleSubject(
            agent=p.agent,
            kind=kind,
            tool=p.tool,
            action=p.action,
            args=p.args,
            result=result,
            cost_usd=p.cost_usd,
            is_error=is_error,
            recipient_count=recipients,
        )
        hits = declared.evaluate(subject)
    else:
        hits = []
    for hit in hits:
        out.append(
            _finding(
                p,
                hit.rule.id,
                hit.rule.severity,
                f"rule {hit.rule.id}: {hit.rule.description or 'matched'} ({p.tool})",
                {"description": hit.rule.description, "values": hit.values},
                p.tool,
                detector="rule",
            )
        )
    if kind != "tool":
        return out
    stats = profiles.tool(p.agent, p.tool)
    if recipients is not None and recipients > rules.fan_out_min_recipients and stats is not None:
        seen = stats.recipients
        if len(seen) >= rules.fan_out_min_history and recipients > seen.max * rules.fan_out_factor:
            out.append(
                _finding(
                    p,
                    "fan_out_recipients",
                    rules.fan_out_severity,
                    f"{p.tool} addressed to {recipients} recipients; this agent's largest "
                    f"was {seen.max:g} in {len(seen)} calls",
                    {"recipients": recipients, "max_seen": seen.max, "calls_seen": len(seen)},
                    p.tool,
                    value=recipients,
                )
            )
    if p.action in SIDE_EFFECT_CLASSES and rules.ungrounded_figures and state.has_evidence:
        figures = money_figures(p.args, rules.money_keys)
        loose = [f for f in figures if not is_grounded(f, state.grounded)]
        if loose:
            shown = ", ".join(
                f"{f.value:g}{'%' if f.percent else ''} at {f.path}" for f in loose[:5]
            )
            out.append(
                _finding(
                    p,
                    "ungrounded_figure",
                    rules.ungrounded_severity,
                    f"{p.tool} carries {shown}, found in no tool result or user message of this run",
                    {
                        "figures": [
                            {"path": f.path, "value": f.value, "percent": f.percent}
                            for f in loose[:20]
                        ],
                        "grounded_sample": state.grounded[-20:],
                    },
                    f"{p.tool}:" + ",".join(f"{f.value:g}" for f in loose[:5]),
                    value=loose[0].value,
                )
            )
    lookup = state.last_lookup
    if (
        rules.empty_then_destructive
        and p.action in DESTRUCTIVE_CLASSES
        and lookup is not None
        and (lookup.empty or lookup.error)
        and lookup.calls_since < rules.empty_lookback_steps
    ):
        lstats = profiles.tool(p.agent, lookup.tool)
        routine = profiles.after_empty(p.agent, lookup.tool, p.tool)
        cold = lstats is None or lstats.calls < rules.fan_out_min_history
        if routine < rules.empty_routine_runs:
            what = "failed" if lookup.error else "returned nothing"
            # Telling the person the run is about that nothing was found is the expected
            # answer to an empty look-up, not acting on missing facts: said at info, so
            # the run is learned and the pair becomes routine.
            reply = p.action == "send" and _all_known(state, p.args, rules)
            out.append(
                _finding(
                    p,
                    "empty_then_destructive",
                    # Without history, say it but do not stop the run from being learned.
                    "info" if cold or reply else rules.empty_then_destructive_severity,
                    f"{p.tool} ({p.action}) right after {lookup.tool} {what}"
                    + (" (to recipients already in the run)" if reply else ""),
                    {
                        "lookup_tool": lookup.tool,
                        "lookup_span_id": lookup.span_id,
                        "lookup_error": lookup.error,
                        "lookup_calls_seen": lstats.calls if lstats else 0,
                        "pair_seen_in_normal_runs": routine,
                        "cold_start": cold,
                        "recipients_in_run": reply,
                    },
                    f"{lookup.tool}>{p.tool}",
                )
            )
    if p.args is not None and isinstance(p.args, dict | list):
        out.extend(
            _anomaly_findings(
                p, profiles.fields.check(p.agent, p.tool, "args", p.args, args_leaves), rules
            )
        )
    return out


def _all_known(state: ContextState, args: Any, rules: ContextRules) -> bool:
    """True when a call names recipients and every one already appeared in the run."""
    recipients = recipients_of(args, rules.recipient_keys)
    # Past a few dozen it is no reply, whoever they are (fan-out judges the count).
    return 0 < len(recipients) <= 50 and all(state.knows(r) for r in recipients)


_ANOMALY_RULES: Final[dict[str, str]] = {
    "range": "out_of_range",
    "sign": "sign_flip",
    "zero": "zero_flip",
    "category": "unseen_category",
    "shape": "unseen_shape",
    "type": "type_change",
}


def _anomaly_findings(
    p: _Proposed, anomalies: Sequence[Anomaly], rules: ContextRules
) -> list[Finding]:
    out = []
    for a in anomalies:
        severity = {
            "range": rules.range_severity,
            "sign": rules.sign_severity,
            "zero": rules.zero_severity,
            "category": rules.category_severity,
            "shape": rules.shape_severity,
            "type": rules.type_severity,
        }[a.kind]
        if a.kind == "category" and p.action in _HIGH_RISK and a.path.startswith("args"):
            severity = rules.category_high_risk_severity
        out.append(
            _finding(
                p,
                _ANOMALY_RULES[a.kind],
                severity,
                f"{p.tool}: {a.detail}",
                {"path": a.path, "value": a.value, "profile": a.evidence},
                f"{p.tool}:{a.path}",
                value=float(a.value) if isinstance(a.value, int | float) else None,
            )
        )
    return out


def evaluate_proposed_action(
    agent: str,
    session: str | None,
    tool: str,
    args: Any,
    history: Sequence[Step],
    *,
    rules: ContextRules,
    profiles: ContextProfiles,
    declared: Sequence[ContextRule] = (),
) -> list[Finding]:
    """Judge a tool call before it happens, from the steps of its run so far; pure, no I/O.

    Runs the declarative rules, fan-out, ungrounded-figure, empty-then-destructive and
    argument-profile checks exactly as they run on a committed step, so the guard's
    pre-action check can hold a wrong-pricing email or a send to 200 customers before
    it goes out. `history` is the run's (or session's) steps, oldest first.
    """
    state = ContextState()
    for step in history:
        _track(state, step, rules)
    if isinstance(args, str):
        args = _decode(args) if args.strip()[:1] in "{[" else args
    action = classify_action(tool, args if isinstance(args, Mapping) else None, rules.tool_classes)
    last = history[-1] if history else None
    p = _Proposed(
        agent=agent,
        session=session,
        trace=last.trace_id if last else None,
        span_id="",
        tool=tool,
        args=args,
        action=action,
        service=last.service_name if last else "",
    )
    recipients = recipient_count(p.args, rules.recipient_keys)
    return _action_checks(p, state, profiles, rules, RuleIndex(declared), recipients)


def _track(state: ContextState, step: Step, rules: ContextRules) -> None:
    """Update a run's facts with a step (after it was judged)."""
    if step.trace_id != state.trace_id:
        state.start_run(step.trace_id)
    state.ground(step.task)
    state.ground(step.user_message)
    if step.kind == "tool" and step.tool_name:
        args_doc = parse_json_object(step.tool_args)
        _track_tool(state, step, classify_action(step.tool_name, args_doc, rules.tool_classes))


def _track_tool(
    state: ContextState, step: Step, action: ActionClass, empty: bool | None = None
) -> None:
    """Fold a judged tool step into its run: grounded numbers, last look-up, side effects.

    `empty` is `is_empty_result(step.tool_result)` when the caller has it already.
    """
    state.ground(step.tool_result)
    state.remember(step.tool_args)
    if state.last_lookup is not None:
        state.last_lookup.calls_since += 1
    if action == "read":
        if empty is None:
            empty = is_empty_result(step.tool_result)
        state.last_lookup = _Lookup(step.tool_name or "", step.span_id, empty, step.is_error)
    if action in SIDE_EFFECT_CLASSES:
        state.side_effects += 1


class ContextDetector:
    """Streaming detector of unusual context; learns per-agent profiles from normal runs."""

    name = "context"

    def __init__(self, settings: DetectorSettings) -> None:
        base = settings.context
        self._settings = settings
        self._history_runs = settings.drift.history_runs
        self._thresholds = _thresholds(base)
        self.profiles = ContextProfiles(self._thresholds)
        self.declared = load_rules(
            base.rules_files, shipped=base.shipped_rules, disabled=base.disabled_rules
        )
        self._index = RuleIndex(self.declared)
        self._pending: PendingRuns[_RunObservation] = PendingRuns()
        self._sessions: RecentSessions[ContextState] = RecentSessions(settings.max_sessions)

    def new_state(self) -> ContextState:
        """Fresh per-session state."""
        return ContextState()

    def observe(self, state: ContextState, step: Step, ctx: StepContext) -> Sequence[Finding]:
        """Judge `step` against the agent's profiles and rules, then track it."""
        rules = ctx.rules.context
        if not ctx.replay:
            self._sessions.remember(step.session_id, state)
            for _, agent, calls, extra in self._pending.sweep(
                ctx.now_ns, int(ctx.rules.drift.run_idle_s * 1e9), LEARN_PER_STEP
            ):
                self.profiles.learn_run(agent, calls, extra)
        if not rules.enabled:
            _track(state, step, rules)
            return ()
        if step.trace_id != state.trace_id:
            state.start_run(step.trace_id)
        # Ground the step's own user message first: the person may state the amount.
        if step.task:
            state.ground_message(step.task)
        if step.user_message:
            state.ground_message(step.user_message)
        index = self._rule_index()
        tool = step.tool_name or ""
        if step.kind != "tool":
            # Only declarative rules look at other steps (none of the shipped ones do).
            action = classify_action(tool, None, rules.tool_classes) if tool else "read"
            if not index.scoped(step.agent_name, step.kind, tool, action):
                return ()
            p = self._proposed(step, tool, step.tool_args, action)
            recipients = recipient_count(p.args, rules.recipient_keys)
            out = _action_checks(
                p, state, self.profiles, rules, index, recipients,
                kind=step.kind, is_error=step.is_error,
            )  # fmt: skip
            return self._fresh(state, step, out, ctx)
        args_doc = _decode(step.tool_args)
        result_doc = None if step.is_error else _decode(step.tool_result)
        # json gives dicts for objects: the cheap test is the Mapping test here.
        mapping = args_doc if isinstance(args_doc, dict) else None
        action = classify_action(tool, mapping, rules.tool_classes) if tool else "read"
        p = self._proposed(step, tool, args_doc if args_doc is not None else step.tool_args, action)
        recipients = recipient_count(p.args, rules.recipient_keys)
        learn = not ctx.replay and bool(tool)
        # Walked once: checked now, learned from when the run ends.
        args_leaves = leaves(args_doc) if learn and args_doc is not None else None
        result_leaves = leaves(result_doc) if learn and result_doc is not None else None
        out = _action_checks(
            p, state, self.profiles, rules, index, recipients,
            result=result_doc, kind="tool", is_error=step.is_error, args_leaves=args_leaves,
        )  # fmt: skip
        if tool:
            if result_doc is not None:
                found = self.profiles.fields.check(
                    step.agent_name, tool, "result", result_doc, result_leaves
                )
                out.extend(_anomaly_findings(p, found, rules))
            empty = (
                is_empty_result(step.tool_result)
                if action == "read" or (learn and not step.is_error)
                else None
            )
            _track_tool(state, step, action, empty)
            out.extend(self._run_fan_out(p, state, rules))
            if learn:
                self._pending.add(
                    step.trace_id,
                    step.agent_name,
                    ctx.now_ns,
                    _RunObservation(
                        tool,
                        args_doc,  # a dict, a list or None: what json gives
                        result_doc,
                        None if step.is_error else empty,
                        # recipient_count of the decoded arguments (None when unparsable)
                        recipients if args_doc is not None else None,
                        action,
                        args_leaves,
                        result_leaves,
                    ),
                    extra=state.side_effects,
                )
        return self._fresh(state, step, out, ctx)

    def _proposed(self, step: Step, tool: str, args: Any, action: ActionClass) -> _Proposed:
        return _Proposed(
            agent=step.agent_name,
            session=step.session_id,
            trace=step.trace_id,
            span_id=step.span_id,
            tool=tool,
            args=args,
            action=action,
            service=step.service_name,
            cost_usd=step.cost_usd,
        )

    def _fresh(
        self, state: ContextState, step: Step, out: list[Finding], ctx: StepContext
    ) -> Sequence[Finding]:
        """The findings not yet raised in this run; a warn-or-worse one keeps the run unlearned."""
        if not out:
            return ()
        return first_raised(out, state.fired, self._pending, step.trace_id, ctx.replay)

    def _rule_index(self) -> RuleIndex:
        if self._index.rules is not self.declared:  # `declared` was replaced
            self._index = RuleIndex(self.declared)
        return self._index

    def _run_fan_out(self, p: _Proposed, state: ContextState, rules: ContextRules) -> list[Finding]:
        if p.action not in SIDE_EFFECT_CLASSES or state.side_effects <= rules.fan_out_min_run_calls:
            return []
        seen = self.profiles.run_calls(p.agent)
        if seen is None or len(seen) < rules.fan_out_min_history:
            return []
        if state.side_effects <= seen.max * rules.fan_out_factor:
            return []
        return [
            _finding(
                p,
                "fan_out_run",
                rules.fan_out_severity,
                f"run made {state.side_effects} side-effecting calls; this agent's largest "
                f"run had {seen.max:g} ({len(seen)} runs)",
                {
                    "side_effect_calls": state.side_effects,
                    "max_seen": seen.max,
                    "runs_seen": len(seen),
                },
                "run",
                value=state.side_effects,
            )
        ]

    def check_action(
        self,
        agent: str,
        session: str | None,
        tool: str,
        args: Any,
        rules: ContextRules | None = None,
    ) -> list[Finding]:
        """Judge a proposed tool call against the session's current run (for POST /api/v1/check).

        Uses the agent's effective `detectors.context` rules unless `rules` is given;
        learns and remembers nothing.
        """
        r = rules or self._settings.for_agent(agent).context
        state = self._sessions.get(session or "") or ContextState()
        if isinstance(args, str):
            args = _decode(args) or args
        mapping = args if isinstance(args, Mapping) else None
        action = classify_action(tool, mapping, r.tool_classes)
        p = _Proposed(agent, session, state.trace_id or None, "", tool, args, action)
        recipients = recipient_count(p.args, r.recipient_keys)
        return _action_checks(p, state, self.profiles, r, self._rule_index(), recipients)

    def flush(self, now_ns: int) -> None:
        """Learn every pending run now (tests and the benchmark end runs explicitly)."""
        for _, agent, calls, extra in self._pending.sweep(now_ns, -1):
            self.profiles.learn_run(agent, calls, extra)

    async def restore(self, history: History, now_ns: int) -> None:
        """Learn profiles from the latest normal runs in the store (runs with no warn+ alert)."""
        rows = await history.query(*learned_runs_sql(now_ns, self._history_runs))
        rules = self._settings.context
        current: tuple[str, str] | None = None
        calls: list[_RunObservation] = []
        side = 0
        for agent, trace, tool, args, result, is_error in rows:
            if (agent, trace) != current:
                if current is not None:
                    self.profiles.learn_run(current[0], calls, side)
                current, calls, side = (agent, trace), [], 0
                # The agent's own tool classes and recipient keys, as when it was live.
                rules = self._settings.for_agent(agent).context
            args_doc = _decode(args)
            mapping = args_doc if isinstance(args_doc, Mapping) else None
            action = classify_action(tool, mapping, rules.tool_classes)
            side += action in SIDE_EFFECT_CLASSES
            result_doc = None if is_error else _decode(result)
            calls.append(
                _RunObservation(
                    tool,
                    args_doc if isinstance(args_doc, dict | list) else None,
                    result_doc if isinstance(result_doc, dict | list) else None,
                    None if is_error else is_empty_result(result),
                    recipient_count(args_doc, rules.recipient_keys),
                    action,
                )
            )
        if current is not None:
            self.profiles.learn_run(current[0], calls, side)


def learned_runs_sql(now_ns: int, per_agent: int) -> tuple[str, list[Any]]:
    """SQL of the tool steps of each agent's latest `per_agent` runs that raised no warn+ alert."""
    return normal_runs_sql(
        now_ns, per_agent,
        "s.agent_name, s.trace_id, s.tool_name, s.tool_args, s.tool_result, s.is_error",
        "s.kind = 'tool' AND s.tool_name IS NOT NULL",
    )  # fmt: skip


def _thresholds(r: ContextRules) -> ProfileThresholds:
    return ProfileThresholds(
        min_values_range=r.min_values_range,
        min_values_sign=r.min_values_sign,
        min_values_category=r.min_values_category,
        max_categories=r.max_categories,
        min_values_shape=r.min_values_shape,
        max_shapes=r.max_shapes,
        max_new_rate=r.max_new_rate,
        range_margin=r.range_margin,
    )

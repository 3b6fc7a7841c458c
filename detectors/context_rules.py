"""Declarative context rules: strictly validated data over a step's tool, arguments, result, cost and kind.

A rules file is YAML with one key, `rules`, a list of::

    - id: bulk_send_over_50          # public: alerts carry it as their `rule`
      description: One send-type call addressed to more than 50 recipients.
      severity: pause                # info | warn | pause | kill
      agents: ["*"]                  # agent-name globs (default: every agent)
      kind: tool                     # llm | tool | agent | retrieval | other (optional)
      tools: ["send_*", "email_*"]   # tool-name globs (optional)
      actions: [send]                # action classes: read create write delete send publish pay
      all:                           # every condition must hold (any[] : at least one)
        - {field: recipient_count, op: gt, value: 50}

Fields: `args.<path>` and `result.<path>` (JSON paths: `args.to`, `result.items[*].price`,
`args.lines[0].amount`; a leading `$.` is allowed), and the step fields `tool`, `kind`,
`cost_usd`, `is_error`, `agent`, `model`, `input_tokens`, `output_tokens`, plus derived
`action` (the tool's action class) and `recipient_count`. A path with `[*]` yields many
values: a comparison holds when any of them satisfies it; `count_*` ops count them (or
the items of a single list value).

Ops: eq ne gt gte lt lte in not_in matches (regex, search) contains exists missing empty
not_empty count_gt count_gte count_lt count_lte. Every rule is validated when loaded
(unknown keys, bad ops, value types, regexes), and a file's error names the rule and
field by path, so `watchdog check-config` reports it before the daemon starts. Shipped
rules live in `detectors/rules/context_rules.yaml`; a user file rule with the same id
replaces the shipped one, and `detectors.context.disabled_rules` switches ids off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detectors.text import glob_any
from watchdog.errors import ConfigError
from watchdog.settings import format_validation_error

Op = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "matches", "contains", "exists",
    "missing", "empty", "not_empty", "count_gt", "count_gte", "count_lt", "count_lte",
]  # fmt: skip
_NUMERIC_OPS: Final = frozenset({"gt", "gte", "lt", "lte"})
_COUNT_OPS: Final = frozenset({"count_gt", "count_gte", "count_lt", "count_lte"})
_UNARY_OPS: Final = frozenset({"exists", "missing", "empty", "not_empty"})
_STEP_FIELDS: Final = frozenset(
    {
        "tool", "kind", "cost_usd", "is_error", "agent", "model", "input_tokens",
        "output_tokens", "action", "recipient_count",
    }
)  # fmt: skip
_PATH: Final = re.compile(r"^(args|result)((?:\.[A-Za-z0-9_\-]+|\[(?:\d+|\*)\])*)$")
_SEGMENT: Final = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+|\*)\]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """One test of one field of a step."""

    field: str = Field(description="args.<path>, result.<path> or a step field.")
    op: Op
    value: Any = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        v = v.replace(".$.", ".").replace("$.", "")
        if v in _STEP_FIELDS or _PATH.match(v):
            return v
        raise ValueError(
            f"unknown field {v!r}: use args.<path>, result.<path> or one of "
            + ", ".join(sorted(_STEP_FIELDS))
        )

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        op, value = self.op, self.value
        if op in _UNARY_OPS:
            if value is not None:
                raise ValueError(f"op {op} takes no value")
        elif op in _NUMERIC_OPS or op in _COUNT_OPS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"op {op} needs a number value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list):
                raise ValueError(f"op {op} needs a list value")
        elif op == "matches":
            if not isinstance(value, str):
                raise ValueError("op matches needs a regex string")
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"bad regex {value!r}: {err}") from None
        elif value is None:
            raise ValueError(f"op {op} needs a value")
        return self


class ContextRule(_Strict):
    """One declarative rule: which steps it looks at, its conditions, its severity."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$", description="Stable snake_case id.")
    description: str = ""
    severity: Literal["info", "warn", "pause", "kill"]
    agents: list[str] = Field(default_factory=lambda: ["*"])
    kind: Literal["llm", "tool", "agent", "retrieval", "other"] | None = None
    tools: list[str] | None = None
    actions: list[Literal["read", "create", "write", "delete", "send", "publish", "pay"]] | None = (
        None
    )
    all: list[Condition] = Field(default_factory=list)
    any: list[Condition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_conditions(self) -> ContextRule:
        if not self.all and not self.any:
            raise ValueError("a rule needs at least one condition in all or any")
        return self


class RulesFile(_Strict):
    """The top level of a rules file."""

    rules: list[ContextRule]

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids must be unique: {', '.join(dupes)}")
        return self


SHIPPED_RULES: Final = "context_rules.yaml"


def parse_rules(text: str, source: str) -> list[ContextRule]:
    """Validate the YAML text of a rules file; raise ConfigError naming the bad field by path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    try:
        parsed = RulesFile.model_validate(data if data is not None else {"rules": []})
    except ValidationError as err:
        lines = format_validation_error(err).splitlines()
        raise ConfigError(f"invalid rules file {source}:\n" + "\n".join(lines)) from None
    return parsed.rules


def load_rules(
    files: Sequence[Path], *, shipped: bool = True, disabled: Iterable[str] = ()
) -> list[ContextRule]:
    """Return the shipped rules overlaid by `files` (same id replaces), minus the `disabled` ids."""
    by_id: dict[str, ContextRule] = {}
    if shipped:
        text = resources.files("detectors.rules").joinpath(SHIPPED_RULES).read_text("utf-8")
        for rule in parse_rules(text, f"detectors/rules/{SHIPPED_RULES}"):
            by_id[rule.id] = rule
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read rules file {path}: {err}") from None
        for rule in parse_rules(text, str(path)):
            by_id[rule.id] = rule
    off = set(disabled)
    return [r for r in by_id.values() if r.id not in off]


# --- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSubject:
    """What a rule is evaluated against: one step (or a proposed tool call)."""

    agent: str
    kind: str
    tool: str | None
    action: str | None
    args: Any
    result: Any
    cost_usd: float | None = None
    is_error: bool = False
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    recipient_count: int | None = None


@dataclass(frozen=True, slots=True)
class RuleHit:
    """A rule that matched, with the field values that made it match."""

    rule: ContextRule
    values: dict[str, Any]


def resolve(document: Any, path: str) -> list[Any]:
    """Values at `path` (`.key`, `[n]`, `[*]` segments) in a decoded JSON document."""
    current = [document]
    for key, index in _SEGMENT.findall(path):
        nxt: list[Any] = []
        for value in current:
            if key:
                if isinstance(value, Mapping) and key in value:
                    nxt.append(value[key])
            elif index == "*":
                if isinstance(value, list):
                    nxt.extend(value)
            elif isinstance(value, list) and int(index) < len(value):
                nxt.append(value[int(index)])
        current = nxt
        if not current:
            break
    return current


def _field_values(subject: RuleSubject, field: str) -> list[Any]:
    if field in _STEP_FIELDS:
        value = getattr(subject, field, None)
        return [] if value is None else [value]
    if field.startswith("args"):
        document, rest = subject.args, field[len("args") :]
    else:
        document, rest = subject.result, field[len("result") :]
    return [] if document is None else resolve(document, rest)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").lstrip("$€£"))
        except ValueError:
            return None
    return None


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _count(values: list[Any]) -> int:
    if len(values) == 1:
        only = values[0]
        if isinstance(only, list | dict):
            return len(only)
        if isinstance(only, str) and ("," in only or ";" in only):
            return len([p for p in re.split(r"[,;]", only) if p.strip()])
        if isinstance(only, int | float) and not isinstance(only, bool):
            return int(only)
    return len(values)


_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def check(cond: Condition, subject: RuleSubject) -> bool:
    """Return True when `cond` holds for `subject`."""
    values = _field_values(subject, cond.field)
    op = cond.op
    if op == "exists":
        return bool(values)
    if op == "missing":
        return not values
    if op == "empty":
        return bool(values) and all(_is_empty(v) for v in values)
    if op == "not_empty":
        return any(not _is_empty(v) for v in values)
    if op in _COUNT_OPS:
        return bool(values) and _COMPARE[op[6:]](_count(values), float(cond.value))
    if not values:
        return False
    return any(_holds(op, v, cond.value) for v in values)


def _holds(op: str, v: Any, want: Any) -> bool:
    if op in _NUMERIC_OPS:
        n = _number(v)
        return n is not None and _COMPARE[op](n, float(want))
    if op == "eq":
        return bool(v == want)
    if op == "ne":
        return bool(v != want)
    if op == "in":
        return v in want
    if op == "not_in":
        return v not in want
    if op == "matches":
        return re.search(want, v if isinstance(v, str) else json.dumps(v)) is not None
    if op == "contains":
        return (isinstance(v, str) and str(want) in v) or (isinstance(v, list) and want in v)
    return False


def in_scope(
    rule: ContextRule, agent: str, kind: str, tool: str | None, action: str | None
) -> bool:
    """True when the rule looks at steps of this agent, kind, tool and action class."""
    return (
        glob_any(agent, rule.agents)
        and (rule.kind is None or kind == rule.kind)
        and (rule.tools is None or glob_any(tool, rule.tools))
        and (rule.actions is None or action in rule.actions)
    )


def _hit(rule: ContextRule, subject: RuleSubject) -> RuleHit | None:
    if rule.all and not all(check(c, subject) for c in rule.all):
        return None
    if rule.any and not any(check(c, subject) for c in rule.any):
        return None
    values = {c.field: _field_values(subject, c.field)[:5] for c in (*rule.all, *rule.any)}
    return RuleHit(rule, values)


def evaluate(rules: Sequence[ContextRule], subject: RuleSubject) -> list[RuleHit]:
    """Every rule whose scope covers `subject` and whose conditions hold."""
    hits = []
    for rule in rules:
        if in_scope(rule, subject.agent, subject.kind, subject.tool, subject.action):
            hit = _hit(rule, subject)
            if hit is not None:
                hits.append(hit)
    return hits


class RuleIndex:
    """The rules in scope of a step, found once per (agent, kind, tool, action) and remembered.

    `evaluate(subject)` gives exactly what `evaluate(rules, subject)` gives; a step no rule
    looks at (every LLM step with the shipped rules, most tool calls) costs one lookup.
    """

    def __init__(self, rules: Sequence[ContextRule], max_keys: int = 50_000) -> None:
        self.rules = rules
        self._scoped: dict[tuple[str, str, str | None, str | None], tuple[ContextRule, ...]] = {}
        self._max_keys = max_keys

    def scoped(
        self, agent: str, kind: str, tool: str | None, action: str | None
    ) -> tuple[ContextRule, ...]:
        """The rules whose scope covers such a step, in file order."""
        key = (agent, kind, tool, action)
        found = self._scoped.get(key)
        if found is None:
            if len(self._scoped) >= self._max_keys:
                self._scoped.clear()  # bounded: agent and tool names come from emitters
            found = tuple(r for r in self.rules if in_scope(r, agent, kind, tool, action))
            self._scoped[key] = found
        return found

    def evaluate(self, subject: RuleSubject) -> list[RuleHit]:
        """Every rule whose scope covers `subject` and whose conditions hold."""
        hits = []
        for rule in self.scoped(subject.agent, subject.kind, subject.tool, subject.action):
            hit = _hit(rule, subject)
            if hit is not None:
                hits.append(hit)
        return hits

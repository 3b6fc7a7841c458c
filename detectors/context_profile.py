"""Per-field profiles of tool arguments and results, learned per agent and tool (TFDV-style).

A profile is keyed by (agent, tool, side, JSON path), where side is `args` or `result` and
the path uses `[*]` for list elements (`$.items[*].price`). It remembers the JSON types
seen, numeric range and sign, string categories and value shapes, all in bounded memory.
`FieldProfile.check(value)` says what is unusual about a new value *before* it is learned;
`FieldProfile.learn(value)` folds it in. Callers learn only from runs that raised nothing,
so an anomaly never teaches the profile that it is normal.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from watchdog.model import Finding, severity_rank

AnomalyKind = Literal["type", "range", "sign", "zero", "category", "shape"]

_WARN: Final = severity_rank("warn")
_MAX_LEAVES: Final = 200  # per document: a 500-row result is profiled by its first rows
_MAX_DEPTH: Final = 8


def json_type(value: Any) -> str:
    """Return the JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def iter_leaves(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    """Yield (path, leaf) for scalar leaves (and empty containers), bounded in count and depth.

    Depth first, in document order: the first 100 keys of an object, the first 50 items
    of a list, containers below depth 8 opened, at most 200 leaves.
    """
    yield from leaves(value, path)


def leaves(value: Any, path: str = "$") -> list[tuple[str, Any]]:
    """The leaves `iter_leaves` yields, as a list (cheaper: this runs on every tool step)."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict | list) and value and _MAX_DEPTH > 0:
        _walk(path, value, 0, out)
    else:
        out.append((path, value))
    return out


def _walk(
    path: str, value: dict[str, Any] | list[Any], depth: int, out: list[tuple[str, Any]]
) -> bool:
    """Append the leaves of a non-empty container opened at `depth`; False once 200 are in."""
    opens = depth + 1 < _MAX_DEPTH
    if isinstance(value, dict):
        keys = list(value)
        for k in keys[:100] if len(keys) > 100 else keys:
            v = value[k]
            if opens and isinstance(v, dict | list) and v:
                if not _walk(f"{path}.{k}", v, depth + 1, out):
                    return False
            else:
                out.append((f"{path}.{k}", v))
                if len(out) >= _MAX_LEAVES:
                    return False
    else:
        child = f"{path}[*]"
        for v in value[:50] if len(value) > 50 else value:
            if opens and isinstance(v, dict | list) and v:
                if not _walk(child, v, depth + 1, out):
                    return False
            else:
                out.append((child, v))
                if len(out) >= _MAX_LEAVES:
                    return False
    return True


_SHAPE_CLASSES: Final = [
    (re.compile(r"[A-Z]+"), "A"),
    (re.compile(r"[a-z]+"), "a"),
    (re.compile(r"[0-9]+"), "9"),
    (re.compile(r"\s+"), " "),
]
_SHAPE_RUN: Final = re.compile(r"[A-Z]+[a-z]+|[A-Z]+|[a-z]+|[0-9]+|\s+|.", re.S)


# Identifier-like values recur (statuses, codes, names): each shape is computed once.
_SHAPES: dict[str, str] = {}
_SHAPES_MAX: Final = 20_000


def value_shape(text: str) -> str:
    """Return the coarse shape of a string (memoized; see `_value_shape`)."""
    shape = _SHAPES.get(text)
    if shape is None:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        shape = _SHAPES[text] = _value_shape(text)
    return shape


def _value_shape(text: str) -> str:
    """Return the coarse shape of a string: `Mary` → `Aa`, `Smith-Jones` → `Aa-Aa`, `ORD-1234` → `A-9`.

    Letters collapse to `Aa`/`A`/`a`, digits to `9`, whitespace to one space; punctuation
    is kept, so a hyphen, an `@` or a sign is what makes a shape new. Cut to 24 symbols.
    """
    out: list[str] = []
    for token in _SHAPE_RUN.findall(text[:200]):
        if token[0].isupper() and len(token) > 1 and token[1:].islower():
            sym = "Aa"
        elif token.isupper() and token.isalpha():
            sym = "A"
        elif token.islower() and token.isalpha():
            sym = "a"
        elif token.isdigit():
            sym = "9"
        elif token.isspace():
            sym = " "
        else:
            sym = token
        if not out or out[-1] != sym:
            out.append(sym)
    return "".join(out)[:24]


def is_identifier_like(text: str) -> bool:
    """Return True for short codes, names and enum values (what category/shape checks are for).

    At most two words (`Mary-Jane Smith`). Free text (sentences, search queries) and
    URLs change shape all the time;
    judging them would only produce noise.
    """
    return len(text) <= 64 and text.count(" ") <= 1 and "://" not in text


class Reservoir:
    """The last `capacity` numbers, with quantiles from a sorted copy kept up to date."""

    __slots__ = ("_last_q", "_nans", "_sorted", "_values")

    def __init__(self, capacity: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=capacity)
        self._sorted: list[float] | None = None
        self._nans = 0  # NaNs among the values: they have no place in a sorted list
        # The last quantile asked for and its value (the same one is asked on every step).
        self._last_q: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: float) -> None:
        """Remember `value`, forgetting the oldest beyond capacity."""
        values = self._values
        evicted = values[0] if len(values) == values.maxlen else None
        values.append(value)
        self._last_q = None
        if evicted is not None and evicted != evicted:
            self._nans -= 1
        if value != value:
            self._nans += 1
        srt = self._sorted
        if srt is None:
            return
        if self._nans or (evicted is not None and evicted != evicted):
            self._sorted = None  # sorted() decides where NaNs go; rebuild when asked
            return
        # Profiles learn after every run and are checked on every step: keeping the
        # sorted copy in step (O(log n) search, one memmove) beats re-sorting per learn.
        if evicted is not None:
            del srt[bisect_left(srt, evicted)]
        insort(srt, value)

    def quantile(self, q: float) -> float:
        """Return the `q` quantile (nearest rank) of the remembered values; NaN when empty."""
        last = self._last_q
        if last is not None and last[0] == q:
            return last[1]
        if not self._values:
            return math.nan
        if self._sorted is None:
            self._sorted = sorted(self._values)
        idx = min(len(self._sorted) - 1, max(0, math.ceil(q * len(self._sorted)) - 1))
        value = self._sorted[idx]
        self._last_q = (q, value)
        return value

    def rank(self, value: float) -> float:
        """Fraction of remembered values strictly below `value`."""
        if not self._values:
            return math.nan
        if self._sorted is None:
            self._sorted = sorted(self._values)
        return bisect_left(self._sorted, value) / len(self._sorted)

    @property
    def max(self) -> float:
        """The largest remembered value (NaN when empty)."""
        return self.quantile(1.0)


@dataclass(frozen=True, slots=True)
class ProfileThresholds:
    """When a profile has seen enough to judge, and how far is too far."""

    min_values_range: int = 200
    min_values_sign: int = 30
    min_values_category: int = 50
    max_categories: int = 50
    min_values_shape: int = 30
    max_shapes: int = 10
    max_new_rate: float = 0.01
    range_margin: float = 0.5


@dataclass(frozen=True, slots=True)
class Anomaly:
    """What is unusual about one value of one field, with the profile facts that say so."""

    kind: AnomalyKind
    path: str
    value: Any
    detail: str
    evidence: dict[str, Any]


_MAX_TRACKED: Final = 256


class FieldProfile:
    """What one field of one tool of one agent has looked like so far (bounded memory)."""

    __slots__ = (
        "_bounds",
        "count",
        "negatives",
        "numbers",
        "shapes",
        "strings",
        "types",
        "values",
        "zeros",
    )

    def __init__(self) -> None:
        self.count = 0
        self.types: dict[str, int] = {}
        self.numbers = Reservoir()
        self.negatives = 0
        self.zeros = 0
        self.strings = 0
        # Distinct values and shapes; None once past the bound (the field is free text).
        self.values: dict[str, int] | None = {}
        self.shapes: dict[str, int] | None = {}
        # The usual range as of the last learned number, per thresholds:
        # (thresholds, Q(0.001), Q(0.999), low, high); None after a new number.
        self._bounds: tuple[ProfileThresholds, float, float, float, float] | None = None

    def learn(self, value: Any) -> None:
        """Fold a normal value into the profile."""
        self.count += 1
        cls = value.__class__  # json_type, with the two common answers found first
        t = "string" if cls is str else "number" if cls is int or cls is float else json_type(value)
        self.types[t] = self.types.get(t, 0) + 1
        if t == "number":
            number = float(value)
            if math.isfinite(number):
                self._bounds = None
                self.numbers.add(number)
                self.negatives += number < 0
                self.zeros += number == 0
        elif t == "string":
            if not is_identifier_like(value):
                return
            self.strings += 1
            if self.values is not None:
                self.values[value] = self.values.get(value, 0) + 1
                if len(self.values) > _MAX_TRACKED:
                    self.values = None
            if self.shapes is not None:
                shape = value_shape(value)
                self.shapes[shape] = self.shapes.get(shape, 0) + 1
                if len(self.shapes) > _MAX_TRACKED:
                    self.shapes = None

    def check(self, path: str, value: Any, th: ProfileThresholds) -> Anomaly | None:
        """Return the most telling anomaly of `value` against this profile, or None when usual."""
        t = json_type(value)
        if self.count >= th.min_values_sign and t not in self.types and t != "null":
            return Anomaly(
                "type",
                path,
                value,
                f"{path} is a {t}, never seen in {self.count} values",
                {"seen_types": dict(self.types), "count": self.count},
            )
        if t == "number":
            return self._check_number(path, float(value), th)
        if t == "string":
            return self._check_string(path, value, th)
        return None

    def usual(self, value: Any, th: ProfileThresholds) -> bool:
        """A cheap test: True only when `check` would find nothing (False: ask `check`).

        Decides the common leaves (a known string, free text, a number in its range)
        without building a path or an Anomaly; the logic is `check`'s, in the same order.
        """
        cls = value.__class__
        if cls is str:
            if self.count >= th.min_values_sign and "string" not in self.types:
                return False
            values = self.values
            if values is not None and value in values:
                return True  # neither a new category nor (learned with it) a new shape
            return not is_identifier_like(value) or (values is None and self.shapes is None)
        if cls is int or cls is float:
            if self.count >= th.min_values_sign and "number" not in self.types:
                return False
            number = float(value)
            if not math.isfinite(number):
                return True
            n = len(self.numbers)
            if n >= th.min_values_sign and (
                (number < 0 and self.negatives == 0) or (number == 0 and self.zeros == 0)
            ):
                return False
            if n >= th.min_values_range:
                _, _, _, low, high = self._range(th)
                return low <= number <= high
            return True
        return False

    def _seen(self) -> dict[str, Any]:
        numbers = self.numbers
        return {"count": len(numbers), "min": numbers.quantile(0.0), "max": numbers.max}

    def _range(self, th: ProfileThresholds) -> tuple[ProfileThresholds, float, float, float, float]:
        bounds = self._bounds
        if bounds is None or bounds[0] is not th:
            lo, hi = self.numbers.quantile(0.001), self.numbers.quantile(0.999)
            span = max(hi - lo, 0.1 * max(abs(lo), abs(hi)), 1e-9)
            low, high = lo - th.range_margin * span, hi + th.range_margin * span
            bounds = self._bounds = (th, lo, hi, low, high)
        return bounds

    def _check_number(self, path: str, number: float, th: ProfileThresholds) -> Anomaly | None:
        if not math.isfinite(number):
            return None
        n = len(self.numbers)
        if n >= th.min_values_sign and number < 0 and self.negatives == 0:
            return Anomaly(
                "sign",
                path,
                number,
                f"{path} = {number:g} is negative, never before in {n} values",
                self._seen(),
            )
        if n >= th.min_values_range:
            _, lo, hi, low, high = self._range(th)
            if number < low or number > high:
                return Anomaly(
                    "range",
                    path,
                    number,
                    f"{path} = {number:g} is outside its usual range [{low:g}, {high:g}]",
                    {**self._seen(), "q001": lo, "q999": hi},
                )
        if n >= th.min_values_sign and number == 0 and self.zeros == 0:
            return Anomaly(
                "zero", path, number, f"{path} is 0, never before in {n} values", self._seen()
            )
        return None

    def _check_string(self, path: str, text: str, th: ProfileThresholds) -> Anomaly | None:
        if not is_identifier_like(text):
            return None
        values = self.values
        if (
            # An address is an identity, not an enum value: a new recipient is normal.
            "@" not in text
            and values is not None
            and self.strings >= th.min_values_category
            and len(values) <= th.max_categories
            and text not in values
            and _new_rate(values, self.strings) < th.max_new_rate
        ):
            top = sorted(values, key=values.__getitem__, reverse=True)[:10]
            return Anomaly(
                "category",
                path,
                text,
                f"{path} = {text!r} is a value never seen before",
                {"count": self.strings, "known_values": top, "distinct": len(values)},
            )
        shapes = self.shapes
        if (
            shapes is not None
            and self.strings >= th.min_values_shape
            and len(shapes) <= th.max_shapes
            # A value seen before had its shape learned with it (shapes are never
            # forgotten while tracked), so only new values need their shape computed.
            and (values is None or text not in values)
        ):
            shape = value_shape(text)
            if shape not in shapes and _new_rate(shapes, self.strings) < th.max_new_rate:
                return Anomaly(
                    "shape",
                    path,
                    text,
                    f"{path} = {text!r} has shape {shape!r}, never seen before",
                    {"count": self.strings, "shape": shape, "known_shapes": sorted(shapes)},
                )
        return None


def _new_rate(counts: dict[str, int], total: int) -> float:
    """Good-Turing estimate of the chance the next value is new: singletons / total."""
    return sum(1 for c in counts.values() if c == 1) / max(total, 1)


class FieldBook:
    """All field profiles of all agents, bounded in the number of fields."""

    def __init__(self, thresholds: ProfileThresholds, max_fields: int = 50_000) -> None:
        self.thresholds = thresholds
        # (agent, tool, side) → JSON path → profile: one lookup finds a document's fields,
        # and a document no profile exists for is not walked at all.
        self._docs: dict[tuple[str, str, str], dict[str, FieldProfile]] = {}
        self._count = 0
        self._max_fields = max_fields

    def __len__(self) -> int:
        return self._count

    def check(
        self,
        agent: str,
        tool: str,
        side: str,
        value: Any,
        walked: list[tuple[str, Any]] | None = None,
    ) -> list[Anomaly]:
        """Anomalies of every leaf of `value` (a decoded args/result document).

        `walked` is `leaves(value)` when the caller has it (it learns from them later).
        """
        fields = self._docs.get((agent, tool, side))
        if not fields:
            return []
        out = []
        th = self.thresholds
        for path, leaf in leaves(value) if walked is None else walked:
            profile = fields.get(path)
            if profile is None or profile.usual(leaf, th):
                continue
            found = profile.check(f"{side}{path[1:]}", leaf, th)
            if found is not None:
                out.append(found)
        return out

    def learn(
        self,
        agent: str,
        tool: str,
        side: str,
        value: Any,
        walked: list[tuple[str, Any]] | None = None,
    ) -> None:
        """Fold every leaf of a normal document into its field's profile.

        A value repeated inside one document counts once: ten identical log lines are
        one observation, not evidence that the field is categorical. `walked` is
        `leaves(value)` when the caller kept it from checking the document.
        """
        seen: set[tuple[Any, ...]] = set()
        fields = self._docs.get((agent, tool, side))
        if fields is None:
            if self._count >= self._max_fields:
                return  # bounded: no field of a new document can be profiled
            fields = self._docs[(agent, tool, side)] = {}
        for path, leaf in leaves(value) if walked is None else walked:
            # Equal repr() ⇔ equal value for a str or an int, so those skip repr(); the
            # tag keeps ("1",) from meeting (repr(1),). Floats keep repr (-0.0, nan). A
            # path without a list in it names one leaf of the document: nothing to skip.
            if "[*]" in path:  # only list items can repeat a (path, value) pair
                cls = leaf.__class__
                ident = (path, leaf, cls is str) if cls is str or cls is int else (path, repr(leaf))
                if ident in seen:
                    continue
                seen.add(ident)
            profile = fields.get(path)
            if profile is None:
                if self._count >= self._max_fields:
                    continue  # bounded: new fields past the cap are not profiled
                profile = fields[path] = FieldProfile()
                self._count += 1
            profile.learn(leaf)


T = TypeVar("T")


@dataclass(slots=True)
class _Pending(Generic[T]):
    agent: str
    last_ns: int
    items: list[T]
    extra: int = 0
    flagged: bool = False


class PendingRuns(Generic[T]):
    """Observations of runs still going, learned only once a run is over and raised nothing.

    A run is over when no step arrived for `idle_ns` (or when the bound of open runs
    evicts the oldest). Runs flagged warn-or-worse are dropped instead of learned, so a
    drifting or wrong-context run never becomes part of the baseline it is judged by.
    """

    def __init__(self, max_runs: int = 20_000, max_items_per_run: int = 500) -> None:
        self._runs: OrderedDict[str, _Pending[T]] = OrderedDict()
        self._max_runs = max_runs
        self._max_items = max_items_per_run
        self._evicted: list[tuple[str, str, list[T], int]] = []

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, trace_id: object) -> bool:
        return trace_id in self._runs

    def add(self, trace_id: str, agent: str, now_ns: int, item: T | None, extra: int = 0) -> None:
        """Record one observation of a run (None only refreshes the run's last-seen time)."""
        run = self._runs.get(trace_id)
        if run is None:
            run = self._runs[trace_id] = _Pending(agent, now_ns, [])
            while len(self._runs) > self._max_runs:
                old_id, old = self._runs.popitem(last=False)
                if not old.flagged:
                    self._evicted.append((old_id, old.agent, old.items, old.extra))
        else:
            self._runs.move_to_end(trace_id)
        run.last_ns = max(run.last_ns, now_ns)
        run.extra = max(run.extra, extra)
        if item is not None and len(run.items) < self._max_items:
            run.items.append(item)

    def touch(self, trace_id: str, agent: str, now_ns: int) -> None:
        """`add(trace_id, agent, now_ns, None)`: the run was active now (no observation)."""
        run = self._runs.get(trace_id)
        if run is None:
            self.add(trace_id, agent, now_ns, None)
            return
        self._runs.move_to_end(trace_id)
        if now_ns > run.last_ns:
            run.last_ns = now_ns

    def flag(self, trace_id: str) -> None:
        """Mark a run as anomalous: it will never be learned from."""
        run = self._runs.get(trace_id)
        if run is not None:
            run.flagged = True

    def is_flagged(self, trace_id: str) -> bool:
        """Return True when the run is open and was flagged."""
        run = self._runs.get(trace_id)
        return run is not None and run.flagged

    def sweep(
        self, now_ns: int, idle_ns: int, limit: int | None = None
    ) -> list[tuple[str, str, list[T], int]]:
        """Close runs idle for `idle_ns` (all when negative), at most `limit` of them.

        Returns (trace_id, agent, observations, extra) of the unflagged ones, to learn,
        oldest first; with a `limit`, the rest are returned by the next sweeps in order
        (so a burst of runs ending together is learned over several steps, not one).
        """
        if not self._evicted and (
            not self._runs
            or (idle_ns >= 0 and next(iter(self._runs.values())).last_ns > now_ns - idle_ns)
        ):
            return []  # called on every step: nothing is due, decided in O(1)
        done, self._evicted = self._evicted, []
        if limit is not None and len(done) >= limit:
            done, self._evicted = done[:limit], done[limit:]
            return done
        while self._runs and (limit is None or len(done) < limit):
            trace_id, run = next(iter(self._runs.items()))
            if idle_ns >= 0 and run.last_ns > now_ns - idle_ns:
                # Runs are ordered by last activity, so the rest are younger.
                break
            del self._runs[trace_id]
            if not run.flagged:
                done.append((trace_id, run.agent, run.items, run.extra))
        return done


S = TypeVar("S")


class RecentSessions(Generic[S]):
    """Per-session detector states of the latest `max_sessions` sessions, for pre-action checks.

    The engine owns the states; a detector remembers them here so that a check of a
    proposed action (`POST /api/v1/check`) can read what the session's run did so far.
    """

    def __init__(self, max_sessions: int) -> None:
        self._states: OrderedDict[str, S] = OrderedDict()
        self._last: S | None = None
        self._max = max_sessions

    def remember(self, session_id: str, state: S) -> None:
        """Make `state` the most recent session's (called on every step: O(1))."""
        if state is self._last:
            return  # the same session as the step before: already the most recent
        self._last = state
        self._states[session_id] = state
        self._states.move_to_end(session_id)
        while len(self._states) > self._max:
            self._states.popitem(last=False)

    def get(self, session_id: str) -> S | None:
        """The state of a remembered session, or None."""
        return self._states.get(session_id)


def normal_runs_sql(now_ns: int, per_agent: int, columns: str, where: str) -> tuple[str, list[Any]]:
    """SQL of `columns` of the steps (`s`) matching `where` in each agent's latest normal runs.

    Normal: among the agent's latest `per_agent` runs ended by `now_ns`, those with no
    warn-or-worse drift/context/rule alert, as live learning skips flagged runs. Ordered
    run by run (oldest run first), each run's steps in time order. `columns` and `where`
    are SQL written by the callers, never data.
    """
    sql = f"""
        WITH runs AS (
            SELECT agent_name, trace_id, max(end_time) AS last_end,
                   row_number() OVER (PARTITION BY agent_name ORDER BY max(end_time) DESC) AS rn
            FROM steps
            WHERE end_time <= make_timestamp(?::BIGINT)
            GROUP BY agent_name, trace_id
        ), flagged AS (
            SELECT DISTINCT trace_id FROM alerts
            WHERE trace_id IS NOT NULL AND detector IN ('drift', 'context', 'rule')
              AND severity IN ('warn', 'pause', 'kill')
        ), keep AS (
            SELECT * FROM runs WHERE rn <= ? AND trace_id NOT IN (SELECT trace_id FROM flagged)
        )
        SELECT {columns}
        FROM steps s JOIN keep k USING (agent_name, trace_id)
        WHERE {where}
        ORDER BY k.last_end, s.trace_id, s.start_time
    """
    return sql, [now_ns // 1000, per_agent]


def first_raised(
    found: Sequence[Finding],
    fired: set[str],
    pending: PendingRuns[Any],
    trace_id: str,
    replay: bool,
) -> list[Finding]:
    """The findings of `found` not yet raised in this run (`fired` remembers them).

    Each condition fires once per run (the alert store dedups across runs by key). A
    warn-or-worse one flags the run in `pending`, so it is never learned from (not
    while replaying, which learns nothing anyway).
    """
    fresh = []
    for f in found:
        ident = f"{f.detector}:{f.rule}:{f.key}"
        if ident not in fired:
            fired.add(ident)
            fresh.append(f)
    if not replay and any(severity_rank(f.severity) >= _WARN for f in fresh):
        pending.flag(trace_id)
    return fresh

"""The detector contract: how a detector sees steps, keeps state and reports findings.

How to write a detector
-----------------------
A detector is a small object with a `name` (its `Finding.detector` value, e.g. "loop")
that implements one or both of two capabilities:

* **Streaming** (`StreamingDetector`): the engine calls
  `observe(state, step, ctx)` for every committed step, in commit order, with the
  detector's own per-session `state` (created by `new_state()`, kept by the engine in
  a bounded LRU with an idle TTL and rebuilt from the store after a restart or an
  eviction) and a `StepContext` carrying `now_ns` and the agent's effective rules.
  It returns the findings this step caused (usually none). It must be quick (no I/O),
  must not read the clock, and must keep its per-session state bounded.
  During a replay (`ctx.replay` is True: start-up or re-hydrating an evicted session)
  the engine drops the returned findings; a detector that also keeps cross-session
  aggregates must not add replayed steps to them (its `restore()` rebuilt those).
* **Periodic** (`PeriodicDetector`): the engine runs `await run(history, now_ns)`
  every `interval_s` seconds (APScheduler) and records the findings it returns.
  Use it for SQL baselines over `steps`/`alerts` (`history.query(sql, params)` runs
  on the store's reader threads, never on the event loop).

Optionally implement `restore(history, now_ns)` (`Restorable`) to rebuild
cross-session state from the store at start, before any step is observed.

Register it in `watchdog/registry.py` with one line: `engine.add(MyDetector(...))`.
A detector that raises is logged and counted (`watchdog_detector_errors_total`); the
other detectors still run on the same step.

Findings: set `detector`, a stable snake_case `rule` id (public API: list your rules in
a module-level tuple of `RuleInfo`), a `severity` (`info|warn|pause|kill`), a one-line
`summary` a person understands, `span_ids` and `evidence` (the values that tripped it),
and a `key` that stays the same while the same condition escalates (the alert store
derives the fingerprint from detector, rule, agent, session and key, so warn → pause →
kill updates one alert). Detectors never set verdicts; the enforcement policy turns
pause/kill alerts into verdicts.

Thresholds are data: add a pydantic section (extra="forbid") to `DetectorSettings`
and an optional same-typed field to `AgentDetectorOverrides`; `ctx.rules` then holds
the agent's effective values (defaults merged with its override).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from watchdog.drift_context import ContextRules, DriftRules
from watchdog.model import Finding, Step

if TYPE_CHECKING:
    from watchdog.store import Store

__all__ = [
    "DEFAULT_VOLATILE_KEYS",
    "AgentDetectorOverrides",
    "BurnWindow",
    "DetectorSettings",
    "History",
    "Ladder",
    "LoopRules",
    "PeriodicDetector",
    "Restorable",
    "RuleInfo",
    "SpendRules",
    "StepContext",
    "StreamingDetector",
    "canonical_json",
    "ladder_level",
    "parsed_json",
    "short_hash",
]


# --- settings -----------------------------------------------------------------------------


class _Strict(BaseModel):
    """Strict keys, immutable: a typo in a rules file is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Ladder(_Strict):
    """Counts at which a rule escalates warn → pause → kill (None skips that level)."""

    enabled: bool = Field(True, description="Turn the rule off entirely with false.")
    warn: float | None = Field(None, gt=0, description="Value at which the rule warns.")
    pause: float | None = Field(None, gt=0, description="Value at which the rule asks to pause.")
    kill: float | None = Field(None, gt=0, description="Value at which the rule asks to kill.")

    @model_validator(mode="after")
    def _ascending(self) -> Ladder:
        levels = [v for v in (self.warn, self.pause, self.kill) if v is not None]
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise ValueError("levels must increase: warn < pause < kill")
        return self


def _ladder(warn: float | None, pause: float | None, kill: float | None) -> Any:
    return Field(
        default_factory=lambda: Ladder.model_validate({"warn": warn, "pause": pause, "kill": kill})
    )


def ladder_level(ladder: Ladder, value: float) -> Literal["warn", "pause", "kill"] | None:
    """Return the highest level of `ladder` that `value` reached (None below it or disabled)."""
    if not ladder.enabled:
        return None
    if ladder.kill is not None and value >= ladder.kill:
        return "kill"
    if ladder.pause is not None and value >= ladder.pause:
        return "pause"
    if ladder.warn is not None and value >= ladder.warn:
        return "warn"
    return None


# Stripped from arguments and results: identifiers of the call itself, never of its subject.
DEFAULT_VOLATILE_KEYS: tuple[str, ...] = (
    "request_id", "requestid", "run_id", "runid", "message_id", "messageid",
    "trace_id", "traceid", "span_id", "spanid", "tool_call_id", "toolcallid", "call_id",
    "callid", "response_id", "responseid", "llm_response_id", "action_id", "event_id",
    "idempotency_key", "idempotencykey", "nonce", "correlation_id", "pid",
)  # fmt: skip

# Stripped from results only: clock readings and durations change on every call, but in
# arguments a time or an id is usually what makes two calls different (a page, a window).
DEFAULT_RESULT_VOLATILE_KEYS: tuple[str, ...] = (
    "id", "uuid", "timestamp", "ts", "time", "date", "datetime", "created", "now",
    "duration", "duration_ms", "durationms", "elapsed", "elapsed_ms", "elapsedms",
    "latency", "latency_ms", "took_ms", "etag",
)  # fmt: skip

DEFAULT_SIDE_EFFECT_VERBS: tuple[str, ...] = (
    "send", "email", "mail", "sms", "notify", "post", "publish", "reply", "message",
    "pay", "charge", "transfer", "refund", "withdraw", "purchase", "order", "book",
    "delete", "remove", "drop", "destroy", "purge", "cancel", "write", "create",
    "insert", "deploy", "merge", "commit", "push", "tweet",
)  # fmt: skip

DEFAULT_READ_VERBS: tuple[str, ...] = (
    "get", "list", "read", "search", "fetch", "query", "find", "lookup", "check",
    "describe", "view", "show", "count", "preview", "validate", "draft", "estimate",
)  # fmt: skip

DEFAULT_READ_NOUNS: tuple[str, ...] = (
    "status", "state", "info", "details", "history", "list", "log", "logs", "count",
    "preview", "draft", "drafts", "report", "summary", "progress", "result", "results",
)  # fmt: skip


class LoopRules(_Strict):
    """Thresholds of the loop detector (defaults from reference §B.1: OpenHands, Gemini CLI, OpenClaw)."""

    repeat: Ladder = _ladder(3, 5, 8)
    repeat_same_result: Ladder = _ladder(3, 4, 6)
    repeat_error: Ladder = _ladder(2, 3, 5)
    cycle: Ladder = _ladder(2, 3, 5)
    cycle_max_period: int = Field(4, ge=2, le=8, description="Longest cycle period checked.")
    no_progress: Ladder = _ladder(10, 20, 30)
    no_progress_window: int = Field(
        30, ge=2, le=1000, description="Tool calls looked back over by `no_progress`."
    )
    side_effect_duplicate: Ladder = _ladder(None, 2, 3)
    monologue: Ladder = _ladder(2, 3, 5)
    empty_response: Ladder = _ladder(2, 3, 5)
    max_steps: Ladder = _ladder(100, 200, 400)
    max_steps_learned: bool = Field(
        True, description="Also derive step caps from the agent's own history (p99)."
    )
    max_steps_min_runs: int = Field(30, ge=5, description="Runs of history before learning.")
    max_steps_learned_floor: int = Field(
        20, ge=1, description="A learned step cap is never below this many steps."
    )
    history_days: int = Field(14, ge=1, le=365, description="History used for learned caps.")
    volatile_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VOLATILE_KEYS),
        description="Argument/result keys stripped before fingerprinting (case-insensitive).",
    )
    result_volatile_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RESULT_VOLATILE_KEYS),
        description="Further keys stripped from results only (clock readings, durations).",
    )
    result_volatile_suffixes: list[str] = Field(
        default_factory=lambda: ["_at", "_ts", "_time", "timestamp"],
        description="Result keys ending like this are stripped too (not argument keys: a "
        "time window there is what makes a paginated call different).",
    )
    side_effect_verbs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SIDE_EFFECT_VERBS),
        description="A tool whose name contains one of these words has side effects.",
    )
    read_verbs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_READ_VERBS),
        description="A tool whose name starts with one of these words is a read (get_…).",
    )
    read_nouns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_READ_NOUNS),
        description="A tool whose name ends with one of these words is a read (deploy_status).",
    )
    side_effect_tools: list[str] = Field(
        default_factory=list, description="Tools that have side effects whatever their name."
    )
    safe_tools: list[str] = Field(
        default_factory=list, description="Tools never treated as side-effecting."
    )
    target_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per tool: compare only these argument keys for duplicate side effects.",
    )
    max_text_chars: int = Field(
        4096, ge=64, description="Arguments/results longer than this are hashed by prefix+suffix."
    )

    @field_validator(
        "volatile_keys",
        "result_volatile_keys",
        "result_volatile_suffixes",
        "side_effect_verbs",
        "read_verbs",
        "read_nouns",
    )
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [s.lower() for s in v]


class BurnWindow(_Strict):
    """One multi-window burn-rate pair (SRE workbook): both windows must exceed `rate`."""

    long_s: float = Field(gt=0, description="Long window in seconds.")
    short_s: float = Field(gt=0, description="Short window in seconds.")
    rate: float = Field(gt=0, description="Burn rate (× the allowed daily rate) that fires.")
    severity: Literal["info", "warn", "pause", "kill"] = "warn"

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnWindow:
        if self.short_s >= self.long_s:
            raise ValueError("short_s must be shorter than long_s")
        return self


class SpendRules(_Strict):
    """Thresholds of the spend detector; the caps themselves live in `budgets`."""

    caps_enabled: bool = Field(True, description="Alert on budgets.* caps and warn fractions.")
    kill_fraction: float | None = Field(
        1.5, gt=1, description="Fraction of a cap at which the cap alert escalates to kill."
    )
    burn_windows: list[BurnWindow] = Field(
        default_factory=lambda: [
            BurnWindow(long_s=3600, short_s=300, rate=14.4),
            BurnWindow(long_s=6 * 3600, short_s=1800, rate=6.0),
        ],
        description="Burn-rate pairs against the daily budget (14.4× 1h+5m, 6× 6h+30m).",
    )
    zscore: Ladder = _ladder(3.5, None, None)
    zscore_min_runs: int = Field(30, ge=5, description="Cold-start guard: runs of history needed.")
    zscore_history_days: int = Field(14, ge=1, le=365)
    zscore_min_ratio: float = Field(
        2.0, ge=1, description="Also require the run to cost this many times the median run."
    )
    zscore_zero_mad_factor: float = Field(
        3.0, gt=1, description="When every run costs the same: anomalous above median × this."
    )
    context_bloat: Ladder = _ladder(6, 12, None)
    context_bloat_min_growth: float = Field(
        1.5, ge=1, description="Input tokens must also grow by this factor over the streak."
    )
    unpriced: bool = Field(True, description="Alert once per agent and model with no price.")


class AgentDetectorOverrides(_Strict):
    """Per-agent replacements: only the keys written here replace the defaults."""

    loop: LoopRules | None = None
    spend: SpendRules | None = None
    drift: DriftRules | None = None
    context: ContextRules | None = None


class DetectorSettings(_Strict):
    """The `detectors` settings section: engine bounds, rule thresholds, per-agent overrides."""

    enabled: bool = Field(True, description="Run the detection engine at all.")
    max_sessions: int = Field(
        20_000, ge=1, description="Sessions whose streaming state is kept in memory (LRU)."
    )
    session_idle_ttl_s: float = Field(
        6 * 3600, gt=0, description="A session idle this long loses its in-memory state."
    )
    max_steps_per_session_replay: int = Field(
        2000, ge=10, description="Latest steps replayed when a session's state is rebuilt."
    )
    max_replay_steps: int = Field(
        200_000, ge=0, description="Most steps replayed at start to rebuild session state."
    )
    max_queued_commits: int = Field(
        4096, ge=1, description="Commits waiting for detection before the writer waits."
    )
    max_queued_steps: int = Field(
        20_000,
        ge=1,
        description="Steps waiting for detection before the writer waits (bounds detection "
        "lag and its memory when ingest outpaces detection).",
    )
    baseline_interval_s: float = Field(
        300, gt=0, description="How often periodic detectors recompute baselines from history."
    )
    loop: LoopRules = Field(default_factory=lambda: LoopRules.model_validate({}))
    spend: SpendRules = Field(default_factory=lambda: SpendRules.model_validate({}))
    drift: DriftRules = Field(default_factory=lambda: DriftRules.model_validate({}))
    context: ContextRules = Field(default_factory=lambda: ContextRules.model_validate({}))
    agents: dict[str, AgentDetectorOverrides] = Field(
        default_factory=dict, description="Per-agent overrides of `loop`/`spend` thresholds."
    )
    _cache: dict[str, DetectorSettings] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_merge_cleanly(self) -> DetectorSettings:
        for agent in self.agents:
            try:
                self.for_agent(agent)
            except ValidationError as err:
                where = "; ".join(
                    f"agents.{agent}.{'.'.join(str(p) for p in e['loc'])}: "
                    f"{e['msg'].removeprefix('Value error, ')}"
                    for e in err.errors()
                )
                raise ValueError(where) from None
        return self

    def for_agent(self, agent: str) -> DetectorSettings:
        """Return the settings in force for `agent`: defaults with its override merged in."""
        # Called for every step. Reading a pydantic private attribute goes through
        # BaseModel.__getattr__ (2.5 µs); its backing dict is a plain attribute (0.1 µs).
        private = self.__pydantic_private__
        cached: DetectorSettings | None = private["_cache"].get(agent) if private else None
        if cached is not None:
            return cached
        override = self.agents.get(agent)
        merged = self
        if override is not None:
            data = _merged_data(self, override)
            data.pop("agents", None)
            merged = DetectorSettings.model_validate(data)
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: agent names come from emitters
        self._cache[agent] = merged
        return merged


def _merged_data(base: BaseModel, override: BaseModel) -> dict[str, Any]:
    """Return `base` as data with the fields `override` set explicitly replaced, recursively."""
    data = base.model_dump()
    for name in override.model_fields_set:
        value = getattr(override, name)
        if value is None:
            continue
        current = getattr(base, name, None)
        if isinstance(value, BaseModel) and isinstance(current, BaseModel):
            data[name] = _merged_data(current, value)
        else:
            data[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return data


# --- the contract -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """One rule of a detector for the docs: its stable id, what it means, its settings path."""

    detector: str
    rule: str
    description: str
    setting: str


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a streaming detector may know besides the step: the time and the agent's rules."""

    now_ns: int
    rules: DetectorSettings
    replay: bool = False


class History:
    """Read-only SQL over the store for periodic detectors and restores (reader threads)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one read query on a reader thread and return all rows."""
        args = list(params or [])
        return await self._store.read(lambda cur: cur.execute(sql, args).fetchall())


@runtime_checkable
class StreamingDetector(Protocol):
    """Sees every committed step with its bounded per-session state."""

    name: str

    def new_state(self) -> Any:
        """Fresh per-session state (kept by the engine; must stay bounded)."""

    def observe(self, state: Any, step: Step, ctx: StepContext) -> Sequence[Finding]:
        """Update `state` with `step`; return the findings it caused. No I/O, no clock."""


@runtime_checkable
class PeriodicDetector(Protocol):
    """Runs SQL over history on an interval."""

    name: str
    interval_s: float

    async def run(self, history: History, now_ns: int) -> Sequence[Finding]:
        """Compute baselines and/or findings from the store."""


@runtime_checkable
class Restorable(Protocol):
    """A detector with cross-session state it rebuilds from the store at start."""

    async def restore(self, history: History, now_ns: int) -> None:
        """Rebuild cross-session state as of `now_ns`."""


# --- fingerprints -------------------------------------------------------------------------

_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_ISO_TIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b"
)
_LONG_HEX = re.compile(r"\b[0-9a-fA-F]{16,}\b")


_VOLATILE_TEXT = re.compile(f"{_UUID.pattern}|{_ISO_TIME.pattern}|{_LONG_HEX.pattern}")
# One encoder for every fingerprint: `json.dumps` with options builds a new one per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
)


def _strip(value: Any, volatile: frozenset[str], suffixes: tuple[str, ...], scrub: bool) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = k.lower() if k.__class__ is str else str(k).lower()
            if key in volatile or (suffixes and key.endswith(suffixes)):
                continue
            # Scalars are the common case: no recursive call for them.
            if isinstance(v, dict | list) or (scrub and v.__class__ is str):
                v = _strip(v, volatile, suffixes, scrub)
            out[k] = v
        return out
    if isinstance(value, list):
        return [
            _strip(v, volatile, suffixes, scrub)
            if isinstance(v, dict | list) or (scrub and v.__class__ is str)
            else v
            for v in value
        ]
    if scrub and isinstance(value, str):
        return _scrub_text(value)
    return value


def _scrub_text(text: str) -> str:
    # Ids and clock readings inside free text make every observation look new (OpenClaw
    # hashes results only after stripping them), so they are replaced by placeholders.
    if len(text) < 16 or _VOLATILE_TEXT.search(text) is None:
        return text
    text = _UUID.sub("<uuid>", text)
    text = _ISO_TIME.sub("<time>", text)
    return _LONG_HEX.sub("<hex>", text)


def canonical_json(
    text: str | None,
    volatile_keys: frozenset[str],
    max_chars: int = 4096,
    *,
    volatile_suffixes: tuple[str, ...] = (),
    scrub_text: bool = False,
) -> str | None:
    """Return the canonical form of an argument/result text for fingerprinting.

    JSON becomes sorted-key compact JSON without `volatile_keys` (and keys ending in one
    of `volatile_suffixes`). With `scrub_text`, ids and timestamps inside strings are
    replaced by placeholders (right for results; arguments keep them, since a time
    window or an id there is what makes a paginated call different). Long text is
    reduced to a stable prefix and suffix so a huge observation hashes cheaply.
    """
    if text is None:
        return None
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= 256 * 1024:
        # Shared with the other detectors reading the same step: one parse per text.
        value = parsed_json(text)
        if value is not None:
            out = _CANONICAL.encode(_strip(value, volatile_keys, volatile_suffixes, scrub_text))
            return _clip_middle(out, max_chars)
    return _clip_middle(_scrub_text(stripped) if scrub_text else stripped, max_chars)


def _clip_middle(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}…{len(text)}…{text[-half:]}"


def short_hash(text: str | None) -> str:
    """Return a 16-hex-digit hash of `text` ("-" for None), stable across processes."""
    if text is None:
        return "-"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


# A step's arguments and result are read by several detectors in a row; one parse each.
_PARSED: dict[int, tuple[str, Any]] = {}
_PARSED_MAX = 256


def parsed_json(text: str | None) -> Any:
    """Return `text` decoded when it is a JSON object or array (after `strip()`), else None.

    Memoized by the identity of the string for the last few hundred strings, so every
    detector that looks at one step's `tool_args` or `tool_result` shares one parse. The
    returned value is shared: callers must treat it as read-only.
    """
    if text is None:
        return None
    hit = _PARSED.get(id(text))
    if hit is not None and hit[0] is text:
        return hit[1]
    stripped = text.strip()
    value: Any = None
    if stripped[:1] in ("{", "["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()  # bounded; the entries that matter are the current step's
    # The entry keeps `text` alive, so its id cannot be reused while it is cached.
    _PARSED[id(text)] = (text, value)
    return value

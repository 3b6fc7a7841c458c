"""Domain values shared by every package: steps, findings, severities, commit notices.

These are plain frozen dataclasses so that collectors, detectors, alerts and dashboards
agree on one shape without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

StepKind = Literal["llm", "tool", "agent", "retrieval", "other"]
STEP_KINDS: tuple[StepKind, ...] = ("llm", "tool", "agent", "retrieval", "other")

Severity = Literal["info", "warn", "pause", "kill"]
SEVERITIES: tuple[Severity, ...] = ("info", "warn", "pause", "kill")

DetectorName = Literal["loop", "drift", "spend", "context", "rule"]

# Where a step's cost came from: the emitter's own figure, the genai-prices table, the
# user's override file, or nothing (cost_usd stays NULL, never 0).
PriceSource = Literal["emitter", "genai-prices", "override", "unpriced", "none"]


def severity_rank(severity: str) -> int:
    """Order severities so that `kill` > `pause` > `warn` > `info` (unknown ranks lowest)."""
    try:
        return SEVERITIES.index(severity)  # type: ignore[arg-type]
    except ValueError:
        return -1


# Not `frozen`: a frozen dataclass of this width costs ~4 µs to build (each field goes
# through object.__setattr__), a tenth of the whole per-span ingest budget. Treat a Step
# as immutable all the same; use dataclasses.replace to derive one.
@dataclass(slots=True, eq=True)
class Step:
    """One agent step normalized from any of the three attribute conventions.

    Times are integer nanoseconds since the Unix epoch (UTC). Token counts follow the
    OTel rule: cache tokens are a subset of `input_tokens`, reasoning tokens a subset of
    `output_tokens`. `cost_usd` is None when the model has no known price.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    start_time_ns: int
    end_time_ns: int
    service_name: str
    agent_name: str
    session_id: str
    kind: StepKind
    operation: str | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    price_source: str = "none"
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_args: str | None = None
    tool_result: str | None = None
    is_error: bool = False
    error_type: str | None = None
    # The text of the latest user message this step saw (the task when it is the first),
    # the assistant's output text, and an explicit `watchdog.task` when the agent set one.
    user_message: str | None = None
    output_text: str | None = None
    task: str | None = None
    span_name: str = ""
    # How many user-role messages the step's input holds (None when content is not
    # captured or the input is not a message list): a person typing the same words
    # again changes this, not `user_message`.
    user_turns: int | None = None

    @property
    def duration_ms(self) -> float:
        """Wall time of the step in milliseconds."""
        return max(self.end_time_ns - self.start_time_ns, 0) / 1e6


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's claim that something is wrong, with the evidence that tripped it.

    `key` identifies the condition so the same condition re-asserted is recognised as
    the same finding (the alert fingerprint is derived from it).
    """

    detector: str
    rule: str
    severity: Severity
    summary: str
    agent_name: str
    service_name: str = ""
    session_id: str | None = None
    trace_id: str | None = None
    span_ids: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """What one writer commit made durable: its steps, in arrival order."""

    steps: Sequence[Step]
    span_count: int
    committed_at_ns: int

    @property
    def session_ids(self) -> set[str]:
        """Sessions the commit touched."""
        return {s.session_id for s in self.steps}

"""Thresholds of the goal-drift and unusual-context detectors (`detectors.drift`, `detectors.context`).

Both sections are validated pydantic models with strict keys; per-agent overrides live
in `detectors.agents.<agent>.drift|context` like the other detectors'. Declared scope
(tool allow/deny lists, read-only tasks) is naturally an agent override::

    detectors:
      agents:
        research-bot:
          drift: {scope: {allow_tools: ["search_*", "read_*"], read_only: true}}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Level = Literal["info", "warn", "pause", "kill"]
ToolClass = Literal["read", "create", "write", "delete", "send", "publish", "pay"]

DEFAULT_RECIPIENT_KEYS: tuple[str, ...] = (
    "to", "cc", "bcc", "recipient", "recipients", "emails", "addresses", "customer_ids",
    "customers", "user_ids", "users", "targets", "phone_numbers", "numbers", "accounts",
    "account_ids", "members", "contacts", "audience", "channels",
)  # fmt: skip

DEFAULT_MONEY_KEYS: tuple[str, ...] = (
    "amount", "price", "total", "subtotal", "cost", "fee", "refund", "discount", "balance",
    "charge", "payment", "unit_price", "new_price", "sale_price", "list_price", "credit",
    "tax", "value_usd", "amount_usd", "price_usd",
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScopeRules(_Strict):
    """Declared scope of an agent: what it may call, and whether it may change anything."""

    allow_tools: list[str] | None = Field(
        None, description="Tool-name globs the agent may call (none: no allowlist)."
    )
    deny_tools: list[str] = Field(
        default_factory=list, description="Tool-name globs the agent must never call."
    )
    read_only: bool = Field(False, description="The agent only reads: any side effect is drift.")
    read_only_tasks: list[str] = Field(
        default_factory=list,
        description="Regexes: a task matching one is read-only (side effects are drift).",
    )
    allow_severity: Level = Field("warn", description="Severity of a call outside allow_tools.")
    deny_severity: Level = Field(
        "pause", description="Severity of a denied tool or a write in a read-only scope."
    )

    @field_validator("read_only_tasks")
    @classmethod
    def _regexes_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"bad regex {pattern!r}: {err}") from None
        return v


class JudgeRules(_Strict):
    """Optional LLM judge (any OpenAI-compatible endpoint), asked only when cheaper signals are suspicious."""

    enabled: bool = Field(False, description="Ask the judge at all (off by default).")
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."
    )
    api_key: SecretStr | None = Field(None, description="Bearer key for the endpoint.")
    model: str = Field("gpt-4.1-mini", description="Model the judge asks.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Deadline of one judge call.")
    min_confidence: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Misaligned verdicts at or above this confidence raise a finding.",
    )
    severity: Level = Field("warn", description="Severity of a misaligned verdict.")
    max_calls_per_run: int = Field(3, ge=0, description="Judge calls per run at most.")
    max_calls_per_minute: int = Field(30, ge=1, description="Judge calls per minute, all agents.")
    cache_size: int = Field(1024, ge=0, description="Verdicts remembered by (task, action).")
    queue_size: int = Field(64, ge=1, description="Judge requests waiting; more are dropped.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class DriftRules(_Strict):
    """Thresholds of the goal-drift detector (reference §B.2)."""

    enabled: bool = Field(True, description="Run the drift detector for this agent.")
    scope: ScopeRules = Field(default_factory=lambda: ScopeRules.model_validate({}))
    new_tool: bool = Field(True, description="Report a tool not used in the agent's previous runs.")
    new_tool_runs: int = Field(50, ge=1, description="Previous runs a tool is looked up in.")
    new_tool_min_runs: int = Field(
        20, ge=1, description="Runs of history before a new tool is reported (cold start)."
    )
    new_tool_severity: Level = Field(
        "info", description="Severity of a new tool alone (warn when the action is also off task)."
    )
    intent_action: bool = Field(
        True, description="Report side effects in a task that only asks to find/read/answer."
    )
    intent_action_severity: Level = Field("warn", description="Severity of intent_action.")
    routine_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A side-effecting tool used in at least this share of the agent's read-only "
        "tasks is routine for it (a support bot answering by sending a reply).",
    )
    off_task: bool = Field(True, description="Report recent steps unrelated to the task.")
    scorer: Literal["lexical", "embedding"] = Field(
        "lexical",
        description="lexical (TF-IDF over the agent's history) or embedding (semantic extra).",
    )
    off_task_quantile: float = Field(
        0.05, gt=0, lt=0.5, description="A step is off task below this quantile of its history."
    )
    off_task_margin: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A step is off task only below this fraction of its quantile (clearly unrelated).",
    )
    off_task_floor: float = Field(
        0.05, ge=0, le=1, description="Quantiles below this carry no information and are skipped."
    )
    off_task_window: int = Field(3, ge=1, le=20, description="Recent scored steps looked at.")
    off_task_min_steps: int = Field(
        2, ge=1, le=20, description="Off-task steps within the window that raise a finding."
    )
    off_task_min_samples: int = Field(
        30, ge=5, description="Scores of history needed before a tool's quantile is trusted."
    )
    off_task_severity: Level = Field("warn", description="Severity of off_task.")
    run_idle_s: float = Field(
        120.0,
        gt=0,
        description="A run idle this long is over and is learned from (if it raised nothing).",
    )
    history_runs: int = Field(
        500, ge=0, description="Latest runs per agent learned from the store at start."
    )
    judge: JudgeRules = Field(default_factory=lambda: JudgeRules.model_validate({}))


class ContextRules(_Strict):
    """Thresholds of the unusual-context detector (reference §B.4) and its rules files."""

    enabled: bool = Field(True, description="Run the context detector for this agent.")
    min_values_range: int = Field(
        200,
        ge=1,
        description="Values seen before a number's range is checked (observe-only before).",
    )
    min_values_sign: int = Field(
        30, ge=1, description="Values seen before a sign/zero flip or type change is reported."
    )
    min_values_category: int = Field(
        50, ge=1, description="Values seen before an unseen category is reported."
    )
    max_categories: int = Field(
        50, ge=1, description="A field with more distinct values than this is not categorical."
    )
    min_values_shape: int = Field(
        30, ge=1, description="Values seen before an unseen shape is reported."
    )
    max_shapes: int = Field(
        10, ge=1, description="A field with more shapes than this is free-form."
    )
    max_new_rate: float = Field(
        0.01, gt=0, lt=1, description="Categories/shapes count only when new values are this rare."
    )
    range_margin: float = Field(
        0.5, ge=0, description="Out of range: beyond Q(0.001)/Q(0.999) by this × their spread."
    )
    range_severity: Level = "warn"
    sign_severity: Level = "pause"
    zero_severity: Level = "warn"
    category_severity: Level = "warn"
    category_high_risk_severity: Level = Field(
        "pause", description="Unseen category in a call of class pay/delete/send."
    )
    shape_severity: Level = "warn"
    type_severity: Level = "warn"
    empty_then_destructive: bool = Field(
        True, description="Report a write/delete/send/pay after an empty or failed look-up."
    )
    empty_then_destructive_severity: Level = "pause"
    empty_lookback_steps: int = Field(
        3, ge=1, le=20, description="Tool calls after the empty look-up that still count."
    )
    empty_routine_runs: int = Field(
        2,
        ge=1,
        description="A look-up → action pair after an empty result seen in this many normal "
        "runs is routine (a 'not found' reply): not reported.",
    )
    fan_out_factor: float = Field(
        2.0, gt=1, description="Fan-out fires above the largest value seen × this factor."
    )
    fan_out_min_recipients: int = Field(
        5, ge=1, description="Recipient counts at or below this never count as fan-out."
    )
    fan_out_min_run_calls: int = Field(
        10,
        ge=1,
        description="Side-effecting calls per run at or below this never count as fan-out.",
    )
    fan_out_min_history: int = Field(
        20, ge=1, description="Calls (or runs) of history before fan-out is judged."
    )
    fan_out_severity: Level = "pause"
    ungrounded_figures: bool = Field(
        True,
        description="Report amounts in side-effecting calls that no tool result or task contains.",
    )
    ungrounded_severity: Level = "pause"
    recipient_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RECIPIENT_KEYS),
        description="Argument keys holding recipients (lists or comma-separated strings).",
    )
    money_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MONEY_KEYS),
        description="Argument keys holding amounts or prices.",
    )
    tool_classes: dict[str, ToolClass] = Field(
        default_factory=dict,
        description="Per tool: its action class when its name does not say (drift uses it too).",
    )
    rules_files: list[Path] = Field(
        default_factory=list,
        description="Extra YAML rules files; a rule id replaces a shipped one.",
    )
    disabled_rules: list[str] = Field(
        default_factory=list, description="Ids of declarative rules that are switched off."
    )
    shipped_rules: bool = Field(True, description="Load detectors/rules/context_rules.yaml.")

"""One normalizer for the three GenAI attribute conventions: every GenAI span becomes one `Step`.

`normalize_span` reads OTel GenAI (current and pre-1.37 names), OpenInference and
OpenLLMetry/Traceloop (every era) from one span's attributes and returns a
`watchdog.model.Step`, or None for spans with no GenAI attribute (plain HTTP, DB, ...).
Conventions are resolved per attribute, not per span: for each concept the first key
present in the order of the reference table (§5 of `otlp-genai-slack.md`) wins, so
mixed spans (OpenLLMetry sends `gen_ai.*`, `llm.*` and `traceloop.*` together) work.

Decisions (the lead relies on these):

* **Kind** comes from attributes, never span names; the first of `gen_ai.operation.name`,
  `openinference.span.kind`, `traceloop.span.kind`, `llm.request.type` whose value is
  recognized decides (an unrecognized value falls through to the next key):

  - llm: `chat`, `text_completion`, `generate_content`, `completion`, `embeddings`,
    `llm_request`; OpenInference `LLM`, `EMBEDDING`; `llm.request.type` `chat`,
    `completion`, `embedding`, `unknown`. Embeddings are priced model calls, so "llm".
  - tool: `execute_tool`; OpenInference `TOOL`; Traceloop `tool`.
  - agent: `invoke_agent`, `create_agent`, `invoke_workflow`; OpenInference `AGENT`;
    Traceloop `agent` and `workflow`. A workflow is the run of an agent (Traceloop's
    `@workflow` is the top-level entry point), so it is an agent-level step.
  - retrieval: `retrieval`, `vector_db_retrieve`, `search_memory`; OpenInference
    `RETRIEVER`, `RERANKER`; `llm.request.type` `rerank`.
  - other: everything else, notably OpenInference `CHAIN` and Traceloop `task` (glue
    inside an agent), `plan`, memory writes, `GUARDRAIL`, `EVALUATOR`, custom values.

  With no recognized kind value: model or token attributes → llm (pre-1.27 OTel and
  ≤0.16 OpenLLMetry LLM spans carry no operation name); else a tool name → tool; else
  an agent name → agent; else other. `operation` is the raw value of the first kind key
  present.
* **Tokens** are stored as reported on every kind, but only llm steps are priced; a
  framework span may carry its children's totals, so sum tokens and spend over
  `kind = 'llm'` only. Counts are normalized to the OTel rule (cache ⊂ input,
  reasoning ⊂ output): when `cache_read + cache_write > input` the emitter used the
  exclusive convention and the cache counts are added to `input_tokens`; when
  `reasoning > output` reasoning is added to `output_tokens`.
* **Cost**: llm steps only. An emitter figure (`llm.cost.total`, `gen_ai.usage.cost`)
  wins with `price_source="emitter"`; else the `Pricer` ("override", "genai-prices",
  "unpriced" with cost None). Other kinds: cost None, `price_source="none"`.
* **Model** is the response model when present (it is what was billed).
* **Tool fields** are filled on tool steps only: name, call id, arguments and result.
  OpenInference arguments are `input.value` (not `tool.parameters`, the schema);
  Traceloop's are `traceloop.entity.input`, kept as sent (`{"args": [...], "kwargs": {...}}`).
  Structured values are stored as compact JSON, strings as given.
* **Text**: `user_message` is the last user message of the step's input and
  `user_turns` the number of user messages in it (None when the input is not a message
  list, so a person typing the same words again is still a new message); for
  OpenInference AGENT/CHAIN spans `input.value` and for Traceloop workflow/agent spans
  `traceloop.entity.input`. `output_text` is the text of the first output message
  (choice 0); when it has no text but requests tool calls, it holds one `name(arguments)`
  line per call, so loop detection sees the requested calls. `tool_name` stays None on
  llm steps. Message content sent as log events (`/v1/logs`, e.g. openai-v2's default
  mode) is not seen here; pre-1.27 span events `gen_ai.content.prompt`/`.completion` are.
* Every text field (`user_message`, `output_text`, `task`, `tool_args`, `tool_result`)
  is cut to 8 KiB of UTF-8, so truncated JSON may not parse.
* **Errors**: `is_error` when status is ERROR (2) or `error.type` is set; `error_type`
  is `error.type`, else (on error spans) the first `exception` event's `exception.type`.
* **Identity**: session = `gen_ai.conversation.id` → `session.id` →
  `traceloop.association.properties.session_id` → trace id. Agent = `gen_ai.agent.name`
  → `gen_ai.agent.id` → `agent.name` → `traceloop.entity.name` on Traceloop agent spans
  → resource `service.name`. service_name = resource `service.name` or "unknown_service".
  Identity attributes are read from the span only; children of an agent span that do
  not repeat the agent name fall back to `service.name`.

Speed (`benchmarks/normalize_micro.py`): about 10 µs a GenAI span and 1 µs a plain
span on one core, of which building the frozen `Step` is about 4 µs. Which keys of the
table a span has is worked out once per attribute key set (`_Plan`), so a span reads
only the keys it has; message code runs only when a content key is present; flattened
keys (`llm.input_messages.N...`) are walked only when index 0 exists; and the last user
message of a JSON history is found by searching backwards instead of parsing the whole
history (agents resend it on every call, so it grows with the session).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from watchdog.model import Step, StepKind
from watchdog.pricing import Pricer, canonical_provider

# normalize_span builds a Step positionally, in this order; reordering Step's fields must
# fail here rather than shuffle columns.
_STEP_ORDER: Final = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time_ns",
    "end_time_ns",
    "service_name",
    "agent_name",
    "session_id",
    "kind",
    "operation",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "price_source",
    "tool_name",
    "tool_call_id",
    "tool_args",
    "tool_result",
    "is_error",
    "error_type",
    "user_message",
    "output_text",
    "task",
    "span_name",
    "user_turns",
)
assert tuple(f.name for f in dataclasses.fields(Step)) == _STEP_ORDER, "Step fields moved"

__all__ = ["MAX_TEXT_BYTES", "normalize_span"]

MAX_TEXT_BYTES: Final = 8 * 1024

_STATUS_ERROR: Final = 2

# --- kind tables (keys lower-case; values looked up as sent, then lower-cased) ---------

_OTEL_OPERATIONS: Final[dict[str, StepKind]] = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "embeddings": "llm",
    "embedding": "llm",
    "llm_request": "llm",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "invoke_workflow": "agent",
    "retrieval": "retrieval",
    "vector_db_retrieve": "retrieval",
    "search_memory": "retrieval",
}
_OPENINFERENCE_KINDS: Final[dict[str, StepKind]] = {
    "llm": "llm",
    "embedding": "llm",
    "tool": "tool",
    "agent": "agent",
    "retriever": "retrieval",
    "reranker": "retrieval",
    "chain": "other",
    "guardrail": "other",
    "evaluator": "other",
    "prompt": "other",
}
_TRACELOOP_KINDS: Final[dict[str, StepKind]] = {
    "workflow": "agent",
    "agent": "agent",
    "tool": "tool",
    "task": "other",
}
_LLM_REQUEST_TYPES: Final[dict[str, StepKind]] = {
    "chat": "llm",
    "completion": "llm",
    "embedding": "llm",
    "unknown": "llm",
    "rerank": "retrieval",
}
_KIND_KEYS: Final[tuple[tuple[str, dict[str, StepKind]], ...]] = (
    ("gen_ai.operation.name", _OTEL_OPERATIONS),
    ("openinference.span.kind", _OPENINFERENCE_KINDS),
    ("traceloop.span.kind", _TRACELOOP_KINDS),
    ("llm.request.type", _LLM_REQUEST_TYPES),
)
_KIND_TABLES: Final[dict[str, dict[str, StepKind]]] = dict(_KIND_KEYS)

# A span with none of the kind keys is still a step when any key has one of these prefixes.
_GENAI_PREFIXES: Final = ("gen_ai.", "llm.", "openinference.", "traceloop.", "watchdog.")

# --- attribute keys, in resolution order ------------------------------------------------

_PROVIDER_KEYS: Final = (
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
    "llm.vendor",
)
_MODEL_KEYS: Final = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model_name",
    "llm.model_name",
    "llm.request.model_name",
    "llm.response.model",
    "llm.request.model",
    "embedding.model_name",
)
_INPUT_KEYS: Final = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
)
_OUTPUT_KEYS: Final = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
_CACHE_READ_KEYS: Final = (
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.cache_read_input_tokens",
)
_CACHE_WRITE_KEYS: Final = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.cache_creation_input_tokens",
)
_REASONING_KEYS: Final = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
)
_COST_KEYS: Final = ("llm.cost.total", "gen_ai.usage.cost")
_SESSION_KEYS: Final = (
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
)
_AGENT_KEYS: Final = ("gen_ai.agent.name", "gen_ai.agent.id", "agent.name")
_TOOL_NAME_KEYS: Final = ("gen_ai.tool.name", "tool.name")
_TOOL_CALL_ID_KEYS: Final = ("gen_ai.tool.call.id", "tool.id")
_TOOL_ARGS_KEYS: Final = ("gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input")
_TOOL_RESULT_KEYS: Final = ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
# Keys that can carry a step's input or output text; spans without any (content capture
# off, the production default of OTel instrumentations) skip the message code entirely.
_INPUT_TEXT_KEYS: Final = (
    "gen_ai.input.messages",
    "gen_ai.prompt",
    "llm.input_messages.0.message.role",
    "gen_ai.prompt.0.role",
    "llm.prompts.0.role",
    "input.value",
    "traceloop.entity.input",
)
_OUTPUT_TEXT_KEYS: Final = (
    "gen_ai.output.messages",
    "gen_ai.completion",
    "llm.output_messages.0.message.role",
    "llm.output_messages.0.message.content",
    "gen_ai.completion.0.role",
    "gen_ai.completion.0.content",
    "llm.completions.0.content",
    "output.value",
    "traceloop.entity.output",
)


class _IndexedKeys:
    """`template.format(i)` for i = 0, 1, ..., built once so scans do dict lookups only."""

    __slots__ = ("_keys", "_template")

    def __init__(self, template: str, prebuilt: int = 64) -> None:
        self._template = template
        self._keys = [template.format(i) for i in range(prebuilt)]

    def __getitem__(self, i: int) -> str:
        if i < len(self._keys):
            return self._keys[i]
        return self._template.format(i)


_OI_IN_ROLE: Final = _IndexedKeys("llm.input_messages.{}.message.role")
_OI_IN_CONTENT: Final = _IndexedKeys("llm.input_messages.{}.message.content")
_OI_IN_CONTENTS: Final = "llm.input_messages.{}.message.contents.{}.message_content.{}"
_OI_OUT_CONTENT: Final = "llm.output_messages.0.message.content"
_OI_OUT_CONTENTS: Final = "llm.output_messages.0.message.contents.{}.message_content.{}"
_OI_OUT_TOOL_CALLS: Final = "llm.output_messages.0.message.tool_calls.{}.tool_call.function.{}"
_TL_PROMPT_ROLE: Final = _IndexedKeys("gen_ai.prompt.{}.role")
_TL_PROMPT_CONTENT: Final = _IndexedKeys("gen_ai.prompt.{}.content")
_TL_COMPLETION_CONTENT: Final = "gen_ai.completion.0.content"
_TL_COMPLETION_TOOL_CALLS: Final = "gen_ai.completion.0.tool_calls.{}.{}"
_OLD_PROMPT_ROLE: Final = _IndexedKeys("llm.prompts.{}.role")
_OLD_PROMPT_CONTENT: Final = _IndexedKeys("llm.prompts.{}.content")
_OLD_COMPLETION_CONTENT: Final = "llm.completions.0.content"

_JSON_DECODER: Final = json.JSONDecoder()
_WS: Final = " \t\r\n"


class _Plan:
    """For one attribute key set: which of each concept's keys are present, in table order.

    Spans from one instrumentation code path carry the same keys, so the plan is built
    once per key set and each span then reads only keys it has, instead of probing the
    ~60 keys of the table. Values are still read per span, so a blank or unreadable value
    falls through to the next present key.
    """

    __slots__ = (
        "agent",
        "cache_read",
        "cache_write",
        "cost",
        "error_type",
        "input",
        "input_text",
        "is_step",
        "kind_evidence",
        "kind_keys",
        "model",
        "output",
        "output_text",
        "provider",
        "reasoning",
        "session",
        "task",
        "tool_args",
        "tool_call_id",
        "tool_name",
        "tool_result",
    )

    def __init__(self, keys: Iterable[str]) -> None:
        present = set(keys)

        def having(candidates: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(k for k in candidates if k in present)

        self.kind_keys = having(tuple(k for k, _ in _KIND_KEYS))
        self.provider = having(_PROVIDER_KEYS)
        self.model = having(_MODEL_KEYS)
        self.input = having(_INPUT_KEYS)
        self.output = having(_OUTPUT_KEYS)
        self.cache_read = having(_CACHE_READ_KEYS)
        self.cache_write = having(_CACHE_WRITE_KEYS)
        self.reasoning = having(_REASONING_KEYS)
        self.cost = having(_COST_KEYS)
        self.session = having(_SESSION_KEYS)
        self.agent = having(_AGENT_KEYS)
        self.tool_name = having(_TOOL_NAME_KEYS)
        self.tool_call_id = having(_TOOL_CALL_ID_KEYS)
        self.tool_args = having(_TOOL_ARGS_KEYS)
        self.tool_result = having(_TOOL_RESULT_KEYS)
        self.error_type = having(("error.type",))
        self.task = having(("watchdog.task",))
        self.input_text = bool(having(_INPUT_TEXT_KEYS))
        self.output_text = bool(having(_OUTPUT_TEXT_KEYS))
        # The kind when no kind key has a recognized value: model or tokens → llm
        # (pre-1.27 OTel and ≤0.16 OpenLLMetry LLM spans carry no operation name).
        evidence: StepKind = "other"
        if self.model or self.input or self.output:
            evidence = "llm"
        elif self.tool_name:
            evidence = "tool"
        elif self.agent:
            evidence = "agent"
        self.kind_evidence = evidence
        self.is_step = bool(self.kind_keys) or any(k.startswith(_GENAI_PREFIXES) for k in present)


# Bounded: key sets are emitter-controlled, and a cached key tuple keeps its strings alive.
# Key sets beyond _MAX_PLAN_KEYS are mostly long flattened message lists whose length
# changes on every call, so caching them would only churn; they get a fresh plan.
_PLANS: dict[tuple[str, ...], _Plan] = {}
_MAX_PLANS: Final = 1024
_MAX_PLAN_KEYS: Final = 128


def _plan_for(attrs: Mapping[str, Any]) -> _Plan:
    keys = tuple(attrs)
    plan = _PLANS.get(keys)
    if plan is None:
        plan = _Plan(keys)
        if len(keys) <= _MAX_PLAN_KEYS:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[keys] = plan
    return plan


def normalize_span(
    *,
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    name: str,
    start_ns: int,
    end_ns: int,
    status_code: int,
    status_message: str,
    attrs: Mapping[str, Any],
    resource_attrs: Mapping[str, Any],
    events: Sequence[tuple[str, Mapping[str, Any]]],
    pricer: Pricer,
) -> Step | None:
    """Return the span as a `Step`, or None when it carries no GenAI attribute at all.

    `attrs` values are decoded OTLP values (str, int, float, bool, list, dict, bytes);
    `status_code` is OTLP's (0 unset, 1 ok, 2 error). Never raises on odd attribute
    values: what cannot be read is left None.
    """
    plan = _plan_for(attrs)
    if not plan.is_step:
        return None
    get = attrs.get

    # --- kind ---------------------------------------------------------------------------
    kind: StepKind | None = None
    operation: str | None = None
    for key in plan.kind_keys:
        raw = get(key)
        if raw is None:  # an empty AnyValue
            continue
        if operation is None:
            operation = raw if isinstance(raw, str) else str(raw)
        table = _KIND_TABLES[key]
        found = table.get(raw) if isinstance(raw, str) else None
        if found is None:
            found = table.get(str(raw).strip().lower())
        if found is not None:
            kind = found
            break
    if kind is None:
        kind = plan.kind_evidence

    # --- identity -----------------------------------------------------------------------
    service = resource_attrs.get("service.name")
    service_name = service if isinstance(service, str) and service else "unknown_service"
    session = (_first_str(get, plan.session) if plan.session else None) or trace_id
    agent = _first_str(get, plan.agent) if plan.agent else None
    traceloop_kind = get("traceloop.span.kind") if plan.kind_keys else None
    if agent is None and traceloop_kind == "agent":
        agent = _str_or_none(get("traceloop.entity.name"))

    # --- model and tokens ---------------------------------------------------------------
    provider = canonical_provider(_first_str(get, plan.provider)) if plan.provider else None
    model = _first_str(get, plan.model) if plan.model else None
    input_tokens = _first_int(get, plan.input) if plan.input else None
    output_tokens = _first_int(get, plan.output) if plan.output else None
    cache_read = _first_int(get, plan.cache_read) if plan.cache_read else None
    cache_write = _first_int(get, plan.cache_write) if plan.cache_write else None
    reasoning = _first_int(get, plan.reasoning) if plan.reasoning else None
    if cache_read is not None or cache_write is not None:
        cached = (cache_read or 0) + (cache_write or 0)
        if cached > (input_tokens or 0):
            input_tokens = (input_tokens or 0) + cached
    if reasoning is not None and reasoning > (output_tokens or 0):
        output_tokens = (output_tokens or 0) + reasoning

    cost: float | None = None
    price_source = "none"
    if kind == "llm":
        cost = _first_float(get, plan.cost) if plan.cost else None
        if cost is not None:
            price_source = "emitter"
        else:
            cost, price_source = pricer.price(
                provider=provider,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                reasoning_tokens=reasoning,
                at_ns=start_ns,
            )

    # --- tool fields --------------------------------------------------------------------
    tool_name = tool_call_id = tool_args = tool_result = None
    if kind == "tool":
        tool_name = _first_str(get, plan.tool_name)
        if tool_name is None and traceloop_kind == "tool":
            tool_name = _str_or_none(get("traceloop.entity.name"))
        tool_call_id = _first_str(get, plan.tool_call_id)
        tool_args = _clip(_first_text(get, plan.tool_args))
        tool_result = _clip(_first_text(get, plan.tool_result))

    # --- events: errors and pre-1.27 content events ---------------------------------------
    error_type = _str_or_none(get("error.type")) if plan.error_type else None
    is_error = status_code == _STATUS_ERROR or error_type is not None
    event_prompt: Any = None
    event_completion: Any = None
    for event_name, event_attrs in events:
        if event_name == "exception":
            if is_error and error_type is None:
                error_type = _str_or_none(event_attrs.get("exception.type"))
        elif event_name == "gen_ai.content.prompt":
            event_prompt = event_attrs.get("gen_ai.prompt")
        elif event_name == "gen_ai.content.completion":
            event_completion = event_attrs.get("gen_ai.completion")

    # --- text ---------------------------------------------------------------------------
    user_message: str | None = None
    user_turns: int | None = None
    output_text: str | None = None
    if kind != "tool":
        if plan.input_text or event_prompt is not None:
            user_message, user_turns = _user_message(get, kind, traceloop_kind, event_prompt)
            user_message = _clip(user_message)
        if plan.output_text or event_completion is not None:
            output_text = _clip(_output_text(get, kind, traceloop_kind, event_completion))

    # Positional: keyword arguments cost 1.3 µs more per step (_STEP_ORDER below).
    return Step(
        trace_id,
        span_id,
        parent_span_id,
        start_ns,  # start_time_ns
        end_ns,  # end_time_ns
        service_name,
        agent or service_name,  # agent_name
        session,  # session_id
        kind,
        operation,
        provider,
        model,
        input_tokens,
        output_tokens,
        cache_read,  # cache_read_tokens
        cache_write,  # cache_write_tokens
        reasoning,  # reasoning_tokens
        cost,  # cost_usd
        price_source,
        tool_name,
        tool_call_id,
        tool_args,
        tool_result,
        is_error,
        error_type,
        user_message,
        output_text,
        _clip(_text_or_none(get("watchdog.task"))) if plan.task else None,  # task
        name,  # span_name
        user_turns,
    )


# --- value coercion ---------------------------------------------------------------------


def _first_str(get: Callable[[str], Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = get(key)
        if value.__class__ is str:  # the common case, without a call
            if value:
                return value  # type: ignore[no-any-return]
        elif value is not None:
            text = _str_or_none(value)
            if text is not None:
                return text
    return None


def _first_int(get: Callable[[str], Any], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = get(key)
        if value is not None:
            if value.__class__ is int and value >= 0:  # the common case, without a call
                return value  # type: ignore[no-any-return]
            return _to_int(value)
    return None


def _first_float(get: Callable[[str], Any], keys: Iterable[str]) -> float | None:
    for key in keys:
        value = get(key)
        if value is not None:
            return _to_float(value)
    return None


def _first_text(get: Callable[[str], Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = get(key)
        if value is not None:
            return _text_or_none(value)
    return None


def _str_or_none(value: Any) -> str | None:
    """Read an identifier: strings as sent (blank → None), numbers as text, else None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace") or None
    return None


def _to_int(value: Any) -> int | None:
    """Token counts arrive as int, double or string; negative or unreadable counts are None."""
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str | bytes):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number >= 0 else None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str | bytes):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _text_or_none(value: Any) -> str | None:
    """Text fields: strings as given, structured values as compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _clip(text: str | None) -> str | None:
    """Cut to MAX_TEXT_BYTES of UTF-8 without splitting a character."""
    if text is None or len(text) <= MAX_TEXT_BYTES // 4:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_TEXT_BYTES:
        return text
    return data[:MAX_TEXT_BYTES].decode("utf-8", "ignore")


# --- messages -----------------------------------------------------------------------------


def _user_message(
    get: Callable[[str], Any], kind: StepKind, traceloop_kind: Any, event_prompt: Any
) -> tuple[str | None, int | None]:
    """The last user message's text and how many user messages the input holds.

    The count is None when the input is not a message list (agent/chain `input.value`).
    """
    value = get("gen_ai.input.messages")
    if value is not None:
        return _last_user_text(value)
    value = get("gen_ai.prompt")
    if value is None:
        value = event_prompt
    if value is not None:
        return _last_user_text(value)
    if get("llm.input_messages.0.message.role") is not None:
        return _last_user_flat_openinference(get)
    if get("gen_ai.prompt.0.role") is not None:
        return _last_user_flat(get, _TL_PROMPT_ROLE, _TL_PROMPT_CONTENT)
    if get("llm.prompts.0.role") is not None:
        return _last_user_flat(get, _OLD_PROMPT_ROLE, _OLD_PROMPT_CONTENT)
    if kind in ("agent", "other"):
        if get("openinference.span.kind") is not None:
            return _text_or_none(get("input.value")), None
        if traceloop_kind in ("workflow", "agent"):
            return _text_or_none(get("traceloop.entity.input")), None
    return None, None


def _output_text(
    get: Callable[[str], Any], kind: StepKind, traceloop_kind: Any, event_completion: Any
) -> str | None:
    value = get("gen_ai.output.messages")
    if value is not None:
        return _first_message_text(value)
    value = get("gen_ai.completion")
    if value is None:
        value = event_completion
    if value is not None:
        return _first_message_text(value)
    if get("llm.output_messages.0.message.role") is not None or get(_OI_OUT_CONTENT) is not None:
        text = _str_or_none(get(_OI_OUT_CONTENT)) or _flat_contents(get, _OI_OUT_CONTENTS)
        return text or _flat_tool_calls(get, _OI_OUT_TOOL_CALLS)
    if get("gen_ai.completion.0.role") is not None or get(_TL_COMPLETION_CONTENT) is not None:
        text = _str_or_none(get(_TL_COMPLETION_CONTENT))
        return text or _flat_tool_calls(get, _TL_COMPLETION_TOOL_CALLS)
    value = get(_OLD_COMPLETION_CONTENT)
    if value is not None:
        return _text_or_none(value)
    if kind in ("agent", "other"):
        if get("openinference.span.kind") is not None:
            return _text_or_none(get("output.value"))
        if traceloop_kind in ("workflow", "agent"):
            return _text_or_none(get("traceloop.entity.output"))
    return None


def _last_user_text(value: Any) -> tuple[str | None, int | None]:
    """The last `role == "user"` message's text and the number of user messages.

    `value` is a message list as JSON text or decoded; the count is None when it is not
    one.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        found = _last_user_message_in_json(value)
        if found is not None:
            turns = _user_count_in_json(value)
            if turns is not None:
                return _message_text(found), turns
        try:
            value = json.loads(value)
        except ValueError:
            return None, None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None, None
    last: Mapping[str, Any] | None = None
    turns = 0
    for message in value:
        if isinstance(message, dict) and message.get("role") == "user":
            turns += 1
            last = message
    return (_message_text(last) if last is not None else None), turns


def _last_user_message_in_json(text: str) -> dict[str, Any] | None:
    """Find the last user message of a JSON message array without parsing all of it.

    Histories are resent on every call and grow with the session, so a full parse would
    cost more than everything else the daemon does per span. Search backwards for
    `"role": "user"` (as `json.dumps` spells it, with or without the space) opening an
    object that is an array element (preceded by `[` or `,`) and decode just that
    object. None when the quick path does not apply (another spelling, or `role` not the
    object's first key); the caller then parses the whole text.
    """
    needle = _user_needle(text)
    if needle is None:
        return None
    end = len(text)
    while True:
        pos = text.rfind(needle, 0, end)
        if pos < 0:
            return None
        end = pos
        start = _element_start(text, pos)
        if start is None:
            return None  # role is not the first key: let the caller parse everything
        if start < 0:
            continue  # a nested object such as tool-call arguments
        try:
            message, _ = _JSON_DECODER.raw_decode(text, start)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None


def _user_needle(text: str) -> str | None:
    """`"role": "user"` as the serializer of `text` spells it (None: no role key at all)."""
    first = text.find('"role"')
    if first < 0:
        return None
    # One serializer wrote the whole array: learn its spelling from the first message.
    return '"role": "user"' if text.startswith('"role": ', first) else '"role":"user"'


def _element_start(text: str, pos: int) -> int | None:
    """Where the object whose first key is at `pos` opens, if it is an array element.

    None when the key at `pos` is not its object's first key (the quick paths do not
    apply); -1 when the object is not an array element (a nested object).
    """
    start = pos - 1
    while start >= 0 and text[start] in _WS:
        start -= 1
    if start < 0 or text[start] != "{":
        return None
    before = start - 1
    while before >= 0 and text[before] in _WS:
        before -= 1
    if before < 0 or text[before] not in "[,":
        return -1
    return start


def _user_count_in_json(text: str) -> int | None:
    """How many array elements of a JSON message array are user messages, without parsing.

    Same rules as `_last_user_message_in_json` (None when they do not apply). The common
    layouts (`json.dumps`, default or compact) are settled by three C-speed counts; only
    other layouts or nested `role: user` objects are checked occurrence by occurrence.
    """
    needle = _user_needle(text)
    if needle is None:
        return 0
    total = text.count(needle)
    if total == 0:
        return 0
    sep = ", {" if needle[7] == " " else ",{"  # json.dumps pairs ", " with ": "
    if text.count("[{" + needle) + text.count(sep + needle) == total:
        return total
    turns = 0
    end = len(text)
    while (pos := text.rfind(needle, 0, end)) >= 0:
        end = pos
        start = _element_start(text, pos)
        if start is None:
            return None
        turns += start >= 0
    return turns


def _first_message_text(value: Any) -> str | None:
    """Text of the first message (choice 0) of an output list; tool calls when it has no text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value or None  # some emitters send the bare completion text
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, dict):
        return None
    return _message_text(value) or _message_tool_calls(value)


def _message_text(message: Mapping[str, Any]) -> str | None:
    """Join the text parts of one message in any of the shapes seen in the wild.

    OTel `parts: [{type: text, content}]`; OpenAI-style `content` string or list of
    `{type: text, text}`; deprecated `gen_ai.prompt` messages `{role, content}`.
    """
    texts: list[str] = []
    parts = message.get("parts")
    if parts.__class__ is list:
        texts.extend(_part_texts(parts, "content", "text"))
    content = message.get("content")
    if content.__class__ is str:
        if content:
            texts.append(content)
    elif content.__class__ is list:
        texts.extend(_part_texts(content, "text", "content"))
    if len(texts) == 1:
        return texts[0]
    return "\n".join(texts) or None


def _part_texts(parts: list[Any], key: str, other_key: str) -> Iterator[str]:
    """Yield the non-empty text of each text part (a part without a type is text)."""
    for part in parts:
        if part.__class__ is str:
            if part:
                yield part
        elif part.__class__ is dict and part.get("type", "text") == "text":
            text = part.get(key)
            if text is None:
                text = part.get(other_key)
            if text and text.__class__ is str:
                yield text


def _message_tool_calls(message: Mapping[str, Any]) -> str | None:
    """List a message's requested tool calls as `name(arguments)` lines (OTel or OpenAI shape)."""
    lines: list[str] = []
    parts = message.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "tool_call":
                lines.append(_call_line(part.get("name"), part.get("arguments")))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if isinstance(call, dict):
                function = call.get("function")
                if isinstance(function, dict):
                    lines.append(_call_line(function.get("name"), function.get("arguments")))
                else:
                    lines.append(_call_line(call.get("name"), call.get("arguments")))
    return "\n".join(lines) or None


def _call_line(name: Any, arguments: Any) -> str:
    return f"{_str_or_none(name) or '?'}({_text_or_none(arguments) or ''})"


def _last_user_flat_openinference(get: Callable[[str], Any]) -> tuple[str | None, int]:
    last_user = -1
    turns = 0
    i = 0
    while True:
        role = get(_OI_IN_ROLE[i])
        if role is None:
            break
        if role == "user":
            last_user = i
            turns += 1
        i += 1
    if last_user < 0:
        return None, 0
    text = _str_or_none(get(_OI_IN_CONTENT[last_user]))
    if text is not None:
        return text, turns
    template = _OI_IN_CONTENTS.replace("{}", str(last_user), 1)
    return _flat_contents(get, template), turns


def _last_user_flat(
    get: Callable[[str], Any], roles: _IndexedKeys, contents: _IndexedKeys
) -> tuple[str | None, int]:
    last_user = -1
    turns = 0
    i = 0
    while True:
        role = get(roles[i])
        if role is None:
            break
        if role == "user":
            last_user = i
            turns += 1
        i += 1
    return (_text_or_none(get(contents[last_user])) if last_user >= 0 else None), turns


def _flat_contents(get: Callable[[str], Any], template: str) -> str | None:
    """Join OpenInference `...contents.{j}.message_content.text` of type text."""
    texts: list[str] = []
    j = 0
    while True:
        kind = get(template.format(j, "type"))
        text = get(template.format(j, "text"))
        if kind is None and text is None:
            break
        if isinstance(text, str) and kind in (None, "text"):
            texts.append(text)
        j += 1
    return "\n".join(texts) or None


def _flat_tool_calls(get: Callable[[str], Any], template: str) -> str | None:
    """`name(arguments)` lines from flattened `...tool_calls.{k}...{name,arguments}` keys."""
    lines: list[str] = []
    k = 0
    while True:
        name = get(template.format(k, "name"))
        if name is None:
            break
        lines.append(_call_line(name, get(template.format(k, "arguments"))))
        k += 1
    return "\n".join(lines) or None

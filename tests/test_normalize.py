"""normalize_span: every era of every convention becomes the same Step."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from collectors.normalize import MAX_TEXT_BYTES, normalize_span
from watchdog.model import Step
from watchdog.pricing import Pricer

TRACE = "0af7651916cd43dd8448eb211c80319c"
START_NS = 1_795_000_000_000_000_000  # 2026-11-18
PRICER = Pricer()


def norm(
    attrs: Mapping[str, Any],
    *,
    resource: Mapping[str, Any] | None = None,
    status_code: int = 0,
    events: Sequence[tuple[str, Mapping[str, Any]]] = (),
    pricer: Pricer = PRICER,
) -> Step | None:
    return normalize_span(
        trace_id=TRACE,
        span_id="b7ad6b7169203331",
        parent_span_id="00f067aa0ba902b7",
        name="some span name that must not matter",
        start_ns=START_NS,
        end_ns=START_NS + 1_500_000_000,
        status_code=status_code,
        status_message="",
        attrs=attrs,
        resource_attrs={"service.name": "svc"} if resource is None else resource,
        events=events,
        pricer=pricer,
    )


def step_of(attrs: Mapping[str, Any], **kwargs: Any) -> Step:
    step = norm(attrs, **kwargs)
    assert step is not None
    return step


def genai(
    model: str, provider: str, inp: int, out: int, cr: int = 0, cw: int = 0, rs: int = 0
) -> float:
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        output_reasoning_tokens=rs,
    )
    return float(calc_price(usage, model, provider_id=provider).total_price)


HISTORY = [
    {"role": "system", "parts": [{"type": "text", "content": "You are a weather agent."}]},
    {"role": "user", "parts": [{"type": "text", "content": "first question"}]},
    {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "get_weather",
                # a nested object that looks like a user message must not be taken
                "arguments": {"role": "user", "content": "not a message"},
            }
        ],
    },
    {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": "sunny"}],
    },
    {"role": "user", "parts": [{"type": "text", "content": "What about Paris?"}]},
    {"role": "assistant", "parts": [{"type": "text", "content": "Let me check."}]},
]

# (id, attributes, expected Step fields). Costs are checked separately below.
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "otel-1.41-chat",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 100,
            "gen_ai.usage.reasoning.output_tokens": 20,
            "gen_ai.conversation.id": "conv-42",
            "gen_ai.agent.name": "weather-agent",
            "gen_ai.input.messages": json.dumps(HISTORY),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Sunny, 21C."}]}]
            ),
        },
        dict(
            kind="llm",
            operation="chat",
            provider="openai",
            model="gpt-4o-2024-08-06",
            input_tokens=1200,
            output_tokens=50,
            cache_read_tokens=1000,
            cache_write_tokens=100,
            reasoning_tokens=20,
            session_id="conv-42",
            agent_name="weather-agent",
            user_message="What about Paris?",
            output_text="Sunny, 21C.",
            price_source="genai-prices",
        ),
    ),
    (
        "otel-genai-repo-cache-write-structured-messages",
        {
            "gen_ai.operation.name": "generate_content",
            "gen_ai.provider.name": "gcp.vertex_ai",
            "gen_ai.request.model": "gemini-2.5-flash",
            "gen_ai.usage.input_tokens": 3000,
            "gen_ai.usage.output_tokens": 400,
            "gen_ai.usage.cache_write.input_tokens": 1000,
            "gen_ai.input.messages": HISTORY,  # structured AnyValue, not a JSON string
            "gen_ai.output.messages": [
                {
                    "role": "assistant",
                    "parts": [
                        {"type": "tool_call", "id": "c9", "name": "search", "arguments": {"q": "x"}}
                    ],
                }
            ],
        },
        dict(
            kind="llm",
            operation="generate_content",
            provider="google",
            model="gemini-2.5-flash",
            input_tokens=3000,
            cache_write_tokens=1000,
            cache_read_tokens=None,
            user_message="What about Paris?",
            output_text='search({"q":"x"})',
            tool_name=None,
        ),
    ),
    (
        "otel-1.27-1.36-system-az",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "az.ai.openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": "1000",
            "gen_ai.usage.output_tokens": 100.0,
        },
        dict(kind="llm", provider="azure", model="gpt-4o", input_tokens=1000, output_tokens=100),
    ),
    (
        "otel-le-1.26-prompt-tokens-no-operation",
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 500,
            "gen_ai.usage.completion_tokens": 25,
            "gen_ai.prompt": json.dumps(
                [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "old style question"},
                ]
            ),
            "gen_ai.completion": json.dumps([{"role": "assistant", "content": "old answer"}]),
        },
        dict(
            kind="llm",
            operation=None,
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=500,
            output_tokens=25,
            user_message="old style question",
            output_text="old answer",
            session_id=TRACE,
            agent_name="svc",
        ),
    ),
    (
        "openinference-llm",
        {
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.provider": "azure",
            "llm.model_name": "gpt-4o-2024-11-20",
            "llm.invocation_parameters": '{"model": "gpt-4o"}',
            "input.value": '{"messages": "raw request body"}',
            "output.value": '{"choices": "raw response body"}',
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "You are helpful.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "first",
            "llm.input_messages.2.message.role": "assistant",
            "llm.input_messages.2.message.content": "ok",
            "llm.input_messages.3.message.role": "user",
            "llm.input_messages.3.message.contents.0.message_content.type": "text",
            "llm.input_messages.3.message.contents.0.message_content.text": "look at this",
            "llm.input_messages.3.message.contents.1.message_content.type": "image",
            "llm.input_messages.3.message.contents.1.message_content.image.image.url": "http://x",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_7",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city":"Oslo"}',
            "llm.token_count.prompt": 1200,
            "llm.token_count.completion": 50,
            "llm.token_count.total": 1250,
            "llm.token_count.prompt_details.cache_read": 1000,
            "llm.token_count.prompt_details.cache_write": 0,
            "llm.token_count.completion_details.reasoning": 10,
            "session.id": "oi-session",
        },
        dict(
            kind="llm",
            operation="LLM",
            provider="azure",
            model="gpt-4o-2024-11-20",
            input_tokens=1200,
            output_tokens=50,
            cache_read_tokens=1000,
            cache_write_tokens=0,
            reasoning_tokens=10,
            session_id="oi-session",
            user_message="look at this",
            output_text='get_weather({"city":"Oslo"})',
            tool_name=None,
        ),
    ),
    (
        "openinference-embedding",
        {
            "openinference.span.kind": "EMBEDDING",
            "llm.system": "openai",
            "embedding.model_name": "text-embedding-3-small",
            "llm.token_count.prompt": 800,
            "llm.token_count.total": 800,
        },
        dict(
            kind="llm",
            operation="EMBEDDING",
            provider="openai",
            model="text-embedding-3-small",
            input_tokens=800,
        ),
    ),
    (
        "openinference-tool",
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "tool.id": "call_7",
            "tool.description": "weather",
            "tool.parameters": '{"type": "object", "properties": {"city": {}}}',
            "input.value": '{"city": "Oslo"}',
            "output.value": "rainy",
            "session.id": "oi-session",
        },
        dict(
            kind="tool",
            operation="TOOL",
            tool_name="get_weather",
            tool_call_id="call_7",
            tool_args='{"city": "Oslo"}',
            tool_result="rainy",
            cost_usd=None,
            price_source="none",
            user_message=None,
        ),
    ),
    (
        "openinference-agent",
        {
            "openinference.span.kind": "AGENT",
            "agent.name": "planner",
            "input.value": "Plan my trip to Oslo",
            "output.value": "Here is your plan",
            "graph.node.id": "planner",
        },
        dict(
            kind="agent",
            agent_name="planner",
            user_message="Plan my trip to Oslo",
            output_text="Here is your plan",
            price_source="none",
        ),
    ),
    (
        "openinference-chain",
        {
            "openinference.span.kind": "CHAIN",
            "input.value": '{"question": "why?"}',
            "output.value": "because",
            "llm.token_count.prompt": 999,  # a roll-up: recorded, never priced
        },
        dict(
            kind="other",
            operation="CHAIN",
            user_message='{"question": "why?"}',
            output_text="because",
            input_tokens=999,
            cost_usd=None,
            price_source="none",
        ),
    ),
    (
        "openinference-retriever",
        {"openinference.span.kind": "RETRIEVER", "input.value": "docs about x"},
        dict(kind="retrieval", operation="RETRIEVER"),
    ),
    (
        "openllmetry-le-0.16",
        {
            "llm.vendor": "OpenAI",
            "llm.request.type": "chat",
            "llm.request.model": "gpt-3.5-turbo",
            "llm.response.model": "gpt-4o-mini-2024-07-18",
            "llm.usage.prompt_tokens": 300,
            "llm.usage.completion_tokens": 30,
            "llm.usage.total_tokens": 330,
            "llm.prompts.0.role": "system",
            "llm.prompts.0.content": "sys",
            "llm.prompts.1.role": "user",
            "llm.prompts.1.content": "ancient question",
            "llm.completions.0.role": "assistant",
            "llm.completions.0.content": "ancient answer",
        },
        dict(
            kind="llm",
            operation="chat",
            provider="openai",
            model="gpt-4o-mini-2024-07-18",
            input_tokens=300,
            output_tokens=30,
            user_message="ancient question",
            output_text="ancient answer",
            price_source="genai-prices",
        ),
    ),
    (
        "openllmetry-0.17-0.47",
        {
            "gen_ai.system": "Anthropic",
            "llm.request.type": "chat",
            "gen_ai.request.model": "claude-3-5-sonnet-20241022",
            "gen_ai.response.model": "claude-3-5-sonnet-20241022",
            "gen_ai.usage.prompt_tokens": "5000",
            "gen_ai.usage.completion_tokens": 200.0,
            "gen_ai.usage.cache_read_input_tokens": 3000,
            "gen_ai.usage.cache_creation_input_tokens": 1000,
            "llm.usage.reasoning_tokens": 50,
            "llm.usage.total_tokens": 5200,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "q1",
            "gen_ai.prompt.1.role": "assistant",
            "gen_ai.prompt.1.content": "a1",
            "gen_ai.prompt.2.role": "user",
            "gen_ai.prompt.2.content": "q2",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_use",
            "gen_ai.completion.0.tool_calls.0.id": "toolu_1",
            "gen_ai.completion.0.tool_calls.0.name": "search",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"q": "y"}',
            "traceloop.association.properties.session_id": "tl-session",
        },
        dict(
            kind="llm",
            operation="chat",
            provider="anthropic",
            model="claude-3-5-sonnet-20241022",
            input_tokens=5000,
            output_tokens=200,
            cache_read_tokens=3000,
            cache_write_tokens=1000,
            reasoning_tokens=50,
            user_message="q2",
            output_text='search({"q": "y"})',
            session_id="tl-session",
        ),
    ),
    (
        "openllmetry-0.48-0.54",
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.cache_read_input_tokens": 1000,
            "llm.usage.total_tokens": 1250,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "weather?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "sunny",
        },
        dict(
            kind="llm",
            provider="openai",
            model="gpt-4o-2024-08-06",
            input_tokens=1200,
            cache_read_tokens=1000,
            user_message="weather?",
            output_text="sunny",
        ),
    ),
    (
        "openllmetry-ge-0.55",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": 3000,
            "gen_ai.usage.output_tokens": 120,
            "gen_ai.usage.total_tokens": 3120,
            "gen_ai.usage.cache_read.input_tokens": 2000,
            "gen_ai.usage.cache_creation.input_tokens": 500,
            "gen_ai.usage.reasoning_tokens": 40,
            "gen_ai.input.messages": json.dumps(HISTORY, separators=(",", ":")),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Done."}]}]
            ),
            "gen_ai.tool.definitions": '[{"type": "function", "name": "get_weather"}]',
            "traceloop.association.properties.session_id": "tl-2",
        },
        dict(
            kind="llm",
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            input_tokens=3000,
            output_tokens=120,
            cache_read_tokens=2000,
            cache_write_tokens=500,
            reasoning_tokens=40,
            user_message="What about Paris?",
            output_text="Done.",
            session_id="tl-2",
        ),
    ),
    (
        "traceloop-workflow",
        {
            "traceloop.span.kind": "workflow",
            "traceloop.entity.name": "trip_planner",
            "traceloop.workflow.name": "trip_planner",
            "traceloop.entity.input": '{"args": ["Plan Oslo"], "kwargs": {}}',
            "traceloop.entity.output": '"done"',
            "traceloop.association.properties.session_id": "tl-3",
        },
        dict(
            kind="agent",
            operation="workflow",
            agent_name="svc",  # a workflow name is not an agent name
            user_message='{"args": ["Plan Oslo"], "kwargs": {}}',
            output_text='"done"',
            session_id="tl-3",
        ),
    ),
    (
        "traceloop-agent",
        {
            "traceloop.span.kind": "agent",
            "traceloop.entity.name": "researcher",
            "traceloop.entity.input": '{"args": [], "kwargs": {"topic": "x"}}',
        },
        dict(kind="agent", agent_name="researcher"),
    ),
    (
        "traceloop-task",
        {
            "traceloop.span.kind": "task",
            "traceloop.entity.name": "summarize",
            "traceloop.entity.input": '{"args": [], "kwargs": {}}',
        },
        dict(kind="other", operation="task", user_message=None, agent_name="svc"),
    ),
    (
        "traceloop-tool",
        {
            "traceloop.span.kind": "tool",
            "traceloop.entity.name": "lookup_order",
            "traceloop.entity.path": "support.lookup_order",
            "traceloop.entity.input": '{"args": [], "kwargs": {"order_id": 1234}}',
            "traceloop.entity.output": '"shipped"',
        },
        dict(
            kind="tool",
            tool_name="lookup_order",
            tool_args='{"args": [], "kwargs": {"order_id": 1234}}',
            tool_result='"shipped"',
            tool_call_id=None,
        ),
    ),
    (
        "otel-execute-tool-structured-args",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.arguments": {"city": "Paris", "units": ["C"]},
            "gen_ai.tool.call.result": "sunny",
            "gen_ai.agent.id": "agent-007",
        },
        dict(
            kind="tool",
            operation="execute_tool",
            tool_name="get_weather",
            tool_call_id="call_1",
            tool_args='{"city":"Paris","units":["C"]}',
            tool_result="sunny",
            agent_name="agent-007",
        ),
    ),
    (
        "otel-invoke-agent",
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "Math Tutor",
            "gen_ai.agent.id": "asst_1",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 5000,  # roll-up of children: never priced here
        },
        dict(kind="agent", agent_name="Math Tutor", cost_usd=None, price_source="none"),
    ),
    (
        "otel-invoke-workflow",
        {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "etl"},
        dict(kind="agent", operation="invoke_workflow"),
    ),
    (
        "otel-retrieval",
        {"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb"},
        dict(kind="retrieval"),
    ),
    (
        "otel-memory-op",
        {"gen_ai.operation.name": "create_memory"},
        dict(kind="other", operation="create_memory"),
    ),
    (
        "mixed-conventions",
        {
            # OpenLLMetry 0.5x: gen_ai.*, llm.* and traceloop.* on one span
            "llm.request.type": "chat",
            "gen_ai.system": "MistralAI",
            "gen_ai.request.model": "mistral-large-latest",
            "llm.token_count.prompt": 700,  # OpenInference key for input
            "gen_ai.usage.output_tokens": 70,  # OTel key for output
            "gen_ai.conversation.id": "conv-mixed",
            "session.id": "loses-to-conversation-id",
            "traceloop.association.properties.session_id": "loses-too",
            "agent.name": "oi-agent",
            "traceloop.workflow.name": "wf",
        },
        dict(
            kind="llm",
            provider="mistral",
            model="mistral-large-latest",
            input_tokens=700,
            output_tokens=70,
            session_id="conv-mixed",
            agent_name="oi-agent",
        ),
    ),
    (
        "unrecognized-operation-falls-through",
        {
            "gen_ai.operation.name": "my_custom_op",
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 10,
            "llm.token_count.completion": 1,
        },
        dict(kind="llm", operation="my_custom_op"),
    ),
]


@pytest.mark.parametrize(("attrs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conventions(attrs: dict[str, Any], expected: dict[str, Any]) -> None:
    step = step_of(attrs)
    got = asdict(step)
    for field, value in expected.items():
        assert got[field] == value, field
    assert step.trace_id == TRACE
    assert step.span_id == "b7ad6b7169203331"
    assert step.parent_span_id == "00f067aa0ba902b7"
    assert step.span_name == "some span name that must not matter"
    assert step.service_name == "svc"
    assert step.duration_ms == 1500.0
    if step.kind == "llm":
        assert step.price_source in ("genai-prices", "emitter", "override", "unpriced")
    else:
        assert (step.cost_usd, step.price_source) == (None, "none")
    if step.kind != "tool":
        assert (step.tool_name, step.tool_call_id, step.tool_args, step.tool_result) == (None,) * 4


@pytest.mark.parametrize(
    ("case", "model", "provider", "usage"),
    [
        ("otel-1.41-chat", "gpt-4o", "openai", (1200, 50, 1000, 100, 20)),
        ("otel-1.27-1.36-system-az", "gpt-4o", "azure", (1000, 100)),
        ("otel-le-1.26-prompt-tokens-no-operation", "gpt-4o-mini", "openai", (500, 25)),
        ("openinference-llm", "gpt-4o", "azure", (1200, 50, 1000, 0, 10)),
        ("openinference-embedding", "text-embedding-3-small", "openai", (800, 0)),
        ("openllmetry-le-0.16", "gpt-4o-mini", "openai", (300, 30)),
        (
            "openllmetry-0.17-0.47",
            "claude-3-5-sonnet-20241022",
            "anthropic",
            (5000, 200, 3000, 1000, 50),
        ),
        ("openllmetry-0.48-0.54", "gpt-4o", "openai", (1200, 50, 1000)),
        ("openllmetry-ge-0.55", "claude-sonnet-4-5", "anthropic", (3000, 120, 2000, 500, 40)),
        ("mixed-conventions", "mistral-large-latest", "mistral", (700, 70)),
    ],
)
def test_llm_costs_match_genai_prices(
    case: str, model: str, provider: str, usage: tuple[int, ...]
) -> None:
    attrs = next(c[1] for c in CASES if c[0] == case)
    step = step_of(attrs)
    assert step.price_source == "genai-prices"
    assert step.cost_usd == pytest.approx(genai(model, provider, *usage), rel=1e-9)


# --- non-steps and classification -------------------------------------------------------------


def test_plain_spans_are_not_steps() -> None:
    assert norm({"http.request.method": "GET", "url.full": "https://x", "server.port": 443}) is None
    assert norm({"db.system": "postgresql", "db.statement": "select 1"}) is None
    assert norm({}) is None
    # session.id / input.value alone do not make a GenAI span
    assert norm({"session.id": "s", "input.value": "x"}) is None


def test_any_genai_attribute_makes_a_step() -> None:
    step = step_of({"gen_ai.request.temperature": 0.2, "http.request.method": "POST"})
    assert step.kind == "other" and step.operation is None
    assert step_of({"watchdog.task": "Refund order 42"}).task == "Refund order 42"


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        ({"gen_ai.operation.name": "text_completion"}, "llm"),
        ({"gen_ai.operation.name": "embeddings"}, "llm"),
        ({"gen_ai.operation.name": "create_agent"}, "agent"),
        ({"gen_ai.operation.name": "plan"}, "other"),
        ({"gen_ai.operation.name": "CHAT"}, "llm"),
        ({"openinference.span.kind": "RERANKER"}, "retrieval"),
        ({"openinference.span.kind": "GUARDRAIL"}, "other"),
        ({"openinference.span.kind": "llm"}, "llm"),
        ({"traceloop.span.kind": "unknown"}, "other"),
        ({"llm.request.type": "embedding"}, "llm"),
        ({"llm.request.type": "rerank"}, "retrieval"),
        ({"gen_ai.tool.name": "search"}, "tool"),  # no kind key: tool evidence
        ({"gen_ai.agent.name": "a"}, "agent"),  # no kind key: agent evidence
        ({"llm.model_name": "gpt-4o"}, "llm"),  # no kind key: model evidence
    ],
)
def test_kind_table(attrs: dict[str, Any], kind: str) -> None:
    assert step_of(attrs).kind == kind


# --- identity fallbacks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "session"),
    [
        ({"gen_ai.conversation.id": "c", "session.id": "s"}, "c"),
        ({"session.id": "s", "traceloop.association.properties.session_id": "t"}, "s"),
        ({"traceloop.association.properties.session_id": "t"}, "t"),
        ({"gen_ai.conversation.id": ""}, TRACE),  # blank ids do not count
        ({}, TRACE),
    ],
)
def test_session_fallbacks(attrs: dict[str, Any], session: str) -> None:
    step = step_of({"gen_ai.operation.name": "chat", **attrs})
    assert step.session_id == session


@pytest.mark.parametrize(
    ("attrs", "resource", "agent", "service"),
    [
        ({"gen_ai.agent.name": "n", "gen_ai.agent.id": "i", "agent.name": "o"}, None, "n", "svc"),
        ({"gen_ai.agent.id": "i", "agent.name": "o"}, None, "i", "svc"),
        ({"agent.name": "o"}, None, "o", "svc"),
        ({"traceloop.span.kind": "agent", "traceloop.entity.name": "e"}, None, "e", "svc"),
        ({}, None, "svc", "svc"),
        ({}, {}, "unknown_service", "unknown_service"),
        ({}, {"service.name": ""}, "unknown_service", "unknown_service"),
        ({"gen_ai.agent.id": 7}, None, "7", "svc"),
    ],
)
def test_agent_fallbacks(
    attrs: dict[str, Any], resource: dict[str, Any] | None, agent: str, service: str
) -> None:
    step = step_of({"gen_ai.operation.name": "invoke_agent", **attrs}, resource=resource)
    assert (step.agent_name, step.service_name) == (agent, service)


# --- tokens and cost --------------------------------------------------------------------------


def test_response_model_preferred_and_blank_falls_through() -> None:
    base = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    assert (
        step_of({**base, "gen_ai.response.model": "gpt-4o-2024-11-20"}).model == "gpt-4o-2024-11-20"
    )
    # same key set, blank response model: the request model is used
    assert step_of({**base, "gen_ai.response.model": ""}).model == "gpt-4o"


def test_cache_subset_rule() -> None:
    step = step_of(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 0,
            "gen_ai.usage.cache_read.input_tokens": 500,
        }
    )
    assert step.input_tokens == 1000  # already inclusive: unchanged
    assert step.cost_usd == pytest.approx(0.001875)  # 500 x $2.5 + 500 x $1.25 per MTok


def test_exclusive_cache_convention_is_converted() -> None:
    # Anthropic's raw usage: 100 fresh input tokens beside 1000 read and 200 written.
    step = step_of(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet-20241022",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 200,
        }
    )
    assert (step.input_tokens, step.cache_read_tokens, step.cache_write_tokens) == (1300, 1000, 200)
    assert step.cost_usd == pytest.approx((100 * 3 + 1000 * 0.3 + 200 * 3.75 + 50 * 15) / 1e6)


def test_reasoning_beside_output_is_converted() -> None:
    step = step_of(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.reasoning.output_tokens": 400,
        }
    )
    assert (step.output_tokens, step.reasoning_tokens) == (500, 400)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1200, 1200),
        ("1200", 1200),
        (1200.0, 1200),
        ("12.0", 12),
        ("abc", None),
        (-5, None),
        (True, None),
        ([1], None),
        (b"7", 7),
    ],
)
def test_token_coercion(value: Any, expected: int | None) -> None:
    step = step_of({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": value})
    assert step.input_tokens == expected


@pytest.mark.parametrize(
    ("attrs", "cost"),
    [
        ({"llm.cost.total": 0.5}, 0.5),
        ({"gen_ai.usage.cost": "0.25"}, 0.25),
        ({"llm.cost.total": 0.5, "gen_ai.usage.cost": 9.0}, 0.5),
    ],
)
def test_emitter_cost_wins(attrs: dict[str, Any], cost: float) -> None:
    step = step_of(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 1000,
            "llm.token_count.completion": 100,
            **attrs,
        }
    )
    assert (step.cost_usd, step.price_source) == (cost, "emitter")


def test_emitter_cost_ignored_on_non_llm_steps() -> None:
    step = step_of({"openinference.span.kind": "AGENT", "llm.cost.total": 3.0})
    assert (step.cost_usd, step.price_source) == (None, "none")


def test_unknown_model_is_unpriced_not_free() -> None:
    step = step_of(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "ft:my-secret-model",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
        }
    )
    assert (step.cost_usd, step.price_source) == (None, "unpriced")


def test_override_file_reaches_steps(tmp_path: Any) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("- model: ft:my-secret-model\n  input_mtok: 10\n  output_mtok: 20\n")
    step = step_of(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "ft:my-secret-model",
            "gen_ai.usage.input_tokens": 100_000,
            "gen_ai.usage.output_tokens": 10_000,
        },
        pricer=Pricer(path),
    )
    assert step.price_source == "override"
    assert step.cost_usd == pytest.approx(1.2)


# --- errors -----------------------------------------------------------------------------------


def test_errors() -> None:
    base = {"gen_ai.operation.name": "chat"}
    exception = (
        "exception",
        {"exception.type": "openai.RateLimitError", "exception.message": "429"},
    )
    assert step_of(base).is_error is False
    step = step_of(base, status_code=2, events=[exception])
    assert (step.is_error, step.error_type) == (True, "openai.RateLimitError")
    step = step_of({**base, "error.type": "timeout"}, events=[exception])
    assert (step.is_error, step.error_type) == (True, "timeout")
    step = step_of(base, status_code=2)
    assert (step.is_error, step.error_type) == (True, None)
    # an exception recorded on a span that did not fail was handled
    step = step_of(base, status_code=1, events=[exception])
    assert (step.is_error, step.error_type) == (False, None)


# --- text ---------------------------------------------------------------------------------------


def test_pre_1_27_content_events() -> None:
    events = [
        ("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "from event"}]'}),
        (
            "gen_ai.content.completion",
            {"gen_ai.completion": '[{"role": "assistant", "content": "reply"}]'},
        ),
    ]
    step = step_of({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4"}, events=events)
    assert (step.user_message, step.output_text) == ("from event", "reply")


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        # role not the first key: the quick path gives up and the full parse answers
        ('[{"parts": [{"type": "text", "content": "a"}], "role": "user"}]', "a"),
        # OpenAI-style content lists
        (
            '[{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url"}]}]',
            "x",
        ),
        # several text parts
        (
            '[{"role":"user","parts":[{"type":"text","content":"a"},{"type":"text","content":"b"}]}]',
            "a\nb",
        ),
        # other whitespace than json.dumps writes
        ('[ { "role" : "user" , "content" : "spaced" } ]', "spaced"),
        ('[{"role": "assistant", "content": "no user here"}]', None),
        ("not json at all", None),
        (b'[{"role": "user", "content": "bytes"}]', "bytes"),
        ([{"role": "user", "content": "structured"}], "structured"),
    ],
)
def test_user_message_shapes(messages: Any, expected: str | None) -> None:
    step = step_of({"gen_ai.operation.name": "chat", "gen_ai.input.messages": messages})
    assert step.user_message == expected


def test_user_message_quick_path_agrees_with_full_parse() -> None:
    last = {"role": "user", "parts": [{"type": "text", "content": 'é ünïcode "quoted"'}]}
    history = [*HISTORY, last]
    for text in (
        json.dumps(history),
        json.dumps(history, separators=(",", ":")),
        json.dumps(history, indent=2),
    ):
        step = step_of({"gen_ai.operation.name": "chat", "gen_ai.input.messages": text})
        assert step.user_message == 'é ünïcode "quoted"'


def test_text_fields_are_cut_to_8_kib() -> None:
    long = "é" * 10_000  # 20,000 bytes of UTF-8
    step = step_of(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": [{"role": "user", "content": long}],
            "gen_ai.output.messages": [{"role": "assistant", "content": "x" * 9000}],
            "watchdog.task": long,
        }
    )
    for text in (step.user_message, step.output_text, step.task):
        assert text is not None
        assert len(text.encode()) <= MAX_TEXT_BYTES
        assert len(text.encode()) > MAX_TEXT_BYTES - 4
    assert step.user_message == "é" * (MAX_TEXT_BYTES // 2)
    tool = step_of(
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.result": "y" * 20_000}
    )
    assert tool.tool_result == "y" * MAX_TEXT_BYTES


def test_short_text_is_kept_whole() -> None:
    step = step_of({"gen_ai.operation.name": "chat", "watchdog.task": "Refund order 42"})
    assert step.task == "Refund order 42"


def test_many_flattened_messages() -> None:
    attrs: dict[str, Any] = {"openinference.span.kind": "LLM"}
    for i in range(150):  # beyond the prebuilt key table
        attrs[f"llm.input_messages.{i}.message.role"] = "user" if i % 2 == 0 else "assistant"
        attrs[f"llm.input_messages.{i}.message.content"] = f"m{i}"
    assert step_of(attrs).user_message == "m148"


def test_nested_user_role_after_the_last_user_message_is_skipped() -> None:
    history = [
        {"role": "user", "content": "the real question"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"role": "user"}}}],
        },
    ]
    for separators in ((", ", ": "), (",", ":")):
        text = json.dumps(history, separators=separators)
        step = step_of({"gen_ai.operation.name": "chat", "gen_ai.input.messages": text})
        assert step.user_message == "the real question"


def test_empty_values_are_absent() -> None:
    # an empty AnyValue decodes to None: it neither classifies nor identifies
    step = step_of(
        {
            "gen_ai.operation.name": None,
            "openinference.span.kind": "TOOL",
            "gen_ai.conversation.id": None,
            "session.id": "s1",
            "tool.name": "search",
        }
    )
    assert (step.kind, step.operation, step.session_id, step.tool_name) == (
        "tool",
        "TOOL",
        "s1",
        "search",
    )


def _flat(prefix: str, role_key: str, content_key: str, roles: Sequence[str]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for i, role in enumerate(roles):
        attrs[f"{prefix}.{i}.{role_key}"] = role
        attrs[f"{prefix}.{i}.{content_key}"] = "try again" if role == "user" else f"{role} {i}"
    return attrs


USER_TURNS_ROLES = ("system", "user", "assistant", "tool", "user", "assistant", "user")
# Two user messages (and a nested `role: user` in tool-call arguments), then "try again".
TURNS_HISTORY = [*HISTORY, {"role": "user", "content": "try again"}]


@pytest.mark.parametrize(
    "attrs",
    [
        # OTel GenAI: json.dumps default and compact spellings, and an indented layout
        # (checked occurrence by occurrence); the nested role: user is never counted
        {"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(TURNS_HISTORY)},
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": json.dumps(TURNS_HISTORY, separators=(",", ":")),
        },
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": json.dumps(TURNS_HISTORY, indent=2),
        },
        {  # role not the first key: the full parse
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": json.dumps(
                [{"content": c, "role": "user"} for c in ("x", "y", "try again")]
            ),
        },
        {  # a decoded list
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": [{"role": "user", "content": "try again"}] * 3,
        },
        {  # deprecated gen_ai.prompt JSON
            "gen_ai.operation.name": "chat",
            "gen_ai.prompt": json.dumps([{"role": "user", "content": "try again"}] * 3),
        },
        # OpenInference flattened
        {
            "openinference.span.kind": "LLM",
            **_flat("llm.input_messages", "message.role", "message.content", USER_TURNS_ROLES),
        },
        # OpenLLMetry, current and old prompt keys
        {
            "gen_ai.operation.name": "chat",
            **_flat("gen_ai.prompt", "role", "content", USER_TURNS_ROLES),
        },
        {
            "llm.request.type": "chat",
            **_flat("llm.prompts", "role", "content", USER_TURNS_ROLES),
        },
    ],
)
def test_user_turns_counts_user_messages_in_every_convention(attrs: dict[str, Any]) -> None:
    step = step_of(attrs)
    assert (step.kind, step.user_message, step.user_turns) == ("llm", "try again", 3)


def test_user_turns_is_none_without_a_message_list() -> None:
    # content not captured: no count, so the loop detector cannot mistake it for a turn
    assert step_of({"gen_ai.operation.name": "chat"}).user_turns is None
    # an agent span's input.value is a task, not a message list
    agent = step_of({"openinference.span.kind": "AGENT", "input.value": "Plan my trip"})
    assert (agent.user_message, agent.user_turns) == ("Plan my trip", None)
    # a message list without a user message holds zero user turns
    system = step_of(
        {"gen_ai.operation.name": "chat", "gen_ai.input.messages": '[{"role": "system"}]'}
    )
    assert (system.user_message, system.user_turns) == (None, 0)
    unparsable = step_of({"gen_ai.operation.name": "chat", "gen_ai.input.messages": "nope"})
    assert unparsable.user_turns is None

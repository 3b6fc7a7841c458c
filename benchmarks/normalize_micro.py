"""Micro-benchmark of `collectors.normalize.normalize_span` on one core.

Usage: `.venv/bin/python benchmarks/normalize_micro.py [--seconds 2]`

Prints spans/s for each span shape and for a realistic mix: LLM spans of the three
conventions (~15-25 attributes, content captured as the instrumentations do by
default, a 4 KB JSON history on the Traceloop span), tool spans of each convention and
a plain HTTP span that is not a step; then the steady-state cost of one `Pricer.price`
call next to `genai_prices.calc_price`'s. Attribute dicts are built once; only
normalization (including pricing and building the `Step`) is timed. Each figure is the
best of five runs, since other processes on the machine only ever slow a run down.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from genai_prices import Usage, calc_price

from collectors.normalize import normalize_span
from watchdog.pricing import Pricer

RESOURCE = {"service.name": "support-agent", "telemetry.sdk.language": "python"}

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "parts": [{"type": "text", "content": "You are a support agent. " * 20}]}
]
for turn in range(6):
    HISTORY += [
        {
            "role": "user",
            "parts": [{"type": "text", "content": f"Turn {turn}: where is my order?"}],
        },
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": f"call_{turn}",
                    "name": "lookup_order",
                    "arguments": {"order_id": 1234 + turn},
                }
            ],
        },
        {
            "role": "tool",
            "parts": [
                {"type": "tool_call_response", "id": f"call_{turn}", "response": "shipped " * 30}
            ],
        },
    ]

SHAPES: dict[str, Mapping[str, Any]] = {
    "otel-llm": {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.agent.name": "support",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 1024,
        "server.address": "api.openai.com",
        "server.port": 443,
    },
    "openinference-llm": {
        "openinference.span.kind": "LLM",
        "llm.system": "openai",
        "llm.provider": "openai",
        "llm.model_name": "gpt-4o-2024-08-06",
        "llm.invocation_parameters": '{"model": "gpt-4o", "temperature": 0.2}',
        "input.value": '{"model": "gpt-4o", "messages": [...]}',
        "input.mime_type": "application/json",
        "output.value": '{"id": "chatcmpl-123", "choices": [...]}',
        "output.mime_type": "application/json",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are a support agent.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Where is my order 1234?",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Let me check that for you.",
        "llm.token_count.prompt": 1200,
        "llm.token_count.completion": 50,
        "llm.token_count.total": 1250,
        "llm.token_count.prompt_details.cache_read": 1000,
        "session.id": "sess-1",
    },
    "traceloop-llm-0.55": {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.response.id": "msg_123",
        "gen_ai.is_streaming": False,
        "gen_ai.input.messages": json.dumps(HISTORY),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "It shipped."}]}]
        ),
        "gen_ai.usage.input_tokens": 3000,
        "gen_ai.usage.output_tokens": 120,
        "gen_ai.usage.total_tokens": 3120,
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_creation.input_tokens": 500,
        "traceloop.association.properties.session_id": "sess-2",
        "traceloop.workflow.name": "support",
    },
    "openllmetry-0.30-llm": {
        "gen_ai.system": "OpenAI",
        "llm.request.type": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "You are a support agent.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Where is my order?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Checking.",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.usage.prompt_tokens": "800",
        "gen_ai.usage.completion_tokens": 40.0,
        "llm.usage.total_tokens": 840,
        "llm.is_streaming": False,
    },
    "otel-tool": {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.arguments": '{"order_id":1234}',
        "gen_ai.tool.call.result": '{"status":"shipped"}',
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.agent.name": "support",
    },
    "openinference-tool": {
        "openinference.span.kind": "TOOL",
        "tool.name": "lookup_order",
        "tool.id": "call_1",
        "tool.parameters": '{"type":"object"}',
        "input.value": '{"order_id": 1234}',
        "output.value": "shipped",
        "session.id": "sess-1",
    },
    "traceloop-tool": {
        "traceloop.span.kind": "tool",
        "traceloop.entity.name": "lookup_order",
        "traceloop.entity.path": "support.lookup_order",
        "traceloop.entity.input": '{"args": [], "kwargs": {"order_id": 1234}}',
        "traceloop.entity.output": '"shipped"',
        "traceloop.workflow.name": "support",
    },
    "http-not-a-step": {
        "http.request.method": "GET",
        "url.full": "https://api.example.com/orders/1234",
        "http.response.status_code": 200,
        "server.address": "api.example.com",
        "network.protocol.version": "1.1",
    },
}

# Relative frequency in the mix: roughly one tool call per LLM call, plus some HTTP.
MIX = {
    "otel-llm": 3,
    "openinference-llm": 3,
    "traceloop-llm-0.55": 2,
    "openllmetry-0.30-llm": 1,
    "otel-tool": 3,
    "openinference-tool": 2,
    "traceloop-tool": 2,
    "http-not-a-step": 2,
}


def _runner(pricer: Pricer, attrs: Mapping[str, Any]) -> Callable[[], object]:
    def run() -> object:
        return normalize_span(
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            parent_span_id="00f067aa0ba902b7",
            name="span",
            start_ns=1_795_000_000_000_000_000,
            end_ns=1_795_000_001_000_000_000,
            status_code=0,
            status_message="",
            attrs=attrs,
            resource_attrs=RESOURCE,
            events=(),
            pricer=pricer,
        )

    return run


def _rate(calls: list[Callable[[], object]], seconds: float, repeats: int = 5) -> float:
    """Best spans/s over `repeats` runs: other processes only ever slow a run down."""
    for call in calls:  # warm caches (plans, pricer lookups)
        call()
    best = 0.0
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / repeats
        while True:
            for call in calls:
                call()
            done += len(calls)
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


def main() -> None:
    """Print spans/s per shape and for the mix."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    pricer = Pricer()
    for shape, attrs in SHAPES.items():
        rate = _rate([_runner(pricer, attrs)], args.seconds / 2)
        print(f"{shape:24s} {len(attrs):3d} attrs {rate:12,.0f} spans/s {1e6 / rate:6.2f} µs/span")
    mix = [_runner(pricer, SHAPES[s]) for s, n in MIX.items() for _ in range(n)]
    rate = _rate(mix, args.seconds)
    print(f"{'mix':24s} {len(mix):3d} spans {rate:12,.0f} spans/s {1e6 / rate:6.2f} µs/span")
    print()
    _print_pricing(pricer, args.seconds)


def _print_pricing(pricer: Pricer, seconds: float) -> None:
    """Steady-state Pricer.price per call, against genai_prices.calc_price itself."""
    cases = {
        "gpt-4o (flat)": ("openai", "gpt-4o-2024-08-06"),
        "claude-sonnet-4-5 (tiers)": ("anthropic", "claude-sonnet-4-5"),
        "o3 (dated prices)": ("openai", "o3"),
    }
    for label, (provider, model) in cases.items():

        def call(provider: str = provider, model: str = model) -> object:
            return pricer.price(
                provider=provider,
                model=model,
                input_tokens=1200,
                output_tokens=50,
                cache_read_tokens=1000,
                at_ns=1_795_000_000_000_000_000,
            )

        rate = _rate([call], seconds / 2)
        print(f"Pricer.price {label:28s} {1e6 / rate:8.2f} µs/call")

    def genai() -> object:
        usage = Usage(input_tokens=1200, output_tokens=50, cache_read_tokens=1000)
        return calc_price(usage, "gpt-4o-2024-08-06", provider_id="openai")

    rate = _rate([genai], seconds / 2, repeats=2)
    print(f"genai_prices.calc_price {'gpt-4o':17s} {1e6 / rate:8.2f} µs/call")


if __name__ == "__main__":
    main()

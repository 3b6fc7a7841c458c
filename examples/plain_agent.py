"""A plain Python agent (no framework) that asks watchdog before every step.

Run watchdog (`watchdog run`), then:

    OPENAI_API_KEY=… python examples/plain_agent.py "Tell the customer their order shipped"
    python examples/plain_agent.py --base-url http://127.0.0.1:8000/v1 "…"   # any OpenAI-compatible server

What it shows:

- `Guard(...)` with the agent's name and session, local hard caps that work even when
  watchdog is down (max steps, max cost, wall clock), and risky tools that fail closed.
- `with guard.step(est_cost_usd=…) as step:` around each model call: the estimate is
  reserved against the budget caps before the call, the real cost reported after.
- `@guard.tool(...)` on every tool: checked before it runs; `send_email` is risky, so
  watchdog may hold it for a few seconds in which a person can cancel it
  (`watchdog hold cancel <id>`).
- `AgentHalted` ends the run (killed, or a cap reached); `ActionDenied` refuses one action
  and the model is told so, and the run goes on.
- OpenTelemetry spans (GenAI conventions) for every model call and tool call go to
  watchdog's OTLP endpoint, which is how its detectors see the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

from openai import OpenAI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from watchdog.guard import ActionDenied, AgentHalted, Guard

AGENT = "support-mailer"
# USD per million tokens of the model used below, for the pre-call estimate.
PRICE_IN, PRICE_OUT, MAX_TOKENS = 0.15, 0.60, 400

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Email a customer.",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
                "required": ["to", "body"],
            },
        },
    },
]


def main() -> int:
    """Run the agent loop once under the guard; print how it ended."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", nargs="?", default="Tell customer c-42 that order A-1017 shipped.")
    p.add_argument("--watchdog", default=os.environ.get("WATCHDOG_URL", "http://127.0.0.1:4318"))
    p.add_argument("--base-url", default=None, help="OpenAI-compatible API (default: OpenAI)")
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--session", default=f"conv-{uuid.uuid4().hex[:8]}")
    p.add_argument("--sync-export", action="store_true", help="export each span at once (demos)")
    a = p.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": AGENT}))
    exporter = OTLPSpanExporter(endpoint=f"{a.watchdog}/v1/traces")
    provider.add_span_processor(
        SimpleSpanProcessor(exporter) if a.sync_export else BatchSpanProcessor(exporter)
    )
    tracer = provider.get_tracer("plain-agent")
    client = OpenAI(base_url=a.base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused"))
    guard = Guard(
        a.watchdog,
        agent=AGENT,
        session=a.session,
        risky_tools=["send_*"],  # fail closed on these when watchdog is unreachable
        max_steps=30,
        max_cost_usd=0.50,
        max_wall_s=300,
    )

    def traced_tool(name: str, args: dict[str, Any], result: str) -> None:
        with tracer.start_as_current_span(f"execute_tool {name}") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.call.arguments": json.dumps(args),
                    "gen_ai.tool.call.result": result,
                    "gen_ai.conversation.id": a.session,
                }
            )

    @guard.tool()
    def get_order_status(order_id: str) -> str:
        result = json.dumps({"order_id": order_id, "status": "shipped"})
        traced_tool("get_order_status", {"order_id": order_id}, result)
        return result

    @guard.tool(risky=True)
    def send_email(to: str, body: str) -> str:
        traced_tool("send_email", {"to": to, "body": body}, "sent")
        print(f"  (email to {to}: {body!r})")
        return "sent"

    tools = {"get_order_status": get_order_status, "send_email": send_email}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a support agent. Use the tools."},
        {"role": "user", "content": a.task},
    ]
    outcome = "finished"
    with tracer.start_as_current_span("invoke_agent " + AGENT) as root:
        root.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT,
                             "gen_ai.conversation.id": a.session})  # fmt: skip
        try:
            for _ in range(30):
                prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 3
                estimate = (prompt_tokens * PRICE_IN + MAX_TOKENS * PRICE_OUT) / 1e6
                with (
                    guard.step(tool=None, est_cost_usd=estimate) as step,
                    tracer.start_as_current_span(f"chat {a.model}") as span,
                ):
                    reply = client.chat.completions.create(
                        model=a.model, messages=messages, tools=TOOLS, max_tokens=MAX_TOKENS  # type: ignore[arg-type]
                    )  # fmt: skip
                    usage = reply.usage
                    cost = (usage.prompt_tokens * PRICE_IN + usage.completion_tokens * PRICE_OUT) / 1e6 if usage else 0.0  # fmt: skip
                    step.cost_usd = cost
                    span.set_attributes(
                        {
                            "gen_ai.operation.name": "chat",
                            "gen_ai.provider.name": "openai",
                            "gen_ai.request.model": a.model,
                            "gen_ai.usage.input_tokens": usage.prompt_tokens if usage else 0,
                            "gen_ai.usage.output_tokens": usage.completion_tokens if usage else 0,
                            "gen_ai.usage.cost": cost,
                            "gen_ai.conversation.id": a.session,
                        }
                    )
                msg = reply.choices[0].message
                if not msg.tool_calls:
                    print(f"agent: {msg.content}")
                    break
                messages.append(msg.model_dump(exclude_none=True))
                for call in msg.tool_calls:
                    args = json.loads(call.function.arguments or "{}")
                    try:
                        result = tools[call.function.name](**args)
                    except ActionDenied as err:  # this action only; tell the model, go on
                        print(f"  watchdog denied {call.function.name}: {err.reason}")
                        result = f"DENIED by policy: {err.reason}"
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        except AgentHalted as err:
            outcome = f"halted ({err.source}): {err.reason}"
    print(f"run {outcome}; {guard.steps} steps, ~${guard.spent_usd:.4f}")
    guard.close()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

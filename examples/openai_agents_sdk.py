"""The OpenAI Agents SDK (`pip install openai-agents`) obeying watchdog through its own hooks.

Run watchdog (`watchdog run`), then:

    OPENAI_API_KEY=… python examples/openai_agents_sdk.py "Where is order A-1017?"
    python examples/openai_agents_sdk.py --base-url http://127.0.0.1:8000/v1 "…"

Three integration points, all standard Agents SDK extension hooks:

1. `WatchdogHooks.on_llm_start` (RunHooks): before every model call the guard checks the
   run and reserves the estimated cost; `AgentHalted` propagates and ends `Runner.run`.
2. `watchdog_tool_guardrail` (a tool *input* guardrail, blocking by construction): before
   every tool call the guard checks the tool and its arguments. `ActionDenied` becomes
   `reject_content` (the model is told, the run continues); `AgentHalted` becomes
   `raise_exception` (`ToolInputGuardrailTripwireTriggered` ends the run). A risky tool
   may be held here for a person to cancel.
3. `guard.on_halt`: a kill pushed over watchdog's verdict stream cancels the running task
   at once — mid-step, even while a tool or the model is still working.

The Agents SDK traces to OpenAI by default; this example turns that off and emits
OpenTelemetry spans (GenAI conventions) for tool calls itself, so watchdog's detectors
see the run. (OpenInference's and OpenLLMetry's instrumentations do this for you.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    RunContextWrapper,
    RunHooks,
    Runner,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrailData,
    ToolInputGuardrailTripwireTriggered,
    function_tool,
    set_tracing_disabled,
    tool_input_guardrail,
)
from openai import AsyncOpenAI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from watchdog.guard import ActionDenied, AgentHalted, Guard

AGENT = "order-assistant"
EST_COST_PER_CALL_USD = 0.002
SESSION = os.environ.get("SESSION_ID", f"conv-{uuid.uuid4().hex[:8]}")
guard = Guard(
    os.environ.get("WATCHDOG_URL", "http://127.0.0.1:4318"),
    agent=AGENT,
    session=SESSION,
    risky_tools=["send_*", "refund_*"],
    max_steps=100,
    max_cost_usd=1.0,
)
tracer = trace.get_tracer("openai-agents-example")


class WatchdogHooks(RunHooks[Any]):
    """Check (and reserve budget) before every model call."""

    async def on_llm_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], *_: Any
    ) -> None:
        """Raise AgentHalted (ending the run) unless watchdog allows this model call."""
        await guard.acheck(tool=None, est_cost_usd=EST_COST_PER_CALL_USD)


@tool_input_guardrail
async def watchdog_tool_guardrail(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
    """Ask watchdog before a tool runs: allow, reject this call, or stop the run."""
    name = data.context.tool_name
    try:
        args = json.loads(data.context.tool_arguments or "{}")
    except ValueError:
        args = {"raw": data.context.tool_arguments}
    try:
        await guard.acheck(tool=name, args=args)
    except ActionDenied as err:
        return ToolGuardrailFunctionOutput.reject_content(f"Not allowed: {err.reason}")
    except AgentHalted as err:
        return ToolGuardrailFunctionOutput.raise_exception(output_info={"halted": err.reason})
    return ToolGuardrailFunctionOutput.allow()


def traced(name: str, args: dict[str, Any], result: str) -> str:
    """Record one tool call as an OTel `execute_tool` span (what watchdog's detectors read)."""
    with tracer.start_as_current_span(f"execute_tool {name}") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.arguments": json.dumps(args, sort_keys=True),
                "gen_ai.tool.call.result": result,
                "gen_ai.agent.name": AGENT,
                "gen_ai.conversation.id": SESSION,
            }
        )
    return result


@function_tool(tool_input_guardrails=[watchdog_tool_guardrail])
def get_order_status(order_id: str) -> str:
    """Look up the status of an order."""
    return traced("get_order_status", {"order_id": order_id}, json.dumps({"status": "in transit"}))


@function_tool(tool_input_guardrails=[watchdog_tool_guardrail])
def send_email(to: str, body: str) -> str:
    """Email a customer."""
    return traced("send_email", {"to": to, "body": body}, "sent")


async def run(task: str, model: str, base_url: str | None) -> str:
    """Run the agent once; return how it ended."""
    client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused"))
    agent = Agent(
        name=AGENT,
        instructions="You help customers with their orders. Use the tools.",
        tools=[get_order_status, send_email],
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
    )
    try:
        await guard.acheck()  # a sticky kill stops the run before the first model call
    except AgentHalted as err:
        return f"halted by watchdog before starting: {err.reason}"
    loop = asyncio.get_running_loop()
    runner = asyncio.ensure_future(Runner.run(agent, task, hooks=WatchdogHooks(), max_turns=50))
    # A kill arriving over the verdict stream cancels the run now, not at the next step.
    guard.on_halt(lambda err: loop.call_soon_threadsafe(runner.cancel))
    try:
        result = await runner
    except AgentHalted as err:
        return f"halted by watchdog ({err.source}): {err.reason}"
    except ToolInputGuardrailTripwireTriggered as err:
        return f"halted by watchdog at a tool call: {err.guardrail_result.output.output_info}"
    except asyncio.CancelledError:
        if not guard.halted.is_set():
            raise  # not ours: let it propagate
        return "halted by watchdog: a pushed kill cancelled the run mid-step"
    return f"finished: {result.final_output}"


def main() -> int:
    """Parse arguments, set up OpenTelemetry, run the agent and print how it ended."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", nargs="?", default="Where is order A-1017?")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible API (default: OpenAI)")
    p.add_argument("--model", default="gpt-4o-mini")
    a = p.parse_args()
    set_tracing_disabled(True)  # the SDK's own traces go to OpenAI; watchdog reads OTel
    provider = TracerProvider(resource=Resource.create({"service.name": AGENT}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{guard.url}/v1/traces"))
    )
    trace.set_tracer_provider(provider)
    try:
        outcome = asyncio.run(run(a.task, a.model, a.base_url))
    except KeyboardInterrupt:
        outcome = "interrupted"
    print(f"{AGENT} session {SESSION}: {outcome} ({guard.steps} checks allowed)")
    guard.close()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

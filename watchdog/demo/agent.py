"""One demo agent process: the real `openai` client, OpenInference, the OTel SDK and the guard.

    python -m watchdog.demo.agent --agent email-agent --tag T --url WATCHDOG --llm BASE_URL

It is an ordinary tool-calling agent:

- its model calls go through the `openai` client, instrumented by
  `openinference-instrumentation-openai`; every span goes to watchdog over OTLP/HTTP
  (the real SDK exporter, one export per span, so a step is in watchdog before the next);
- before every model call it reserves the estimated cost (`guard.step`), and before
  every tool call it asks `guard.check(tool, args)`; `AgentHalted` ends the run,
  `ActionDenied` refuses one action (the model is told) or, for a model call, ends it;
- every tool call is an `execute_tool` span with its arguments and result.

It reads phase names on stdin (`normal`, `failure`, `quit`), runs that phase's runs and
reports on stdout, one JSON object per line: `ready`, `run`, `llm`, `tool`, `denied`,
`held`, `end` (how the run ended) and `phase_done`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import openai
from openinference.instrumentation import using_session
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from watchdog.demo.scenarios import (
    PRICE_DB,
    PRICES_PER_MTOK,
    TOOL_DEFS,
    WAITLIST_SIZE,
    AgentSpec,
    RunSpec,
    agent_spec,
)
from watchdog.guard import ActionDenied, AgentHalted, Guard, HeldAction

_MAX_TURNS = 30
_MAX_TOKENS = 300


def emit(event: str, **fields: Any) -> None:
    """Report one event to the orchestrator (one JSON line on stdout)."""
    print(json.dumps({"ev": event, **fields}, default=str), flush=True)


def report_held(held: HeldAction) -> None:
    """Report a held action (and the findings behind it) as soon as it is held.

    The check's answer carries the detectors' findings; the decision that ends the wait
    does not, so they are reported here, while a person can still cancel.
    """
    emit(
        "held",
        hold_id=held.hold_id,
        reason=held.reason,
        findings=held.answer.get("findings") or [],
    )


class ToolFailed(Exception):
    """A tool of the simulated world failed (the span records the error)."""


def run_tool(name: str, args: Mapping[str, Any]) -> Any:
    """The simulated world the demo agents act on."""
    if name == "search_docs":
        return {"matches": [{"title": "Plans", "text": f"Documentation on {args.get('query')}."}]}
    if name == "search_web":
        q = str(args.get("query"))
        slug = q.lower().replace(" ", "-")
        return {
            "results": [
                {"title": f"{q}: what changed this year", "url": f"https://news.example/{slug}"},
                {"title": f"A field guide to {q}", "url": f"https://blog.example/{slug}"},
                {"title": f"{q} in practice", "url": f"https://journal.example/{slug}"},
            ]
        }
    if name == "fetch_page":
        return {"url": args.get("url"), "text": f"An article about {args.get('url')}."}
    if name == "update_page":
        return {"ok": True, "page": args.get("page")}
    if name == "publish_page":
        return {"published": True, "page": args.get("page")}
    if name == "lookup_price":
        plan = str(args.get("plan"))
        if plan not in PRICE_DB:
            return {"error": "unknown plan"}
        return {"plan": plan, "price": PRICE_DB[plan], "currency": "USD", "billing": "monthly"}
    if name == "list_customers":
        emails = [f"customer{i:03d}@example.com" for i in range(1, WAITLIST_SIZE + 1)]
        return {"segment": args.get("segment"), "customers": emails}
    if name == "send_email":
        to = args.get("to")
        return {"sent": len(to) if isinstance(to, list) else 1}
    if name == "fetch_invoice":
        raise ToolFailed("billing API did not answer within 10 s")
    if name == "fetch_sources":
        batch = int(args.get("batch") or 0)
        # Each batch is ~2,000 tokens the agent keeps in its context from then on.
        text = " ".join(
            f"source {batch}.{i}: cloud spending grew in every region." for i in range(160)
        )
        return {"batch": batch, "text": text}
    raise ToolFailed(f"unknown tool {name}")


def estimate_usd(model: str, messages: Sequence[Mapping[str, Any]]) -> float:
    """The agent's own pre-call estimate: prompt characters / 4 plus the max output."""
    price_in, price_out = PRICES_PER_MTOK.get(model, (5.0, 15.0))
    chars = sum(len(json.dumps(m.get("content") or "")) + 16 for m in messages)
    return (chars / 4 * price_in + _MAX_TOKENS * price_out) / 1e6


class Agent:
    """One agent process: tracer, instrumented client factory and the run loop."""

    def __init__(self, spec: AgentSpec, url: str, llm_url: str) -> None:
        self.spec = spec
        self.url = url
        self.llm_url = llm_url
        # service.name is the agent's name: the spans of the instrumented client carry no
        # agent attribute, and watchdog falls back to service.name.
        self.provider = TracerProvider(resource=Resource.create({"service.name": spec.name}))
        # One export per span: a step is committed in watchdog before the next one starts.
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=30))
        )
        OpenAIInstrumentor().instrument(tracer_provider=self.provider)  # type: ignore[no-untyped-call]
        self.tracer = self.provider.get_tracer("watchdog-demo")

    def close(self) -> None:
        """Flush and stop the exporter."""
        self.provider.shutdown()

    def run(self, run: RunSpec) -> None:
        """Run one task to its end under the guard; report every step."""
        spec = self.spec
        guard = Guard(
            self.url,
            agent=spec.name,
            session=run.session,
            timeout_s=10.0,
            pause_max_wait_s=spec.pause_max_wait_s,
            hold_max_wait_s=60.0,
            max_steps=200,
        )
        guard.on_hold(report_held)
        client = openai.OpenAI(
            base_url=self.llm_url, api_key=run.api_key, max_retries=0, timeout=30.0
        )
        tools = [TOOL_DEFS[t] for t in spec.tools]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": spec.system},
            {"role": "user", "content": run.task},
        ]
        calls, spent, tool_calls, sent = 0, 0.0, 0, 0
        outcome: dict[str, Any] = {"outcome": "finished"}
        with (
            using_session(run.session),
            self.tracer.start_as_current_span(f"invoke_agent {spec.name}") as root,
        ):
            root.set_attributes(
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": spec.name,
                    "gen_ai.conversation.id": run.session,
                }
            )
            trace_id = format(root.get_span_context().trace_id, "032x")
            emit(
                "run",
                phase=run.phase,
                index=run.index,
                session=run.session,
                trace=trace_id,
                task=run.task,
            )
            try:
                for _ in range(_MAX_TURNS):
                    est = estimate_usd(spec.model, messages)
                    with guard.step(est_cost_usd=est) as step:
                        reply = client.chat.completions.create(
                            model=spec.model,
                            messages=messages,  # type: ignore[arg-type]
                            tools=tools,  # type: ignore[arg-type]
                            max_tokens=_MAX_TOKENS,
                        )
                        usage = reply.usage
                        price_in, price_out = PRICES_PER_MTOK.get(spec.model, (5.0, 15.0))
                        cost = (
                            (usage.prompt_tokens * price_in + usage.completion_tokens * price_out)
                            / 1e6
                            if usage
                            else 0.0
                        )
                        step.cost_usd = cost
                    calls += 1
                    spent += cost
                    emit(
                        "llm",
                        n=calls,
                        usd=round(cost, 4),
                        total_usd=round(spent, 4),
                        prompt_tokens=usage.prompt_tokens if usage else None,
                    )
                    msg = reply.choices[0].message
                    if not msg.tool_calls:
                        outcome["answer"] = msg.content
                        break
                    messages.append(msg.model_dump(exclude_none=True))
                    for call in msg.tool_calls:
                        name = call.function.name  # type: ignore[union-attr]
                        args = json.loads(call.function.arguments or "{}")  # type: ignore[union-attr]
                        tool_calls += 1
                        try:
                            decision = guard.check(tool=name, args=args)
                        except ActionDenied as err:
                            emit("denied", tool=name, reason=err.reason, verdict=err.verdict)
                            result: Any = {"error": f"DENIED by watchdog: {err.reason}"}
                        else:
                            if decision.verdict == "warn":
                                emit("warned", tool=name, reason=decision.reason)
                            result = self._tool_span(name, call.id, args, run)
                            if name == "send_email" and "error" not in result:
                                sent += int(result.get("sent", 0))
                        messages.append(
                            {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                        )
            except AgentHalted as err:
                outcome = {
                    "outcome": "halted",
                    "verdict": err.verdict,
                    "source": err.source,
                    "reason": err.reason,
                }
            except ActionDenied as err:  # a model call refused: the run cannot go on
                budget = err.answer.get("budget") or {}
                outcome = {
                    "outcome": "stopped",
                    "verdict": err.verdict,
                    "reason": err.reason,
                    "budget": budget,
                }
        guard.close()
        emit(
            "end",
            phase=run.phase,
            index=run.index,
            session=run.session,
            trace=trace_id,
            llm_calls=calls,
            tool_calls=tool_calls,
            usd=round(spent, 4),
            emails_sent=sent,
            **outcome,
        )

    def _tool_span(self, name: str, call_id: str, args: Mapping[str, Any], run: RunSpec) -> Any:
        with self.tracer.start_as_current_span(f"execute_tool {name}") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.call.id": call_id,
                    "gen_ai.tool.call.arguments": json.dumps(args),
                    "gen_ai.agent.name": self.spec.name,
                    "gen_ai.conversation.id": run.session,
                }
            )
            try:
                result = run_tool(name, args)
            except ToolFailed as err:
                span.set_attribute("error.type", "ToolFailed")
                span.set_status(Status(StatusCode.ERROR, str(err)))
                emit("tool", tool=name, ok=False, error=str(err))
                return {"error": str(err)}
            span.set_attribute("gen_ai.tool.call.result", json.dumps(result))
        emit("tool", tool=name, ok=True, args=_short(args))
        return result


def _short(args: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        if isinstance(v, list) and len(v) > 3:
            out[k] = f"[{len(v)} items]"
        elif isinstance(v, str) and len(v) > 80:
            out[k] = v[:77] + "..."
        else:
            out[k] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Serve phases read from stdin until `quit` or end of input."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agent", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--url", required=True, help="watchdog's URL")
    p.add_argument("--llm", required=True, help="base URL of the chat-completions server")
    a = p.parse_args(argv)
    started = time.monotonic()
    agent = Agent(agent_spec(a.agent, a.tag), a.url.rstrip("/"), a.llm)
    emit("ready", startup_s=round(time.monotonic() - started, 2))
    try:
        for line in sys.stdin:
            phase = line.strip()
            if phase in ("", "quit"):
                break
            for run in agent.spec.phase(phase):
                agent.run(run)
            emit("phase_done", phase=phase)
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

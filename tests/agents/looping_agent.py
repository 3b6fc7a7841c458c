"""A stuck agent: it asks the guard, then calls the same tool with the same arguments, forever.

    python tests/agents/looping_agent.py --url URL --agent A --session S [--max-steps 200]

Instrumented with the real OpenTelemetry SDK (OTLP/HTTP protobuf, SimpleSpanProcessor):
one `invoke_agent` root span per run and one `execute_tool` span per step, with the
session in `gen_ai.conversation.id`. Before every step it calls `guard.check(...)`.

Prints one JSON line per step it actually executed, `{"step": i, "seq": s}` where `s` is
the verdict sequence number watchdog reported when it allowed the step, then a last line
`{"halted": true|false, "steps": n, "reason", "source", "verdict", "answer_seq"}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from watchdog.guard import AgentHalted, Guard


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--agent", default="support-bot")
    p.add_argument("--session", default="conv-1")
    p.add_argument("--max-steps", type=int, default=200)
    a = p.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": a.agent}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{a.url}/v1/traces"))
    )
    tracer = provider.get_tracer("looping-agent")
    guard = Guard(a.url, agent=a.agent, session=a.session, timeout_s=10.0)
    args = {"order_id": "A-1017"}
    done = 0
    last: dict[str, object] = {"halted": False}
    with tracer.start_as_current_span("invoke_agent support-bot") as root:
        root.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": a.agent,
                "gen_ai.conversation.id": a.session,
            }
        )
        try:
            for i in range(1, a.max_steps + 1):
                decision = guard.check(tool="get_order_status", args=args)
                with tracer.start_as_current_span("execute_tool get_order_status") as span:
                    span.set_attributes(
                        {
                            "gen_ai.operation.name": "execute_tool",
                            "gen_ai.tool.name": "get_order_status",
                            "gen_ai.tool.call.arguments": json.dumps(args),
                            "gen_ai.agent.name": a.agent,
                            "gen_ai.conversation.id": a.session,
                        }
                    )
                done = i
                print(json.dumps({"step": i, "seq": decision.answer.get("seq")}), flush=True)
        except AgentHalted as err:
            last = {
                "halted": True,
                "reason": err.reason,
                "source": err.source,
                "verdict": err.verdict,
                "answer_seq": err.answer.get("seq"),
                "actor": err.answer.get("actor"),
                "alert_id": err.answer.get("alert_id"),
            }
    last["steps"] = done
    print(json.dumps(last), flush=True)
    guard.close()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

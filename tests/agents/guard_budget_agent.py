"""An agent that fires N concurrent guard checks at one budget cap, then pays real costs.

    python tests/agents/guard_budget_agent.py --url URL --agent A --session S \
        --n 100 --est 0.01 --real-cost 0.004 --rounds 2

Each round: N threads released together by a barrier each call `guard.check(tool="llm",
est_cost_usd=est)`; every allowed call then "happens": the real OTel SDK exports one
`chat` span per allowed call carrying `gen_ai.usage.cost = real-cost`, which settles the
reservation. Prints one JSON line per round: {"round", "allowed", "denied", "caps"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from watchdog.guard import ActionDenied, Guard


def burst(guard: Guard, n: int, est: float) -> tuple[list[int], list[str]]:
    """Release `n` threads together on `guard.check`; return (allowed ids, refused caps)."""
    barrier = threading.Barrier(n)
    lock = threading.Lock()
    allowed: list[int] = []
    caps: list[str] = []

    def one(i: int) -> None:
        barrier.wait()
        try:
            guard.check(tool="llm", est_cost_usd=est)
        except ActionDenied as err:
            with lock:
                caps.append(str((err.answer.get("budget") or {}).get("cap")))
            return
        with lock:
            allowed.append(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return allowed, caps


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--est", type=float, default=0.01)
    p.add_argument("--real-cost", type=float, default=0.004)
    p.add_argument("--rounds", type=int, default=1)
    a = p.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": a.agent}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{a.url}/v1/traces"))
    )
    tracer = provider.get_tracer("budget-agent")
    guard = Guard(a.url, agent=a.agent, session=a.session, timeout_s=10.0, cache="off")

    for rnd in range(1, a.rounds + 1):
        allowed, caps = burst(guard, a.n, a.est)
        for _ in allowed:
            with tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attributes(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.conversation.id": a.session,
                        "gen_ai.usage.input_tokens": 10,
                        "gen_ai.usage.output_tokens": 5,
                        "gen_ai.usage.cost": a.real_cost,
                    }
                )
        print(
            json.dumps(
                {
                    "round": rnd,
                    "allowed": len(allowed),
                    "denied": len(caps),
                    "caps": sorted(set(caps)),
                }
            ),
            flush=True,
        )
    provider.shutdown()
    guard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

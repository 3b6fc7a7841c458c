"""Guard benchmark: check latency on loopback, and kill propagation from a finding to the guard.

    .venv/bin/python benchmarks/guard.py [--checks 5000] [--trials 50]

Starts `watchdog run --port 0` in a subprocess (its own process, as in production: the
guard and the daemon do not share a GIL), then measures:

1. `check` latency: `Guard.check(tool=…, args=…)` round trips, one after another, over a
   kept-alive loopback connection with TCP_NODELAY (target p99 < 2 ms).
2. Kill propagation: per trial a fresh session repeats one tool call; the real OTel SDK
   exports each span. t0 is taken just before the span that completes the loop is
   exported, so the figure covers ingest + commit + loop detector + alert + policy +
   verdict write + SSE push + the guard's cache. t1 is when the agent loop (calling
   `check()` back to back, as an agent does before every step) raises AgentHalted.
   Also: an operator's `POST /api/v1/kill` to the guard raising (target p99 < 300 ms).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

from watchdog.cli import api_call  # noqa: E402
from watchdog.guard import AgentHalted, Guard  # noqa: E402

KILL_AT = 3  # repeats that trip the loop detector's kill rung (set in the config below)


def pct(values: list[float], p: float) -> float:
    """Return the p-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    k = max(min(round(p / 100 * len(ordered) + 0.5) - 1, len(ordered) - 1), 0)
    return ordered[k]


def summary(name: str, seconds: list[float]) -> str:
    """Format p50/p90/p99/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return (
        f"{name}: n={len(ms)} p50={pct(ms, 50):.3f} ms p90={pct(ms, 90):.3f} ms "
        f"p99={pct(ms, 99):.3f} ms max={max(ms):.3f} ms mean={statistics.fmean(ms):.3f} ms"
    )


def start_daemon(data: Path) -> tuple[subprocess.Popen[str], str]:
    """Run the daemon in a subprocess with a loop rung at KILL_AT; return it and its URL."""
    config = data / "watchdog.yaml"
    config.write_text(
        f"detectors:\n  loop:\n    repeat: {{warn: null, pause: null, kill: {KILL_AT}}}\n"
        "log_level: WARNING\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "run", "--port", "0", "--data-dir", str(data / "db"),
         "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")},
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"^watchdog listening on (http://\S+)$", line.strip())
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, m.group(1)
    raise RuntimeError("daemon did not start")


def bench_check(url: str, n: int) -> list[float]:
    """Time `n` sequential checks after a warm-up."""
    guard = Guard(url, agent="bench-agent", session="bench-latency", timeout_s=2.0)
    args = {"query": "status of order A-1017", "page": 1}
    for _ in range(300):
        guard.check(tool="search", args=args)
    times = []
    for i in range(n):
        args["page"] = i
        t = time.perf_counter()
        guard.check(tool="search", args=args)
        times.append(time.perf_counter() - t)
    guard.close()
    return times


def run_until_halted(guard: Guard, started: threading.Event, out: list[float]) -> None:
    """Check back to back (every step asks first) until the guard raises; record when."""
    started.set()
    try:
        while True:
            guard.check(tool="noop_step")
    except AgentHalted:
        out.append(time.perf_counter())


def bench_detector_kill(url: str, trials: int) -> list[float]:
    """Seconds from exporting the loop-completing span to AgentHalted in the agent loop."""
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("bench")
    results = []
    for trial in range(trials):
        session = f"bench-loop-{trial}"
        guard = Guard(url, agent="bench-agent", session=session, timeout_s=2.0)
        guard.check()  # connect the verdict feed
        while not guard._live:
            time.sleep(0.001)

        def step(session: str = session) -> None:
            with tracer.start_as_current_span("execute_tool get_order_status") as span:
                span.set_attributes(
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "get_order_status",
                        "gen_ai.tool.call.arguments": '{"order_id": "A-1017"}',
                        "gen_ai.conversation.id": session,
                    }
                )

        for _ in range(KILL_AT - 1):
            step()
        halted_at: list[float] = []
        started = threading.Event()
        agent = threading.Thread(target=run_until_halted, args=(guard, started, halted_at))
        agent.start()
        started.wait()
        t0 = time.perf_counter()
        step()  # the repeat that trips the kill rung
        agent.join(30)
        guard.close()
        if not halted_at:
            raise RuntimeError(f"trial {trial}: the guard never raised")
        results.append(halted_at[0] - t0)
    provider.shutdown()
    return results


def bench_api_kill(url: str, trials: int) -> list[float]:
    """Seconds from an operator's POST /api/v1/kill to AgentHalted in the agent loop."""
    results = []
    for trial in range(trials):
        session = f"bench-api-{trial}"
        guard = Guard(url, agent="bench-agent", session=session, timeout_s=2.0)
        guard.check()
        while not guard._live:
            time.sleep(0.001)
        halted_at: list[float] = []
        started = threading.Event()
        agent = threading.Thread(target=run_until_halted, args=(guard, started, halted_at))
        agent.start()
        started.wait()
        t0 = time.perf_counter()
        api_call(url, "/api/v1/kill", {"session": session, "reason": "bench"}, None, 10)
        agent.join(30)
        guard.close()
        results.append(halted_at[0] - t0)
    return results


def main() -> int:
    """Run the three measurements and print their figures."""
    p = argparse.ArgumentParser()
    p.add_argument("--checks", type=int, default=5000)
    p.add_argument("--trials", type=int, default=50)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_daemon(Path(tmp))
        try:
            print(
                f"daemon {url} (subprocess), python {sys.version.split()[0]}, {os.cpu_count()} cpus"
            )
            print(
                summary(
                    "check latency (loopback, keep-alive, TCP_NODELAY)", bench_check(url, a.checks)
                )
            )
            print(
                summary(
                    "kill propagation: loop finding -> guard raises",
                    bench_detector_kill(url, a.trials),
                )
            )
            print(
                summary(
                    "kill propagation: POST /api/v1/kill -> guard raises",
                    bench_api_kill(url, a.trials),
                )
            )
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

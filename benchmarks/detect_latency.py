"""Detection latency: from a span's acknowledgement to its finding in `alerts`, under load.

Usage: `.venv/bin/python benchmarks/detect_latency.py [--probes 300] [--rate 1000]`

Starts `watchdog run --port 0` in a subprocess (DuckDB in a temp dir) and a second
process that sends `--rate` spans/s of other traffic with the real OTel SDK
(BatchSpanProcessor → OTLP/HTTP protobuf): 200 sessions of 20 agents alternating chat
and tool spans (search words, small result counts: ordinary traffic meant to trip no
detector; the alerts it does trip are counted). Meanwhile this process plays probes,
also through the real SDK (SimpleSpanProcessor, so `span.end()` returns when the daemon answered
200, i.e. after the commit): each probe is a new session calling one tool three times
with the same arguments, which trips `loop/repeat` at warn on the third call. The clock
starts when the third span's export returns (its acknowledgement) and stops when a
`POST /api/sql` poll (every ~10 ms) first sees the alert row. Prints p50/p90/p99/max
and the background rate the daemon actually committed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

from tests.agents.corpus import AgentSim, new_id  # noqa: E402
from tests.conftest import DaemonProcess, otel_provider  # noqa: E402

WORDS = ["refund", "policy", "latency", "invoice", "deploy", "python", "weather", "orders",
         "paris", "schema", "billing", "retry", "cache", "tokens", "outage", "budget"]  # fmt: skip


def sql(url: str, query: str) -> list[list[Any]]:
    req = urllib.request.Request(
        f"{url}/api/sql", data=json.dumps({"sql": query}).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read())
    if not body.get("ok"):
        raise RuntimeError(body.get("error"))
    return list(body["rows"])


def background(url: str, rate: float, seconds: float, stop_file: Path) -> None:
    """Send `rate` spans/s of ordinary agent traffic until `stop_file` exists (or `seconds`)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "background"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=10),
            max_queue_size=50_000,
            schedule_delay_millis=100,
            max_export_batch_size=1000,
        )
    )
    tracer = provider.get_tracer("background")
    rng = random.Random(3)
    sessions = [(f"bg-{k}", f"bg-agent-{k % 20}") for k in range(200)]
    sent = 0
    started = time.perf_counter()
    while (now := time.perf_counter() - started) < seconds and not stop_file.exists():
        due = int(now * rate)
        while sent < due:
            session, agent = sessions[sent % len(sessions)]
            common = {"gen_ai.conversation.id": session, "gen_ai.agent.name": agent}
            if sent % 2:
                attrs = {**common, "gen_ai.operation.name": "execute_tool",
                         "gen_ai.tool.name": rng.choice(["search", "read_file", "get_order"]),
                         "gen_ai.tool.call.arguments": json.dumps(
                             {"q": " ".join(rng.sample(WORDS, 3))}),
                         "gen_ai.tool.call.result": json.dumps({"hits": rng.randint(0, 6)})}  # fmt: skip
            else:
                attrs = {**common, "gen_ai.operation.name": "chat",
                         "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                         "gen_ai.usage.input_tokens": rng.randint(200, 900),
                         "gen_ai.usage.output_tokens": rng.randint(10, 200),
                         "gen_ai.output.messages": json.dumps(
                             [{"role": "assistant", "parts": [
                                 {"type": "text", "content": f"step {sent}"}]}])}  # fmt: skip
            tracer.start_span("step", attributes=attrs).end()
            sent += 1
        time.sleep(0.002)
    provider.force_flush(20_000)
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - started}), flush=True)


def probe(url: str, provider: TracerProvider, i: int) -> tuple[float, float]:
    """Play one probe; return (seconds from ack to visible alert, alert created_at - ack)."""
    session = new_id("probe")
    a = AgentSim(provider, "probe-agent", session)
    with a.run("probe"):
        args = {"city": f"probe-{i}"}
        a.tool("probe_tool", args, None)
        a.tool("probe_tool", args, None)
        a.tool("probe_tool", args, None)  # returns once the daemon acknowledged it
        acked = time.perf_counter()
        acked_wall = time.time()
        query = (
            "SELECT epoch_us(created_at) FROM alerts WHERE detector = 'loop' "
            f"AND rule = 'repeat' AND session_id = '{session}'"
        )
        while True:
            rows = sql(url, query)
            if rows:
                return time.perf_counter() - acked, rows[0][0] / 1e6 - acked_wall
            if time.perf_counter() - acked > 10:
                (stored,) = sql(
                    url,
                    f"SELECT count(*) FROM steps WHERE session_id = '{session}' AND kind = 'tool'",
                )[0]
                print(f"probe {i}: no alert after 10 s ({stored} of its 3 tool steps stored)")
                return math.nan, math.nan
            time.sleep(0.01)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=1000.0, help="background spans/s")
    parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.background:
        background(args.url, args.rate, args.seconds, args.stop_file)
        return

    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(Path(tmp) / "data").start()
        try:
            run(daemon.url, args, Path(tmp) / "stop")
        finally:
            daemon.terminate()
        problems = [line for line in daemon.lines if " WARNING " in line or " ERROR " in line]
        print(f"daemon log: {len(problems)} warning/error lines")
        for line in problems[:10]:
            print("  " + line.rstrip()[:200])


def run(url: str, args: argparse.Namespace, stop_file: Path) -> None:
    gap_s = 0.1
    seconds = 3600.0  # the background stops when the probes are done (stop file)
    bg = subprocess.Popen(
        [sys.executable, __file__, "--background", "--url", url, "--rate", str(args.rate),
         "--seconds", str(seconds), "--stop-file", str(stop_file)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        measure(url, args, bg, stop_file, gap_s)
    finally:
        stop_file.touch()
        try:
            bg.wait(60)
        except subprocess.TimeoutExpired:
            bg.kill()
            bg.wait()


def measure(
    url: str, args: argparse.Namespace, bg: subprocess.Popen[str], stop_file: Path, gap_s: float
) -> None:
    provider = otel_provider(url, service="probe")
    time.sleep(3)  # let the background reach its rate
    (before,) = sql(url, "SELECT count(*) FROM spans WHERE \"ServiceName\" = 'background'")[0]
    t0 = time.perf_counter()
    visible: list[float] = []
    lost = 0
    created: list[float] = []
    for i in range(args.probes):
        v, c = probe(url, provider, i)
        if math.isnan(v):
            lost += 1
            continue
        visible.append(v)
        created.append(c)
        time.sleep(gap_s)
    window = time.perf_counter() - t0
    (after,) = sql(url, "SELECT count(*) FROM spans WHERE \"ServiceName\" = 'background'")[0]
    stop_file.touch()
    out, _ = bg.communicate(timeout=60)
    sent = json.loads(out.strip().splitlines()[-1])
    provider.shutdown()
    (total,) = sql(url, "SELECT count(*) FROM spans WHERE \"ServiceName\" = 'background'")[0]

    noise = sql(
        url,
        "SELECT detector || '/' || rule, count(*) FROM alerts "
        "WHERE agent_name LIKE 'bg-%' GROUP BY ALL ORDER BY 2 DESC",
    )
    committed_rate = (after - before) / window
    print(f"background: {sent['sent']} spans offered in {sent['seconds']:.1f} s "
          f"({sent['sent'] / sent['seconds']:.0f}/s); {committed_rate:.0f} spans/s committed "
          f"while probing ({window:.1f} s); {total} of them stored in the end")  # fmt: skip
    print(f"probes: {len(visible)} findings (loop/repeat at the 3rd identical call), "
          f"{lost} probes without a finding\n")  # fmt: skip
    header = f"{'measure':<44} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    print(header)
    print("-" * len(header))
    for name, values in (
        ("ack → alert row visible (SQL poll), ms", visible),
        ("ack → alert created_at (daemon clock), ms", created),
    ):
        ms = [v * 1000 for v in values]
        print(f"{name:<44} {pct(ms, 0.5):>8.1f} {pct(ms, 0.9):>8.1f} {pct(ms, 0.99):>8.1f} "
              f"{max(ms):>8.1f}")  # fmt: skip
    print(f"\nalerts raised by the background traffic: {noise or 'none'}")
    print(f"\nmean visible latency {statistics.fmean(visible) * 1000:.1f} ms; target p99 < 250 ms")


if __name__ == "__main__":
    main()

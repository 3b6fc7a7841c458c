"""Ingest throughput: realistic 25-span agent runs over OTLP/HTTP protobuf into a running daemon.

Starts `watchdog run --port 0` on a fresh data dir, pre-builds unique
request bodies (so the clients spend their CPU on sending, not encoding), then sends them
from several concurrent keep-alive connections. Every 200 means "committed to DuckDB".
Prints committed spans/s, request latency p50/p99, the daemon's peak memory (RSS and
PSS, with its decode workers) and its CPU time per span.

    .venv/bin/python benchmarks/ingest.py [--spans 600000] [--clients 16] [--runs-per-request 20] [--set ENV=VALUE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

from tests.otlp_builders import make_request, make_span  # noqa: E402

TOOLS = ["web_search", "read_file", "lookup_order", "send_email", "sql_query", "http_get"]
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
]


def llm_attrs(conv: int, i: int, session: str, agent: str) -> dict[str, object]:
    provider, model = MODELS[i % len(MODELS)]
    inp, out, cached = 800 + 97 * i, 40 + 11 * i, 256 * (i % 3)
    if conv == 0:  # OTel GenAI (current names)
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.conversation.id": session,
            "gen_ai.agent.name": agent,
            "gen_ai.response.finish_reasons": ["tool_calls"],
            "gen_ai.response.id": f"chatcmpl-{i}",
            "server.address": "api.example.com",
        }
    if conv == 1:  # OpenInference
        return {
            "openinference.span.kind": "LLM",
            "llm.system": provider,
            "llm.provider": provider,
            "llm.model_name": model,
            "llm.token_count.prompt": inp,
            "llm.token_count.completion": out,
            "llm.token_count.total": inp + out,
            "llm.token_count.prompt_details.cache_read": cached,
            "session.id": session,
            "agent.name": agent,
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "Find the order status for customer 42",
            "llm.output_messages.0.message.role": "assistant",
        }
    return {  # OpenLLMetry 0.17–0.47 era
        "gen_ai.system": provider,
        "llm.request.type": "chat",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.prompt_tokens": inp,
        "gen_ai.usage.completion_tokens": out,
        "llm.usage.total_tokens": inp + out,
        "gen_ai.usage.cache_read_input_tokens": cached,
        "traceloop.association.properties.session_id": session,
        "gen_ai.agent.name": agent,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Summarize the ticket",
        "gen_ai.completion.0.role": "assistant",
    }


def tool_attrs(i: int, session: str, agent: str) -> dict[str, object]:
    tool = TOOLS[i % len(TOOLS)]
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.call.id": f"call_{i}",
        "gen_ai.tool.call.arguments": json.dumps({"q": f"item {i}", "page": i}),
        "gen_ai.tool.call.result": json.dumps({"rows": [i, i + 1], "status": "ok"}),
        "gen_ai.conversation.id": session,
        "gen_ai.agent.name": agent,
    }


def build_run(run_no: int) -> list[Span]:
    """One 25-span run: an agent span, 12 LLM calls (three conventions) and 12 tool calls."""
    trace_id = os.urandom(16)
    agent = f"agent-{run_no % 8}"
    session = f"sess-{run_no}"
    start = time.time_ns()
    root = make_span(
        "invoke_agent",
        trace_id=trace_id,
        start_ns=start,
        duration_ns=10**9,
        attrs={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": session,
        },
        kind=1,
    )
    spans = [root]
    conv = run_no % 3
    for i in range(12):
        t = start + i * 50_000_000
        spans.append(
            make_span(
                "chat",
                trace_id=trace_id,
                parent=root.span_id,
                start_ns=t,
                duration_ns=20_000_000,
                attrs=llm_attrs(conv, i, session, agent),
            )
        )
        spans.append(
            make_span(
                "tool",
                trace_id=trace_id,
                parent=root.span_id,
                start_ns=t + 25_000_000,
                duration_ns=10_000_000,
                attrs=tool_attrs(i, session, agent),
                kind=1,
            )
        )
    return spans


def build_bodies(total_spans: int, runs_per_request: int) -> list[bytes]:
    bodies = []
    runs = total_spans // 25
    for r in range(0, runs, runs_per_request):
        spans: list[Span] = []
        for k in range(r, min(r + runs_per_request, runs)):
            spans.extend(build_run(k))
        bodies.append(make_request(spans, service=f"svc-{r % 4}").SerializeToString())
    random.shuffle(bodies)
    return bodies


def client(url: str, work: queue.Queue[bytes], latencies: list[float], errors: list[int]) -> None:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    while True:
        try:
            body = work.get_nowait()
        except queue.Empty:
            break
        while True:
            t0 = time.perf_counter()
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                latencies.append(time.perf_counter() - t0)
                break
            errors.append(resp.status)
            time.sleep(float(resp.headers.get("Retry-After", "1")))
    conn.close()


def peak_rss_mib(pid: int) -> float:
    """Peak RSS of `pid` plus its descendants (decode workers), in MiB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        total += sum(peak_rss_mib(int(c)) for c in children)
    return total


def pss_mib(pid: int) -> float:
    """Proportional set size of `pid` plus its descendants, in MiB: shared pages (the
    libraries a decode worker maps like the daemon does) are split between the
    processes instead of counted once per process as a sum of RSS does."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += sum(pss_mib(int(c)) for c in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass  # a process that just exited
    return total


class PeakPss:
    """Samples `pss_mib(pid)` twice a second on a thread and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.peak = 0.0
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, pss_mib(self._pid))

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, pss_mib(self._pid))


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system) of `pid`'s event-loop thread, its other threads, and its
    child processes (decode workers), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat_cpu(path: Path) -> float:
        # Fields after the parenthesised command name; utime and stime are 14th and 15th.
        fields = path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    out = {"loop": 0.0, "threads": 0.0, "children": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        cpu = stat_cpu(task / "stat")
        out["loop" if task.name == str(pid) else "threads"] += cpu
        for child in (task / "children").read_text().split():
            child_total = cpu_seconds(int(child))
            out["children"] += sum(child_total.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=600_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--runs-per-request", type=int, default=20)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ENV=VALUE",
        help="daemon setting as a WATCHDOG_* variable, e.g. WATCHDOG_DETECTORS__ENABLED=false",
    )
    args = ap.parse_args()

    print(
        f"building {args.spans:,} spans ({args.runs_per_request} runs of 25 spans per request)…",
        flush=True,
    )
    bodies = build_bodies(args.spans, args.runs_per_request)
    n_spans = (args.spans // 25) * 25
    mib = sum(map(len, bodies)) / 2**20
    print(f"  {len(bodies)} requests, {mib:.0f} MiB of protobuf", flush=True)

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchdog", "run", "--port", "0", "--data-dir", tmp],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, **dict(kv.split("=", 1) for kv in args.set)},
        )
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            m = re.search(r"^watchdog listening on (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        if not url:
            sys.exit("daemon did not start")
        work: queue.Queue[bytes] = queue.Queue()
        for b in bodies:
            work.put(b)
        latencies: list[float] = []
        errors: list[int] = []
        threads = [
            threading.Thread(target=client, args=(url, work, latencies, errors))
            for _ in range(args.clients)
        ]
        print(f"sending with {args.clients} concurrent clients to {url} …", flush=True)
        cpu0 = cpu_seconds(proc.pid)
        own0 = time.process_time()
        t0 = time.perf_counter()
        with PeakPss(proc.pid) as pss:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            cpu1 = cpu_seconds(proc.pid)
            own = time.process_time() - own0
        rss = peak_rss_mib(proc.pid)
        con_check = subprocess.run(
            [
                sys.executable,
                "-m",
                "watchdog",
                "sql",
                "SELECT count(*) FROM spans",
                "--format",
                "csv",
                "--url",
                url,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        stored = int(con_check.stdout.strip().splitlines()[-1])
        proc.terminate()
        proc.wait(60)

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print()
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"load average before: {load_before}"
    )
    print(f"daemon settings: {' '.join(args.set) or '(defaults)'}")
    print(f"spans sent & acknowledged : {n_spans:,} (stored: {stored:,})")
    print(f"elapsed                   : {elapsed:.2f} s")
    print(f"committed spans/s         : {n_spans / elapsed:,.0f}")
    print(
        f"request latency p50 / p99 : {p50:.1f} ms / {p99:.1f} ms "
        f"({len(latencies)} requests of {n_spans // len(latencies)} spans)"
    )
    print(f"503 refusals (retried)    : {len(errors)}")
    print(f"daemon peak RSS (+workers) : {rss:.0f} MiB (sum of each process's peak)")
    print(f"daemon peak PSS (+workers) : {pss.peak:.0f} MiB (sampled every 0.5 s)")
    # CPU per span does not depend on what else the machine runs as much as spans/s does:
    # it says how far 2 idle cores could go, and which thread is the bottleneck.
    per = {k: (cpu1[k] - cpu0[k]) / n_spans * 1e6 for k in cpu0}
    print(
        f"daemon CPU per span       : {sum(per.values()):.1f} µs (event loop {per['loop']:.1f}, "
        f"other threads {per['threads']:.1f}, decode workers {per['children']:.1f})"
    )
    # The clients share the machine with the daemon: their CPU is part of what 2 cores do.
    print(f"client CPU per span       : {own / n_spans * 1e6:.1f} µs (this process, sending)")


if __name__ == "__main__":
    main()

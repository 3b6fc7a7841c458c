"""Alert storm: how long `alerts.record()` holds up the detection engine, and how long until
every listener has seen the storm.

    .venv/bin/python benchmarks/alert_storm.py [--findings 2000] [--batch 1]

Runs a real daemon in this process (DuckDB file in a temp dir, every component wired as
`watchdog run` wires it: the verdict policy, alerting to the log, the dashboard feed) and
records `--findings` distinct warn findings, `--batch` per `record()` call, one call after
another, the way the engine records what each commit raised. Each new warn alert makes
the policy set a verdict (one DuckDB write with its audit row).

Prints, per `record()` call, the time until it returned (what the engine waits before it
looks at the next commit) as p50/p99/max and the total, then the time until
`daemon.settle()` returned (every listener done), and checks that every alert got its
verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import make_settings  # noqa: E402
from watchdog.daemon import Daemon  # noqa: E402
from watchdog.model import Finding  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def finding(i: int) -> Finding:
    return Finding(
        detector="loop",
        rule="repeat",
        severity="warn",
        summary=f"storm {i}",
        agent_name=f"bot-{i % 50}",
        session_id=f"sess-{i}",
        trace_id=f"trace-{i}",
        key=f"k{i}",
    )


async def storm(data_dir: Path, n: int, batch: int) -> None:
    # Alerts go to the log receiver; keep the log quiet so printing is not measured.
    logging.basicConfig(level=logging.ERROR)
    settings = make_settings(data_dir, log_level="ERROR")
    d = Daemon(settings)
    await d.start()
    try:
        findings = [finding(i) for i in range(n)]
        calls: list[float] = []
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            t = time.perf_counter()
            await d.alerts.record(findings[i : i + batch])
            calls.append((time.perf_counter() - t) * 1000)
        recorded_s = time.perf_counter() - t0
        await d.settle(timeout_s=600)
        settled_s = time.perf_counter() - t0
        verdicts = len(d.verdicts.all())
        print(
            f"record(): {len(calls)} calls of {batch} finding(s): "
            f"p50={statistics.median(calls):.2f} ms p99={pct(calls, 99):.2f} ms "
            f"max={max(calls):.1f} ms; all recorded after {recorded_s:.2f} s "
            f"({n / recorded_s:,.0f} findings/s)"
        )
        print(
            f"every listener done after {settled_s:.2f} s "
            f"({n / settled_s:,.0f} findings/s); verdicts set: {verdicts}/{n}"
        )
    finally:
        await d.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--findings", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1, help="findings per record() call")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(storm(Path(tmp) / "data", a.findings, a.batch))


if __name__ == "__main__":
    main()

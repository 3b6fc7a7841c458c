"""Alerting benchmark: finding → Slack latency, slash-command round trip, repeat storms.

    .venv/bin/python benchmarks/alerting.py [--trials 30] [--commands 200] [--repeats 20000]

Starts `watchdog run --port 0` in a subprocess with Slack pointed at the local fake
(`tests/fakes/slack.py`, served from this process) and `group_wait_s=0`, then measures:

1. Loop → Slack: per trial a fresh agent repeats one tool call through the real OTel SDK;
   t0 just before the span that completes the loop is exported, t1 when the fake Slack
   receives the `chat.postMessage` (ingest + commit + loop detector + alert + dispatcher +
   slack_sdk).
2. `/watchdog kill agent …` round trip: a signed slash command answered inline (signature
   check + verdict commit + audit row), one after another.
3. Repeat storm (in process, real DuckDB file): the same finding re-recorded, one per
   `record()` call; findings/s absorbed by the alert store (one DuckDB UPDATE each) and
   the dispatcher, and how many Slack calls it caused (the first post only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.dispatch import AlertingMetrics, Dispatcher  # noqa: E402
from alerts.nflog import NotificationLog  # noqa: E402
from alerts.routing import build_routes  # noqa: E402
from alerts.silences import SilenceStore  # noqa: E402
from alerts.slack import SlackReceiver  # noqa: E402
from tests.agents.corpus import AgentSim, new_id  # noqa: E402
from tests.conftest import otel_provider  # noqa: E402
from tests.fakes.slack import SIGNING_SECRET, TOKEN, FakeSlack, signed_headers  # noqa: E402
from watchdog.alertstore import AlertStore  # noqa: E402
from watchdog.model import Finding  # noqa: E402
from watchdog.settings import AlertingSettings  # noqa: E402
from watchdog.store import Store  # noqa: E402
from watchdog.verdicts import VerdictStore  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def show(name: str, ms: list[float]) -> None:
    print(
        f"{name}: n={len(ms)} p50={pct(ms, 50):.1f} ms p90={pct(ms, 90):.1f} ms "
        f"p99={pct(ms, 99):.1f} ms max={max(ms):.1f} ms mean={statistics.mean(ms):.1f} ms"
    )


def start_daemon(data: Path, fake: FakeSlack) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "WATCHDOG_SLACK__BOT_TOKEN": TOKEN,
        "WATCHDOG_SLACK__SIGNING_SECRET": SIGNING_SECRET,
        "WATCHDOG_SLACK__CHANNEL": "#alerts",
        "WATCHDOG_SLACK__BASE_URL": fake.base_url,
        "WATCHDOG_SLACK__ALLOWED_USERS": '["UADMIN"]',
        "WATCHDOG_ALERTING__GROUP_WAIT_S": "0",
        "WATCHDOG_ALERTING__GROUP_INTERVAL_S": "0",
        "WATCHDOG_ALERTING__SLACK_MIN_INTERVAL_S": "0",
        "WATCHDOG_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "run", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"watchdog listening on (http://\S+)$", line.strip())
        if m and not line.startswith("20"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, m.group(1)
    raise RuntimeError("daemon did not start")


def loop_to_slack(url: str, fake: FakeSlack, trials: int) -> list[float]:
    out = []
    for i in range(trials):
        agent = AgentSim(otel_provider(url, service=f"bench-{i}"), f"bench-{i}", new_id("sess"))
        before = len(fake.posts())
        with agent.run("weather"):
            for _ in range(2):
                agent.tool("get_weather", {"city": "Paris"}, None)
            t0 = time.perf_counter()
            agent.tool("get_weather", {"city": "Paris"}, None)  # the third repeat trips L1 warn
            fake.wait_for(lambda b=before: len(fake.posts()) > b, 30)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def kill_round_trips(url: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        raw = urlencode(
            {
                "command": "/watchdog",
                "text": f"kill agent bench-kill-{i}",
                "user_id": "UADMIN",
                "channel_id": "C1",
                "trigger_id": f"t{i}-{time.monotonic_ns()}",
            }
        ).encode()
        req = urllib.request.Request(
            f"{url}/slack/commands",
            data=raw,
            method="POST",
            headers=signed_headers(SIGNING_SECRET, raw),
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        assert b"killed agent" in body, body
    return out


async def repeat_storm(fake: FakeSlack, repeats: int) -> tuple[float, int]:
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "storm.duckdb")
    await asyncio.to_thread(store.open)
    settings = AlertingSettings(group_wait_s=0, group_interval_s=0, slack_min_interval_s=0)
    alerts = AlertStore(store)
    verdicts = VerdictStore(store)
    silences = SilenceStore(store)
    nflog = NotificationLog(store)
    slack = SlackReceiver(
        "slack", token=TOKEN, channel="#alerts", base_url=fake.base_url, min_interval_s=0
    )
    d = Dispatcher(
        settings=settings,
        root=build_routes(settings, "slack"),
        receivers={"slack": slack},
        alerts=alerts,
        verdicts=verdicts,
        silences=silences,
        nflog=nflog,
        store=store,
        metrics=AlertingMetrics(),
    )
    alerts.subscribe(d.on_alert)
    await d.load()
    d.running = True
    timer = asyncio.get_running_loop().create_task(d.run())
    worker = asyncio.get_running_loop().create_task(d.work(d.workers["slack"]))
    before = len(fake.calls())
    f = Finding(
        detector="loop",
        rule="repeat",
        severity="warn",
        summary="storm",
        agent_name="storm-bot",
        session_id="s",
        key="k",
    )
    t0 = time.perf_counter()
    for _ in range(repeats):  # one finding per record(), as a detector hands them over
        await alerts.record([f])
    while not d.is_idle():
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    timer.cancel()
    worker.cancel()
    await slack.close()
    await asyncio.to_thread(store.close)
    return repeats / elapsed, len(fake.calls()) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20_000)
    args = parser.parse_args()
    with FakeSlack() as fake, tempfile.TemporaryDirectory() as tmp:
        proc, url = start_daemon(Path(tmp) / "data", fake)
        try:
            show("loop finding -> Slack chat.postMessage", loop_to_slack(url, fake, args.trials))
            show("signed /watchdog kill round trip", kill_round_trips(url, args.commands))
        finally:
            proc.terminate()
            proc.wait(30)
        rate, calls = asyncio.run(repeat_storm(fake, args.repeats))
        print(
            f"repeat storm: {args.repeats} identical findings at {rate:,.0f} findings/s "
            f"-> {calls} Slack call(s)"
        )


if __name__ == "__main__":
    main()

"""`watchdog demo`: a daemon, a fake LLM and a small fleet of real agents, each failure caught.

What it guarantees:

- It starts the daemon in this process (free port, temporary or given data directory,
  the settings of `scenarios.DEMO_CONFIG` loaded from a generated YAML file), or uses
  the one at `--url`; and a local chat-completions server (`fake_llm.FakeLLM`).
- The agents are separate Python processes (`watchdog.demo.agent`) using the OTel SDK,
  the `openai` client instrumented by OpenInference, and `watchdog.guard`.
- The scenario runs in three phases: the normal runs (they also teach the detectors
  what normal looks like), the email agent's bad day alone, then the loop, drift and
  spend failures together. A held action is reviewed by the demo the way a person would:
  it is looked up in the pending holds, then cancelled through the API.
- The report is judged from watchdog's own tables (`alerts`, `verdict_audit`, `holds`,
  `steps`, read through `POST /api/sql`) and from how each agent run ended. It is
  printed, and written as JSON to `<data dir>/demo-report.json`; `--once` exits 0 only
  when every failure mode was caught with the expected action and the normal runs raised
  nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from watchdog.cli import api_call
from watchdog.demo import scenarios
from watchdog.demo.fake_llm import FakeLLM
from watchdog.demo.scenarios import AgentSpec, RunSpec
from watchdog.settings import Settings, load_settings

T = TypeVar("T")

INSTALL_HINT = "pip install 'agent-watchdog[demo]'"
# (module, distribution) the agent processes import.
NEEDED: tuple[tuple[str, str], ...] = (
    ("openai", "openai"),
    ("opentelemetry.sdk", "opentelemetry-sdk"),
    ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
    ("openinference.instrumentation.openai", "openinference-instrumentation-openai"),
)
_PHASE_TIMEOUT_S = 120.0
_STARTUP_TIMEOUT_S = 90.0


class DemoError(Exception):
    """The demo could not run (an agent died, a phase timed out, no daemon answered)."""


def missing_packages() -> list[str]:
    """Distributions the demo's agents need that are not importable here."""
    out = []
    for module, dist in NEEDED:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(dist)
    return out


# -- the daemon ------------------------------------------------------------------------------


class LocalDaemon:
    """A real Daemon serving from its own event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        import asyncio

        from watchdog.daemon import Daemon

        self.loop = asyncio.new_event_loop()
        self.daemon = Daemon(settings)
        self._thread = threading.Thread(target=self.loop.run_forever, name="demo-daemon")
        self._thread.daemon = True

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        """Run `coro` on the daemon's loop and wait for its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> str:
        """Start the daemon; return its URL."""
        self._thread.start()
        self.call(self.daemon.start())
        return self.daemon.url

    def settle(self) -> None:
        """Wait until every committed step went through detection, alerts and verdicts."""
        self.call(self.daemon.settle(20.0), 30.0)

    def stop(self) -> None:
        """Drain, stop and close the daemon (idempotent)."""
        if not self._thread.is_alive():
            return
        try:
            self.call(self.daemon.stop(), 60.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


# -- the agents ------------------------------------------------------------------------------


@dataclass
class AgentProcess:
    """One agent subprocess, fed phase names on stdin, reporting JSON lines on stdout."""

    spec: AgentSpec
    proc: subprocess.Popen[str]
    log: IO[str]

    def send(self, line: str) -> None:
        """Write one command line to the agent."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


@dataclass
class RunResult:
    """How one run ended, as its agent reported it."""

    spec: RunSpec
    trace: str = ""
    end: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class HoldReview:
    """A held action the demo reviewed: what the check found, whether it was listed."""

    agent: str
    hold_id: str
    findings: list[dict[str, Any]]
    listed: dict[str, Any] | None
    cancelled: bool


class Printer:
    """Progress lines, flushed at once (the demo is watched live)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, text: str = "") -> None:
        """Print one line."""
        print(text, file=self.out, flush=True)


# -- the demo --------------------------------------------------------------------------------


class Demo:
    """One demo: daemon (local or remote), fake LLM, agent processes, phases and the report."""

    def __init__(
        self,
        *,
        url: str | None,
        data_dir: Path | None,
        port: int,
        once: bool,
        out: IO[str] = sys.stdout,
    ) -> None:
        self.remote_url = url.rstrip("/") if url else None
        self.keep_data = data_dir is not None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="watchdog-demo-"))
        self.port = port
        self.once = once
        self.say = Printer(out)
        self.tag = secrets.token_hex(3)
        self.fleet = scenarios.fleet(self.tag)
        self.token = os.environ.get("WATCHDOG_API_TOKEN") or None
        self.url = ""
        self.daemon: LocalDaemon | None = None
        self.llm = FakeLLM()
        self.agents: dict[str, AgentProcess] = {}
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.results: dict[str, RunResult] = {}  # session → result
        self.reviews: list[HoldReview] = []
        self.started_at = time.time()
        self._current: dict[str, RunResult] = {}
        self._log_handler: logging.Handler | None = None

    # -- set-up ----------------------------------------------------------------------
    def start(self) -> None:
        """Start (or reach) the daemon, the fake LLM and every agent process."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "demo-config.yaml"
        config.write_text(scenarios.DEMO_CONFIG)
        if self.remote_url is None:
            settings = load_settings(
                config,
                server={"host": "127.0.0.1", "port": self.port},
                storage={"data_dir": self.data_dir},
            )
            if settings.api_token is not None:
                self.token = settings.api_token.get_secret_value()
            self._log_to_file(settings.log_level)
            self.say(f"starting watchdog (data: {self.data_dir}, settings: {config})")
            self.daemon = LocalDaemon(settings)
            self.url = self.daemon.start()
        else:
            self.url = self.remote_url
            self.say(f"using the watchdog at {self.url}")
            self.say(
                "  note: the demo expects its settings there "
                f"(watchdog run --config {config}); with others it may miss a failure"
            )
            try:
                api_call(self.url, "/api/v1/status", None, self.token, timeout_s=5.0)
            except ConnectionError as err:
                raise DemoError(f"no watchdog answers at {self.url}: {err}") from err
        self.say(f"watchdog listening on {self.url}")
        self.llm.start()
        for spec in self.fleet:
            for run in spec.runs:
                self.llm.script(run.api_key, run.replies)
        self.say(f"fake OpenAI endpoint on {self.llm.base_url}")
        self.say(f"starting {len(self.fleet)} agent processes ...")
        logs = self.data_dir / "agents"
        logs.mkdir(exist_ok=True)
        for spec in self.fleet:
            log = (logs / f"{spec.name}.log").open("w")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "watchdog.demo.agent",
                    "--agent",
                    spec.name,
                    "--tag",
                    self.tag,
                    "--url",
                    self.url,
                    "--llm",
                    self.llm.base_url,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.agents[spec.name] = AgentProcess(spec, proc, log)
            threading.Thread(
                target=self._read,
                args=(spec.name, proc),
                name=f"demo-read-{spec.name}",
                daemon=True,
            ).start()
        self._wait_ready()

    def _log_to_file(self, level: str) -> None:
        # The daemon logs to a file: the terminal is the demo's narration.
        handler = logging.FileHandler(self.data_dir / "watchdog.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level.upper())
        self._log_handler = handler

    def _read(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.strip()
            if not text:
                continue
            try:
                event = json.loads(text)
            except ValueError:
                event = {"ev": "text", "text": text}
            self.events.put((name, event if isinstance(event, dict) else {"ev": "text"}))
        self.events.put((name, {"ev": "exit", "code": proc.wait()}))

    def _wait_ready(self) -> None:
        waiting = set(self.agents)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while waiting:
            got = self._next_event(deadline)
            assert got is not None
            name, ev = got
            if ev["ev"] == "ready":
                waiting.discard(name)
            elif ev["ev"] == "exit":
                raise DemoError(f"{name} exited at start (see {self._agent_log(name)})")
        self.say("agents ready\n")

    def _agent_log(self, name: str) -> Path:
        return self.data_dir / "agents" / f"{name}.log"

    def _next_event(
        self, deadline: float, idle_s: float | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """The next agent event; None after `idle_s` without one; DemoError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DemoError("timed out waiting for the agents")
        try:
            return self.events.get(timeout=min(remaining, idle_s or remaining))
        except queue.Empty:
            if idle_s is not None and time.monotonic() < deadline:
                return None
            raise DemoError("timed out waiting for the agents") from None

    # -- phases ----------------------------------------------------------------------
    def run_phase(self, phase: str, names: Sequence[str]) -> None:
        """Have `names` run their runs of `phase` concurrently; narrate until all are done."""
        for name in names:
            self.agents[name].send(phase)
        pending = set(names)
        deadline = time.monotonic() + _PHASE_TIMEOUT_S
        while pending:
            got = self._next_event(deadline, idle_s=0.5)
            if got is None:
                # Quiet for a moment: review any held action no agent announced.
                self._review_pending_holds()
                continue
            name, ev = got
            self._handle(name, ev)
            if ev["ev"] == "phase_done":
                pending.discard(name)
            elif ev["ev"] == "exit" and name in pending:
                raise DemoError(f"{name} exited during {phase} (see {self._agent_log(name)})")

    def _handle(self, name: str, ev: dict[str, Any]) -> None:
        kind = ev["ev"]
        if kind == "run":
            run = next(r for r in self.agents[name].spec.runs if r.session == ev["session"])
            started = self.results[run.session] = RunResult(run, trace=str(ev["trace"]))
            self._current[name] = started
            if run.role == "failure":
                self.say(f"  {name:<13} {run.failure}: {run.task}")
            return
        result = self._current.get(name)
        if result is not None:
            result.events.append(ev)
        failing = result is not None and result.spec.role == "failure"
        if kind == "end" and result is not None:
            result.end = ev
            self.say(self._end_line(name, result))
        elif kind == "held":
            self._review_hold(name, ev)
        elif kind == "denied" and failing:
            self.say(f"  {name:<13}   watchdog denied {ev['tool']}: {_clip(ev['reason'], 110)}")
        elif kind == "warned" and failing:
            self.say(
                f"  {name:<13}   watchdog warns before {ev['tool']}: {_clip(ev['reason'], 100)}"
            )
        elif kind == "llm" and failing:
            self.say(
                f"  {name:<13}   model call {ev['n']}: ${ev['usd']:.4f} "
                f"(run total ${ev['total_usd']:.4f}, {ev['prompt_tokens']} prompt tokens)"
            )
        elif kind == "tool" and failing:
            what = "ok" if ev.get("ok") else f"FAILED ({ev.get('error')})"
            args = json.dumps(ev["args"]) if ev.get("args") else ""
            self.say(f"  {name:<13}   {ev['tool']} {_clip(args, 70)} -> {what}")
        elif kind == "text":
            self.say(f"  {name:<13}   {ev.get('text')}")

    def _end_line(self, name: str, r: RunResult) -> str:
        e = r.end
        counts = (
            f"{_count(e.get('llm_calls'), 'model call')}, {_count(e.get('tool_calls'), 'tool call')}"
            f", ${e.get('usd', 0):.4f}"
        )
        if r.spec.role == "normal":
            return f"  {name:<13} normal run {r.spec.index}: {e.get('outcome')} ({counts})"
        how = e.get("outcome")
        if how == "halted":
            how = f"HALTED by its guard ({e.get('verdict')}): {_clip(e.get('reason'), 90)}"
        elif how == "stopped":
            how = f"STOPPED: {_clip(e.get('reason'), 100)}"
        elif e.get("answer"):
            how = f"{how}: {_clip(e.get('answer'), 100)}"
        return f"  {name:<13}   -> {how}\n  {name:<13}      ({counts})"

    def _review_pending_holds(self) -> None:
        pending = api_call(self.url, "/api/v1/holds", None, self.token).get("pending") or []
        for hold in pending:
            if str(hold.get("session") or "").startswith(f"{self.tag}-"):
                self._review_hold(str(hold["agent"]), {"hold_id": hold["hold_id"]})

    def _review_hold(self, name: str, ev: dict[str, Any]) -> None:
        hold_id = str(ev.get("hold_id"))
        findings = list(ev.get("findings") or [])
        done = next((r for r in self.reviews if r.hold_id == hold_id), None)
        if done is not None:  # already reviewed from the pending list; keep the findings
            done.findings = done.findings or findings
            return
        self.say(f"  {name:<13}   watchdog HELD the action before it ran (hold {hold_id}):")
        for f in findings:
            self.say(
                f"  {name:<13}     {f['detector']}.{f['rule']} ({f['severity']}): "
                f"{_clip(f['summary'], 90)}"
            )
        pending = api_call(self.url, "/api/v1/holds", None, self.token).get("pending") or []
        listed = next((h for h in pending if h.get("hold_id") == hold_id), None)
        if listed is not None:
            self.say(
                f"  {name:<13}     reviewable: `watchdog hold list --url {self.url}` shows "
                f"{listed['tool']} of {listed['agent']} until {listed['release_at']}"
            )
        reason = "reviewed in the demo: " + (
            f"${scenarios.WRONG_PRICE} is not the Pro price (${scenarios.PRICE_DB['Pro']})"
            if name == "email-agent"
            else "not expected"
        )
        answer = api_call(
            self.url,
            f"/api/v1/holds/{hold_id}/cancel",
            {"reason": reason, "actor": "api"},
            self.token,
        )
        cancelled = bool(answer.get("cancelled"))
        self.say(
            f"  {name:<13}     a person cancels it (`watchdog hold cancel {hold_id}`): "
            f"{'cancelled' if cancelled else answer.get('error') or 'too late'}"
        )
        self.reviews.append(HoldReview(name, hold_id, findings, listed, cancelled))

    def scenario(self) -> None:
        """The three phases, in order."""
        self.say("== 1/3  normal work (it also teaches the detectors what normal looks like)")
        self.run_phase("normal", ["faq-bot", "research-bot", "email-agent"])
        # Runs count as over (and are learned from) after detectors.drift.run_idle_s.
        time.sleep(1.3)
        self.say("\n== 2/3  the email agent's bad day")
        self.run_phase("failure", ["email-agent"])
        self.say("\n== 3/3  a looping agent, a drifting agent and a runaway bill, at once")
        self.run_phase("failure", ["invoice-bot", "research-bot", "report-bot"])

    # -- evidence ----------------------------------------------------------------------
    def settle(self) -> None:
        """Wait until the daemon has acted on every step (a remote one: a short grace)."""
        if self.daemon is not None:
            self.daemon.settle()
        else:
            time.sleep(2.0)

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of one read-only query, as dicts."""
        answer = api_call(self.url, "/api/sql", {"sql": query}, self.token)
        if not answer.get("ok"):
            raise DemoError(f"SQL failed: {answer.get('error')}")
        cols = answer["columns"]
        return [dict(zip(cols, row, strict=True)) for row in answer["rows"]]

    # -- tear-down -------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the agents, the fake LLM and the daemon; remove a temporary data dir."""
        for agent in self.agents.values():
            with contextlib.suppress(OSError, ValueError):
                agent.send("quit")
        for agent in self.agents.values():
            try:
                agent.proc.wait(10)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)
            agent.log.close()
        self.llm.stop()
        if self.daemon is not None:
            self.daemon.stop()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
        if not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _clip(text: Any, n: int) -> str:
    s = str(text or "")
    return s if len(s) <= n else s[: n - 3] + "..."


@contextlib.contextmanager
def _running(demo: Demo) -> Iterator[Demo]:
    try:
        demo.start()
        yield demo
    finally:
        demo.stop()


def run_demo(
    *,
    once: bool,
    url: str | None = None,
    data_dir: Path | None = None,
    port: int = 0,
    out: IO[str] = sys.stdout,
    wait: Callable[[], None] | None = None,
) -> int:
    """Run the demo; with `once`, return 0 when every check passed, else 1.

    Without `once` the daemon keeps serving after the report until Ctrl-C (or `wait`
    returns), and the exit code is 0.
    """
    from watchdog.demo.report import judge, render

    missing = missing_packages()
    if missing:
        print(
            f"watchdog demo needs {', '.join(missing)}: {INSTALL_HINT}\n"
            "(in this repository: .venv/bin/pip install -e '.[demo]')",
            file=sys.stderr,
        )
        return 2
    demo = Demo(url=url, data_dir=data_dir, port=port, once=once, out=out)
    try:
        with _running(demo):
            demo.scenario()
            demo.settle()
            report = judge(demo)
            render(demo, report)
            (demo.data_dir / "demo-report.json").write_text(json.dumps(report.to_json(), indent=2))
            if once:
                return 0 if report.ok else 1
            if demo.daemon is None:
                return 0  # a daemon at --url keeps running on its own
            demo.say(f"\nwatchdog keeps running at {demo.url} - press Ctrl-C to stop.")
            try:
                (wait or _wait_forever)()
            except KeyboardInterrupt:
                demo.say("\nstopping ...")
            return 0
    except (DemoError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _wait_forever() -> None:
    # SIGTERM ends the wait like Ctrl-C does, so a service manager stops the demo cleanly.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(3600)
    finally:
        signal.signal(signal.SIGTERM, previous)

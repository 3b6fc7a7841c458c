"""Push actuators: a signed webhook to the agent's control URL, and a last-resort OS signal.

`WebhookActuator` POSTs every verdict change as JSON to the control URL of the agent it
concerns (`enforcement.webhook.agents[agent]`, else `enforcement.webhook.url`). Each
request carries `X-Watchdog-Timestamp` and `X-Watchdog-Signature: sha256=<hex>`, the
HMAC-SHA256 of `"<timestamp>.<body>"` under the shared secret (the same scheme as
Slack's and Stripe's, so receivers can reject replays by the timestamp). Failures
(connection errors, timeouts, 408/429/5xx) are retried with exponential backoff up to
`max_attempts`; other 4xx answers are permanent. Retries may reorder deliveries: the
body's `seq` orders changes, and a receiver keeps the highest it has seen.

`SignalActuator` (off by default) sends `kill_signal` (SIGTERM) on a kill and
`pause_signal` (SIGSTOP) on a pause to a configured pid, and SIGCONT when a pause ends.
It only works where watchdog shares the agent's PID namespace, and it logs loudly.

Session and trace scopes are mapped to their agent from committed steps (`AgentIndex`).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from watchdog.lifecycle import Supervisor
from watchdog.model import Committed
from watchdog.settings import SignalActuatorSettings, WebhookSettings
from watchdog.verdicts import VerdictChange

logger = logging.getLogger(__name__)

_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class AgentIndex:
    """Which agent a session or trace belongs to, learned from committed steps (bounded)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._owner: OrderedDict[tuple[str, str], str] = OrderedDict()

    def on_commit(self, notice: Committed) -> None:
        """Remember the agent of every session and trace in the commit."""
        # A commit holds whole runs: collapse them to one entry per session and per trace
        # (the last step's agent wins) before touching the LRU order, 2 keys per run
        # instead of 2 per step.
        owner = self._owner
        for scope, latest in (
            ("session", {s.session_id: s.agent_name for s in notice.steps}),
            ("trace", {s.trace_id: s.agent_name for s in notice.steps}),
        ):
            for value, agent in latest.items():
                key = (scope, value)
                owner[key] = agent
                owner.move_to_end(key)
        while len(owner) > self._capacity:
            owner.popitem(last=False)

    def agent_of(self, scope_type: str, value: str) -> str | None:
        """Return the agent a scope belongs to, if known."""
        if scope_type == "agent":
            return value
        return self._owner.get((scope_type, value))


@dataclass(order=True, slots=True)
class _Delivery:
    due_s: float
    n: int
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    attempt: int = field(default=1, compare=False)


class WebhookActuator:
    """Delivers verdict changes to agents' control URLs, signed, with retry and backoff."""

    name = "webhook-actuator"

    def __init__(
        self,
        settings: WebhookSettings,
        index: AgentIndex,
        supervisor: Supervisor,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._index = index
        self._supervisor = supervisor
        self._clock = clock
        self._heap: list[_Delivery] = []
        self._n = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry()
        self.sent = Counter(
            "watchdog_webhook_deliveries_total",
            "Verdict webhook deliveries by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    @property
    def enabled(self) -> bool:
        """Tell whether any control URL is configured."""
        return bool(self._settings.url or self._settings.agents)

    def url_for(self, change: VerdictChange) -> str | None:
        """Return the control URL of the agent a change concerns (None: nobody to tell)."""
        agent = self._index.agent_of(change.scope.type, change.scope.value)
        if agent is not None and agent in self._settings.agents:
            return self._settings.agents[agent]
        return self._settings.url

    def on_verdict(self, change: VerdictChange) -> None:
        """Queue a delivery of `change` (quick: never blocks the verdict store)."""
        if change.action == "dry-run" or not self.enabled:
            return
        url = self.url_for(change)
        if url is None:
            return
        if len(self._heap) >= self._settings.queue_size:
            self.sent.labels(outcome="dropped").inc()
            logger.error("webhook queue full; verdict change %d to %s dropped", change.seq, url)
            return
        payload = {
            **change.to_json(),
            "agent": self._index.agent_of(change.scope.type, change.scope.value),
        }
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        heapq.heappush(self._heap, _Delivery(self._clock(), next(self._n), url, body))
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        """Open the HTTP client and start the delivery task (only when a URL is set)."""
        if not self.enabled or self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            connector=aiohttp.TCPConnector(limit=8, force_close=False),
        )
        self._task = self._supervisor.spawn(self._deliver_forever(), name="webhook-actuator")

    async def stop(self) -> None:
        """Stop delivering (undelivered changes are logged, not kept); idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._heap:
            logger.warning("%d webhook deliveries dropped at shutdown", len(self._heap))
            self._heap.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._idle.set()

    async def settle(self) -> None:
        """Wait until every queued delivery succeeded or gave up (tests)."""
        await self._idle.wait()

    async def _deliver_forever(self) -> None:
        while True:
            if not self._heap:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            wait_s = self._heap[0].due_s - self._clock()
            if wait_s > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            delivery = heapq.heappop(self._heap)
            await self._attempt(delivery)

    async def _attempt(self, d: _Delivery) -> None:
        assert self._session is not None
        secret = self._settings.secret.get_secret_value().encode() if self._settings.secret else b""
        ts = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "X-Watchdog-Timestamp": ts,
            "X-Watchdog-Signature": sign(secret, ts, d.body),
            "X-Watchdog-Attempt": str(d.attempt),
        }
        retry = False
        try:
            async with self._session.post(d.url, data=d.body, headers=headers) as resp:
                if resp.status < 300:
                    self.sent.labels(outcome="ok").inc()
                    return
                retry = resp.status in _RETRYABLE
                problem = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            retry = True
            problem = type(err).__name__
        if retry and d.attempt < self._settings.max_attempts:
            delay = min(
                self._settings.backoff_initial_s * 2 ** (d.attempt - 1),
                self._settings.backoff_max_s,
            )
            self.sent.labels(outcome="retry").inc()
            logger.warning(
                "webhook to %s failed (%s), attempt %d; retrying in %.1fs",
                d.url,
                problem,
                d.attempt,
                delay,
            )
            heapq.heappush(
                self._heap,
                _Delivery(self._clock() + delay, next(self._n), d.url, d.body, d.attempt + 1),
            )
        else:
            self.sent.labels(outcome="failed").inc()
            logger.error("webhook to %s gave up after %d attempt(s): %s", d.url, d.attempt, problem)


class SignalActuator:
    """Sends SIGTERM/SIGSTOP/SIGCONT to a configured process on kill/pause/resume (opt-in)."""

    name = "signal-actuator"

    def __init__(self, settings: SignalActuatorSettings, index: AgentIndex) -> None:
        self._settings = settings
        self._index = index
        self.sent: list[tuple[int, str]] = []

    def _pid(self) -> int | None:
        if self._settings.pid is not None:
            return self._settings.pid
        if self._settings.pid_file is not None:
            try:
                return int(Path(self._settings.pid_file).read_text().strip())
            except (OSError, ValueError):
                logger.error("signal actuator: cannot read a pid from %s", self._settings.pid_file)
        return None

    def _concerns(self, change: VerdictChange) -> bool:
        if not self._settings.agents:
            return True
        agent = self._index.agent_of(change.scope.type, change.scope.value)
        return agent in self._settings.agents

    def signal_for(self, change: VerdictChange) -> str | None:
        """Return the signal name a change calls for (None: nothing to send)."""
        if change.action == "dry-run":
            return None
        new = change.verdict.state if change.verdict else None
        old = change.previous.state if change.previous else None
        if new == "kill" and old != "kill":
            return self._settings.kill_signal
        if new == "pause" and old != "pause" and self._settings.pause_signal != "none":
            return self._settings.pause_signal
        if old == "pause" and new != "pause" and self._settings.pause_signal != "none":
            return "SIGCONT"
        return None

    def on_verdict(self, change: VerdictChange) -> None:
        """Send the signal the change calls for, when enabled and the change concerns us."""
        if not self._settings.enabled or not self._concerns(change):
            return
        name = self.signal_for(change)
        pid = self._pid()
        if name is None or pid is None:
            return
        logger.warning(
            "signal actuator: sending %s to pid %d (%s on %s=%s by %s)",
            name,
            pid,
            change.state,
            change.scope.type,
            change.scope.value,
            change.actor,
        )
        try:
            os.kill(pid, getattr(signal, name))
            self.sent.append((pid, name))
        except OSError as err:
            logger.error("signal actuator: %s to pid %d failed: %s", name, pid, err)

    async def start(self) -> None:
        """Announce that the actuator is armed (it has no task)."""
        if self._settings.enabled:
            logger.warning(
                "signal actuator armed: pid %s", self._settings.pid or self._settings.pid_file
            )

    async def stop(self) -> None:
        """Nothing to stop."""

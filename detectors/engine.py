"""The detection engine: runs every detector on each commit and on an interval, isolated.

Guarantees:

* Every committed step is shown to every streaming detector once, in commit order, with
  that detector's state for the step's session. Session state is bounded (LRU of
  `max_sessions`, idle TTL) and rebuilt from the `steps` table when an evicted session
  comes back and, at start, for the sessions active within the TTL.
* A detector that raises is logged and counted (`watchdog_detector_errors_total`) and
  never stops the other detectors or the engine.
* Findings of one commit are handed to the alert store in one call, in step order.
* Commits wait in a bounded queue; when it is full the writer waits (backpressure
  reaches intake as 503s) instead of memory growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from watchdog.detection import (
    DetectorSettings,
    History,
    PeriodicDetector,
    Restorable,
    StepContext,
    StreamingDetector,
)
from watchdog.lifecycle import Supervisor
from watchdog.model import Committed, Finding, Step
from watchdog.store import Store

logger = logging.getLogger(__name__)

# Steps detected between two chances for other tasks (HTTP handlers) to run.
_STEPS_PER_SLICE = 256

RecordFindings = Callable[[Sequence[Finding]], Awaitable[Any]]

_STEP_FIELDS = [f.name for f in dataclasses.fields(Step)]
_STEP_SELECT = ", ".join(
    {"start_time_ns": "epoch_ns(start_time)", "end_time_ns": "epoch_ns(end_time)"}.get(n, n)
    for n in _STEP_FIELDS
)
# How often one failing detector's traceback is logged again (the counter counts all).
_ERROR_LOG_EVERY_S = 60.0


def step_from_row(row: Sequence[Any]) -> Step:
    """Build a Step from a row selected with `_STEP_SELECT`."""
    values = dict(zip(_STEP_FIELDS, row, strict=True))
    values["is_error"] = bool(values["is_error"])
    return Step(**values)


@dataclass(slots=True)
class _Session:
    agent: str
    last_seen_ns: int
    states: dict[str, Any] = field(default_factory=dict)


class EngineMetrics:
    """The engine's self-metrics, on their own registry (added to daemon.metric_registries)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.errors = Counter(
            "watchdog_detector_errors_total",
            "Detector calls that raised.",
            ["detector"],
            registry=r,
        )
        self.findings = Counter(
            "watchdog_detector_findings_total",
            "Findings raised, by detector, rule and severity.",
            ["detector", "rule", "severity"],
            registry=r,
        )
        self.steps = Counter(
            "watchdog_detector_steps_total", "Steps shown to the streaming detectors.", registry=r
        )
        self.sessions = Gauge(
            "watchdog_detector_sessions", "Sessions with in-memory detector state.", registry=r
        )
        self.evictions = Counter(
            "watchdog_detector_session_evictions_total",
            "Sessions whose state was evicted (LRU bound or idle TTL).",
            registry=r,
        )
        self.rehydrations = Counter(
            "watchdog_detector_session_rehydrations_total",
            "Evicted sessions whose state was rebuilt from the store.",
            registry=r,
        )
        self.lag = Histogram(
            "watchdog_detector_lag_seconds",
            "From a commit to its findings being recorded.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.queue = Gauge(
            "watchdog_detector_queued_commits", "Commits waiting for detection.", registry=r
        )


class DetectorEngine:
    """Component that feeds committed steps to streaming detectors and runs periodic ones."""

    name = "detectors"

    def __init__(
        self,
        settings: DetectorSettings,
        store: Store,
        record: RecordFindings,
        supervisor: Supervisor,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.history = History(store)
        self.metrics = EngineMetrics()
        self._record = record
        self._supervisor = supervisor
        self._clock_ns = clock_ns
        self._streaming: list[StreamingDetector] = []
        self._periodic: list[PeriodicDetector] = []
        self._restorable: list[Restorable] = []
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        # Sessions evicted while possibly still alive: a step for one of them rebuilds its
        # state from the store instead of starting from nothing. Bounded like the LRU.
        self._evicted: OrderedDict[str, None] = OrderedDict()
        self._queue: asyncio.Queue[Committed] = asyncio.Queue(settings.max_queued_commits)
        self._queued_steps = 0
        self._drained = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._periodic_tasks: dict[str, asyncio.Task[Any]] = {}
        self._last_error_log: dict[str, float] = {}
        self._started = False
        self._stopped = False

    # -- registration -----------------------------------------------------------------
    def add(self, detector: object) -> None:
        """Register a detector (streaming, periodic, restorable, or several of these)."""
        if self._started:
            raise RuntimeError("detectors must be added before the engine starts")
        matched = False
        if isinstance(detector, StreamingDetector):
            self._streaming.append(detector)
            matched = True
        if isinstance(detector, PeriodicDetector):
            self._periodic.append(detector)
            matched = True
        if isinstance(detector, Restorable):
            self._restorable.append(detector)
        if not matched:
            raise TypeError(f"{detector!r} is neither a streaming nor a periodic detector")

    @property
    def detectors(self) -> list[str]:
        """Names of the registered detectors, in registration order, without repeats."""
        names = [d.name for d in self._streaming] + [d.name for d in self._periodic]
        return list(dict.fromkeys(names))

    async def on_commit(self, notice: Committed) -> None:
        """Writer listener: enqueue the commit; waits while the queue is full.

        Bounded in steps as well as commits: when detection is slower than ingest, the
        writer waits here (and intake answers 503 once its own queue fills), so detection
        lags by at most `max_queued_steps` steps and their memory, never by an ever
        growing backlog.
        """
        if self._stopped:
            return
        n = len(notice.steps)
        while self._queued_steps and self._queued_steps + n > self.settings.max_queued_steps:
            self._drained.clear()
            await self._drained.wait()
            if self._stopped:
                return
        self._queued_steps += n
        await self._queue.put(notice)
        self.metrics.queue.set(self._queue.qsize())

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild state from the store, run baselines once, then start the worker and jobs.

        The rebuild happens before the daemon binds its listener, so no step is counted
        both by a restore query and live.
        """
        if self._started or self._stopped:
            return
        self._started = True
        now = self._clock_ns()
        for restorable in self._restorable:
            try:
                await restorable.restore(self.history, now)
            except Exception:
                self._count_error(getattr(restorable, "name", type(restorable).__name__), "restore")
        await self._replay_recent(now)
        await self.run_periodic_now()
        self._worker = self._supervisor.spawn(self._run(), name="detectors:engine")
        if self._periodic:
            self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
            for det in self._periodic:
                self._scheduler.add_job(
                    self._trigger_periodic,
                    "interval",
                    seconds=det.interval_s,
                    args=[det],
                    id=f"detector:{det.name}",
                    max_instances=1,
                    coalesce=True,
                )
            self._scheduler.start()

    async def stop(self) -> None:
        """Stop the jobs, finish queued commits (bounded wait), stop the worker; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.shutdown(wait=False)
        if self._worker is not None and not self._worker.done():
            try:
                await asyncio.wait_for(self._queue.join(), 4.0)
            except TimeoutError:
                logger.warning("detection stopped with %d commits unprocessed", self._queue.qsize())
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._periodic_tasks.values()):
            task.cancel()
        self._drained.set()  # a writer waiting for room must not wait forever

    async def settle(self) -> None:
        """Return once every commit queued so far has been processed and recorded."""
        if self._worker is None or self._worker.done():
            return
        await self._queue.join()
        running = [t for t in self._periodic_tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running)

    async def run_periodic_now(self) -> None:
        """Run every periodic detector once and record its findings (start-up and tests)."""
        for det in self._periodic:
            await self._run_periodic(det)

    # -- streaming --------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            notice = await self._queue.get()
            try:
                await self._process(notice)
            except Exception:  # the engine itself must outlive any one bad commit
                logger.exception("detection of a commit of %d steps failed", len(notice.steps))
                self._count_error("engine", "process")
            finally:
                self._queued_steps -= len(notice.steps)
                self._drained.set()
                self._queue.task_done()
                self.metrics.queue.set(self._queue.qsize())

    async def _process(self, notice: Committed) -> None:
        now = self._clock_ns()
        self._expire(now)
        returning = {s.session_id for s in notice.steps if s.session_id in self._evicted}
        if returning:
            exclude = {s.span_id for s in notice.steps}
            for session_id in returning:
                await self._rehydrate(session_id, exclude, now)
        findings: list[Finding] = []
        for i, step in enumerate(notice.steps, 1):
            findings.extend(self._observe(step, now, replay=False))
            if i % _STEPS_PER_SLICE == 0 and i < len(notice.steps):
                # A group commit can hold thousands of steps: record what was found so far
                # (a kill must not wait for the rest) and let HTTP handlers (guard checks)
                # run between slices instead of after the whole commit.
                await self._record_findings(findings)
                findings = []
                await asyncio.sleep(0)
        self.metrics.steps.inc(len(notice.steps))
        self.metrics.sessions.set(len(self._sessions))
        await self._record_findings(findings)
        self.metrics.lag.observe(max(self._clock_ns() - notice.committed_at_ns, 0) / 1e9)

    async def _record_findings(self, findings: list[Finding]) -> None:
        if not findings:
            return
        for f in findings:
            self.metrics.findings.labels(f.detector, f.rule, f.severity).inc()
        try:
            await self._record(findings)
        except Exception:
            logger.exception("recording %d findings failed", len(findings))
            self._count_error("engine", "record")

    def _observe(self, step: Step, now: int, *, replay: bool) -> list[Finding]:
        session = self._touch(step, now)
        ctx = StepContext(now_ns=now, rules=self.settings.for_agent(step.agent_name), replay=replay)
        out: list[Finding] = []
        for det in self._streaming:
            try:
                state = session.states.get(det.name)
                if state is None:
                    state = session.states[det.name] = det.new_state()
                found = det.observe(state, step, ctx)
            except Exception:
                self._count_error(det.name, "observe")
                continue
            if found and not replay:
                out.extend(found)
        return out

    def _touch(self, step: Step, now: int) -> _Session:
        session = self._sessions.get(step.session_id)
        if session is None:
            session = _Session(step.agent_name, now)
            self._sessions[step.session_id] = session
            self._evicted.pop(step.session_id, None)
            while len(self._sessions) > self.settings.max_sessions:
                self._evict(*self._sessions.popitem(last=False))
        else:
            session.last_seen_ns = now
            self._sessions.move_to_end(step.session_id)
        return session

    def _evict(self, session_id: str, session: _Session) -> None:
        self.metrics.evictions.inc()
        self._evicted[session_id] = None
        while len(self._evicted) > 4 * self.settings.max_sessions:
            self._evicted.popitem(last=False)

    def _expire(self, now: int) -> None:
        horizon = now - int(self.settings.session_idle_ttl_s * 1e9)
        while self._sessions:
            session_id, session = next(iter(self._sessions.items()))
            if session.last_seen_ns >= horizon:
                break
            del self._sessions[session_id]
            self._evict(session_id, session)

    async def _rehydrate(self, session_id: str, exclude: set[str], now: int) -> None:
        limit = self.settings.max_steps_per_session_replay
        try:
            rows = await self.history.query(
                f"SELECT {_STEP_SELECT} FROM steps WHERE session_id = ? "
                "ORDER BY end_time DESC, start_time DESC LIMIT ?",
                [session_id, limit + len(exclude)],
            )
        except Exception:
            logger.exception("rebuilding state of session %s failed", session_id)
            self._count_error("engine", "rehydrate")
            return
        steps = [step_from_row(r) for r in reversed(rows)]
        steps = [s for s in steps if s.span_id not in exclude][-limit:]
        self.metrics.rehydrations.inc()
        for step in steps:
            self._observe(step, now, replay=True)

    async def _replay_recent(self, now: int) -> None:
        if self.settings.max_replay_steps <= 0 or not self._streaming:
            return
        since_us = (now - int(self.settings.session_idle_ttl_s * 1e9)) // 1000
        try:
            rows = await self.history.query(
                f"""
                WITH recent AS (
                    SELECT session_id, max(end_time) AS last_end FROM steps
                    WHERE end_time >= make_timestamp(?::BIGINT)
                    GROUP BY session_id ORDER BY last_end DESC LIMIT ?
                ), ranked AS (
                    SELECT s.*, r.last_end, row_number() OVER (
                        PARTITION BY s.session_id ORDER BY s.end_time DESC, s.start_time DESC
                    ) AS rn
                    FROM steps s JOIN recent r USING (session_id)
                )
                SELECT {_STEP_SELECT} FROM ranked WHERE rn <= ?
                ORDER BY last_end DESC, session_id, end_time, start_time
                LIMIT ?
                """,
                [
                    since_us,
                    self.settings.max_sessions,
                    self.settings.max_steps_per_session_replay,
                    self.settings.max_replay_steps,
                ],
            )
        except Exception:
            logger.exception("rebuilding detector state at start failed")
            self._count_error("engine", "replay")
            return
        # Rows come most recent session first; replay oldest first so the LRU order matches.
        groups: list[list[Step]] = []
        last = None
        for row in rows:
            step = step_from_row(row)
            if step.session_id != last:
                groups.append([])
                last = step.session_id
            groups[-1].append(step)
        for group in reversed(groups):
            for step in group:
                self._observe(step, now, replay=True)
        if rows:
            logger.info("rebuilt detector state of %d sessions (%d steps)", len(groups), len(rows))

    # -- periodic ---------------------------------------------------------------------
    async def _trigger_periodic(self, det: PeriodicDetector) -> None:
        # A coroutine job: AsyncIOScheduler runs it on the event loop (a plain function
        # would run in a worker thread, where no task can be created).
        running = self._periodic_tasks.get(det.name)
        if running is not None and not running.done():
            return  # the previous run is still going; skip rather than pile up
        self._periodic_tasks[det.name] = self._supervisor.spawn(
            self._run_periodic(det), name=f"detectors:{det.name}:periodic"
        )

    async def _run_periodic(self, det: PeriodicDetector) -> None:
        now = self._clock_ns()
        try:
            findings = list(await det.run(self.history, now))
        except Exception:
            self._count_error(det.name, "periodic")
            return
        if findings:
            for f in findings:
                self.metrics.findings.labels(f.detector, f.rule, f.severity).inc()
            try:
                await self._record(findings)
            except Exception:
                logger.exception("recording %d periodic findings failed", len(findings))
                self._count_error("engine", "record")

    # -- errors -----------------------------------------------------------------------
    def _count_error(self, detector: str, phase: str) -> None:
        """Count the current exception and log it (with traceback at most once a minute)."""
        self.metrics.errors.labels(detector).inc()
        now = time.monotonic()
        last = self._last_error_log.get(detector)
        if last is None or now - last >= _ERROR_LOG_EVERY_S:
            self._last_error_log[detector] = now
            logger.exception("detector %s failed in %s (further errors counted)", detector, phase)

"""The daemon: build every component, start them sinks-first, stop them sources-first.

One idempotent `stop()` serves every trigger (SIGTERM, SIGINT, a critical crash, a test).
Stop order: refuse new intake, drain and commit the queue, stop the other components,
close the store. An acknowledged span is therefore always on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from watchdog.alertstore import AlertStore
from watchdog.gcpolicy import tune_gc
from watchdog.http import build_app
from watchdog.lifecycle import Component, Supervisor
from watchdog.pipeline import BatchWriter, IngestQueue
from watchdog.pricing import Pricer
from watchdog.settings import Settings
from watchdog.store import Store
from watchdog.verdicts import VerdictStore

logger = logging.getLogger(__name__)


class Daemon:
    """One watchdog process: store, ingest pipeline, components and the HTTP listener."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(
            settings.db_path,
            memory_limit=settings.storage.memory_limit,
            threads=settings.storage.threads,
            checkpoint_threshold=settings.storage.checkpoint_threshold,
        )
        self.pricer = Pricer(settings.prices.overrides_file)
        self.supervisor = Supervisor()
        self.supervisor.on_critical_crash.append(lambda name: self.request_stop(exit_code=1))
        self.queue = IngestQueue(settings.ingest.max_queued_spans, settings.ingest.retry_after_s)
        self.writer = BatchWriter(
            self.queue, self.store.write_spans, settings.ingest.max_batch_spans
        )
        # Listener queues start as a component (registry); stop drains them.
        self.alerts = AlertStore(self.store, supervisor=self.supervisor)
        self.verdicts = VerdictStore(
            self.store,
            self.supervisor,
            default_pause_ttl_s=settings.enforcement.pause_timeout_s,
            default_deny_ttl_s=settings.enforcement.deny_ttl_s,
        )
        self.app = build_app(self)
        self.components: list[Component] = []
        self.metric_registries: list[CollectorRegistry] = []
        self.services: dict[str, Any] = {}
        self.ready = False
        self.url = ""
        self.exit_code = 0
        self._runner: web.AppRunner | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._stopped = False
        self._started = False

    async def start(self) -> None:
        """Open the store, start the writer and components, then bind the listener last."""
        from watchdog.registry import wire_components  # composition root

        await asyncio.to_thread(self.store.open)
        await self.alerts.load()
        await self.verdicts.load()  # sticky kills are served from the first request
        self._writer_task = self.supervisor.spawn(self.writer.run(), name="writer", critical=True)
        wire_components(self)
        for comp in self.components:
            await comp.start()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.server.host, self.settings.server.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port
        host, port = sockets[0].getsockname()[:2] if sockets else (self.settings.server.host, 0)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self.ready = True
        self._started = True
        logger.info("watchdog listening on %s (data: %s)", self.url, self.settings.db_path)

    def request_stop(self, exit_code: int = 0) -> None:
        """Ask `run_forever` to stop (signal handlers and crash callbacks call this)."""
        self.exit_code = self.exit_code or exit_code
        self._stop_requested.set()

    async def run_forever(self) -> int:
        """Start, wait for SIGTERM/SIGINT, stop; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        # What start built (modules, price tables, replayed detector state) lives as long as
        # the process: frozen, it is no longer rescanned by every full garbage collection.
        gc.collect()
        gc.freeze()
        tune_gc()
        print(f"watchdog listening on {self.url}", flush=True)
        await self._stop_requested.wait()
        await self.stop()
        return self.exit_code

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until queued spans are committed and components report idle (tests)."""
        deadline = time.monotonic() + timeout_s
        await asyncio.wait_for(self.writer.wait_idle(), timeout_s)
        while True:
            announced = self.alerts.announced
            for comp in self.components:
                settle = getattr(comp, "settle", None)
                if settle is not None:
                    await asyncio.wait_for(settle(), max(deadline - time.monotonic(), 0.1))
            # An alert change made while the components settled (a resolve, a receiver
            # disabled) is dispatched on the alert store's task: settle again for it.
            if self.alerts.announced == announced:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError("alert changes kept coming while settling")

    async def stop(self) -> None:
        """Stop intake, drain and commit the queue, stop components, close the store."""
        if self._stopped:
            return
        self._stopped = True
        self.ready = False
        # 1. Stop intake: no new connections; in-flight requests finish (their commits
        #    are still served by the writer, which runs until step 2 ends).
        if self._runner is not None:
            await self._runner.shutdown()
        # 2. Drain: everything queued is committed before anything else stops.
        self.queue.close()
        if self._writer_task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._writer_task), self.settings.ingest.shutdown_drain_s
                )
            except TimeoutError:
                logger.error("drain timed out with %d spans uncommitted", self.queue.depth)
                self.exit_code = self.exit_code or 1
        # 3. Components, in reverse start order.
        for comp in reversed(self.components):
            try:
                await asyncio.wait_for(comp.stop(), 5.0)
            except Exception:  # one component failing to stop must not skip the others
                logger.exception("component %s failed to stop", getattr(comp, "name", comp))
        if self._runner is not None:
            await self._runner.cleanup()
        await self.supervisor.cancel_all()
        await asyncio.to_thread(self.store.close)
        logger.info("watchdog stopped")

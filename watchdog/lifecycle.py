"""The component lifecycle contract and the supervisor that owns every background task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from aiohttp import web

logger = logging.getLogger(__name__)


class Component(Protocol):
    """A part of the daemon with a start/stop lifecycle.

    `start` returns promptly (long work goes to `Supervisor.spawn`); `stop` is safe before
    `start` and safe twice, stops the component's own tasks and flushes its buffers.
    """

    name: str

    async def start(self) -> None:
        """Begin work."""

    async def stop(self) -> None:
        """End work, flushing buffers; idempotent."""


class Routed(Protocol):
    """A component that serves HTTP routes on the daemon's one listener."""

    def add_routes(self, app: web.Application) -> None:
        """Register routes on `app` before it starts."""


class Supervisor:
    """Creates, names, keeps and cancels every background task of the daemon."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.crashes: dict[str, int] = {}
        self.on_critical_crash: list[Any] = []

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str, critical: bool = False
    ) -> asyncio.Task[Any]:
        """Run `coro` as a named task; a crash is logged, counted and, if critical, stops the daemon."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            err = t.exception()
            if err is not None:
                self.crashes[name] = self.crashes.get(name, 0) + 1
                logger.error("task %s crashed", name, exc_info=err)
                if critical:
                    for cb in self.on_critical_crash:
                        cb(name)

        task.add_done_callback(done)
        return task

    async def cancel_all(self, timeout_s: float = 2.0) -> None:
        """Cancel every task still running and wait briefly, naming the stragglers."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for t in pending:
                logger.warning("task %s did not stop in time", t.get_name())

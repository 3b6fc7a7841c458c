"""Listener fan-out for the stores that announce changes (alerts, verdicts, holds).

- `notify()` calls listeners one after another, in subscription order; one that raises
  is logged and the others still run.
- `Lane` is a bounded queue with its own task, so listeners do not hold up the code
  that announces (beyond the queue's bound). Events are delivered in order, in
  batches of what is waiting, so a listener can handle a storm in a few transactions.
- `nap()` and `cancel()` are the sleep-until-woken and stop steps of the stores'
  background loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from watchdog.lifecycle import Supervisor

logger = logging.getLogger(__name__)

E = TypeVar("E")
Listener = Callable[[E], Awaitable[None] | None]


async def notify(listeners: Sequence[Listener[E]], event: E, *, what: str) -> None:
    """Call each listener with `event` in order; a listener that raises is logged, not fatal."""
    for listener in list(listeners):
        try:
            result = listener(event)
            if result is not None:
                await result
        except Exception:  # one listener's bug must not stop the others
            logger.exception("%s listener %r failed", what, listener)


async def nap(wake: asyncio.Event, wait_s: float) -> None:
    """Sleep up to `wait_s`, or until `wake` is set (it is cleared first)."""
    wake.clear()
    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races
    # with the event being set, and a stop() awaiting the task would then wait forever.
    try:
        async with asyncio.timeout(max(wait_s, 0.0)):
            await wake.wait()
    except TimeoutError:
        pass


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for it to end (nothing to do for None)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class Lane(Generic[E]):
    """A bounded, first-in-first-out event queue drained by its own task.

    `put()` waits while `max_queued` events are waiting (back-pressure, never unbounded
    memory). The task hands `deliver` everything waiting, up to `max_batch` events at a
    time, in order. With `linger_s`, a batch waits up to that long to fill (a storm then
    costs a few deliveries, not one per event) unless an event that `urgent` picks, or a
    full batch, is waiting: urgent events are handed over at once, with everything
    queued before them (order is never changed). Until `start()` (and after `stop()`)
    `put()` delivers inline. `deliver` runs on the lane's task: it must not wait for a
    `put()` on this lane.
    """

    def __init__(
        self,
        deliver: Callable[[Sequence[E]], Awaitable[None]],
        *,
        name: str,
        urgent: Callable[[E], bool] | None = None,
        max_queued: int = 4096,
        max_batch: int = 1,
        linger_s: float = 0.0,
    ) -> None:
        if max_queued < 1 or max_batch < 1 or linger_s < 0:
            raise ValueError("max_queued and max_batch must be at least 1, linger_s >= 0")
        self.name = name
        self.max_queued = max_queued
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._deliver = deliver
        self._urgent = urgent
        self._queue: deque[tuple[E, bool]] = deque()  # (event, urgent)
        self._urgent_queued = 0
        self._hurry = False  # an urgent event or a full batch is waiting: do not linger
        self._flush = asyncio.Event()  # wakes a lingering task when _hurry turns true
        self._ready = asyncio.Event()  # something is queued
        self._space = asyncio.Event()  # a put may proceed
        self._space.set()
        self._idle = asyncio.Event()  # nothing queued and nothing being delivered
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Events waiting (not counting those being delivered)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Tell whether the lane's task is delivering."""
        return self._task is not None and not self._task.done()

    @property
    def idle(self) -> bool:
        """Tell whether nothing is queued or being delivered."""
        return self._idle.is_set() or not self.running

    def start(self, supervisor: Supervisor, task_name: str) -> None:
        """Start the task that delivers (idempotent)."""
        if not self.running:
            self._task = supervisor.spawn(self._run(), name=task_name)

    async def put(self, event: E) -> None:
        """Queue `event` (waiting while the queue is full), or deliver it now if not started."""
        if not self.running:
            await self._call([event])
            return
        while len(self._queue) >= self.max_queued:
            self._space.clear()
            await self._space.wait()
        urgent = self._is_urgent(event)
        self._queue.append((event, urgent))
        self._urgent_queued += urgent
        self._idle.clear()
        self._ready.set()
        if urgent or len(self._queue) >= self.max_batch:
            self._hurry = True
            self._flush.set()

    async def settle(self) -> None:
        """Return once every event queued so far has been delivered."""
        while self.running and not self._idle.is_set():
            await self._idle.wait()

    async def stop(self, drain_s: float) -> int:
        """Let the queue drain for up to `drain_s`, then stop; return how many were dropped."""
        if self.running:
            self._hurry = True  # no lingering while draining
            self._flush.set()
            try:
                async with asyncio.timeout(drain_s):
                    await self.settle()
            except TimeoutError:
                pass
        task, self._task = self._task, None
        await cancel(task)
        dropped = len(self._queue)
        self._queue.clear()
        self._urgent_queued = 0
        self._idle.set()
        self._space.set()
        return dropped

    def _is_urgent(self, event: E) -> bool:
        if self._urgent is None:
            return False
        try:
            return self._urgent(event)
        except Exception:  # a broken predicate only loses the hurry, not the event
            logger.exception("urgency check of %s failed", self.name)
            return False

    async def _call(self, events: Sequence[E]) -> None:
        try:
            await self._deliver(events)
        except Exception:  # the lane outlives a listener's bug
            logger.exception("%s failed on %d events", self.name, len(events))

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            if self.linger_s and not self._hurry:
                await nap(self._flush, self.linger_s)
            batch = []
            for _ in range(min(self.max_batch, len(self._queue))):
                event, urgent = self._queue.popleft()
                self._urgent_queued -= urgent
                batch.append(event)
            self._hurry = self._urgent_queued > 0 or len(self._queue) >= self.max_batch
            self._space.set()
            await self._call(batch)

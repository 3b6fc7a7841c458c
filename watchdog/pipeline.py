"""The bounded ingest queue and the single batch writer that commits before acknowledging.

A request's spans are offered as one `SpanBatch`; the queue refuses (RetryableError → 503)
rather than grow past `max_queued_spans`. One `BatchWriter` task takes whatever is queued
(group commit), writes it in one DuckDB transaction on the store's writer thread, and only
then resolves each batch's future, so a 200 always means "on disk".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from watchdog.batch import SpanBatch
from watchdog.errors import RetryableError
from watchdog.model import Committed
from watchdog.telemetry import METRICS

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    batch: SpanBatch
    future: asyncio.Future[None]


CommitListener = Callable[[Committed], Awaitable[None] | None]


class IngestQueue:
    """A queue bounded by span count; `offer` never blocks and refuses when full."""

    def __init__(self, max_spans: int, retry_after_s: int = 1) -> None:
        self._max_spans = max_spans
        self._retry_after_s = retry_after_s
        self._items: deque[_Pending] = deque()
        self._spans = 0
        self._closed = False
        self._ready = asyncio.Event()

    @property
    def depth(self) -> int:
        """Spans waiting for commit."""
        return self._spans

    @property
    def closed(self) -> bool:
        """True once shutdown began; no more offers are accepted."""
        return self._closed

    def offer(self, batch: SpanBatch) -> asyncio.Future[None]:
        """Enqueue a batch; the future resolves once it is committed.

        Raises RetryableError when the queue is full or closed, so the caller answers 503
        with Retry-After instead of buffering without bound.
        """
        if self._closed:
            raise RetryableError("watchdog is shutting down", retry_after=self._retry_after_s)
        n = len(batch)
        # A batch larger than the whole bound is still let in when the queue is empty;
        # otherwise one big request could never be accepted.
        if self._spans and self._spans + n > self._max_spans:
            METRICS.queue_full.inc()
            raise RetryableError(
                f"ingest queue full ({self._spans} spans waiting)", retry_after=self._retry_after_s
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.append(_Pending(batch, fut))
        self._spans += n
        METRICS.queue_depth.set(self._spans)
        self._ready.set()
        return fut

    def close(self) -> None:
        """Refuse new offers; what is queued still drains."""
        self._closed = True
        self._ready.set()

    async def take(self, max_spans: int) -> list[_Pending]:
        """Wait for at least one batch, then return queued batches up to `max_spans`.

        Returns an empty list only when the queue is closed and empty.
        """
        while not self._items:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        taken: list[_Pending] = []
        total = 0
        while self._items and (not taken or total + len(self._items[0].batch) <= max_spans):
            p = self._items.popleft()
            taken.append(p)
            total += len(p.batch)
        return taken

    def release(self, n_spans: int) -> None:
        """Account for spans that left the queue (committed or failed)."""
        self._spans -= n_spans
        METRICS.queue_depth.set(self._spans)


class RecentKeys:
    """A bounded memory of recently committed span keys, to drop OTLP re-sends (at-least-once).

    Two generations of sets: keys go into the newer one, which becomes the older one
    (dropping the previous older one) when it holds `capacity // 2` keys. So between
    `capacity // 2` and `capacity` of the latest keys are remembered, and every operation
    is a C-level set operation over a whole batch.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._half = max(capacity // 2, 1)
        self._new: set[str] = set()
        self._old: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._new or key in self._old

    def seen(self, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` remembered as committed."""
        return self._new.intersection(keys) | self._old.intersection(keys)

    def add_all(self, keys: Sequence[str]) -> None:
        """Remember `keys`, forgetting the oldest generation when the newer one is full."""
        self._new.update(keys)
        if len(self._new) >= self._half:
            self._old, self._new = self._new, set()


class BatchWriter:
    """The only task that writes spans: group commit, then acknowledge, then notify."""

    def __init__(
        self,
        queue: IngestQueue,
        write: Callable[[SpanBatch], Awaitable[None]],
        max_batch_spans: int,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._queue = queue
        self._write = write
        self._max_batch_spans = max_batch_spans
        self._clock_ns = clock_ns
        self._listeners: list[CommitListener] = []
        self._recent = RecentKeys()
        self._idle = asyncio.Event()
        self._idle.set()

    def subscribe(self, listener: CommitListener) -> None:
        """Call `listener` after every commit with what was committed (in writer order)."""
        self._listeners.append(listener)

    async def wait_idle(self) -> None:
        """Return once nothing is queued and no commit is in flight."""
        while self._queue.depth or not self._idle.is_set():
            await asyncio.sleep(0.005)

    async def run(self) -> None:
        """Commit batches until the queue is closed and drained."""
        while True:
            pending = await self._queue.take(self._max_batch_spans)
            if not pending:
                return
            self._idle.clear()
            try:
                await self._commit(pending)
            finally:
                self._idle.set()

    async def _commit(self, pending: list[_Pending]) -> None:
        merged = SpanBatch.merge([p.batch for p in pending])
        n_spans = len(merged)
        keys = merged.keys
        resent = self._recent.seen(keys)
        if resent or len(set(keys)) != len(keys):  # rare: a re-send, or a span sent twice
            seen: set[str] = set()
            keep = []
            for k in keys:
                keep.append(k not in resent and k not in seen)
                seen.add(k)
            METRICS.spans_duplicate.inc(keep.count(False))
            merged = merged.keep_rows(keep)
        started = time.perf_counter()
        try:
            await self._write(merged)
        except Exception as err:  # storage failure: every waiting request gets a retryable 503
            logger.exception("batch commit failed (%d spans); senders will retry", n_spans)
            METRICS.commit_errors.inc()
            for p in pending:
                if not p.future.done():
                    p.future.set_exception(
                        RetryableError(f"storage error: {type(err).__name__}", retry_after=1)
                    )
            self._queue.release(n_spans)
            return
        METRICS.commit_seconds.observe(time.perf_counter() - started)
        METRICS.spans_stored.inc(len(merged))
        self._recent.add_all(keys)
        self._queue.release(n_spans)
        for p in pending:
            if not p.future.done():
                p.future.set_result(None)
        if merged.steps and self._listeners:
            notice = Committed(merged.steps, len(merged), self._clock_ns())
            for listener in self._listeners:
                try:
                    result = listener(notice)
                    if result is not None:
                        await result
                except Exception:  # a listener's bug must never stop the writer
                    logger.exception("commit listener %r failed", listener)

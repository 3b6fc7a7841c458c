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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdog.errors import RetryableError
from watchdog.model import Committed, Step
from watchdog.telemetry import METRICS

logger = logging.getLogger(__name__)

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")


@dataclass(slots=True)
class SpanBatch:
    """The rows of one request: span columns in `otel_traces` order plus normalized steps.

    Map columns are kept flat (keys, values, per-row lengths) so the writer builds Arrow
    map arrays without touching each pair again.
    """

    timestamp_ns: list[int] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)
    span_id: list[str] = field(default_factory=list)
    parent_span_id: list[str] = field(default_factory=list)
    trace_state: list[str] = field(default_factory=list)
    span_name: list[str] = field(default_factory=list)
    span_kind: list[str] = field(default_factory=list)
    service_name: list[str] = field(default_factory=list)
    scope_name: list[str] = field(default_factory=list)
    scope_version: list[str] = field(default_factory=list)
    duration_ns: list[int] = field(default_factory=list)
    status_code: list[str] = field(default_factory=list)
    status_message: list[str] = field(default_factory=list)
    res_keys: list[str] = field(default_factory=list)
    res_vals: list[str] = field(default_factory=list)
    res_lens: list[int] = field(default_factory=list)
    attr_keys: list[str] = field(default_factory=list)
    attr_vals: list[str] = field(default_factory=list)
    attr_lens: list[int] = field(default_factory=list)
    events: list[list[dict[str, Any]]] = field(default_factory=list)
    links: list[list[dict[str, Any]]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.span_id)

    def extend(self, other: SpanBatch) -> None:
        """Append every row of `other` (used by the writer to group commits)."""
        for name in self.__slots__:  # type: ignore[attr-defined]
            getattr(self, name).extend(getattr(other, name))

    def drop_rows(self, keep: Sequence[bool]) -> SpanBatch:
        """Return a copy holding only the span rows whose flag in `keep` is true."""
        out = SpanBatch()
        res_pos = attr_pos = 0
        simple = [n for n in self.__slots__ if n not in _FLAT]  # type: ignore[attr-defined]
        for i, k in enumerate(keep):
            rl, al = self.res_lens[i], self.attr_lens[i]
            if k:
                for name in simple:
                    if name != "steps":
                        getattr(out, name).append(getattr(self, name)[i])
                out.res_keys.extend(self.res_keys[res_pos : res_pos + rl])
                out.res_vals.extend(self.res_vals[res_pos : res_pos + rl])
                out.res_lens.append(rl)
                out.attr_keys.extend(self.attr_keys[attr_pos : attr_pos + al])
                out.attr_vals.extend(self.attr_vals[attr_pos : attr_pos + al])
                out.attr_lens.append(al)
            res_pos += rl
            attr_pos += al
        kept = {self.span_id[i] + self.trace_id[i] for i, k in enumerate(keep) if k}
        out.steps = [s for s in self.steps if s.span_id + s.trace_id in kept]
        return out


_FLAT = frozenset({"res_keys", "res_vals", "res_lens", "attr_keys", "attr_vals", "attr_lens"})


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
    """A bounded set of recently committed span keys, to drop OTLP re-sends (at-least-once)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add_all(self, keys: Sequence[str]) -> None:
        """Remember `keys`, forgetting the oldest beyond capacity."""
        for k in keys:
            self._keys[k] = None
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)


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
        merged = SpanBatch()
        for p in pending:
            merged.extend(p.batch)
        n_spans = len(merged)
        keys = [t + s for t, s in zip(merged.trace_id, merged.span_id, strict=True)]
        seen: set[str] = set()
        keep = []
        for k in keys:
            keep.append(k not in self._recent and k not in seen)
            seen.add(k)
        if not all(keep):
            METRICS.spans_duplicate.inc(keep.count(False))
            merged = merged.drop_rows(keep)
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

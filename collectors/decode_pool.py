"""Decode OTLP request bodies in worker processes, so the event loop only unpickles rows.

Decoding and normalizing a span costs tens of microseconds of pure Python; on the event
loop that competes with HTTP, detection and the writer for one GIL. A worker process
turns a body into sealed Arrow tables plus step tuples on another core and sends them
back as Arrow IPC buffers, which costs the loop a small fraction of decoding it. Workers are stateless
apart from their Pricer, so a crashed worker only fails the requests it held (503,
the client retries) and the pool is rebuilt.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from collectors.otlp import DecodedRequest, decode_request, parse_json, parse_protobuf
from watchdog.batch import SpanBatch
from watchdog.errors import RetryableError
from watchdog.gcpolicy import tune_gc
from watchdog.pricing import Pricer

logger = logging.getLogger(__name__)

_PRICER: Pricer | None = None


def _init_worker(overrides_file: Path | None) -> None:
    global _PRICER
    tune_gc()
    _PRICER = Pricer(overrides_file)


_Wire = tuple[tuple[bytes, bytes, list[tuple[Any, ...]], list[str]], int, list[str]]


def _decode(body: bytes, is_json: bool) -> _Wire:
    assert _PRICER is not None, "worker not initialized"
    req = parse_json(body) if is_json else parse_protobuf(body)
    out = decode_request(req, _PRICER)
    return out.batch.to_wire(), out.rejected, out.messages


# Linux pipes hold 64 KiB by default. A 500-span body (~200 KiB) or its decoded rows
# (~600 KiB) then cross in a dozen write/wake/read rounds between the processes; a 1 MiB
# pipe (the default /proc/sys/fs/pipe-max-size) takes one.
_PIPE_BYTES = 1 << 20


def _widen_pipes(pool: ProcessPoolExecutor) -> None:
    """Best effort: enlarge the pool's call and result pipes (Linux only)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return
    for name in ("_call_queue", "_result_queue"):
        conn = getattr(getattr(pool, name, None), "_reader", None)
        if conn is None:
            continue
        try:
            fcntl.fcntl(conn.fileno(), set_size, _PIPE_BYTES)
        except OSError:  # capped lower by the system: keep the default
            logger.debug("could not enlarge the %s pipe", name, exc_info=True)


class DecodePool:
    """A pool of decoding processes with the Component lifecycle."""

    name = "decode-pool"

    def __init__(self, workers: int, overrides_file: Path | None) -> None:
        self._workers = workers
        self._overrides_file = overrides_file
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # forkserver: the daemon runs DuckDB threads, and forking a threaded process is unsafe.
        pool = ProcessPoolExecutor(
            self._workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_init_worker,
            initargs=(self._overrides_file,),
        )
        _widen_pipes(pool)
        return pool

    async def start(self) -> None:
        """Start the workers and wait until each has imported its code."""
        if self._pool is not None:
            return
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, _init_worker, self._overrides_file)
                for _ in range(self._workers)
            )
        )

    async def stop(self) -> None:
        """Stop the workers (after intake has stopped); safe twice and before start."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    async def decode(self, body: bytes, is_json: bool) -> DecodedRequest:
        """Decode one body in a worker; PermanentError for bad input, RetryableError if a worker died."""
        if self._pool is None:
            raise RetryableError("decoder is not running", retry_after=1)
        loop = asyncio.get_running_loop()
        try:
            wire, rejected, messages = await loop.run_in_executor(
                self._pool, _decode, body, is_json
            )
        except BrokenProcessPool as err:
            logger.error("a decode worker died; restarting the pool")
            old, self._pool = self._pool, self._new_pool()
            if old is not None:
                old.shutdown(wait=False, cancel_futures=True)
            raise RetryableError("decoder restarted", retry_after=1) from err
        return DecodedRequest(SpanBatch.from_wire(wire), rejected, messages)

"""Decoding in worker processes gives the same rows and errors as decoding inline."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collectors.decode_pool import DecodePool
from tests.conftest import DaemonThread
from tests.otlp_builders import json_body, llm_attrs, make_request, make_span, post
from watchdog.gcpolicy import THRESHOLDS


def test_worker_decoding_matches_inline(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pooled: DaemonThread = daemon_factory(ingest={"decode_workers": 1}, data_dir=tmp_path / "a")
    inline: DaemonThread = daemon_factory(ingest={"decode_workers": 0}, data_dir=tmp_path / "b")
    cached = {"gen_ai.usage.cache_read.input_tokens": 100}
    good = [make_span(attrs=llm_attrs(inp=500 + i, **cached)) for i in range(4)]
    bad = make_span(trace_id=b"\x01" * 3)
    req = make_request([*good, bad])
    results = []
    for d in (pooled, inline):
        status, body, _ = post(d.url, req.SerializeToString())
        assert status == 200
        results.append(ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans)
        assert post(d.url, json_body(make_request([make_span()])), "application/json")[0] == 200
        status, body, _ = post(d.url, b"\xff\xff garbage")
        assert status == 400
        assert status_pb2.Status.FromString(body).message
    assert results == [1, 1]
    cols = "trace_id, span_id, kind, model, input_tokens, cost_usd, price_source"
    q = f"SELECT {cols} FROM steps ORDER BY span_id"
    assert pooled.query(q) == inline.query(q)
    assert len(pooled.query(q)) == 4
    sq = 'SELECT "SpanId", "SpanAttributes", "ResourceAttributes" FROM spans WHERE cardinality("SpanAttributes") > 0 ORDER BY 1'
    assert pooled.query(sq) == inline.query(sq)


async def test_workers_run_with_the_tuned_gc_thresholds() -> None:
    # A worker allocates a few containers per attribute; at CPython's default threshold
    # its collector ran ~1,200 times per 600,000 spans (watchdog/gcpolicy.py).
    pool = DecodePool(1, None)
    await pool.start()
    try:
        assert pool._pool is not None
        got = await asyncio.get_running_loop().run_in_executor(pool._pool, gc.get_threshold)
    finally:
        await pool.stop()
    assert got == THRESHOLDS

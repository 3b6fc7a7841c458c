"""`POST /v1/traces`: the OTLP/HTTP trace receiver (protobuf and JSON, gzip, back-pressure).

Status mapping (one table, as the Collector does): unsupported type 415, too large 413,
undecodable 400, some spans invalid 200 + partial_success, queue full or storage hiccup
503 + Retry-After. Every error body is a `google.rpc.Status` in the request's encoding,
and a 200 is sent only after the spans are committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib

from aiohttp import web
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from collectors.decode_pool import DecodePool
from collectors.otlp import DecodedRequest, decode_request, parse_json, parse_protobuf
from watchdog.errors import PermanentError, RetryableError
from watchdog.pipeline import IngestQueue
from watchdog.pricing import Pricer
from watchdog.telemetry import METRICS

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# gRPC-style codes carried in google.rpc.Status bodies.
_CODE_INVALID_ARGUMENT = 3
_CODE_RESOURCE_EXHAUSTED = 8
_CODE_UNAVAILABLE = 14
_CODE_INTERNAL = 13


class BodyTooLarge(Exception):
    """The request body, after decompression, is over the configured cap."""


def _status_response(
    status: int, code: int, message: str, content_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    METRICS.requests.labels(status=str(status)).inc()
    msg = status_pb2.Status(code=code, message=message)
    if content_type == JSON:
        body = json.dumps(json_format.MessageToDict(msg)).encode()
    else:
        body = msg.SerializeToString()
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """Decompress gzip `data`, stopping as soon as the output would pass `limit` bytes."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
        out += d.flush()
    except zlib.error as err:
        raise PermanentError(f"invalid gzip body: {err}") from err
    if len(out) > limit:
        raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
    return out


class OtlpHttpCollector:
    """The aiohttp handler of `/v1/traces` feeding the ingest queue."""

    def __init__(
        self,
        queue: IngestQueue,
        pricer: Pricer,
        *,
        max_body_bytes: int,
        ack_timeout_s: float,
        decode_pool: DecodePool | None = None,
    ) -> None:
        self._queue = queue
        self._pool = decode_pool
        self._pricer = pricer
        self._max_body_bytes = max_body_bytes
        self._ack_timeout_s = ack_timeout_s

    def add_routes(self, app: web.Application) -> None:
        """Mount the OTLP routes (traces; metrics and logs are accepted and discarded)."""
        app.router.add_post("/v1/traces", self.handle_traces)
        app.router.add_post("/v1/metrics", self.handle_discard)
        app.router.add_post("/v1/logs", self.handle_discard)

    async def _read_body(self, request: web.Request) -> bytes:
        # Read at most the cap (+1 to detect overflow) so a huge body never sits in memory.
        # StreamReader.read(n) returns what has arrived so far, not n bytes: read to the end
        # of the body, stopping as soon as it passes the cap.
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(self._max_body_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_body_bytes:
                raise BodyTooLarge(f"body exceeds {self._max_body_bytes} bytes")
        raw = b"".join(chunks)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "gzip":
            return gunzip_capped(raw, self._max_body_bytes)
        if encoding not in ("identity", ""):
            raise PermanentError(f"unsupported Content-Encoding {encoding!r}")
        return raw

    async def handle_discard(self, request: web.Request) -> web.Response:
        """Accept metrics and logs so SDKs configured with one base URL log no errors."""
        await request.read()
        ctype = JSON if request.content_type == JSON else PROTOBUF
        return web.Response(body=b"{}" if ctype == JSON else b"", content_type=ctype)

    async def handle_traces(self, request: web.Request) -> web.Response:
        """Decode, enqueue and wait for the commit of one ExportTraceServiceRequest."""
        ctype = request.content_type.lower()
        if ctype not in (PROTOBUF, JSON):
            METRICS.requests.labels(status="415").inc()
            return web.Response(
                status=415,
                text=f"unsupported Content-Type {ctype!r}; use {PROTOBUF} or {JSON}",
            )
        try:
            body = await self._read_body(request)
            decoded = await self._decode(body, ctype == JSON)
        except BodyTooLarge as err:
            return _status_response(413, _CODE_RESOURCE_EXHAUSTED, str(err), ctype)
        except PermanentError as err:
            return _status_response(400, _CODE_INVALID_ARGUMENT, str(err), ctype)
        except RetryableError as err:
            return _status_response(
                503, _CODE_UNAVAILABLE, str(err), ctype, headers={"Retry-After": "1"}
            )
        METRICS.spans_received.inc(len(decoded.batch) + decoded.rejected)
        if decoded.rejected:
            METRICS.spans_rejected.inc(decoded.rejected)
        if len(decoded.batch):
            try:
                fut = self._queue.offer(decoded.batch)
                await asyncio.wait_for(asyncio.shield(fut), self._ack_timeout_s)
            except RetryableError as err:
                retry = str(int(err.retry_after or 1))
                return _status_response(
                    503, _CODE_UNAVAILABLE, str(err), ctype, headers={"Retry-After": retry}
                )
            except TimeoutError:
                # The batch stays queued and will commit; the client may re-send, and the
                # writer drops re-sent spans it has already committed.
                return _status_response(
                    503,
                    _CODE_UNAVAILABLE,
                    "commit did not finish in time",
                    ctype,
                    headers={"Retry-After": "1"},
                )
        return self._success(decoded.rejected, decoded.messages, ctype)

    async def _decode(self, body: bytes, is_json: bool) -> DecodedRequest:
        if self._pool is not None and body:
            return await self._pool.decode(body, is_json)
        req = parse_json(body) if is_json else parse_protobuf(body)
        return decode_request(req, self._pricer)

    def _success(self, rejected: int, messages: list[str], ctype: str) -> web.Response:
        METRICS.requests.labels(status="200").inc()
        resp = ExportTraceServiceResponse()
        if rejected:
            more = f" (and {rejected - len(messages)} more)" if rejected > len(messages) else ""
            resp.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=rejected, error_message="; ".join(messages) + more
                )
            )
        if ctype == JSON:
            body = json.dumps(json_format.MessageToDict(resp)).encode()
        else:
            body = resp.SerializeToString()
        return web.Response(body=body, content_type=ctype)

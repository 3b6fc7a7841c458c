"""OTLP/HTTP receiver edge cases against a real daemon on a free port."""

from __future__ import annotations

import gzip
import json
import os
import threading

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.conftest import DaemonThread, http_json
from tests.otlp_builders import json_body, llm_attrs, make_request, make_span, post
from watchdog.pipeline import RecentKeys


def count(d: DaemonThread, table: str = "spans") -> int:
    return d.query(f"SELECT count(*) FROM {table}")[0][0]


def test_protobuf_request_is_committed_before_200(daemon: DaemonThread) -> None:
    req = make_request([make_span(attrs=llm_attrs()) for _ in range(3)])
    status, body, headers = post(daemon.url, req.SerializeToString())
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-protobuf")
    resp = ExportTraceServiceResponse.FromString(body)
    assert not resp.HasField("partial_success")
    # No settle(): the 200 itself promises the rows are committed.
    assert count(daemon) == 3
    assert count(daemon, "steps") == 3


def test_json_request_with_hex_ids_string_ints_and_unknown_fields(daemon: DaemonThread) -> None:
    span = make_span(attrs=llm_attrs(inp=1234))
    req = make_request([span])
    status, body, headers = post(daemon.url, json_body(req), "application/json; charset=utf-8")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {}
    rows = daemon.query(
        'SELECT "TraceId", "SpanId", "SpanKind", "SpanAttributes"[\'gen_ai.usage.input_tokens\'] FROM spans'
    )
    assert rows == [(span.trace_id.hex(), span.span_id.hex(), "Client", "1234")]
    assert daemon.query("SELECT input_tokens FROM steps") == [(1234,)]


def test_gzip_bodies_are_accepted(daemon: DaemonThread) -> None:
    req = make_request([make_span(attrs=llm_attrs())])
    status, _, _ = post(daemon.url, gzip.compress(req.SerializeToString()), Content_Encoding="gzip")
    assert status == 200
    status, _, _ = post(
        daemon.url, gzip.compress(json_body(req)), "application/json", Content_Encoding="gzip"
    )
    assert status == 200
    # The same span sent twice (an OTLP re-send) is stored once.
    assert count(daemon) == 1


@pytest.mark.parametrize(
    ("content_type", "body", "encoding", "status"),
    [
        ("text/plain", b"hello", None, 415),
        ("application/grpc", b"\x00", None, 415),
        ("application/x-protobuf", b"\xff\xff\xff\xff garbage", None, 400),
        ("application/x-protobuf", None, None, 400),  # truncated valid request
        ("application/json", b"{not json", None, 400),
        ("application/json", b"[1, 2]", None, 400),
        ("application/x-protobuf", b"not gzip at all", "gzip", 400),
        ("application/x-protobuf", b"", "br", 400),
    ],
    ids=[
        "text",
        "grpc",
        "garbage-pb",
        "truncated-pb",
        "garbage-json",
        "json-array",
        "bad-gzip",
        "unknown-encoding",
    ],
)
def test_bad_requests_get_clear_errors(
    daemon: DaemonThread, content_type: str, body: bytes | None, encoding: str | None, status: int
) -> None:
    if body is None:
        full = make_request([make_span(attrs=llm_attrs()) for _ in range(5)]).SerializeToString()
        body = full[: len(full) - 7]
    headers = {"Content_Encoding": encoding} if encoding else {}
    got, resp_body, _ = post(daemon.url, body, content_type, **headers)
    assert got == status
    if status == 400:
        if content_type == "application/json":
            assert json.loads(resp_body)["message"]
        else:
            assert status_pb2.Status.FromString(resp_body).message
    assert count(daemon) == 0
    # The daemon is still healthy afterwards.
    assert http_json("GET", daemon.url + "/healthz")[0] == 200


def test_invalid_spans_are_rejected_one_by_one(daemon: DaemonThread) -> None:
    good = [make_span(attrs=llm_attrs()) for _ in range(3)]
    short_trace = make_span(trace_id=b"\x01" * 4)
    zero_span = make_span(span_id=b"\x00" * 8)
    backwards = make_span(duration_ns=0)
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 5
    req = make_request([good[0], short_trace, good[1], zero_span, backwards, good[2]])
    status, body, _ = post(daemon.url, req.SerializeToString())
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 3
    assert "trace_id" in resp.partial_success.error_message
    assert "before" in resp.partial_success.error_message
    assert count(daemon) == 3
    # JSON carries the same, with int64 as a string.
    bad_json = json.loads(json_body(make_request([make_span(), make_span()])))
    bad_json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "zz"
    status, body, _ = post(daemon.url, json.dumps(bad_json).encode(), "application/json")
    assert status == 200
    assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"
    assert count(daemon) == 4


def test_oversize_body_and_gzip_bomb_get_413(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(server={"max_body_bytes": 4096})
    big = make_request([make_span(attrs={"x": "a" * 5000})]).SerializeToString()
    assert post(d.url, big)[0] == 413
    bomb = gzip.compress(b"\x00" * (3 * 1024 * 1024))
    assert len(bomb) < 4096
    status, body, _ = post(d.url, bomb, Content_Encoding="gzip")
    assert status == 413
    assert "4096" in status_pb2.Status.FromString(body).message
    small = make_request([make_span(attrs=llm_attrs())]).SerializeToString()
    assert post(d.url, small)[0] == 200


def test_empty_request_succeeds(daemon: DaemonThread) -> None:
    status, _, _ = post(daemon.url, b"")
    assert status == 200
    assert post(daemon.url, b"{}", "application/json")[0] == 200


def test_full_queue_answers_503_with_retry_after(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonThread = daemon_factory(ingest={"max_queued_spans": 10, "max_batch_spans": 10})
    gate = threading.Event()
    entered = threading.Event()

    def hold(_cur):  # type: ignore[no-untyped-def]
        entered.set()
        gate.wait(30)

    # Occupy the span writer thread so nothing commits while the queue fills.
    holder = threading.Thread(target=lambda: d.d.store._span_writer.submit(hold, None).result())
    holder.start()
    assert entered.wait(10)
    results: list[int] = []
    first = threading.Thread(
        target=lambda: results.append(
            post(d.url, make_request([make_span() for _ in range(8)]).SerializeToString())[0]
        )
    )
    first.start()
    # Wait until the first request's spans sit in the queue.
    for _ in range(200):
        if d.d.queue.depth:
            break
        threading.Event().wait(0.01)
    assert d.d.queue.depth == 8
    status, body, headers = post(
        d.url, make_request([make_span() for _ in range(5)]).SerializeToString()
    )
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "full" in status_pb2.Status.FromString(body).message
    gate.set()
    first.join(30)
    holder.join(30)
    assert results == [200]
    assert count(d) == 8


def test_method_and_health_endpoints(daemon: DaemonThread) -> None:
    assert http_json("GET", daemon.url + "/v1/traces")[0] == 405
    assert http_json("GET", daemon.url + "/readyz") == (200, {"ok": True})
    post(daemon.url, make_request([make_span(attrs=llm_attrs())]).SerializeToString())
    status, text = http_json("GET", daemon.url + "/metrics")
    assert status == 200
    assert "watchdog_ingest_spans_stored_total" in text
    assert "watchdog_ingest_queue_spans" in text
    assert "watchdog_store_commit_seconds_bucket" in text


def test_random_bytes_never_crash_the_daemon(daemon: DaemonThread) -> None:
    for n in (1, 7, 64, 999):
        status, _, _ = post(daemon.url, os.urandom(n))
        assert status in (200, 400)
    assert http_json("GET", daemon.url + "/healthz")[0] == 200


def test_body_arriving_in_pieces_is_read_whole(daemon: DaemonThread) -> None:
    import socket
    import time
    from urllib.parse import urlparse

    body = make_request([make_span(attrs=llm_attrs()) for _ in range(200)]).SerializeToString()
    u = urlparse(daemon.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:1000])
        time.sleep(0.3)  # the rest arrives later, as on a slow or busy network
        sock.sendall(body[1000:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert count(daemon) == 200


def test_a_span_repeated_in_one_request_and_across_requests_is_stored_once(
    daemon: DaemonThread,
) -> None:
    a, b, c = (make_span(attrs=llm_attrs(inp=i)) for i in (1, 2, 3))
    assert post(daemon.url, make_request([a, a, b]).SerializeToString())[0] == 200
    assert post(daemon.url, make_request([b, c]).SerializeToString())[0] == 200
    rows = daemon.query('SELECT "SpanId" FROM spans ORDER BY "SpanId"')
    assert rows == sorted((s.span_id.hex(),) for s in (a, b, c))
    assert daemon.query("SELECT count(*) FROM steps") == [(3,)]


def test_recent_keys_remember_between_half_and_all_of_capacity() -> None:
    recent = RecentKeys(capacity=4)
    recent.add_all(["k1", "k2"])  # the newer generation is full: it becomes the older one
    recent.add_all(["k3"])
    assert recent.seen(["k1", "k3", "k9"]) == {"k1", "k3"}
    recent.add_all(["k4"])  # k1, k2 are forgotten
    assert "k1" not in recent and "k3" in recent and "k4" in recent
    assert recent.seen(["k1", "k2"]) == set()

"""Build OTLP trace requests with opentelemetry-proto, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(x)) for k, x in v.items())
        return out
    return AnyValue(string_value=str(v))


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def make_span(
    name: str = "chat gpt-4o",
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent: bytes = b"",
    start_ns: int | None = None,
    duration_ns: int = 1_000_000,
    attrs: dict[str, Any] | None = None,
    kind: int = 3,
    status_code: int = 0,
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns()
    span = Span(
        trace_id=trace_id if trace_id is not None else os.urandom(16),
        span_id=span_id if span_id is not None else os.urandom(8),
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
    )
    span.attributes.extend(kvs(attrs or {}))
    span.status.code = status_code  # type: ignore[assignment]
    return span


def make_request(spans: list[Span], service: str = "test-agent") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kvs({"service.name": service}))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.spans.extend(spans)
    return req


def llm_attrs(model: str = "gpt-4o", inp: int = 100, out: int = 20, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        **extra,
    }


def post(
    url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url + "/v1/traces", data=body, method="POST")
    req.add_header("Content-Type", content_type)
    for k, v in headers.items():
        req.add_header(k.replace("_", "-"), v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def to_otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """Encode as OTLP/JSON the way JS exporters do: hex ids, int enums, string int64s."""
    out: dict[str, Any] = {"resourceSpans": []}
    for rs in req.resource_spans:
        scopes = []
        for ss in rs.scope_spans:
            spans = []
            for s in ss.spans:
                spans.append(
                    {
                        "traceId": s.trace_id.hex(),
                        "spanId": s.span_id.hex(),
                        "parentSpanId": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": int(s.kind),
                        "startTimeUnixNano": str(s.start_time_unix_nano),
                        "endTimeUnixNano": str(s.end_time_unix_nano),
                        "attributes": [_json_kv(kv) for kv in s.attributes],
                        "status": {"code": int(s.status.code)},
                        "someFutureField": {"ignored": True},
                    }
                )
            scopes.append({"scope": {"name": ss.scope.name}, "spans": spans})
        out["resourceSpans"].append(
            {
                "resource": {"attributes": [_json_kv(kv) for kv in rs.resource.attributes]},
                "scopeSpans": scopes,
            }
        )
    return out


def _json_value(v: AnyValue) -> dict[str, Any]:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        return {"intValue": str(v.int_value)}
    if kind == "string_value":
        return {"stringValue": v.string_value}
    if kind == "double_value":
        return {"doubleValue": v.double_value}
    if kind == "bool_value":
        return {"boolValue": v.bool_value}
    if kind == "array_value":
        return {"arrayValue": {"values": [_json_value(x) for x in v.array_value.values]}}
    if kind == "kvlist_value":
        return {"kvlistValue": {"values": [_json_kv(x) for x in v.kvlist_value.values]}}
    return {}


def _json_kv(kv: KeyValue) -> dict[str, Any]:
    return {"key": kv.key, "value": _json_value(kv.value)}


def json_body(req: ExportTraceServiceRequest) -> bytes:
    return json.dumps(to_otlp_json(req)).encode()

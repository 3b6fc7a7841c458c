"""Decode OTLP/HTTP trace requests (protobuf or JSON) into span rows and normalized steps.

Invalid single spans (bad id length, end before start) are rejected one by one and counted
for `partial_success`; only an undecodable body fails the whole request.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collectors.normalize import normalize_span
from watchdog.batch import SPAN_KINDS, STATUS_CODES, SpanBatch, SpanColumns
from watchdog.errors import PermanentError
from watchdog.pricing import Pricer

_ID_KEYS = ("traceId", "spanId", "parentSpanId")
_MAX_REJECT_MESSAGES = 5


@dataclass(slots=True)
class DecodedRequest:
    """The accepted rows of one request and what was rejected."""

    batch: SpanBatch
    rejected: int = 0
    messages: list[str] = field(default_factory=list)


def any_value(v: AnyValue) -> Any:
    """Convert an OTLP AnyValue to a plain Python value (kvlist → dict, array → list)."""
    kind = v.WhichOneof("value")
    # Strings dominate real traffic; test them first.
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """Convert a repeated KeyValue field to a dict (last key wins)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        # Most values are non-empty strings: one field read instead of WhichOneof.
        s = v.string_value
        out[kv.key] = s if s else any_value(v)
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return base64.b64encode(o).decode("ascii")
    raise TypeError(type(o).__name__)


# One encoder for every call: json.dumps with arguments builds a new encoder each time,
# which costs more than encoding a short list.
_to_json = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def to_text(value: Any) -> str:
    """Render an attribute value as the string stored in a MAP(VARCHAR, VARCHAR) column."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None:
        return ""
    return _to_json(value)


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary OTLP request; raises PermanentError when undecodable."""
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise PermanentError(f"cannot decode protobuf ExportTraceServiceRequest: {err}") from err
    return req


def _hex_to_b64(value: Any) -> Any:
    # OTLP/JSON carries ids as hex, the protobuf JSON mapping expects base64. An id that is
    # not hex becomes empty so that only that span is rejected, not the whole request.
    if not isinstance(value, str):
        return value
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode("ascii")
    except (binascii.Error, ValueError):
        return base64.b64encode(b"\x00\x00\x00").decode("ascii")


def _fix_ids(obj: Any) -> None:
    for rs in obj.get("resourceSpans") or obj.get("resource_spans") or []:
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
            for span in ss.get("spans") or []:
                if not isinstance(span, dict):
                    continue
                for key in (*_ID_KEYS, "trace_id", "span_id", "parent_span_id"):
                    if key in span:
                        span[key] = _hex_to_b64(span[key])
                for link in span.get("links") or []:
                    if isinstance(link, dict):
                        for key in ("traceId", "spanId", "trace_id", "span_id"):
                            if key in link:
                                link[key] = _hex_to_b64(link[key])


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON request (hex ids, int enums, string int64s, unknown fields ignored)."""
    try:
        obj = json.loads(body)
        if not isinstance(obj, dict):
            raise PermanentError("OTLP/JSON body must be an object")
        _fix_ids(obj)
        req = ExportTraceServiceRequest()
        json_format.ParseDict(obj, req, ignore_unknown_fields=True)
    except PermanentError:
        raise
    except (ValueError, json_format.ParseError, AttributeError, TypeError) as err:
        raise PermanentError(f"cannot decode OTLP/JSON ExportTraceServiceRequest: {err}") from err
    return req


def _validate(span: Any) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return f"span {span.name!r}: trace_id must be 16 non-zero bytes"
    if len(span.span_id) != 8 or not any(span.span_id):
        return f"span {span.name!r}: span_id must be 8 non-zero bytes"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return f"span {span.name!r}: parent_span_id must be empty or 8 bytes"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return f"span {span.name!r}: end_time_unix_nano is before start_time_unix_nano"
    if span.start_time_unix_nano == 0:
        return f"span {span.name!r}: start_time_unix_nano is missing"
    return None


def _events(span: Any) -> tuple[list[dict[str, Any]], list[tuple[str, Mapping[str, Any]]]]:
    rows: list[dict[str, Any]] = []
    plain: list[tuple[str, Mapping[str, Any]]] = []
    for ev in span.events:
        attrs = attributes(ev.attributes)
        plain.append((ev.name, attrs))
        rows.append(
            {
                "Timestamp": ev.time_unix_nano,
                "Name": ev.name,
                "Attributes": [(k, to_text(v)) for k, v in attrs.items()],
            }
        )
    return rows, plain


def _links(span: Any) -> list[dict[str, Any]]:
    return [
        {
            "TraceId": link.trace_id.hex(),
            "SpanId": link.span_id.hex(),
            "TraceState": link.trace_state,
            "Attributes": [(k, to_text(v)) for k, v in attributes(link.attributes).items()],
        }
        for link in span.links
    ]


def decode_request(req: ExportTraceServiceRequest, pricer: Pricer) -> DecodedRequest:
    """Turn a parsed request into a sealed batch; invalid spans are counted, not fatal."""
    c = SpanColumns()
    rejected = 0
    messages: list[str] = []
    for rs in req.resource_spans:
        res_attrs = attributes(rs.resource.attributes)
        service = res_attrs.get("service.name")
        service_name = service if isinstance(service, str) and service else "unknown_service"
        res_keys = list(res_attrs)
        res_vals = [to_text(v) for v in res_attrs.values()]
        n_res = len(res_keys)
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            scope_version = ss.scope.version
            for span in ss.spans:
                raw_trace, raw_span = span.trace_id, span.span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                raw_parent = span.parent_span_id
                if (
                    len(raw_trace) != 16
                    or len(raw_span) != 8
                    or (raw_parent and len(raw_parent) != 8)
                    or end < start
                    or not start
                    or not any(raw_trace)
                    or not any(raw_span)
                ):
                    rejected += 1
                    if len(messages) < _MAX_REJECT_MESSAGES:
                        messages.append(_validate(span) or f"span {span.name!r}: invalid")
                    continue
                attrs = attributes(span.attributes)
                trace_id = raw_trace.hex()
                span_id = raw_span.hex()
                parent = raw_parent.hex()
                name = span.name
                status = span.status
                code = status.code
                status_message = status.message
                kind = span.kind
                events, plain_events = _events(span) if span.events else ([], [])
                c.timestamp_ns.append(start)
                c.trace_id.append(trace_id)
                c.span_id.append(span_id)
                c.parent_span_id.append(parent)
                c.trace_state.append(span.trace_state)
                c.span_name.append(name)
                c.span_kind.append(SPAN_KINDS[kind] if 0 <= kind < 6 else "Unspecified")
                c.service_name.append(service_name)
                c.scope_name.append(scope_name)
                c.scope_version.append(scope_version)
                c.duration_ns.append(end - start)
                c.status_code.append(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                c.status_message.append(status_message)
                c.res_keys.extend(res_keys)
                c.res_vals.extend(res_vals)
                c.res_lens.append(n_res)
                c.attr_keys.extend(attrs)
                c.attr_vals.extend(
                    [v if v.__class__ is str else to_text(v) for v in attrs.values()]
                )
                c.attr_lens.append(len(attrs))
                c.events.append(events)
                c.links.append(_links(span) if span.links else [])
                step = normalize_span(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=parent,
                    name=name,
                    start_ns=start,
                    end_ns=end,
                    status_code=code,
                    status_message=status_message,
                    attrs=attrs,
                    resource_attrs=res_attrs,
                    events=plain_events,
                    pricer=pricer,
                )
                if step is not None:
                    c.steps.append(step)
    return DecodedRequest(c.seal(), rejected, messages)

"""The rows of decoded requests as Arrow tables, ready for one bulk insert.

A decoder fills `SpanColumns` (plain lists, one per `spans` column) and seals it into a
`SpanBatch`: the Arrow tables of the `span_records` (behind the `spans` view) and `steps` rows, each span's dedupe key and
the `Step` objects detectors read. Sealing happens where the decoding happened (a decode
worker process or the event loop), so the writer thread only concatenates and inserts.
A batch crosses a process boundary as Arrow IPC buffers plus step tuples, which costs
the receiving side a small fraction of building it.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import pyarrow as pa

from watchdog.model import Step

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")

_MAP = pa.map_(pa.string(), pa.string())
_EVENT = pa.struct([("Timestamp", pa.timestamp("ns")), ("Name", pa.string()), ("Attributes", _MAP)])
_LINK = pa.struct(
    [
        ("TraceId", pa.string()),
        ("SpanId", pa.string()),
        ("TraceState", pa.string()),
        ("Attributes", _MAP),
    ]
)

# Step fields whose column name differs from the dataclass field.
_STEP_COLUMN = {"start_time_ns": "start_time", "end_time_ns": "end_time"}
STEP_FIELDS = tuple(f.name for f in dataclasses.fields(Step))
_STEP_TYPES = {
    "start_time_ns": pa.timestamp("ns"),
    "end_time_ns": pa.timestamp("ns"),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cache_read_tokens": pa.int64(),
    "cache_write_tokens": pa.int64(),
    "reasoning_tokens": pa.int64(),
    "cost_usd": pa.float64(),
    "is_error": pa.bool_(),
    "user_turns": pa.int64(),
}
STEPS_SCHEMA = pa.schema(
    [(_STEP_COLUMN.get(n, n), _STEP_TYPES.get(n, pa.string())) for n in STEP_FIELDS]
)
_STEP_STRUCT = pa.struct(list(STEPS_SCHEMA))
# One C-level call returns every field of a Step as a tuple, in constructor order.
_step_tuple = operator.attrgetter(*STEP_FIELDS)


@dataclass(slots=True)
class SpanColumns:
    """What a decoder appends to while walking a request: one list per `spans` column.

    Map columns are kept flat (keys, values, per-row lengths) so that sealing builds the
    Arrow map arrays without touching each pair again.
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

    def seal(self) -> SpanBatch:
        """Build the Arrow tables of these rows (Events/Links omitted when no span has any)."""
        keys = list(map(operator.add, self.trace_id, self.span_id))
        # The step tuples build the Arrow table here and, in a worker, cross the pipe.
        rows = list(map(_step_tuple, self.steps))
        return SpanBatch(spans_table(self), self.steps, _steps_table(rows), keys, rows)


@dataclass(slots=True)
class SpanBatch:
    """Rows ready to insert: `spans` and `steps` Arrow tables, dedupe keys, the steps.

    `keys[i]` is trace_id + span_id of span row i; `steps_table` holds `steps` in order;
    `step_rows`, when known, holds each step's fields as a tuple.
    """

    spans: pa.Table
    steps: list[Step]
    steps_table: pa.Table
    keys: list[str]
    step_rows: list[tuple[Any, ...]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def merge(batches: Sequence[SpanBatch]) -> SpanBatch:
        """Concatenate batches (zero-copy for the Arrow data) in order."""
        if len(batches) == 1:
            return batches[0]
        # Batches differ only in whether they carry Events/Links; missing ones become NULL.
        spans = pa.concat_tables([b.spans for b in batches], promote_options="default")
        steps = pa.concat_tables([b.steps_table for b in batches])
        return SpanBatch(
            spans,
            [s for b in batches for s in b.steps],
            steps,
            [k for b in batches for k in b.keys],
        )

    def keep_rows(self, keep: Sequence[bool]) -> SpanBatch:
        """Return the batch restricted to the span rows whose flag in `keep` is true."""
        kept_keys = [k for k, flag in zip(self.keys, keep, strict=True) if flag]
        # One step per kept span: a span sent twice in one batch has two equal steps.
        wanted = set(kept_keys)
        steps = []
        for s in self.steps:
            key = s.trace_id + s.span_id
            if key in wanted:
                wanted.discard(key)
                steps.append(s)
        return SpanBatch(
            self.spans.filter(pa.array(keep, pa.bool_())), steps, steps_table(steps), kept_keys
        )

    # -- crossing a process boundary -----------------------------------------------------
    def to_wire(self) -> tuple[bytes, bytes, list[tuple[Any, ...]], list[str]]:
        """Encode for pickling: Arrow IPC streams, step tuples, keys."""
        return (
            _ipc(self.spans),
            _ipc(self.steps_table),
            self.step_rows if self.step_rows is not None else list(map(_step_tuple, self.steps)),
            self.keys,
        )

    @staticmethod
    def from_wire(wire: tuple[bytes, bytes, list[tuple[Any, ...]], list[str]]) -> SpanBatch:
        """Decode what `to_wire` produced."""
        spans_ipc, steps_ipc, step_rows, keys = wire
        return SpanBatch(
            pa.ipc.open_stream(spans_ipc).read_all(),
            [Step(*row) for row in step_rows],
            pa.ipc.open_stream(steps_ipc).read_all(),
            keys,
        )


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _pairs_array(keys: list[str], vals: list[str], lens: list[int]) -> pa.Array:
    # Attribute maps are stored as lists of (key, value) structs (see migration 0008).
    return pa.ListArray.from_arrays(
        pa.array(list(accumulate(lens, initial=0)), pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(keys, pa.string()), pa.array(vals, pa.string())], names=["key", "value"]
        ),
    )


def _nested(rows: list[list[dict[str, Any]]], typ: pa.DataType) -> pa.Array | None:
    # Most spans carry no events or links. Converting a column of empty nested lists
    # costs as much as the attribute maps, so spans without any get NULL instead of [].
    if not any(rows):
        return None
    return pa.array([r or None for r in rows], pa.list_(typ))


def spans_table(c: SpanColumns) -> pa.Table:
    """Build the Arrow table of `c` in the `span_records` layout (Events/Links NULL when none)."""
    cols: dict[str, Any] = {
        "Timestamp": pa.array(c.timestamp_ns, pa.timestamp("ns")),
        "TraceId": pa.array(c.trace_id, pa.string()),
        "SpanId": pa.array(c.span_id, pa.string()),
        "ParentSpanId": pa.array(c.parent_span_id, pa.string()),
        "TraceState": pa.array(c.trace_state, pa.string()),
        "SpanName": pa.array(c.span_name, pa.string()),
        "SpanKind": pa.array(c.span_kind, pa.string()),
        "ServiceName": pa.array(c.service_name, pa.string()),
        "ResourceAttributes": _pairs_array(c.res_keys, c.res_vals, c.res_lens),
        "ScopeName": pa.array(c.scope_name, pa.string()),
        "ScopeVersion": pa.array(c.scope_version, pa.string()),
        "SpanAttributes": _pairs_array(c.attr_keys, c.attr_vals, c.attr_lens),
        "Duration": pa.array(c.duration_ns, pa.uint64()),
        "StatusCode": pa.array(c.status_code, pa.string()),
        "StatusMessage": pa.array(c.status_message, pa.string()),
    }
    for name, rows, typ in (("Events", c.events, _EVENT), ("Links", c.links, _LINK)):
        arr = _nested(rows, typ)
        if arr is not None:
            cols[name] = arr
    return pa.table(cols)


def steps_table(steps: Sequence[Step]) -> pa.Table:
    """Build the Arrow table of `steps` in the `steps` column layout."""
    return _steps_table(list(map(_step_tuple, steps)))


def _steps_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    if not rows:
        return STEPS_SCHEMA.empty_table()
    # pyarrow converts a list of tuples to a struct array in one pass.
    return pa.Table.from_struct_array(pa.array(rows, _STEP_STRUCT))

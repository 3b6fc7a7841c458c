-- The stored rows behind the `spans` view. Resource and span attributes are kept as
-- lists of (key, value) structs: DuckDB checks every MAP it receives for NULL and
-- duplicate keys, which cost more than the rest of a span's insert, while the decoder
-- already builds each list from a dict (unique keys). Query `spans`, not this table.
CREATE TABLE span_records (
    "Timestamp" TIMESTAMP_NS NOT NULL,
    "TraceId" VARCHAR NOT NULL,
    "SpanId" VARCHAR NOT NULL,
    "ParentSpanId" VARCHAR NOT NULL,
    "TraceState" VARCHAR,
    "SpanName" VARCHAR,
    "SpanKind" VARCHAR,
    "ServiceName" VARCHAR,
    "ResourceAttributes" STRUCT("key" VARCHAR, "value" VARCHAR)[],
    "ScopeName" VARCHAR,
    "ScopeVersion" VARCHAR,
    "SpanAttributes" STRUCT("key" VARCHAR, "value" VARCHAR)[],
    "Duration" UBIGINT,
    "StatusCode" VARCHAR,
    "StatusMessage" VARCHAR,
    "Events" STRUCT("Timestamp" TIMESTAMP_NS, "Name" VARCHAR, "Attributes" MAP(VARCHAR, VARCHAR))[],
    "Links" STRUCT("TraceId" VARCHAR, "SpanId" VARCHAR, "TraceState" VARCHAR, "Attributes" MAP(VARCHAR, VARCHAR))[]
);

INSERT INTO span_records
SELECT
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "ServiceName", map_entries("ResourceAttributes"), "ScopeName", "ScopeVersion",
    map_entries("SpanAttributes"), "Duration", "StatusCode", "StatusMessage", "Events", "Links"
FROM spans;

DROP TABLE spans;

-- Spans as received, in the column layout of the OpenTelemetry Collector's ClickHouse
-- exporter table `otel_traces` (attributes as MAPs), so queries written for that schema run here.
CREATE VIEW spans AS
SELECT
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "ServiceName", map_from_entries("ResourceAttributes") AS "ResourceAttributes",
    "ScopeName", "ScopeVersion", map_from_entries("SpanAttributes") AS "SpanAttributes",
    "Duration", "StatusCode", "StatusMessage", "Events", "Links"
FROM span_records;

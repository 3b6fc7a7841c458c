-- Spans as received, in the column layout of the OpenTelemetry Collector's ClickHouse
-- exporter table `otel_traces`, so queries written for that schema run here.
CREATE TABLE spans (
    "Timestamp" TIMESTAMP_NS NOT NULL,
    "TraceId" VARCHAR NOT NULL,
    "SpanId" VARCHAR NOT NULL,
    "ParentSpanId" VARCHAR NOT NULL,
    "TraceState" VARCHAR,
    "SpanName" VARCHAR,
    "SpanKind" VARCHAR,
    "ServiceName" VARCHAR,
    "ResourceAttributes" MAP(VARCHAR, VARCHAR),
    "ScopeName" VARCHAR,
    "ScopeVersion" VARCHAR,
    "SpanAttributes" MAP(VARCHAR, VARCHAR),
    "Duration" UBIGINT,
    "StatusCode" VARCHAR,
    "StatusMessage" VARCHAR,
    "Events" STRUCT("Timestamp" TIMESTAMP_NS, "Name" VARCHAR, "Attributes" MAP(VARCHAR, VARCHAR))[],
    "Links" STRUCT("TraceId" VARCHAR, "SpanId" VARCHAR, "TraceState" VARCHAR, "Attributes" MAP(VARCHAR, VARCHAR))[]
);

-- One row per agent step, normalized from OTel GenAI, OpenInference and OpenLLMetry.
CREATE TABLE steps (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    parent_span_id VARCHAR NOT NULL,
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    service_name VARCHAR NOT NULL,
    agent_name VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    operation VARCHAR,
    provider VARCHAR,
    model VARCHAR,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cache_read_tokens BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens BIGINT,
    cost_usd DOUBLE,
    price_source VARCHAR NOT NULL,
    tool_name VARCHAR,
    tool_call_id VARCHAR,
    tool_args VARCHAR,
    tool_result VARCHAR,
    is_error BOOLEAN NOT NULL,
    error_type VARCHAR,
    user_message VARCHAR,
    output_text VARCHAR,
    task VARCHAR,
    span_name VARCHAR
);

-- One row per finding/alert raised by a detector.
CREATE TABLE alerts (
    id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    detector VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    service_name VARCHAR,
    agent_name VARCHAR,
    session_id VARCHAR,
    trace_id VARCHAR,
    summary VARCHAR NOT NULL,
    evidence JSON,
    state VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    resolved_at TIMESTAMP
);

-- Current kill-switch / pause state per scope (agent, session or trace).
CREATE TABLE verdicts (
    scope_type VARCHAR NOT NULL,
    scope_value VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    reason VARCHAR,
    alert_id VARCHAR,
    set_by VARCHAR NOT NULL,
    set_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    PRIMARY KEY (scope_type, scope_value)
);

-- Every change of a verdict: who or what set or cleared it, and why.
CREATE TABLE verdict_audit (
    id VARCHAR PRIMARY KEY,
    changed_at TIMESTAMP NOT NULL,
    scope_type VARCHAR NOT NULL,
    scope_value VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    state VARCHAR,
    actor VARCHAR NOT NULL,
    reason VARCHAR,
    alert_id VARCHAR
);


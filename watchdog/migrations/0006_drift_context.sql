-- Verdicts of the optional LLM drift judge (detectors/drift_judge.py): one row per
-- answered request, cached answers included, so its cost and accuracy can be audited in SQL.
CREATE TABLE drift_judgements (
    judged_at TIMESTAMP NOT NULL,
    agent_name VARCHAR NOT NULL,
    session_id VARCHAR,
    trace_id VARCHAR,
    cache_key VARCHAR NOT NULL,
    task VARCHAR,
    actions JSON,
    triggers VARCHAR,
    aligned BOOLEAN NOT NULL,
    confidence DOUBLE NOT NULL,
    reason VARCHAR,
    model VARCHAR,
    latency_ms DOUBLE,
    cached BOOLEAN NOT NULL
);

-- Held actions (issue 5): a risky tool call waits out a window in which a person may
-- cancel it; otherwise it is released. Every decision is kept with who made it.
CREATE TABLE holds (
    id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,
    release_at TIMESTAMP NOT NULL,
    agent_name VARCHAR NOT NULL,
    session_id VARCHAR,
    trace_id VARCHAR,
    tool_name VARCHAR NOT NULL,
    tool_args VARCHAR,
    rule VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    decided_at TIMESTAMP,
    decided_by VARCHAR,
    reason VARCHAR
);

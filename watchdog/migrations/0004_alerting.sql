-- Silences mute alerts whose labels match every matcher between starts_at and ends_at.
-- Rows are never deleted: ending one early sets expired_at/expired_by (the audit trail).
CREATE TABLE silences (
    id VARCHAR PRIMARY KEY,
    matchers JSON NOT NULL,
    starts_at TIMESTAMP NOT NULL,
    ends_at TIMESTAMP NOT NULL,
    created_by VARCHAR NOT NULL,
    comment VARCHAR,
    created_at TIMESTAMP NOT NULL,
    expired_by VARCHAR,
    expired_at TIMESTAMP
);

-- The notification log: what each receiver was last told about each alert group, so a
-- restart neither repeats a message nor forgets one. `firing` holds "alert_id:severity"
-- entries, `resolved`/`silenced` alert ids; receiver_state keeps e.g. Slack's channel and ts.
CREATE TABLE alert_notifications (
    group_key VARCHAR NOT NULL,
    receiver VARCHAR NOT NULL,
    group_labels JSON NOT NULL,
    firing JSON NOT NULL,
    resolved JSON NOT NULL,
    silenced JSON NOT NULL,
    verdict VARCHAR NOT NULL,
    receiver_state JSON NOT NULL,
    first_notified_at TIMESTAMP NOT NULL,
    last_notified_at TIMESTAMP NOT NULL,
    notifications INTEGER NOT NULL,
    PRIMARY KEY (group_key, receiver)
);

-- Every delivery outcome (sent, failed, dropped, disabled) with the reason it was sent.
CREATE TABLE alert_deliveries (
    id VARCHAR PRIMARY KEY,
    sent_at TIMESTAMP NOT NULL,
    group_key VARCHAR NOT NULL,
    receiver VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    error VARCHAR,
    alert_ids JSON NOT NULL
);

-- Spans and steps are kept in two files, this one and `watchdog.twin.duckdb`, so that
-- inserts go on into one while the other is being checkpointed (see watchdog/store.py).
-- The rows behind `steps` move to `step_records`; the store creates the views `spans` and
-- `steps` over both files each time it opens them.
DROP VIEW spans;
ALTER TABLE steps RENAME TO step_records;

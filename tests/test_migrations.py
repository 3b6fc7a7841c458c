"""Schema migrations carry existing data forward: a file written by an older watchdog opens
in this one with every span still queryable through the stable `spans` columns."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.conftest import DaemonThread
from tests.otlp_builders import llm_attrs, make_request, make_span, post
from watchdog.store import Store, list_migrations


def _old_file(path: Path, upto: int) -> None:
    """Write a database migrated only up to `upto`, as an older watchdog left it."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version ("
        "version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT now())"
    )
    for version, name, sql in list_migrations():
        if version <= upto:
            con.execute(sql)
            con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
    con.execute(
        """INSERT INTO spans VALUES (
            TIMESTAMP_NS '2026-11-01 10:00:00', 'aa', 'bb', '', '', 'chat', 'Client', 'svc',
            MAP(['service.name'], ['svc']), 'scope', '1.0',
            MAP(['gen_ai.request.model', 'gen_ai.usage.input_tokens'], ['gpt-4o', '12']),
            5, 'Ok', '',
            [{'Timestamp': TIMESTAMP_NS '2026-11-01 10:00:00', 'Name': 'exception',
              'Attributes': MAP(['exception.type'], ['ValueError'])}],
            NULL)"""
    )
    con.close()


def test_spans_written_before_span_records_survive_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "watchdog.duckdb"
    _old_file(path, upto=7)
    store = Store(path)
    store.open()
    try:
        assert store.schema_version() == list_migrations()[-1][0]
        rows = store.query(
            'SELECT "TraceId", "SpanAttributes"[\'gen_ai.request.model\'], '
            '"ResourceAttributes"[\'service.name\'], cardinality("SpanAttributes"), '
            '"Events"[1]."Attributes"[\'exception.type\'], "Duration" FROM spans'
        )
        assert rows == [("aa", "gpt-4o", "svc", 2, "ValueError", 5)]
        kinds = dict(
            store.query(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_name IN ('spans', 'span_records')"
            )
        )
        assert kinds == {"spans": "VIEW", "span_records": "BASE TABLE"}
    finally:
        store.close()


def test_spans_view_shows_received_attributes_as_maps(daemon: DaemonThread) -> None:
    attrs = llm_attrs(inp=321)
    attrs["flag"] = True
    attrs["ratio"] = 0.5
    status, _, _ = post(daemon.url, make_request([make_span(attrs=attrs)]).SerializeToString())
    assert status == 200
    got = daemon.query(
        'SELECT typeof("SpanAttributes"), "SpanAttributes"[\'gen_ai.usage.input_tokens\'], '
        "\"SpanAttributes\"['flag'], \"SpanAttributes\"['ratio'], "
        'map_keys("SpanAttributes") FROM spans'
    )
    assert got == [("MAP(VARCHAR, VARCHAR)", "321", "true", "0.5", list(attrs))]

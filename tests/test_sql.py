"""The guarded SQL API and the `watchdog sql` command, against a real daemon and DuckDB file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DaemonThread, http_json
from tests.otlp_builders import llm_attrs, make_request, make_span, post

REFUSED = [
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    ("SELECT * FROM '/etc/passwd'", "not allowed"),
    ("SELECT * FROM glob('/etc/*')", "glob"),
    ("SELECT * FROM query('DROP TABLE spans')", "query"),
    ("SELECT getenv('HOME')", "getenv"),
    ("COPY spans TO '/tmp/watchdog-leak.csv'", "COPY"),
    ("ATTACH '/tmp/other.duckdb' AS o", "ATTACH"),
    ("INSTALL httpfs", "LOAD"),
    ("LOAD httpfs", "LOAD"),
    ("SET threads = 1", "SET"),
    ("PRAGMA threads = 1", "SET"),
    ("PRAGMA version", "PRAGMA"),
    ("CALL pragma_version()", "CALL"),
    ("CREATE TABLE x (a INT)", "CREATE"),
    ("DROP TABLE spans", "DROP"),
    ("DELETE FROM spans", "DELETE"),
    ("UPDATE steps SET cost_usd = 0", "UPDATE"),
    ("INSERT INTO alerts (id) VALUES ('x')", "INSERT"),
    ("EXPORT DATABASE '/tmp/dump'", "EXPORT"),
    ("SELECT 1; DELETE FROM spans", "exactly one"),
    ("BEGIN TRANSACTION", "TRANSACTION"),
    ("", "empty"),
    ("SELEC 1", "syntax"),
]


@pytest.fixture
def loaded(daemon: DaemonThread) -> DaemonThread:
    spans = [make_span(attrs=llm_attrs(inp=100 + i)) for i in range(5)]
    assert post(daemon.url, make_request(spans).SerializeToString())[0] == 200
    return daemon


@pytest.mark.parametrize(("sql", "why"), REFUSED, ids=[s[:30] for s, _ in REFUSED])
def test_refused_statements_change_nothing(loaded: DaemonThread, sql: str, why: str) -> None:
    status, body = http_json("POST", loaded.url + "/api/sql", {"sql": sql})
    assert status == 400
    assert body["ok"] is False
    assert why.lower() in body["error"].lower()
    assert loaded.query("SELECT count(*) FROM spans") == [(5,)]
    assert loaded.query("SELECT count(*) FROM steps") == [(5,)]
    assert loaded.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'x'") == [(0,)]
    assert not Path("/tmp/watchdog-leak.csv").exists()


def test_select_answers_the_envelope(loaded: DaemonThread) -> None:
    status, body = http_json(
        "POST",
        loaded.url + "/api/sql",
        {"sql": "SELECT kind, count(*) AS n, sum(input_tokens) AS tokens FROM steps GROUP BY kind"},
    )
    assert status == 200
    assert body["ok"] is True
    assert body["columns"] == ["kind", "n", "tokens"]
    assert body["rows"] == [["llm", 5, 510]]
    assert body["truncated"] is False


def test_map_and_timestamp_columns_serialize(loaded: DaemonThread) -> None:
    status, body = http_json(
        "POST",
        loaded.url + "/api/sql",
        {"sql": 'SELECT "Timestamp", "SpanAttributes", "Events" FROM spans LIMIT 1'},
    )
    assert status == 200, body
    ts, attrs, events = body["rows"][0]
    assert ts.startswith("20")
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert events is None  # spans without events store NULL, not []


def test_row_cap_sets_truncated(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(sql={"max_rows": 10})
    status, body = http_json("POST", d.url + "/api/sql", {"sql": "SELECT * FROM range(25)"})
    assert status == 200
    assert len(body["rows"]) == 10
    assert body["truncated"] is True


def test_deadline_interrupts_a_long_query(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(sql={"time_limit_ms": 200})
    slow = "SELECT count(*) FROM range(100000000000) t(a) WHERE a % 7 = 3"
    status, body = http_json("POST", d.url + "/api/sql", {"sql": slow})
    assert status == 400
    assert "time limit" in body["error"]
    # The daemon still answers queries afterwards.
    assert http_json("POST", d.url + "/api/sql", {"sql": "SELECT 42"})[1]["rows"] == [[42]]


def test_bad_body_is_a_json_error(daemon: DaemonThread) -> None:
    status, body = http_json("POST", daemon.url + "/api/sql", {"query": "SELECT 1"})
    assert status == 400
    assert "sql" in body["error"]


def test_api_token_is_required_when_configured(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(api_token="s3cret")
    status, body = http_json("POST", d.url + "/api/sql", {"sql": "SELECT 1"})
    assert status == 401
    assert "s3cret" not in json.dumps(body)
    status, body = http_json(
        "POST", d.url + "/api/sql", {"sql": "SELECT 1"}, {"Authorization": "Bearer s3cret"}
    )
    assert (status, body["rows"]) == (200, [[1]])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "sql", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_sql_through_a_running_daemon(loaded: DaemonThread) -> None:
    out = _cli(
        "SELECT model, input_tokens FROM steps ORDER BY input_tokens LIMIT 2",
        "--format",
        "json",
        "--url",
        loaded.url,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {"model": "gpt-4o", "input_tokens": 100},
        {"model": "gpt-4o", "input_tokens": 101},
    ]
    out = _cli("SELECT count(*) AS n FROM spans", "--format", "csv", "--url", loaded.url)
    assert out.stdout.strip().splitlines() == ["n", "5"]
    out = _cli("SELECT count(*) AS n FROM spans", "--url", loaded.url)
    assert "(1 row)" in out.stdout and "5" in out.stdout
    out = _cli("DROP TABLE spans", "--url", loaded.url)
    assert out.returncode == 1
    assert "only SELECT" in out.stderr


def test_cli_sql_opens_the_data_dir_read_only_when_no_daemon_runs(
    daemon_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    data = tmp_path / "offline"
    d = daemon_factory(data_dir=data)
    post(d.url, make_request([make_span(attrs=llm_attrs())]).SerializeToString())
    d.stop()
    out = _cli(
        "SELECT count(*) AS n FROM steps",
        "--format",
        "csv",
        "--data-dir",
        str(data),
        "--config",
        str(_config_with_dead_port(tmp_path)),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["n", "1"]
    out = _cli(
        "SELECT * FROM read_csv('/etc/passwd')",
        "--data-dir",
        str(data),
        "--config",
        str(_config_with_dead_port(tmp_path)),
    )
    assert out.returncode == 1
    assert "read_csv" in out.stderr


def _config_with_dead_port(tmp_path: Path) -> Path:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = tmp_path / "watchdog.yaml"
    cfg.write_text(f"server:\n  port: {port}\n")
    return cfg

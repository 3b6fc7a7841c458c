"""Guarded read-only SQL: one SELECT, classified by DuckDB's own parser, with a deadline and a row cap.

The guard refuses, with a message: several statements, anything but SELECT (DDL, DML,
COPY, ATTACH, INSTALL/LOAD, SET, PRAGMA, CALL, EXPORT, transactions), table functions
outside an allowlist (`read_csv`, `glob`, `query`, …), scalar functions that reach the
environment, and table names that are file paths. The store additionally runs with
`enable_external_access = false`, so a gap in this list still cannot touch a file.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from watchdog.errors import QueryRejected, QueryTimeout

ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "duckdb_tables",
        "duckdb_columns",
        "duckdb_views",
        "duckdb_schemas",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_constraints",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pragma_database_size",
        "summary",
    }
)
DENIED_FUNCTIONS = frozenset(
    {"getenv", "query", "query_table", "read_text", "read_blob", "current_setting", "glob"}
)
_PATH_CHARS = ("/", "\\", "://", ".csv", ".parquet", ".json", ".db", ".duckdb", ".txt", "~")


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Columns, rows and whether rows were cut at the cap."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def check_sql(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryRejected unless `sql` is exactly one read-only SELECT the guard allows."""
    if not sql.strip():
        raise QueryRejected("empty query")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise QueryRejected(f"syntax error: {err}") from err
    if len(statements) != 1:
        raise QueryRejected(f"exactly one statement allowed, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise QueryRejected(f"only SELECT statements are allowed, got {name}")
    row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        # PRAGMA and other SELECT-typed statements that are not plain select nodes land here.
        raise QueryRejected("only plain SELECT queries are allowed (PRAGMA and the like are not)")
    for node in _walk(tree):
        ntype = node.get("type")
        if ntype == "TABLE_FUNCTION":
            fn = (node.get("function") or {}).get("function_name", "").lower()
            if fn not in ALLOWED_TABLE_FUNCTIONS:
                raise QueryRejected(
                    f"table function {fn}() is not allowed (no file or network access)"
                )
        elif ntype == "FUNCTION" and node.get("class") == "FUNCTION":
            fn = str(node.get("function_name", "")).lower()
            if fn in DENIED_FUNCTIONS:
                raise QueryRejected(f"function {fn}() is not allowed")
        elif ntype == "BASE_TABLE":
            table = str(node.get("table_name", ""))
            if any(c in table.lower() for c in _PATH_CHARS) or node.get("catalog_name"):
                raise QueryRejected(f"table {table!r} is not allowed: only watchdog's own tables")


def jsonable(value: Any) -> Any:
    """Convert a DuckDB result value to something json.dumps accepts."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def run_guarded(
    cur: duckdb.DuckDBPyConnection, sql: str, *, time_limit_ms: int, max_rows: int
) -> QueryResult:
    """Check and run `sql` on `cur`; interrupt it at the deadline; cap the rows.

    Blocking: call from a store reader thread. Raises QueryRejected / QueryTimeout.
    """
    check_sql(cur, sql)
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        cur.interrupt()

    timer = threading.Timer(time_limit_ms / 1000, interrupt)
    started = dt.datetime.now()
    timer.start()
    try:
        rel = cur.execute(sql)
        columns = [d[0] for d in (rel.description or [])]
        fetched = rel.fetchmany(max_rows + 1)
    except duckdb.Error as err:
        if timed_out.is_set():
            raise QueryTimeout(f"query exceeded the {time_limit_ms} ms time limit") from err
        raise QueryRejected(str(err).split("\n")[0] if str(err) else type(err).__name__) from err
    finally:
        timer.cancel()
    truncated = len(fetched) > max_rows
    rows = [[jsonable(v) for v in r] for r in fetched[:max_rows]]
    elapsed = (dt.datetime.now() - started).total_seconds() * 1000
    return QueryResult(columns, rows, truncated, elapsed)

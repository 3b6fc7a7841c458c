"""Writing many small rows to DuckDB in one statement (inside the store's writer thread).

DuckDB spends milliseconds on each single-row statement, so an alert storm written row
by row holds the single writer (and every span commit behind it) for seconds. Up to
`ROW_AT_A_TIME` rows are written one statement each (cheapest for the usual one or two);
more go through one Arrow table per statement. Values must be str, naive-UTC datetime or
None (what the alert and verdict tables hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

__all__ = ["ROW_AT_A_TIME", "insert_rows", "update_rows"]

ROW_AT_A_TIME = 4


def _table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
    arrays = {}
    for i, name in enumerate(names):
        values = [r[i] for r in rows]
        if any(isinstance(v, datetime) for v in values):
            kind: pa.DataType = pa.timestamp("us")
        elif all(v is None for v in values):
            kind = pa.null()
        else:
            kind = pa.string()
        arrays[name] = pa.array(values, type=kind)
    return pa.table(arrays)


def _names(columns: str) -> list[str]:
    return [c.strip() for c in columns.split(",")]


def insert_rows(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    columns: str,
    rows: Sequence[Sequence[Any]],
    on_conflict: str = "",
) -> None:
    """INSERT `rows` (values in `columns` order) into `table`, with an optional ON CONFLICT."""
    if not rows:
        return
    if len(rows) <= ROW_AT_A_TIME:
        marks = ", ".join("?" for _ in _names(columns))
        for row in rows:
            cur.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks}) {on_conflict}", row)
        return
    view = f"_{table}_in"
    cur.register(view, _table(_names(columns), rows))
    try:
        cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view} {on_conflict}")
    finally:
        cur.unregister(view)


def update_rows(
    cur: duckdb.DuckDBPyConnection,
    table: str,
    key: str,
    columns: str,
    rows: Sequence[Sequence[Any]],
) -> None:
    """UPDATE `table` SET `columns` for each row, matched on `key` (the row's last value)."""
    if not rows:
        return
    names = _names(columns)
    if len(rows) <= ROW_AT_A_TIME:
        sets = ", ".join(f"{n} = ?" for n in names)
        for row in rows:
            cur.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?", row)
        return
    view = f"_{table}_up"
    cur.register(view, _table([*names, key], rows))
    try:
        sets = ", ".join(f"{n} = {view}.{n}" for n in names)
        cur.execute(f"UPDATE {table} SET {sets} FROM {view} WHERE {table}.{key} = {view}.{key}")
    finally:
        cur.unregister(view)

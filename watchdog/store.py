"""The DuckDB store: numbered migrations, writer threads, read cursors, bulk Arrow inserts.

DuckDB allows one read-write instance per file per process. The store owns it: span
inserts run on one dedicated thread, every other write on another (they touch disjoint
tables), every read on a small pool of threads with a cursor each. The event loop never
touches a connection.

Spans and steps are kept in two files, the main one and its twin (ATTACHed as `twin`),
and the `spans` and `steps` views read both. A DuckDB checkpoint blocks every commit into
the file it folds, for about a second per 100 MB of WAL, and ingest acknowledges only
after commit, so intake used to stall for that second. Now, when the file that takes the
inserts has WAL enough, the inserts switch to the other file while a checkpoint thread
folds the first one: commits into an ATTACHed file do not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from watchdog.batch import SpanBatch
from watchdog.errors import ConfigError
from watchdog.telemetry import METRICS

logger = logging.getLogger(__name__)

T = TypeVar("T")

TWIN = "twin"
VIEWS = {
    # Spans as received, in the column layout of the OpenTelemetry Collector's ClickHouse
    # exporter table `otel_traces` (attributes as MAPs), so queries written for it run here.
    "spans": f"""
        SELECT
            "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName",
            "SpanKind", "ServiceName",
            map_from_entries("ResourceAttributes") AS "ResourceAttributes",
            "ScopeName", "ScopeVersion",
            map_from_entries("SpanAttributes") AS "SpanAttributes",
            "Duration", "StatusCode", "StatusMessage", "Events", "Links"
        FROM (FROM span_records UNION ALL FROM {TWIN}.span_records)""",
    "steps": f"FROM step_records UNION ALL FROM {TWIN}.step_records",
}
# The table whose rows each view shows (its columns' NOT NULL constraints hold for the view).
VIEW_TABLES = {"spans": "span_records", "steps": "step_records"}
# The tables that both files hold.
RECORD_TABLES = tuple(VIEW_TABLES.values())
_UNITS = {"b": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a DuckDB size such as `96MB` (powers of 1000) or `96MiB` (of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ConfigError(f"cannot read {text!r} as a size (like 96MB or 1GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


def twin_path(path: Path) -> Path:
    """The file next to `path` that holds the other half of spans and steps."""
    return path.with_name(f"{path.stem}.{TWIN}{path.suffix}")


def list_migrations() -> list[tuple[int, str, str]]:
    """Return the shipped migrations as (number, name, sql), in order."""
    out = []
    for entry in resources.files("watchdog.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


class Store:
    """Owner of the one DuckDB instance of a data directory."""

    def __init__(
        self,
        path: Path,
        *,
        memory_limit: str = "384MB",
        threads: int = 2,
        read_only: bool = False,
        checkpoint_threshold: str = "96MB",
    ) -> None:
        self.path = path
        self.twin_path = twin_path(path)
        self._memory_limit = memory_limit
        self._threads = threads
        self._checkpoint_threshold = checkpoint_threshold
        self._checkpoint_bytes = 0  # parsed by open
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-writer")
        self._span_writer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-span-writer")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-checkpoint")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="duckdb-reader")
        self._local = threading.local()
        self._main = "main"  # the main file's catalog name, known once open
        self._target = "main"  # the catalog that takes span inserts
        self._folding: str | None = None  # the catalog being checkpointed
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed) and migrate the database and its twin; lock file access.

        Raises ConfigError when a file cannot be opened (another process holds it) or,
        read-only, when the twin of a file that has one is missing.
        """
        if self._con is not None:
            return
        config: dict[str, Any] = {"memory_limit": self._memory_limit, "threads": self._threads}
        try:
            if not self.read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self.path), read_only=self.read_only, config=config)
            # The main file's catalog is named after the file (`watchdog`), not `main`.
            (name,) = self._con.execute("SELECT current_database()").fetchone() or ("",)
            self._main = self._target = str(name)
            if not self.read_only or self.twin_path.exists():
                mode = " (READ_ONLY)" if self.read_only else ""
                self._con.execute(f"ATTACH '{_quote(self.twin_path)}' AS {TWIN}{mode}")
            elif _columns(self._con, self._main, "step_records"):
                raise ConfigError(
                    f"{self.twin_path} is missing: it holds half of the spans and steps of "
                    f"{self.path}; restore it next to that file"
                )
        except (duckdb.Error, ConfigError) as err:
            if self._con is not None:
                self._con.close()
                self._con = None
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"cannot open database {self.path}: {err}") from err
        if not self.read_only:
            self._migrate(self._con)
            self._sync_twin(self._con)
            # The store checkpoints itself (see `_after_span_commit`); DuckDB's own
            # checkpoint on commit stays as a backstop at four times the threshold.
            try:
                self._con.execute("SET checkpoint_threshold = ?", [self._checkpoint_threshold])
                self._checkpoint_bytes = parse_size(self._checkpoint_threshold)
                self._con.execute(
                    "SET checkpoint_threshold = ?", [f"{4 * self._checkpoint_bytes}B"]
                )
            except (duckdb.Error, ConfigError) as err:
                self._con.close()
                self._con = None
                raise ConfigError(
                    f"storage.checkpoint_threshold {self._checkpoint_threshold!r}: {err}"
                ) from err
        # After this no statement on this instance can read or write files other than the
        # databases themselves: user SQL cannot reach /etc/passwd even if the guard missed it.
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    def close(self) -> None:
        """Checkpoint both files and close; safe to call twice."""
        con, self._con = self._con, None
        for pool in (self._span_writer, self._writer, self._checkpointer, self._readers):
            pool.shutdown(wait=True)
        if con is not None:
            if not self.read_only:
                for catalog in (self._main, TWIN):
                    try:
                        con.execute(f"CHECKPOINT {_ident(catalog)}")
                    except duckdb.Error:
                        logger.warning("checkpoint of %s at close failed", catalog, exc_info=True)
            con.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The instance's root connection (use only from the store's threads)."""
        if self._con is None:
            raise RuntimeError("store is not open")
        return self._con

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT now())"
        )
        applied = {int(r[0]) for r in con.execute("SELECT version FROM schema_version").fetchall()}
        known = list_migrations()
        newest_known = known[-1][0] if known else 0
        if applied and max(applied) > newest_known:
            raise ConfigError(
                f"database {self.path} has schema version {max(applied)}, newer than this "
                f"watchdog knows ({newest_known}); upgrade watchdog"
            )
        # Apply every shipped migration not yet recorded, in number order; a gap left by a
        # migration added later with a lower number is filled too.
        for version, name, sql in known:
            if version in applied:
                continue
            logger.info("applying migration %s", name)
            con.execute("BEGIN")
            try:
                con.execute(sql)
                con.execute(
                    "INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name]
                )
                con.execute("COMMIT")
            except duckdb.Error:
                con.execute("ROLLBACK")
                raise

    def _sync_twin(self, con: duckdb.DuckDBPyConnection) -> None:
        """Give the twin file each record table of the main one, and (re)create the views.

        The twin's tables copy the main file's columns. A migration that changes a record
        table must change the twin's too: a difference is refused rather than guessed at.
        """
        for table in RECORD_TABLES:
            main_cols = _columns(con, self._main, table)
            twin_cols = _columns(con, TWIN, table)
            if not twin_cols:
                row = con.execute(
                    "SELECT sql FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                    [self._main, table],
                ).fetchone()
                assert row is not None, f"no table {table} after the migrations"
                prefix = f"CREATE TABLE {table}("
                assert str(row[0]).startswith(prefix), row[0]
                con.execute(f"CREATE TABLE {TWIN}.{table}(" + str(row[0])[len(prefix) :])
            elif twin_cols != main_cols:
                raise ConfigError(
                    f"{self.twin_path}: table {table} has columns {twin_cols}, "
                    f"the main file {main_cols}"
                )
        for name, sql in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {_ident(self._main)}.{name} AS {sql}")

    def schema_version(self) -> int:
        """The highest migration applied to the file."""
        row = self.con.cursor().execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- threads ---------------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self.con.cursor()
            self._local.cursor = cur
        return cur

    async def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn(cursor)` inside one transaction on the writer thread; commit, then return.

        For every table but the span and step records (those are `write_spans`').
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self.write_sync, fn)

    def write_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """The writer threads' body of `write`; call directly only from them or tests."""
        cur = self._cursor()
        cur.execute("BEGIN")
        try:
            result = fn(cur)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return result

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn(cursor)` on a reader thread with that thread's own cursor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._cursor()))

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one read query synchronously on a fresh cursor (tests, CLI, start-up)."""
        return self.con.cursor().execute(sql, params or []).fetchall()

    # -- spans -----------------------------------------------------------------------
    async def write_spans(self, batch: SpanBatch) -> None:
        """Commit the spans and steps of `batch` in one transaction on the span writer."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._span_writer, self.write_spans_sync, batch)

    def write_spans_sync(self, batch: SpanBatch) -> None:
        """The span writer's body of `write_spans`: insert into the target file, commit."""
        target = _ident(self._target)

        def insert(cur: duckdb.DuckDBPyConnection) -> None:
            cur.register("_spans_in", batch.spans)
            cur.execute(f"INSERT INTO {target}.span_records BY NAME SELECT * FROM _spans_in")
            cur.unregister("_spans_in")
            if batch.steps:
                cur.register("_steps_in", batch.steps_table)
                cur.execute(f"INSERT INTO {target}.step_records BY NAME SELECT * FROM _steps_in")
                cur.unregister("_steps_in")

        self.write_sync(insert)
        self._after_span_commit()

    def _wal_bytes(self, catalog: str) -> int:
        path = self.path if catalog == self._main else self.twin_path
        try:
            return (path.parent / f"{path.name}.wal").stat().st_size
        except FileNotFoundError:
            return 0

    def _after_span_commit(self) -> None:
        """Once the target file's WAL passes the threshold, fold it and insert elsewhere.

        Runs on the span writer. While one file is being checkpointed the other takes
        every insert, even past the threshold (DuckDB's own checkpoint is the backstop).
        """
        target = self._target
        if self._wal_bytes(target) < self._checkpoint_bytes:
            return
        with self._lock:
            if self._folding is not None:
                return
            self._folding = target
        self._target = TWIN if target == self._main else self._main
        self._checkpointer.submit(self._fold, target)

    def _fold(self, catalog: str) -> None:
        """Checkpoint `catalog` (on the checkpoint thread)."""
        started = time.perf_counter()
        try:
            self._cursor().execute(f"CHECKPOINT {_ident(catalog)}")
        except duckdb.Error:  # e.g. another write transaction open on it: try next time
            logger.warning("checkpoint of %s failed", catalog, exc_info=True)
        finally:
            with self._lock:
                self._folding = None
        METRICS.checkpoint_seconds.observe(time.perf_counter() - started)


def _ident(name: str) -> str:
    """`name` as a quoted SQL identifier (a catalog is named after its file)."""
    return '"' + name.replace('"', '""') + '"'


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> list[tuple[str, str]]:
    return [
        (str(name), str(typ))
        for name, typ in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ? AND schema_name = 'main' AND table_name = ? "
            "ORDER BY column_index",
            [catalog, table],
        ).fetchall()
    ]

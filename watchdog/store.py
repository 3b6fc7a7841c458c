"""The DuckDB store: numbered migrations, one writer thread, read cursors, bulk Arrow inserts.

DuckDB allows one read-write instance per file per process. The store owns it: every
write runs on one dedicated thread (so transactions never interleave), every read on a
small pool of threads with a cursor each. The event loop never touches a connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from watchdog.batch import SpanBatch
from watchdog.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        memory_limit: str = "1GB",
        threads: int = 2,
        read_only: bool = False,
        checkpoint_threshold: str = "96MB",
    ) -> None:
        self.path = path
        self._memory_limit = memory_limit
        self._threads = threads
        self._checkpoint_threshold = checkpoint_threshold
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-writer")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="duckdb-reader")
        self._local = threading.local()

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed) and migrate the database; then lock file access.

        Raises ConfigError when the file cannot be opened (another process holds it).
        """
        if self._con is not None:
            return
        config: dict[str, Any] = {"memory_limit": self._memory_limit, "threads": self._threads}
        try:
            if self.read_only:
                config["enable_external_access"] = False
                self._con = duckdb.connect(str(self.path), read_only=True, config=config)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self.path), config=config)
        except duckdb.Error as err:
            raise ConfigError(f"cannot open database {self.path}: {err}") from err
        self._migrate(self._con)
        # A checkpoint stalls the commit that triggers it, for about a second per 100 MB
        # of WAL here, and DuckDB holds the rows since the last checkpoint in memory.
        # At 256 MB (the old value) ingest stalled for 2-3 s at a time and peaked 400 MB
        # higher, at the same throughput: benchmarks/ingest.py, README "Throughput".
        try:
            self._con.execute("SET checkpoint_threshold = ?", [self._checkpoint_threshold])
        except duckdb.Error as err:
            self._con.close()
            self._con = None
            raise ConfigError(
                f"storage.checkpoint_threshold {self._checkpoint_threshold!r}: {err}"
            ) from err
        # After this no statement on this instance can read or write files other than the
        # database itself: user SQL cannot reach /etc/passwd even if the guard missed it.
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    def close(self) -> None:
        """Checkpoint and close; safe to call twice."""
        con, self._con = self._con, None
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if con is not None:
            if not self.read_only:
                try:
                    con.execute("CHECKPOINT")
                except duckdb.Error:
                    logger.warning("checkpoint at close failed", exc_info=True)
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
        """Run `fn(cursor)` inside one transaction on the writer thread; commit, then return."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self.write_sync, fn)

    def write_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """The writer thread's body of `write`; call directly only from that thread or tests."""
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
        """Commit the spans and steps of `batch` in one transaction on the writer thread."""

        def insert(cur: duckdb.DuckDBPyConnection) -> None:
            cur.register("_spans_in", batch.spans)
            cur.execute("INSERT INTO span_records BY NAME SELECT * FROM _spans_in")
            cur.unregister("_spans_in")
            if batch.steps:
                cur.register("_steps_in", batch.steps_table)
                cur.execute("INSERT INTO steps BY NAME SELECT * FROM _steps_in")
                cur.unregister("_steps_in")

        await self.write(insert)

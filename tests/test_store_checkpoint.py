"""`storage.checkpoint_threshold` reaches DuckDB: the WAL is folded in at that size.

Real DuckDB file; the rows are real decoded OTLP spans.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.otlp import decode_request
from tests.otlp_builders import llm_attrs, make_request, make_span
from watchdog.errors import ConfigError
from watchdog.pricing import Pricer
from watchdog.store import Store


def wal_bytes(db: Path) -> int:
    wal = Path(f"{db}.wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_wal_is_checkpointed_at_the_threshold(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    store = Store(db, threads=1, checkpoint_threshold="2MB")
    store.open()
    try:
        req = make_request([make_span(attrs=llm_attrs()) for _ in range(1_000)])
        batch = decode_request(req, Pricer()).batch
        largest = 0
        for _ in range(12):
            await store.write_spans(batch)
            largest = max(largest, wal_bytes(db))
        # Twelve commits log well over 2 MB, yet the WAL never held much more than that.
        assert store.query("SELECT count(*) FROM span_records")[0][0] == 12_000
        assert 0 < largest < 4 * 2**20
    finally:
        store.close()


def test_a_threshold_duckdb_cannot_read_is_a_config_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "w.duckdb", checkpoint_threshold="lots")
    with pytest.raises(ConfigError, match=r"storage\.checkpoint_threshold"):
        store.open()
    store.close()

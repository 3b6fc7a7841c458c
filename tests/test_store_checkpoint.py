"""Checkpoints never stall ingest: span inserts alternate between the main file and its
twin, and a full file is checkpointed while the other one takes the commits.

Real DuckDB files; the rows are real decoded OTLP spans.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from collectors.otlp import decode_request
from tests.otlp_builders import llm_attrs, make_request, make_span
from watchdog.batch import SpanBatch
from watchdog.errors import ConfigError
from watchdog.pricing import Pricer
from watchdog.store import Store, parse_size


def wal_bytes(db: Path) -> int:
    wal = Path(f"{db}.wal")
    return wal.stat().st_size if wal.exists() else 0


def spans(n: int) -> SpanBatch:
    return decode_request(
        make_request([make_span(attrs=llm_attrs()) for _ in range(n)]), Pricer()
    ).batch


def counts(store: Store) -> tuple[int, int, int]:
    """Span rows in the main file, in the twin, and through the `spans` view."""
    main = store.query("SELECT count(*) FROM span_records")[0][0]
    twin = store.query("SELECT count(*) FROM twin.span_records")[0][0]
    return main, twin, store.query("SELECT count(*) FROM spans")[0][0]


async def test_wal_is_checkpointed_at_the_threshold(tmp_path: Path) -> None:
    db = tmp_path / "my-data.duckdb"  # the catalog is named after the file: quoted in SQL
    store = Store(db, threads=1, checkpoint_threshold="2MB")
    store.open()
    try:
        batch = spans(1_000)
        largest = 0
        for _ in range(12):
            await store.write_spans(batch)
            largest = max(largest, wal_bytes(db), wal_bytes(store.twin_path))
            # Let a checkpoint it started finish: a file may grow past the threshold only
            # while the other one is being checkpointed (next test), not here.
            store._checkpointer.submit(lambda: None).result(30)
        # Twelve commits log well over 2 MB, yet no WAL ever held much more than that,
        # and both files took inserts.
        main, twin, total = counts(store)
        assert total == main + twin == 12_000
        assert main and twin
        assert 0 < largest < 4 * 2**20
        steps = store.query("SELECT count(*) FROM steps")[0][0]
        assert steps == 12_000
    finally:
        store.close()


def test_inserts_go_on_into_the_twin_while_the_full_file_is_checkpointed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    store = Store(db, threads=1, checkpoint_threshold="1MB")
    store.open()
    gate, folding = threading.Event(), threading.Event()
    try:
        # Hold the checkpoint thread, so the checkpoint of the full file cannot finish.
        store._checkpointer.submit(lambda: (folding.set(), gate.wait(30)))
        assert folding.wait(10)
        batch = spans(500)
        while wal_bytes(db) < 2**20:
            store.write_spans_sync(batch)
        main_before = counts(store)[0]
        # The main file is full and waits for its checkpoint; every commit now lands in
        # the twin, past its own threshold, and returns.
        for _ in range(8):
            store.write_spans_sync(batch)
        main, twin, _ = counts(store)
        assert (main, twin) == (main_before, 8 * 500)
        assert wal_bytes(store.twin_path) > 2**20
        gate.set()
        store._checkpointer.submit(lambda: None).result(30)
        assert wal_bytes(db) == 0  # folded into the file
        # The twin is over the threshold: the first commit after the checkpoint still
        # lands there and hands the inserts back to the main file.
        store.write_spans_sync(batch)
        store.write_spans_sync(batch)
        assert counts(store)[:2] == (main_before + 500, twin + 500)
    finally:
        gate.set()
        store.close()
    reopened = Store(db, read_only=True)
    reopened.open()
    try:
        assert counts(reopened)[2] == main_before + 500 + 9 * 500
    finally:
        reopened.close()


def test_a_threshold_duckdb_cannot_read_is_a_config_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "w.duckdb", checkpoint_threshold="lots")
    with pytest.raises(ConfigError, match=r"storage\.checkpoint_threshold"):
        store.open()
    store.close()


@pytest.mark.parametrize(
    ("text", "size"),
    [("96MB", 96_000_000), ("96 MiB", 96 * 2**20), ("1.5GB", 1_500_000_000), ("100bytes", 100)],
)
def test_sizes_read_like_duckdb_reads_them(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_duckdb_commits_into_the_twin_during_a_checkpoint_of_the_main_file(
    tmp_path: Path,
) -> None:
    # What the store relies on: a checkpoint blocks commits into its own file only.
    store = Store(tmp_path / "w.duckdb", threads=1, checkpoint_threshold="1GB")
    store.open()
    try:
        batch = spans(1_000)
        for _ in range(60):
            store.write_spans_sync(batch)  # all into the main file: far below 1GB
        done = threading.Event()
        folding = store._checkpointer.submit(lambda: (store._fold("w"), done.set()))
        threading.Event().wait(0.05)
        one = batch.keep_rows([i == 0 for i in range(len(batch))])
        during = 0
        store._target = "twin"
        while not done.is_set():
            store.write_spans_sync(one)
            during += not done.is_set()
        folding.result(30)
        # Blocked commits would all return after the checkpoint (one at most could race
        # the flag); here they kept landing while it ran.
        assert during >= 3
        assert wal_bytes(tmp_path / "w.duckdb") == 0
    finally:
        store.close()


def test_a_missing_twin_is_named_when_reading(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    store = Store(db)
    store.open()
    store.close()
    store.twin_path.unlink()
    reader = Store(db, read_only=True)
    with pytest.raises(ConfigError, match=r"w\.twin\.duckdb is missing"):
        reader.open()
    reader.close()

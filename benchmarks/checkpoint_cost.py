"""Checkpoint cost per span for different checkpoint rules, on identical inserts.

Each rule gets its own DuckDB file (the daemon's schema, one DuckDB thread); every
commit of decoded benchmark spans goes to all of them in turn, so a slow moment of the
machine hits every rule alike. After each commit a rule decides whether to CHECKPOINT;
the script prints the CPU time of those checkpoints per span, and of the inserts.

Rules: DuckDB's own WAL-size threshold (what `storage.checkpoint_threshold` sets) at
several sizes, and a checkpoint right after each commit that fills a row group of
`span_records` (122,880 rows). `--extra-bytes` adds that much text per
span (a status message of random words), like spans that carry prompts and outputs.

    .venv/bin/python benchmarks/checkpoint_cost.py [--spans 750000] [--extra-bytes 0]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
from ingest import build_bodies  # noqa: E402

from collectors.otlp import decode_request, parse_protobuf  # noqa: E402
from watchdog.batch import SpanBatch  # noqa: E402
from watchdog.pricing import Pricer  # noqa: E402
from watchdog.store import Store  # noqa: E402

# Rows per row group of a DuckDB file created without ROW_GROUP_SIZE.
ROW_GROUP_ROWS = 122_880

Rule = Callable[[int, int, Path], bool]  # (rows before, rows after, wal path) -> checkpoint?


def row_group_rule(before: int, after: int, wal: Path) -> bool:
    return before // ROW_GROUP_ROWS != after // ROW_GROUP_ROWS


def wal_rule(mib: int) -> Rule:
    def rule(before: int, after: int, wal: Path) -> bool:
        return wal.exists() and wal.stat().st_size >= mib * 2**20

    return rule


class Target:
    """One database file and its rule, with the CPU spent on it."""

    def __init__(self, name: str, rule: Rule, tmp: Path) -> None:
        self.name, self.rule = name, rule
        path = tmp / f"{len(os.listdir(tmp))}.duckdb"
        self.wal = Path(f"{path}.wal")
        self.con = duckdb.connect(str(path), config={"memory_limit": "1GB", "threads": 1})
        Store(path)._migrate(self.con)
        self.con.execute("SET checkpoint_threshold = '100GB'")  # only the rule checkpoints
        self.rows = 0
        self.checkpoints = 0
        self.checkpoint_cpu = 0.0
        self.insert_cpu = 0.0

    def commit(self, batch: SpanBatch) -> None:
        cpu = time.process_time()
        con = self.con
        con.execute("BEGIN")
        con.register("_spans", batch.spans)
        con.execute("INSERT INTO span_records BY NAME SELECT * FROM _spans")
        con.unregister("_spans")
        con.register("_steps", batch.steps_table)
        con.execute("INSERT INTO steps BY NAME SELECT * FROM _steps")
        con.unregister("_steps")
        con.execute("COMMIT")
        self.insert_cpu += time.process_time() - cpu
        before, self.rows = self.rows, self.rows + len(batch)
        if self.rule(before, self.rows, self.wal):
            cpu = time.process_time()
            con.execute("CHECKPOINT")
            self.checkpoint_cpu += time.process_time() - cpu
            self.checkpoints += 1


def with_extra_text(batch: SpanBatch, extra_bytes: int) -> SpanBatch:
    rng = random.Random(7)
    words = [rng.randbytes(4).hex() for _ in range(5_000)]
    texts = [" ".join(rng.choices(words, k=extra_bytes // 9)) for _ in range(len(batch))]
    i = batch.spans.schema.get_field_index("StatusMessage")
    spans = batch.spans.set_column(i, "StatusMessage", pa.array(texts, pa.string()))
    return SpanBatch(spans, batch.steps, batch.steps_table, batch.keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=750_000, help="spans committed per rule")
    ap.add_argument("--commit-spans", type=int, default=2_500, help="spans per commit")
    ap.add_argument("--extra-bytes", type=int, default=0, help="text added to every span")
    ap.add_argument("--wal-mib", type=int, nargs="*", default=[96, 256])
    args = ap.parse_args()

    bodies = build_bodies(args.commit_spans, 20)
    pricer = Pricer()
    batch = SpanBatch.merge([decode_request(parse_protobuf(b), pricer).batch for b in bodies])
    if args.extra_bytes:
        batch = with_extra_text(batch, args.extra_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        targets = [Target("after each row group", row_group_rule, Path(tmp))]
        targets += [Target(f"WAL >= {m} MiB", wal_rule(m), Path(tmp)) for m in args.wal_mib]
        print(
            f"{args.spans:,} spans per rule in commits of {len(batch):,} "
            f"(+{args.extra_bytes} bytes of text each), {len(targets)} rules interleaved…",
            flush=True,
        )
        done = 0
        while done < args.spans:
            for t in targets:
                t.commit(batch)
            done += len(batch)
        print(f"\nmachine: {os.cpu_count()} cores, DuckDB {duckdb.__version__}, threads=1")
        for t in targets:
            print(
                f"{t.name:22s}: {t.checkpoints:3d} checkpoints, "
                f"{t.checkpoint_cpu / done * 1e6:5.1f} µs CPU per span "
                f"(inserts {t.insert_cpu / done * 1e6:.1f} µs)"
            )
            t.con.close()


if __name__ == "__main__":
    main()

"""The garbage-collector thresholds of the daemon and its decode workers.

Ingest allocates and frees millions of short-lived containers (decoded attributes, step
tuples, request objects). At CPython's default first-generation threshold (700 net
allocations) the collector ran about 1,100 times per 600,000 spans in the daemon and
1,200 times in each decode worker: about 2.5 µs of CPU per span, 4% of the whole
pipeline (benchmarks/ingest.py with detectors off). Almost everything dies young, so with a
threshold of 50,000 the net count rarely gets there: one collection in the same run.
Cyclic garbage is still collected, only in larger, rarer sweeps.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Apply THRESHOLDS to this process's garbage collector."""
    gc.set_threshold(*THRESHOLDS)

"""Self-metrics exposed on /metrics, and logging set-up.

Metric names follow `watchdog_<subsystem>_<thing>_<unit|total>`.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every self-metric of one process, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.spans_received = Counter(
            "watchdog_ingest_spans_received_total", "Spans decoded from OTLP requests.", registry=r
        )
        self.spans_rejected = Counter(
            "watchdog_ingest_spans_rejected_total",
            "Spans rejected as invalid (reported in partial_success).",
            registry=r,
        )
        self.spans_stored = Counter(
            "watchdog_ingest_spans_stored_total", "Spans committed to DuckDB.", registry=r
        )
        self.spans_duplicate = Counter(
            "watchdog_ingest_spans_duplicate_total",
            "Re-sent spans dropped because they were already committed.",
            registry=r,
        )
        self.requests = Counter(
            "watchdog_ingest_requests_total",
            "OTLP requests by HTTP status.",
            ["status"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "watchdog_ingest_queue_spans", "Spans waiting in the ingest queue.", registry=r
        )
        self.queue_full = Counter(
            "watchdog_ingest_queue_full_total",
            "Requests refused because the queue was full.",
            registry=r,
        )
        self.commit_seconds = Histogram(
            "watchdog_store_commit_seconds",
            "Latency of one batch commit.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "watchdog_store_checkpoint_seconds",
            "Duration of one checkpoint of a span file (inserts go to the other file meanwhile).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.commit_errors = Counter(
            "watchdog_store_commit_errors_total", "Batch commits that failed.", registry=r
        )
        self.sql_queries = Counter(
            "watchdog_sql_queries_total", "SQL API queries by outcome.", ["outcome"], registry=r
        )


METRICS = Metrics()


def setup_logging(level: str) -> None:
    """Log to stderr as `time level logger: message`."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

"""An acknowledged span is on disk: kill -9 mid-load and SIGTERM drain, with a real subprocess daemon."""

from __future__ import annotations

import threading
import time
import urllib.error
from pathlib import Path

from tests.conftest import DaemonProcess
from tests.otlp_builders import llm_attrs, make_request, make_span, post
from watchdog.store import Store


class Load:
    """Several client threads posting unique spans until stopped; remembers what got a 200."""

    def __init__(self, url: str, threads: int = 4, spans_per_request: int = 50) -> None:
        self.url = url
        self.acked: list[str] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(spans_per_request,)) for _ in range(threads)
        ]

    def _run(self, n: int) -> None:
        while not self._stop.is_set():
            spans = [make_span(attrs=llm_attrs()) for _ in range(n)]
            body = make_request(spans).SerializeToString()
            try:
                status, _, _ = post(self.url, body)
            except (urllib.error.URLError, ConnectionError, OSError):
                return  # the daemon is gone; what it acknowledged is what counts
            with self._lock:
                self.statuses.append(status)
                if status == 200:
                    self.acked.extend(s.span_id.hex() for s in spans)

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, acked: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < acked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.acked) >= acked, f"only {len(self.acked)} spans acknowledged"

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def stored_span_ids(data_dir: Path) -> set[str]:
    store = Store(data_dir / "watchdog.duckdb", read_only=True)
    store.open()
    try:
        return {r[0] for r in store.query('SELECT "SpanId" FROM spans')}
    finally:
        store.close()


def test_kill9_mid_load_loses_no_acknowledged_span(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data).start()
    load = Load(d.url).start()
    load.wait_for(3000)
    d.kill9()
    load.stop()
    acked = set(load.acked)
    stored = stored_span_ids(data)
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged spans lost after kill -9"
    # The restarted daemon opens the same file (WAL replayed) and keeps serving.
    d2 = DaemonProcess(data).start()
    try:
        status, _, _ = post(
            d2.url, make_request([make_span(attrs=llm_attrs())]).SerializeToString()
        )
        assert status == 200
    finally:
        assert d2.terminate() == 0
    assert len(stored_span_ids(data)) >= len(acked) + 1


def test_sigterm_drains_the_queue_and_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data).start()
    load = Load(d.url, threads=6).start()
    load.wait_for(2000)
    code = d.terminate()
    load.stop()
    assert code == 0, "".join(d.lines[-20:])
    acked = set(load.acked)
    assert acked <= stored_span_ids(data)
    # Only 200s and retryable refusals while shutting down; never an error that drops data.
    assert set(load.statuses) <= {200, 503}
    assert any("watchdog stopped" in line for line in d.lines)

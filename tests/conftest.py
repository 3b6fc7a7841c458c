"""Shared fixtures: a real daemon on a free port (in a thread or a subprocess), real OTel SDK senders."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from watchdog.daemon import Daemon
from watchdog.settings import Settings, load_settings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the developer's WATCHDOG_* variables."""
    for key in list(os.environ):
        if key.startswith("WATCHDOG_"):
            monkeypatch.delenv(key)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test daemon on a free loopback port with its DuckDB under `data_dir`."""
    server = {"host": "127.0.0.1", "port": 0, **overrides.pop("server", {})}
    storage = {"data_dir": data_dir, **overrides.pop("storage", {})}
    return load_settings(None, server=server, storage=storage, **overrides)


class DaemonThread:
    """A real Daemon running its own event loop in a background thread.

    Tests stay synchronous, so the OTel SDK's blocking exporters and plain HTTP clients
    can talk to it without sharing (and blocking) the daemon's loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.daemon: Daemon | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> DaemonThread:
        self._thread.start()
        self.daemon = Daemon(self.settings)
        self.call(self.daemon.start())
        return self

    @property
    def d(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    @property
    def url(self) -> str:
        return self.d.url

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout_s)

    def settle(self, timeout_s: float = 15) -> None:
        self.call(self.d.settle(timeout_s), timeout_s + 5)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            return await self.d.store.read(lambda cur: cur.execute(sql, params or []).fetchall())

        return self.call(run())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self.daemon is not None:
            self.call(self.daemon.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonThread]]:
    started: list[DaemonThread] = []

    def factory(**overrides: Any) -> DaemonThread:
        data_dir = overrides.pop("data_dir", tmp_path / "data")
        d = DaemonThread(make_settings(data_dir, **overrides)).start()
        started.append(d)
        return d

    yield factory
    for d in started:
        d.stop()


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonThread]) -> DaemonThread:
    return daemon_factory()


def otel_provider(url: str, service: str = "test-agent", **resource: Any) -> TracerProvider:
    """A real OTel SDK tracer provider exporting synchronously over OTLP/HTTP protobuf to `url`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    return provider


def http_json(
    method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Send JSON and return (status, parsed JSON body or raw text)."""
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


class DaemonProcess:
    """`watchdog run --port 0` in a subprocess; the bound URL is read from its first line."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []

    def start(self, timeout_s: float = 30) -> DaemonProcess:
        cmd = [
            sys.executable,
            "-m",
            "watchdog",
            "run",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"watchdog listening on (http://\S+)$", line.strip())
            if m and not line.startswith("20"):  # the printed line, not the log line
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise RuntimeError("daemon did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

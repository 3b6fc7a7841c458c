"""The dashboard component: HTML pages at `/`, their JSON API under `/api/dashboard/`, live updates.

Pages are static shells (no data in them), so they need no token; everything they show
comes from `/api/dashboard/...`, which the daemon's auth middleware protects like the
rest of `/api/`: the page sends `Authorization: Bearer <token>` when the operator gave
it one (kept in the browser's localStorage; see dashboards/README.md). Every asset is
served by the daemon itself and pages carry a Content-Security-Policy of `'self'`, so a
page never loads anything from elsewhere.

Live updates are server-sent events (`/api/dashboard/events`) read with `fetch`, so the
bearer header goes along; each event only says "topics X changed" and the page refetches.
All DuckDB work runs on store reader threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Final

import duckdb
from aiohttp import web
from prometheus_client import CollectorRegistry

from dashboards import data
from dashboards.feed import ChangeFeed
from dashboards.metrics import DashboardCollector, build_registry
from dashboards.queries import CannedQuery, load_queries
from watchdog.http import json_response

if TYPE_CHECKING:
    from watchdog.daemon import Daemon

logger = logging.getLogger(__name__)

HERE: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = HERE / "static"
TEMPLATE: Final = HERE / "templates" / "page.html"

PAGES: Final[dict[str, tuple[str, str]]] = {
    # page id → (title, nav section)
    "overview": ("Overview", "overview"),
    "runs": ("Runs", "runs"),
    "run": ("Run", "runs"),
    "alerts": ("Alerts", "alerts"),
    "sql": ("SQL", "sql"),
}
NAV: Final = (
    ("overview", "/", "Overview"),
    ("runs", "/runs", "Runs"),
    ("alerts", "/alerts", "Alerts"),
    ("sql", "/sql", "SQL"),
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # the pages carry kill buttons: never inside another site's frame
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
SINCE: Final[dict[str, timedelta | None]] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
_TRACE_ID: Final = re.compile(r"^[0-9a-fA-F]{1,32}$")
MAX_STREAMS: Final = 32  # concurrent live-update streams; more get 503


class BadRequest(ValueError):
    """A query parameter the API refuses (answered as 400 with the message)."""


def _param_float(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as err:
        raise BadRequest(f"{name} must be a number") from err
    if value != value or value < 0:
        raise BadRequest(f"{name} must be a non-negative number")
    return value


def _param_int(request: web.Request, name: str, *, high: int = 10**9) -> int | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise BadRequest(f"{name} must be an integer") from err
    if not 0 <= value <= high:
        raise BadRequest(f"{name} must be between 0 and {high}")
    return value


def _param_choice(request: web.Request, name: str, choices: Any, default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise BadRequest(f"{name} must be one of: {', '.join(choices)}")
    return value


class DashboardApp:
    """Serves the dashboard pages, their JSON API, the live-update stream and agent metrics."""

    name = "dashboard"

    def __init__(self, daemon: Daemon, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._daemon = daemon
        self._settings = daemon.settings.dashboard
        self._clock_ns = clock_ns
        self._template = Template(TEMPLATE.read_text(encoding="utf-8"))
        self.queries: list[CannedQuery] = load_queries()
        self.feed = ChangeFeed()
        self.collector = DashboardCollector()
        self.metric_registry: CollectorRegistry = build_registry(self.collector)
        self._streams = 0
        self._subscribed = False
        self._metrics_task: asyncio.Task[None] | None = None
        self._app: web.Application | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for commits, alert and verdict changes; start refreshing the metrics."""
        if not self._subscribed:
            self._subscribed = True
            d = self._daemon
            d.writer.subscribe(self.feed.on_commit)
            d.alerts.subscribe(self.feed.on_alert)
            verdicts = getattr(d, "verdicts", None)
            if verdicts is not None and hasattr(verdicts, "subscribe"):
                verdicts.subscribe(self.feed.on_verdict)
            # Silences belong to the alerting component when it is wired (found by its
            # service name: dashboards/ never imports alerts/).
            silences = getattr(d.services.get("alerting"), "silences", None)
            if silences is not None and hasattr(silences, "subscribe"):
                silences.subscribe(self.feed.on_silence)
        if self._metrics_task is None:
            self._metrics_task = self._daemon.supervisor.spawn(
                self._metrics_loop(), name="dashboard-metrics"
            )

    async def stop(self) -> None:
        """End live-update streams and the metrics refresh; safe before start and twice."""
        self.feed.close()
        task, self._metrics_task = self._metrics_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self) -> None:
        """Recompute the metrics now, so /metrics reflects everything committed so far."""
        await self.refresh_metrics()

    async def _on_shutdown(self, _app: web.Application) -> None:
        # aiohttp waits for open handlers at shutdown; streams must end first.
        self.feed.close()

    # -- routes ----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Mount the pages at `/`, assets at `/assets/` and the JSON API at `/api/dashboard/`."""
        self._app = app
        r = app.router
        r.add_get("/", self._page("overview"))
        r.add_get("/runs", self._page("runs"))
        r.add_get("/runs/{trace_id}", self._page("run"))
        r.add_get("/alerts", self._page("alerts"))
        r.add_get("/sql", self._page("sql"))
        r.add_static("/assets/", STATIC_DIR, append_version=False)
        r.add_get("/api/dashboard/overview", self.api_overview)
        r.add_get("/api/dashboard/runs", self.api_runs)
        r.add_get("/api/dashboard/runs/{trace_id}", self.api_run)
        r.add_get("/api/dashboard/alerts", self.api_alerts)
        r.add_get("/api/dashboard/queries", self.api_queries)
        r.add_get("/api/dashboard/capabilities", self.api_capabilities)
        r.add_get("/api/dashboard/events", self.api_events)
        app.on_shutdown.append(self._on_shutdown)

    def _page(self, page: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        title, section = PAGES[page]
        active = ' class="active" aria-current="page"'
        nav = "".join(
            f'<a href="{href}"{active if key == section else ""}>{label}</a>'
            for key, href, label in NAV
        )
        body = self._template.substitute(title=html.escape(title), page=html.escape(page), nav=nav)

        async def handler(request: web.Request) -> web.Response:
            if page == "run" and not _TRACE_ID.match(request.match_info["trace_id"]):
                raise web.HTTPNotFound(text="not a trace id")
            return web.Response(text=body, content_type="text/html", headers=SECURITY_HEADERS)

        return handler

    # -- helpers ---------------------------------------------------------------------------
    def now(self) -> datetime:
        """The current time as naive UTC (the stored timestamps' form)."""
        return datetime.fromtimestamp(self._clock_ns() / 1e9, UTC).replace(tzinfo=None)

    def _verdict_lookup(self) -> data.VerdictLookup | None:
        """The verdict store's in-memory answer when it is wired (what the guard answers)."""
        verdicts = getattr(self._daemon, "verdicts", None)
        effective = getattr(verdicts, "effective", None)
        if effective is None:
            return None

        def lookup(agents: Any, session: str | None, trace: str | None) -> dict[str, Any] | None:
            found = [effective(a, session, trace) for a in (agents or [None])]
            best = None
            for v in found:
                if v is None:
                    continue
                state = str(getattr(v, "state", ""))
                if state not in data.VERDICT_RANK:
                    continue
                if best is None or data.VERDICT_RANK[state] > data.VERDICT_RANK[best[0]]:
                    best = (state, v)
            if best is None:
                return None
            state, v = best
            scope = getattr(v, "scope", None)
            return {
                "state": state,
                "reason": getattr(v, "reason", None),
                "scope": {
                    "type": getattr(scope, "type", None),
                    "value": getattr(scope, "value", None),
                }
                if scope is not None
                else None,
                "alert_id": getattr(v, "alert_id", None),
                "set_by": getattr(v, "actor", None) or getattr(v, "set_by", None),
            }

        return lookup

    async def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        return await self._daemon.store.read(fn)

    @staticmethod
    async def _answer(work: Callable[[], Awaitable[Any]]) -> web.Response:
        """Run `work`; map bad parameters to 400 and store errors to 500 (logged, no details)."""
        try:
            payload = await work()
        except BadRequest as err:
            return json_response({"ok": False, "error": str(err)}, 400)
        except duckdb.Error:
            logger.exception("dashboard query failed")
            return json_response({"ok": False, "error": "query failed (see the daemon log)"}, 500)
        if payload is None:
            return json_response({"ok": False, "error": "not found"}, 404)
        return json_response({"ok": True, **payload})

    # -- JSON API --------------------------------------------------------------------------
    async def api_overview(self, request: web.Request) -> web.Response:
        """Spend today and over time by agent and model, active runs, open alerts, verdicts."""

        async def work() -> Any:
            range_name = _param_choice(request, "range", tuple(data.RANGES), "24h")
            now = self.now()
            lookup = self._verdict_lookup()
            return await self._read(
                lambda cur: data.overview(
                    cur,
                    now,
                    range_name=range_name,
                    window_s=self._settings.active_run_window_s,
                    verdict_of=lookup,
                )
            )

        return await self._answer(work)

    async def api_runs(self, request: web.Request) -> web.Response:
        """Runs, filtered by agent/cost/steps/alerts/time and sorted by any column."""

        async def work() -> Any:
            since_name = _param_choice(request, "since", tuple(SINCE), "all")
            since_delta = SINCE[since_name]
            trace = request.query.get("q", "").strip()
            if trace and not _TRACE_ID.match(trace):
                raise BadRequest("q must be a hex trace-id prefix")
            now = self.now()
            flt = data.RunFilter(
                agent=request.query.get("agent") or None,
                min_cost_usd=_param_float(request, "min_cost"),
                min_steps=_param_int(request, "min_steps"),
                min_alerts=_param_int(request, "min_alerts"),
                since=now - since_delta if since_delta is not None else None,
                trace_prefix=trace or None,
                sort=_param_choice(request, "sort", tuple(data.RUN_SORTS), "started"),
                descending=_param_choice(request, "dir", ("asc", "desc"), "desc") == "desc",
                limit=_param_int(request, "limit", high=self._settings.max_runs)
                or self._settings.max_runs,
            )
            lookup = self._verdict_lookup()

            def run(cur: duckdb.DuckDBPyConnection) -> Any:
                verdict_of = lookup or data.table_verdict_lookup(data.active_verdicts(cur, now))
                return data.list_runs(cur, flt, verdict_of)

            return await self._read(run)

        return await self._answer(work)

    async def api_run(self, request: web.Request) -> web.Response:
        """One run's step timeline with alerts attached to the steps their evidence names."""
        trace_id = request.match_info["trace_id"]

        async def work() -> Any:
            if not _TRACE_ID.match(trace_id):
                raise BadRequest("not a trace id")
            now = self.now()
            lookup = self._verdict_lookup()

            def run(cur: duckdb.DuckDBPyConnection) -> Any:
                verdict_of = lookup or data.table_verdict_lookup(data.active_verdicts(cur, now))
                return data.run_detail(cur, trace_id.lower(), verdict_of)

            return await self._read(run)

        return await self._answer(work)

    async def api_alerts(self, request: web.Request) -> web.Response:
        """Open alerts and the last days' alerts in any state."""

        async def work() -> Any:
            days = _param_int(request, "days", high=365) or 7
            now = self.now()
            return await self._read(lambda cur: data.alerts_page(cur, now, days))

        return await self._answer(work)

    async def api_queries(self, request: web.Request) -> web.Response:
        """The canned queries of `dashboards/queries/`."""
        return json_response({"ok": True, "queries": [q.as_json() for q in self.queries]})

    async def api_capabilities(self, request: web.Request) -> web.Response:
        """Which action endpoints this daemon has (`"POST /api/v1/kill"`, …), for the buttons."""
        routes = sorted(
            {
                f"{route.method} {route.resource.canonical}"
                for route in request.app.router.routes()
                if route.resource is not None
                and route.resource.canonical.startswith("/api/")
                and route.method != "HEAD"
            }
        )
        return json_response({"ok": True, "routes": routes})

    async def api_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `change` with the topics changed, at most one per min interval."""
        if self._streams >= MAX_STREAMS:
            return json_response({"ok": False, "error": "too many live-update streams"}, 503)
        if self.feed.closed:
            return json_response({"ok": False, "error": "shutting down"}, 503)
        self._streams += 1
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await resp.prepare(request)
            seen = self.feed.seq
            await resp.write(
                f"retry: 3000\nevent: hello\ndata: {json.dumps({'seq': seen})}\n\n".encode()
            )
            min_gap_s = self._settings.stream_min_interval_ms / 1000
            while not self.feed.closed:
                changed = await self.feed.wait_after(seen, self._settings.stream_keepalive_s)
                if self.feed.closed:
                    break
                if not changed:
                    await resp.write(b": keep-alive\n\n")
                    continue
                topics = self.feed.topics_since(seen)
                seen = self.feed.seq
                payload = json.dumps({"seq": seen, "topics": topics})
                await resp.write(f"event: change\ndata: {payload}\n\n".encode())
                # Coalesce bursts: whatever changes during the gap goes out as one event.
                await asyncio.sleep(min_gap_s)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._streams -= 1
        return resp

    # -- metrics ---------------------------------------------------------------------------
    async def refresh_metrics(self) -> None:
        """Recompute the metrics snapshot on a reader thread."""
        now = self.now()
        snapshot = await self._read(lambda cur: data.metrics_snapshot(cur, now))
        self.collector.update(snapshot, self._clock_ns() / 1e9)

    async def _metrics_loop(self) -> None:
        while True:
            try:
                await self.refresh_metrics()
            except duckdb.Error:
                logger.exception("dashboard metrics refresh failed")
            await asyncio.sleep(self._settings.metrics_refresh_s)

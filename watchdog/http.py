"""The daemon's aiohttp application: health, metrics, the SQL API, and API authentication.

`/api/` needs `Authorization: Bearer <token>` when `api_token` is set; without a token it
trusts loopback callers only, whatever address the listener is bound to.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watchdog.errors import QueryRejected, QueryTimeout
from watchdog.sql import run_guarded
from watchdog.telemetry import METRICS

if TYPE_CHECKING:
    from watchdog.daemon import Daemon

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("daemon")


def json_response(payload: Any, status: int = 200) -> web.Response:
    """Answer JSON (non-ASCII kept, no NaN)."""
    return web.Response(
        status=status,
        text=json.dumps(payload, ensure_ascii=False, default=str),
        content_type="application/json",
    )


def is_loopback(request: web.Request) -> bool:
    """True when the caller connects from 127.0.0.0/8 or ::1."""
    peer = request.remote or ""
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def auth_middleware(token: str | None, protected_prefixes: tuple[str, ...]) -> Any:
    """Refuse unauthenticated calls to protected paths with 401 (token) or 403 (not loopback)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(protected_prefixes):
            if token is not None:
                given = request.headers.get("Authorization", "")
                expected = f"Bearer {token}"
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    return json_response(
                        {"ok": False, "error": "missing or wrong bearer token"}, status=401
                    )
            elif not is_loopback(request):
                return json_response(
                    {"ok": False, "error": "API is loopback-only unless api_token is set"},
                    status=403,
                )
        return await handler(request)

    return middleware


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: true once every component started and until shutdown begins."""
    daemon = request.app[DAEMON_KEY]
    ready = daemon.ready
    return json_response({"ok": ready}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the daemon's self-metrics."""
    body = generate_latest(METRICS.registry)
    for extra in request.app[DAEMON_KEY].metric_registries:
        body += generate_latest(extra)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def api_sql(request: web.Request) -> web.Response:
    """`POST /api/sql {"sql": …}` → `{ok, columns, rows, truncated}` or `{ok: false, error}`."""
    daemon = request.app[DAEMON_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_response({"ok": False, "error": 'body must be JSON {"sql": "…"}'}, 400)
    sql = body.get("sql") if isinstance(body, dict) else None
    if not isinstance(sql, str):
        return json_response({"ok": False, "error": "field 'sql' (string) is required"}, 400)
    limits = daemon.settings.sql
    try:
        result = await daemon.store.read(
            lambda cur: run_guarded(
                cur, sql, time_limit_ms=limits.time_limit_ms, max_rows=limits.max_rows
            )
        )
    except QueryTimeout as err:
        METRICS.sql_queries.labels(outcome="timeout").inc()
        return json_response({"ok": False, "error": str(err)}, 400)
    except QueryRejected as err:
        METRICS.sql_queries.labels(outcome="rejected").inc()
        return json_response({"ok": False, "error": str(err)}, 400)
    METRICS.sql_queries.labels(outcome="ok").inc()
    logger.info("sql query from %s: %.200s", request.remote, sql)
    return json_response(
        {
            "ok": True,
            "columns": result.columns,
            "rows": result.rows,
            "truncated": result.truncated,
            "elapsed_ms": round(result.elapsed_ms, 3),
        }
    )


def build_app(daemon: Daemon) -> web.Application:
    """Create the application with core routes; components add theirs before start."""
    token = daemon.settings.api_token
    app = web.Application(
        client_max_size=daemon.settings.server.max_body_bytes + 1024,
        middlewares=[auth_middleware(token.get_secret_value() if token else None, ("/api/",))],
        handler_args={"auto_decompress": False},
    )
    app[DAEMON_KEY] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/sql", api_sql)
    return app

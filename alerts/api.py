"""The alerting HTTP API under /api/v1 (behind the daemon's API authentication).

- `GET /api/v1/silences[?all=1]` → `{"ok": true, "silences": [...]}` (active, or the
  newest 100 with ended ones)
- `POST /api/v1/silences` `{"matchers": ["agent=bot", …] | "agent=bot detector=loop",
  "duration": "1h" | "duration_s": 3600, "comment": "…", "actor": "cli|api|dashboard"}`
  → `{"ok": true, "silence": {...}}`
- `DELETE /api/v1/silences/{id}` or `POST /api/v1/silences/{id}/expire` → ends it early
- `POST /api/v1/alerts/{id}/resolve` → resolves a firing alert (an acknowledgement)
- `GET /api/v1/alerting` → receivers (enabled or disabled, and why) and group count
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from alerts.matchers import split_words
from alerts.silences import parse_duration
from watchdog.http import json_response

if TYPE_CHECKING:
    from alerts.component import AlertingComponent

_ACTORS = ("api", "cli", "dashboard")


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_response({"ok": False, "error": "body must be a JSON object"}, 400)
    if not isinstance(body, dict):
        return json_response({"ok": False, "error": "body must be a JSON object"}, 400)
    return body


def _actor(body: dict[str, Any]) -> str:
    actor = body.get("actor")
    return actor if isinstance(actor, str) and actor in _ACTORS else "api"


class AlertingApi:
    """Routes for silences, acknowledgements and the pipeline's status."""

    def __init__(self, component: AlertingComponent) -> None:
        self.c = component

    def add_routes(self, app: web.Application) -> None:
        """Mount the routes."""
        app.router.add_get("/api/v1/silences", self.list_silences)
        app.router.add_post("/api/v1/silences", self.add_silence)
        app.router.add_delete("/api/v1/silences/{id}", self.expire_silence)
        app.router.add_post("/api/v1/silences/{id}/expire", self.expire_silence)
        app.router.add_post("/api/v1/alerts/{id}/resolve", self.resolve_alert)
        app.router.add_get("/api/v1/alerting", self.status)

    async def list_silences(self, request: web.Request) -> web.Response:
        """Active silences, or with `?all=1` the newest 100 including ended ones."""
        silences = self.c.silences
        now = silences.now()
        if request.query.get("all") in ("1", "true", "yes"):
            rows = await silences.history(100)
        else:
            rows = silences.active()
        return json_response({"ok": True, "silences": [s.to_json(now) for s in rows]})

    async def add_silence(self, request: web.Request) -> web.Response:
        """Create a silence; 400 names the bad field."""
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        raw = body.get("matchers")
        matchers = split_words(raw) if isinstance(raw, str) else raw
        if (
            not isinstance(matchers, list)
            or not matchers
            or not all(isinstance(m, str) for m in matchers)
        ):
            return json_response(
                {"ok": False, "error": "matchers: a non-empty list of strings is required"}, 400
            )
        try:
            if "duration_s" in body:
                duration_s = float(body["duration_s"])
            else:
                duration_s = parse_duration(str(body.get("duration", "1h")))
            comment = body.get("comment", "")
            silence = await self.c.silences.add(
                matchers,
                duration_s=duration_s,
                created_by=_actor(body),
                comment=comment if isinstance(comment, str) else "",
            )
        except (ValueError, TypeError) as err:
            return json_response({"ok": False, "error": str(err)}, 400)
        return json_response({"ok": True, "silence": silence.to_json(self.c.silences.now())})

    async def expire_silence(self, request: web.Request) -> web.Response:
        """End a silence now; 404 when no such silence is running."""
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        ended = await self.c.silences.expire(request.match_info["id"], actor=_actor(body))
        if ended is None:
            return json_response({"ok": False, "error": "no running silence with that id"}, 404)
        return json_response({"ok": True, "silence": ended.to_json(self.c.silences.now())})

    async def resolve_alert(self, request: web.Request) -> web.Response:
        """Resolve a firing alert now (its group's receivers hear about it)."""
        event = await self.c.alerts.resolve(request.match_info["id"])
        if event is None:
            return json_response({"ok": False, "error": "no firing alert with that id"}, 404)
        return json_response({"ok": True, "alert_id": event.alert.id, "state": event.alert.state})

    async def status(self, request: web.Request) -> web.Response:
        """Receivers with their health, and how many groups are held."""
        d = self.c.dispatcher
        return json_response(
            {
                "ok": True,
                "groups": len(d.groups),
                "receivers": [
                    {
                        "name": name,
                        "kind": w.receiver.kind,
                        "disabled": w.disabled,
                        "disabled_reason": w.disabled_reason or None,
                        "consecutive_failures": w.failures,
                        "pending": len(w.pending),
                    }
                    for name, w in d.workers.items()
                ],
            }
        )

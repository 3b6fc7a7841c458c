"""A local fake of Slack's Web API and of `response_url`, for the real `slack_sdk` client.

`FakeSlack` runs an aiohttp server on 127.0.0.1 (port 0) in its own thread and event
loop, so synchronous tests and a daemon running in another thread can both use it::

    with FakeSlack(token="xoxb-test") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.base_url)
        ...
        assert slack.posts()[0].body["channel"] == "#alerts"

It speaks the wire format `slack_sdk` expects: `POST /api/chat.postMessage`,
`/api/chat.update` and `/api/auth.test` with JSON or form bodies, answering
`{"ok": true, ...}` or `{"ok": false, "error": "..."}`, and HTTP 429 with `Retry-After`
when rate limiting. `POST /response/<name>` receives `response_url` follow-ups.
Failures are scripted with `fail_next`. Every request is recorded, failed ones too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

__all__ = [
    "SIGNING_SECRET",
    "TOKEN",
    "Failure",
    "FakeSlack",
    "Recorded",
    "signed_headers",
    "watchdog_slack_settings",
]

TOKEN = "xoxb-fake-1111-2222-secrettokenvalue"
SIGNING_SECRET = "fake-signing-secret-8f14e45fceea167a"


@dataclass(frozen=True)
class Recorded:
    """One request the fake received: API method (or `response:<name>`), headers, body."""

    method: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    status: int
    answer: dict[str, Any]
    at: float = 0.0


@dataclass
class Failure:
    """A scripted failure for the next `times` calls of `method` (None = every method)."""

    method: str | None
    error: str
    status: int = 200
    retry_after: int | None = None
    times: int = 1


@dataclass
class Message:
    """A message the fake holds: what was posted, and every later update."""

    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)


def signed_headers(
    signing_secret: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers Slack would send with `body`, signed with slack_sdk's own code."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    assert sig is not None
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def watchdog_slack_settings(
    fake: FakeSlack, *, allowed_users: tuple[str, ...] = ("UADMIN",), **alerting: Any
) -> dict[str, Any]:
    """Settings overrides that point a test daemon's Slack app at `fake`, timers at zero."""
    return {
        "slack": {
            "bot_token": TOKEN,
            "signing_secret": SIGNING_SECRET,
            "channel": "#alerts",
            "base_url": fake.base_url,
            "allowed_users": list(allowed_users),
        },
        "alerting": {
            "group_wait_s": 0,
            "group_interval_s": 0,
            "slack_min_interval_s": 0,
            "retry_initial_s": 0.05,
            **alerting,
        },
    }


class FakeSlack:
    """A scriptable Slack Web API; `stop()` is safe twice and before `start()`."""

    def __init__(
        self, *, token: str | None = None, channels: Mapping[str, str] | None = None
    ) -> None:
        self.token = token
        self.channels = dict(channels or {"#alerts": "C0ALERTS"})
        self.requests: list[Recorded] = []
        self.messages: dict[str, Message] = {}
        self._failures: list[Failure] = []
        self._lock = threading.RLock()  # wait_for() predicates read under it
        self._ts = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._changed = threading.Condition(self._lock)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeSlack:
        """Bind 127.0.0.1:0 and serve in a background thread; returns self."""
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The Web API base URL to give `AsyncWebClient(base_url=…)` (ends in `/api/`)."""
        return f"http://127.0.0.1:{self._port}/api/"

    def response_url(self, name: str = "r1") -> str:
        """A `response_url` whose follow-ups land in `responses(name)`."""
        return f"http://127.0.0.1:{self._port}/response/{name}"

    # -- scripting -------------------------------------------------------------------
    def fail_next(
        self,
        method: str | None,
        error: str = "ratelimited",
        *,
        status: int | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with `error` (429 + Retry-After for
        `ratelimited` unless `status` says otherwise)."""
        if status is None:
            status = 429 if error == "ratelimited" else 200
        if error == "ratelimited" and retry_after is None:
            retry_after = 1
        with self._lock:
            self._failures.append(Failure(method, error, status, retry_after, times))

    # -- reading what happened -------------------------------------------------------
    def calls(self, method: str | None = None, *, ok: bool | None = None) -> list[Recorded]:
        """Recorded API calls, of `method` if given, only successful/failed ones if `ok` set."""
        with self._lock:
            out = [r for r in self.requests if method is None or r.method == method]
        if ok is not None:
            out = [r for r in out if bool(r.answer.get("ok")) == ok]
        return out

    def posts(self) -> list[Recorded]:
        """Successful top-level `chat.postMessage` calls (thread replies excluded)."""
        return [r for r in self.calls("chat.postMessage", ok=True) if not r.body.get("thread_ts")]

    def replies(self, ts: str) -> list[Recorded]:
        """Successful thread replies to the message `ts`."""
        return [r for r in self.calls("chat.postMessage", ok=True) if r.body.get("thread_ts") == ts]

    def updates(self, ts: str | None = None) -> list[Recorded]:
        """Successful `chat.update` calls (of message `ts` if given)."""
        return [
            r for r in self.calls("chat.update", ok=True) if ts is None or r.body.get("ts") == ts
        ]

    def responses(self, name: str | None = None) -> list[Recorded]:
        """Follow-ups posted to response URLs (of `name` if given)."""
        want = None if name is None else f"response:{name}"
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method.startswith("response:") and (want is None or r.method == want)
            ]

    def wait_for(self, predicate: Any, timeout_s: float = 15.0) -> None:
        """Block until `predicate()` is true (checked after every request), or fail."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("FakeSlack: condition not met in time")
                self._changed.wait(left)

    # -- handlers --------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        if request.content_type == "application/json":
            parsed = json.loads(raw)
            return parsed if isinstance(parsed, dict) else {}
        return dict(parse_qsl(raw.decode(), keep_blank_values=True))

    def _record(
        self,
        method: str,
        request: web.Request,
        body: dict[str, Any],
        status: int,
        answer: dict[str, Any],
    ) -> None:
        with self._changed:
            self.requests.append(
                Recorded(method, dict(request.headers), body, status, answer, time.monotonic())
            )
            self._changed.notify_all()

    def _scripted(self, method: str) -> Failure | None:
        with self._lock:
            for f in self._failures:
                if f.method in (None, method) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        failure = self._scripted(method)
        headers: dict[str, str] = {}
        if failure is not None:
            answer: dict[str, Any] = {"ok": False, "error": failure.error}
            status = failure.status
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
        elif (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            answer, status = {"ok": False, "error": "invalid_auth"}, 200
        else:
            answer, status = self._answer(method, body), 200
        self._record(method, request, body, status, answer)
        return web.json_response(answer, status=status, headers=headers)

    def _answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake.slack.com/",
                "team": "Fake",
                "user": "watchdog",
                "team_id": "T0FAKE",
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
            }
        if method == "chat.postMessage":
            channel = self.channels.get(str(body.get("channel")), str(body.get("channel") or ""))
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            if not body.get("text") and not body.get("blocks"):
                return {"ok": False, "error": "no_text"}
            ts = f"1700000000.{next(self._ts):06d}"
            blocks = body.get("blocks") or []
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            with self._lock:
                self.messages[ts] = Message(
                    channel, ts, str(body.get("text") or ""), blocks, body.get("thread_ts")
                )
            return {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"type": "message", "text": body.get("text"), "ts": ts},
            }
        if method == "chat.update":
            with self._lock:
                msg = self.messages.get(str(body.get("ts")))
                if msg is None or msg.channel != body.get("channel"):
                    return {"ok": False, "error": "message_not_found"}
                msg.updates.append(body)
                msg.text = str(body.get("text") or msg.text)
                msg.blocks = body.get("blocks") or msg.blocks
            return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}
        return {"ok": False, "error": "unknown_method"}

    async def _response(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self._record(f"response:{request.match_info['name']}", request, body, 200, {"ok": True})
        return web.Response(text="ok")

"""The guard agents import: ask watchdog before every step, obey its verdict (stdlib only).

    from watchdog.guard import Guard, AgentHalted, ActionDenied

    guard = Guard("http://127.0.0.1:4318", agent="billing-bot", session=conversation_id,
                  risky_tools=["send_*", "delete_*"], max_steps=200, max_cost_usd=5.0)

    @guard.tool(risky=True)
    def send_email(to: str, body: str) -> None: ...

    with guard.step(tool="llm", est_cost_usd=0.02) as step:
        reply = client.chat.completions.create(...)
        step.cost_usd = cost_of(reply)          # optional: the real figure

What it guarantees:

- `check()` returns a `Decision` only when the step may go ahead; otherwise it raises
  `AgentHalted` (kill, pause that never lifted, a local hard cap) or `ActionDenied`
  (deny, budget, a cancelled held action, a risky tool while watchdog is unreachable).
  A `pause` blocks inside `check()` until lifted; a `hold` blocks until its window ends
  (released) or a person cancels it (ActionDenied). `on_hold` callbacks run when an
  action is held, before the wait (use them to tell a person, or the agent's own UI).
- A kill pushed over the verdict stream (SSE, or a short poll) is in the local cache
  within one event: the next `check()` raises without a round trip, `guard.halted` is
  set and `on_halt` callbacks run (use them to cancel an in-flight step).
- Unreachable watchdog (refused, timeout, 5xx, auth failure): ordinary steps fail open,
  risky tools fail closed; after 5 failures the circuit breaker stops calling for 60 s
  (then one probe). Local hard caps (max steps, max cost, wall clock) always apply.
- Every request has a timeout; connections are kept alive with TCP_NODELAY set (without
  it, Nagle's algorithm and delayed ACKs add ~40 ms to a loopback round trip).

Only the Python standard library is imported (the OpenTelemetry API, if installed, is
used to pick up the current trace id; it is optional).
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import hmac
import http.client
import inspect
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

__all__ = [
    "ActionDenied",
    "AgentHalted",
    "CircuitBreaker",
    "Decision",
    "Guard",
    "GuardError",
    "HeldAction",
    "Step",
    "verify_signature",
]

logger = logging.getLogger("watchdog.guard")

F = TypeVar("F", bound=Callable[..., Any])
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)
_MAX_ARG_CHARS = 2000


class GuardError(Exception):
    """Base of the guard's refusals."""

    def __init__(
        self, reason: str, answer: Mapping[str, Any] | None = None, source: str = "watchdog"
    ):
        super().__init__(reason)
        self.reason = reason
        self.answer: dict[str, Any] = dict(answer or {})
        self.source = source

    @property
    def verdict(self) -> str:
        """Return the verdict behind the refusal (`kill`, `pause`, `deny`, `cap`, …)."""
        return str(self.answer.get("verdict", "deny"))


class AgentHalted(GuardError):
    """The run must stop: killed, paused past the wait, or a local hard cap was reached."""


class ActionDenied(GuardError):
    """The proposed action must not happen; the run may continue with something else."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A permission to go ahead, and why (`source`: watchdog, cache or offline)."""

    verdict: str
    reason: str | None = None
    source: str = "watchdog"
    reservation_id: str | None = None
    hold_id: str | None = None
    answer: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HeldAction:
    """An action watchdog holds for a person to cancel: what `on_hold` callbacks receive.

    `answer` is watchdog's whole answer to the check (with `findings`, when detectors
    raised any about the action, and `reservation_id`).
    """

    hold_id: str
    tool: str | None
    reason: str | None
    release_at: str | None
    answer: Mapping[str, Any]


@dataclass(slots=True)
class Step:
    """What a `guard.step()` block may report back: its real cost."""

    decision: Decision
    cost_usd: float | None = None


class CircuitBreaker:
    """Closed → open after `fail_max` consecutive failures → half-open (one probe) after `reset_s`."""

    def __init__(
        self, fail_max: int = 5, reset_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fail_max = fail_max
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """Return `closed`, `open` or `half-open`."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._clock() - self._opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """Tell whether a call may be attempted now (one probe at a time when half-open)."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_s or self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        """Record a successful call: the breaker closes."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        """Record a failed call: open after `fail_max` in a row (a failed probe re-opens)."""
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.fail_max:
                self._opened_at = self._clock()
            self._probing = False


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a watchdog webhook: HMAC-SHA256 of `"<timestamp>.<body>"`, not older than `tolerance_s`."""
    key = secret.encode() if isinstance(secret, str) else secret
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    if age > tolerance_s:
        return False
    expected = (
        "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected.encode(), signature.encode())


def _current_trace_id() -> str | None:
    try:
        from opentelemetry import trace as otel_trace
    except ImportError:
        return None
    ctx = otel_trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _jsonable(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if args is None:
        return None
    out: dict[str, Any] = {}
    for k, v in args.items():
        try:
            json.dumps(v)
            out[str(k)] = v
        except (TypeError, ValueError):
            out[str(k)] = repr(v)[:_MAX_ARG_CHARS]
    return out


class _Http:
    """Keep-alive HTTP/1.1 JSON calls to watchdog, one connection per thread, TCP_NODELAY."""

    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"watchdog URL must be http(s)://host:port, not {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()

    def connect(self, timeout_s: float) -> http.client.HTTPConnection:
        """Open a new connection with TCP_NODELAY set."""
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=timeout_s)
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _conn(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = self.connect(self.timeout_s)
        self._local.conn = conn
        return conn, False

    def drop(self) -> None:
        """Close this thread's connection (after an error)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def call(
        self, method: str, path: str, payload: Any = None, timeout_s: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send one request; return (status, JSON body). Raises OSError/HTTPException/ValueError."""
        body = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else None
        for attempt in (1, 2):
            conn, reused = self._conn()
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout_s or self.timeout_s)
                conn.request(method, self.base + path, body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.drop()
                # A kept-alive connection the server closed while idle: retry once on a
                # fresh one. A fresh connection failing is a real failure.
                if reused and attempt == 1:
                    continue
                raise
            except _NETWORK_ERRORS:
                self.drop()
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self.drop()
            answer = json.loads(data) if data else {}
            if not isinstance(answer, dict):
                raise ValueError("watchdog answered a non-object")
            return resp.status, answer
        raise ConnectionError("unreachable")  # pragma: no cover - loop always returns/raises


class Guard:
    """The agent's side of the kill-switch: checks, verdict cache, breaker, local caps."""

    def __init__(
        self,
        url: str | None = None,
        *,
        agent: str,
        session: str | None = None,
        trace: str | None = None,
        token: str | None = None,
        timeout_s: float = 0.5,
        risky_tools: Iterable[str] = (),
        max_steps: int | None = None,
        max_cost_usd: float | None = None,
        max_wall_s: float | None = None,
        cache: str = "sse",
        poll_interval_s: float = 1.0,
        pause_max_wait_s: float = 300.0,
        hold_max_wait_s: float = 3600.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a guard for one agent (and session); nothing is contacted until first use.

        `url` defaults to `$WATCHDOG_URL` or `http://127.0.0.1:4318`, `token` to
        `$WATCHDOG_API_TOKEN`. `cache` is `sse` (stream), `poll` or `off`.
        """
        if cache not in ("sse", "poll", "off"):
            raise ValueError("cache must be 'sse', 'poll' or 'off'")
        self.url = url or os.environ.get("WATCHDOG_URL") or "http://127.0.0.1:4318"
        self.agent = agent
        self.session = session
        self.trace = trace
        self._http = _Http(self.url, token or os.environ.get("WATCHDOG_API_TOKEN"), timeout_s)
        self.risky_tools = list(risky_tools)
        self._learned_risky: set[str] = set()
        self.max_steps = max_steps
        self.max_cost_usd = max_cost_usd
        self.max_wall_s = max_wall_s
        self.pause_max_wait_s = pause_max_wait_s
        self.hold_max_wait_s = hold_max_wait_s
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.steps = 0
        self.spent_usd = 0.0
        # The verdict cache: scope (type, value) → verdict JSON, for this agent/session
        # and the traces this guard has checked. `_live` is true while the feed is
        # connected; only then is a cached kill answered without asking watchdog.
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._traces: set[str] = set()
        self._live = False
        self._changed = threading.Condition(self._lock)
        self._cache_mode = cache
        self._poll_interval_s = poll_interval_s
        self._feed: threading.Thread | None = None
        self._feed_conn: http.client.HTTPConnection | None = None
        self._closed = threading.Event()
        self.halted = threading.Event()
        self._on_halt: list[Callable[[AgentHalted], None]] = []
        self._on_hold: list[Callable[[HeldAction], None]] = []

    # -- public API ------------------------------------------------------------------
    def check(
        self,
        tool: str | None = None,
        args: Mapping[str, Any] | None = None,
        est_cost_usd: float = 0.0,
        *,
        risky: bool | None = None,
        trace: str | None = None,
    ) -> Decision:
        """Ask before one step; return a Decision, or raise AgentHalted / ActionDenied."""
        self._ensure_feed()
        self._check_local_caps(est_cost_usd)
        trace = trace or self.trace or _current_trace_id()
        if trace:
            with self._lock:
                if len(self._traces) > 1000:
                    self._traces.clear()
                self._traces.add(trace)
        is_risky = self.is_risky(tool) if risky is None else risky
        cached = self._cached(trace)
        if cached is not None and cached.get("verdict") == "kill" and self._live:
            raise self._halt(cached, source="cache")
        body: dict[str, Any] = {"agent": self.agent, "tool": tool, "est_cost_usd": est_cost_usd}
        if self.session:
            body["session"] = self.session
        if trace:
            body["trace"] = trace
        if args is not None:
            body["args"] = _jsonable(args)
        waited_s = 0.0
        while True:
            answer = self._ask("POST", "/api/v1/check", body)
            if answer is None:
                return self._offline(tool, is_risky, trace, est_cost_usd)
            if answer.get("risky") and tool:
                self._learned_risky.add(tool)
            verdict = answer.get("verdict")
            if verdict in ("allow", "warn"):
                return self._allowed(answer, est_cost_usd)
            if verdict == "hold":
                self._held(tool, answer)
                return self._wait_hold(answer, est_cost_usd)
            if verdict == "kill":
                raise self._halt(answer, source="watchdog")
            if verdict == "pause":
                waited_s += self._wait_pause(answer, trace, self.pause_max_wait_s - waited_s)
                if waited_s >= self.pause_max_wait_s:
                    raise AgentHalted(
                        f"paused for {waited_s:.0f}s without being resumed: {answer.get('reason')}",
                        answer,
                    )
                continue
            raise ActionDenied(str(answer.get("reason") or "denied by watchdog"), answer)

    async def acheck(
        self,
        tool: str | None = None,
        args: Mapping[str, Any] | None = None,
        est_cost_usd: float = 0.0,
        *,
        risky: bool | None = None,
        trace: str | None = None,
    ) -> Decision:
        """Run `check` in a worker thread, for async agents."""
        return await asyncio.to_thread(
            functools.partial(self.check, tool, args, est_cost_usd, risky=risky, trace=trace)
        )

    def verdict(self, trace: str | None = None) -> Decision:
        """Return the effective verdict now (from watchdog; from the cache when unreachable)."""
        q = {"agent": self.agent, "session": self.session, "trace": trace or self.trace}
        qs = urllib.parse.urlencode({k: v for k, v in q.items() if v})
        answer = self._ask("GET", f"/api/v1/verdict?{qs}", None)
        if answer is None:
            cached = self._cached(trace) or {"verdict": "allow"}
            return Decision(
                str(cached.get("verdict")), cached.get("reason"), "cache", answer=cached
            )
        return Decision(str(answer.get("verdict")), answer.get("reason"), answer=answer)

    def is_risky(self, tool: str | None) -> bool:
        """Tell whether a tool fails closed: configured here, or marked risky by watchdog."""
        if not tool:
            return False
        return tool in self._learned_risky or any(
            fnmatch.fnmatchcase(tool, p) for p in self.risky_tools
        )

    def record_cost(self, usd: float) -> None:
        """Add a real cost the guard did not see as an estimate (local max-cost cap)."""
        with self._lock:
            self.spent_usd += usd

    def release(self, decision: Decision) -> None:
        """Give the decision's budget reservation back (the action was not taken)."""
        if decision.reservation_id:
            self._ask("POST", "/api/v1/release", {"reservation_id": decision.reservation_id})

    def on_halt(self, callback: Callable[[AgentHalted], None]) -> None:
        """Call `callback(err)` (from the feed thread) when a kill for this agent arrives."""
        self._on_halt.append(callback)

    def on_hold(self, callback: Callable[[HeldAction], None]) -> None:
        """Call `callback(held)` when watchdog holds an action, before `check()` waits.

        It runs in the thread that called `check()`, while a person can still cancel the
        action; whatever it raises is logged and the wait goes on.
        """
        self._on_hold.append(callback)

    @contextmanager
    def step(
        self,
        tool: str | None = None,
        args: Mapping[str, Any] | None = None,
        est_cost_usd: float = 0.0,
        *,
        risky: bool | None = None,
    ) -> Iterator[Step]:
        """Check before the block; set `.cost_usd` inside to report the real cost.

        If the block raises before doing anything costly, the reservation is given back.
        """
        decision = self.check(tool, args, est_cost_usd, risky=risky)
        step = Step(decision)
        try:
            yield step
        except BaseException:
            if step.cost_usd is None:
                self.release(decision)
                self.record_cost(-est_cost_usd)
            raise
        finally:
            if step.cost_usd is not None:
                self.record_cost(step.cost_usd - est_cost_usd)

    def tool(
        self,
        name: str | None = None,
        *,
        risky: bool | None = None,
        est_cost_usd: float = 0.0,
    ) -> Callable[[F], F]:
        """Decorate a tool function (sync or async) so every call is checked first."""

        def wrap(fn: F) -> F:
            tool_name = name or fn.__name__
            sig = inspect.signature(fn)

            def arguments(a: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
                try:
                    bound = sig.bind_partial(*a, **kw)
                except TypeError:
                    return {"args": list(a), **kw}
                return {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*a: Any, **kw: Any) -> Any:
                    await self.acheck(tool_name, arguments(a, kw), est_cost_usd, risky=risky)
                    return await fn(*a, **kw)

                return cast(F, async_wrapper)

            @functools.wraps(fn)
            def wrapper(*a: Any, **kw: Any) -> Any:
                self.check(tool_name, arguments(a, kw), est_cost_usd, risky=risky)
                return fn(*a, **kw)

            return cast(F, wrapper)

        return wrap

    def close(self) -> None:
        """Stop the verdict feed and close connections."""
        self._closed.set()
        conn = self._feed_conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._http.drop()
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decisions -------------------------------------------------------------------
    def _check_local_caps(self, est_cost_usd: float) -> None:
        with self._lock:
            if self.max_steps is not None and self.steps >= self.max_steps:
                raise AgentHalted(
                    f"local cap: max_steps={self.max_steps} reached",
                    {"verdict": "kill", "cap": "max_steps"},
                    "local",
                )
            if self.max_cost_usd is not None and self.spent_usd + est_cost_usd > self.max_cost_usd:
                raise AgentHalted(
                    f"local cap: max_cost_usd={self.max_cost_usd} would be exceeded "
                    f"(spent {self.spent_usd:.4f}, asked {est_cost_usd:.4f})",
                    {"verdict": "kill", "cap": "max_cost_usd"},
                    "local",
                )
            if self.max_wall_s is not None and self._clock() - self._started > self.max_wall_s:
                raise AgentHalted(
                    f"local cap: max_wall_s={self.max_wall_s} elapsed",
                    {"verdict": "kill", "cap": "max_wall_s"},
                    "local",
                )

    def _allowed(
        self, answer: Mapping[str, Any], est_cost_usd: float, source: str = "watchdog"
    ) -> Decision:
        with self._lock:
            self.steps += 1
            self.spent_usd += est_cost_usd
        if answer.get("verdict") == "warn":
            logger.warning("watchdog warns %s: %s", self.agent, answer.get("reason"))
        return Decision(
            "warn" if answer.get("verdict") == "warn" else "allow",
            answer.get("reason"),
            source,
            answer.get("reservation_id"),
            answer.get("hold_id"),
            dict(answer),
        )

    def _offline(
        self, tool: str | None, risky: bool, trace: str | None, est_cost_usd: float
    ) -> Decision:
        cached = self._cached(trace)
        state = cached.get("verdict") if cached else None
        if state == "kill":
            raise self._halt(cast(dict[str, Any], cached), source="cache")
        if state in ("pause", "deny"):
            raise ActionDenied(
                f"watchdog unreachable; last known verdict is {state}", cached, "cache"
            )
        if risky:
            raise ActionDenied(
                f"watchdog unreachable; risky tool {tool!r} fails closed",
                {"verdict": "deny", "reason": "unreachable"},
                "offline",
            )
        return self._allowed(
            {"verdict": "allow", "reason": "watchdog unreachable"}, est_cost_usd, "offline"
        )

    def _halt(self, answer: Mapping[str, Any], source: str) -> AgentHalted:
        err = AgentHalted(f"killed by watchdog: {answer.get('reason')}", answer, source)
        if not self.halted.is_set():
            self.halted.set()
            for cb in list(self._on_halt):
                try:
                    cb(err)
                except Exception:  # a user callback must not break the guard
                    logger.exception("on_halt callback failed")
        return err

    def _wait_pause(self, answer: Mapping[str, Any], trace: str | None, budget_s: float) -> float:
        """Block until the pause may have lifted (feed event or poll); return seconds waited."""
        logger.warning("watchdog paused %s: %s", self.agent, answer.get("reason"))
        started = self._clock()
        wait_s = max(min(self._poll_interval_s, budget_s), 0.0)
        with self._changed:
            if self._live:
                # The feed notifies on every change; wake at least every 5 s to re-ask.
                self._changed.wait(timeout=max(min(budget_s, 5.0), 0.0))
            else:
                self._changed.wait(timeout=wait_s)
        return max(self._clock() - started, 0.001)

    def _held(self, tool: str | None, answer: Mapping[str, Any]) -> None:
        held = HeldAction(
            hold_id=str(answer.get("hold_id")),
            tool=tool,
            reason=answer.get("reason"),
            release_at=answer.get("release_at"),
            answer=dict(answer),
        )
        for cb in list(self._on_hold):
            try:
                cb(held)
            except Exception:  # a user callback must not break the guard
                logger.exception("on_hold callback failed")

    def _wait_hold(self, answer: Mapping[str, Any], est_cost_usd: float) -> Decision:
        hold_id = str(answer.get("hold_id"))
        logger.warning("watchdog holds %s: %s", self.agent, answer.get("reason"))
        deadline = self._clock() + self.hold_max_wait_s
        failures = 0
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ActionDenied(f"held action {hold_id} was not decided in time", answer)
            wait = min(remaining, 25.0)
            try:
                status, got = self._http.call(
                    "GET", f"/api/v1/holds/{hold_id}?wait={wait:.3f}", timeout_s=wait + 5.0
                )
            except _NETWORK_ERRORS:
                failures += 1
                if failures >= 3:
                    # A held action is risky by definition: unreachable means do not do it.
                    raise ActionDenied(
                        f"watchdog unreachable while holding {hold_id}; risky action fails closed",
                        answer,
                        "offline",
                    ) from None
                time.sleep(min(0.2 * failures, 1.0))
                continue
            if status != 200:
                raise ActionDenied(f"hold {hold_id}: {got.get('error')}", got)
            hold = got.get("hold") or {}
            state = hold.get("state")
            if state == "pending":
                continue
            if state == "cancelled" or got.get("verdict") == "kill":
                reservation = answer.get("reservation_id")
                if reservation:  # the action will not happen: give its budget back
                    self._ask("POST", "/api/v1/release", {"reservation_id": reservation})
            if state == "cancelled":
                raise ActionDenied(
                    f"held action cancelled by {hold.get('decided_by')}: {hold.get('reason')}", got
                )
            if got.get("verdict") == "kill":
                raise self._halt(got, source="watchdog")
            released = {**answer, "verdict": "allow", "hold": hold}
            released["reason"] = f"held action {hold_id} released: {hold.get('reason')}"
            return self._allowed(released, est_cost_usd)

    def _ask(self, method: str, path: str, body: Any) -> dict[str, Any] | None:
        """Call watchdog through the breaker; None means unreachable (offline policy)."""
        if not self.breaker.allow():
            return None
        try:
            status, answer = self._http.call(method, path, body)
        except _NETWORK_ERRORS as err:
            self.breaker.failure()
            logger.warning("watchdog unreachable at %s: %s", self.url, err)
            return None
        if status in (401, 403) or status >= 500:
            self.breaker.failure()
            logger.error("watchdog refused the guard (HTTP %d): %s", status, answer.get("error"))
            return None
        self.breaker.success()
        if status >= 400:
            raise ValueError(f"watchdog rejected the request: {answer.get('error')}")
        self._remember(answer)
        return answer

    # -- the verdict cache -------------------------------------------------------------
    def _mine(self, scope: Mapping[str, Any] | None) -> bool:
        if not scope:
            return False
        t, v = scope.get("type"), scope.get("value")
        return (
            (t == "agent" and v == self.agent)
            or (t == "session" and v == self.session and v is not None)
            or (t == "trace" and v in self._traces)
        )

    def _remember(self, answer: Mapping[str, Any]) -> None:
        scope = answer.get("scope")
        if isinstance(scope, dict) and answer.get("verdict") in ("kill", "pause", "deny", "warn"):
            with self._lock:
                self._cache[(scope["type"], scope["value"])] = dict(answer)

    def _cached(self, trace: str | None) -> dict[str, Any] | None:
        rank = {"warn": 1, "deny": 2, "pause": 3, "kill": 4}
        with self._lock:
            keys = [("agent", self.agent), ("session", self.session or ""), ("trace", trace or "")]
            found = [self._cache[k] for k in keys if k in self._cache]
        return max(found, key=lambda v: rank.get(str(v.get("verdict")), 0), default=None)

    def _apply_snapshot(self, verdicts: list[dict[str, Any]]) -> None:
        with self._changed:
            self._cache = {
                (v["scope"]["type"], v["scope"]["value"]): v
                for v in verdicts
                if isinstance(v.get("scope"), dict)
            }
            self._changed.notify_all()
        for v in verdicts:
            if v.get("verdict") == "kill" and self._mine(v.get("scope")):
                self._halt(v, source="stream")

    def _apply_change(self, change: Mapping[str, Any]) -> None:
        scope = change.get("scope") or {}
        key = (scope.get("type"), scope.get("value"))
        detail = change.get("verdict_detail")
        with self._changed:
            if detail:
                self._cache[key] = detail  # type: ignore[index]
            else:
                self._cache.pop(key, None)  # type: ignore[arg-type]
            if change.get("verdict") == "allow" and not any(
                v.get("verdict") == "kill"
                for v in self._cache.values()
                if self._mine(v.get("scope"))
            ):
                self.halted.clear()
            self._changed.notify_all()
        if detail and detail.get("verdict") == "kill" and self._mine(scope):
            self._halt(detail, source="stream")

    def _ensure_feed(self) -> None:
        if self._cache_mode == "off" or self._feed is not None or self._closed.is_set():
            return
        with self._lock:
            if self._feed is not None:
                return
            target = self._run_sse if self._cache_mode == "sse" else self._run_poll
            self._feed = threading.Thread(target=target, name="watchdog-guard-feed", daemon=True)
            self._feed.start()

    def _run_sse(self) -> None:
        backoff = 0.2
        while not self._closed.is_set():
            try:
                conn = self._http.connect(max(self._http.timeout_s, 2.0))
                self._feed_conn = conn
                headers = {"Accept": "text/event-stream", **self._http._headers}
                conn.request("GET", self._http.base + "/api/v1/verdicts/stream", headers=headers)
                resp = conn.getresponse()
                if resp.status != 200:
                    raise ConnectionError(f"verdict stream: HTTP {resp.status}")
                if conn.sock is not None:
                    conn.sock.settimeout(60.0)  # server keep-alives come every ~15 s
                backoff = 0.2
                self._read_events(resp)
            except _NETWORK_ERRORS as err:
                if not self._closed.is_set():
                    logger.debug("verdict stream lost: %s", err)
            finally:
                with self._changed:
                    self._live = False
                    self._changed.notify_all()
                if self._feed_conn is not None:
                    self._feed_conn.close()
                    self._feed_conn = None
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _read_events(self, resp: http.client.HTTPResponse) -> None:
        event, data = "message", list[str]()
        while not self._closed.is_set():
            raw = resp.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    self._dispatch(event, "\n".join(data))
                event, data = "message", list[str]()
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())

    def _dispatch(self, event: str, data: str) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if event == "snapshot":
            self._apply_snapshot(list(payload.get("verdicts") or []))
            with self._changed:
                self._live = True
                self._changed.notify_all()
        elif event == "verdict":
            self._apply_change(payload)

    def _run_poll(self) -> None:
        while not self._closed.wait(self._poll_interval_s):
            try:
                status, answer = self._http.call("GET", "/api/v1/verdicts")
            except _NETWORK_ERRORS:
                with self._changed:
                    self._live = False
                continue
            finally:
                self._http.drop()  # the poll thread's own connection; keep none idle
            if status == 200:
                self._apply_snapshot(list(answer.get("verdicts") or []))
                with self._changed:
                    self._live = True

"""The guard API agents ask before acting, its verdict stream, and `watchdog kill|resume|status`.

Routes (all under `/api/`, so the daemon's auth middleware applies: a bearer token when
`api_token` is set, loopback callers only otherwise):

- `GET  /api/v1/verdict?agent=&session=&trace=` — the effective verdict (`allow` if none).
- `POST /api/v1/check` `{agent, session?, trace?, tool?, args?, est_cost_usd?}` — the
  verdict for one proposed action. In order: a standing kill/pause/deny answers; then the
  estimated cost is reserved against every budget cap (`deny` with `budget` when it does
  not fit); then a risky tool is held (`hold` with `hold_id`, `release_at`); else `allow`
  (or `warn`). Answers 200 whatever the verdict; 400 only for a malformed body.
- `POST /api/v1/kill`, `/api/v1/pause`, `/api/v1/resume` `{agent|session|trace, reason}`.
- `GET  /api/v1/verdicts/stream` — server-sent events: a `snapshot` first, then one
  `verdict` event per change (`id:` is the change's sequence number).
- `GET  /api/v1/holds`, `GET /api/v1/holds/{id}?wait=S`, `POST /api/v1/holds/{id}/cancel`.
- `POST /api/v1/release` `{reservation_id}` — give back budget for an action not taken.
- `GET  /api/v1/status` — verdicts, pending holds and the newest audit rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from watchdog.budgets import BudgetLedger
from watchdog.holds import HoldManager, HoldRules
from watchdog.http import json_response
from watchdog.model import Finding, severity_rank
from watchdog.settings import EnforcementSettings
from watchdog.verdicts import Scope, Verdict, VerdictChange, VerdictError, VerdictStore

logger = logging.getLogger(__name__)

_MAX_HOLD_WAIT_S = 60.0

# A detector's pre-action judgement of a proposed tool call: (agent, session, tool, args)
# → findings (drift and context detectors offer `check_action` with this shape).
ActionCheck = Callable[[str, "str | None", str, Any], list[Finding]]


class _Body(BaseModel):
    """Request bodies: unknown fields are ignored (clients in any language add their own)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class CheckBody(_Body):
    """`POST /api/v1/check`: one proposed action."""

    agent: str = Field(min_length=1, max_length=512)
    session: str | None = Field(None, max_length=512)
    trace: str | None = Field(None, max_length=128)
    tool: str | None = Field(None, max_length=512)
    args: dict[str, Any] | None = None
    est_cost_usd: float = Field(0.0, ge=0, le=1_000_000)

    @field_validator("est_cost_usd")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


class ScopeBody(_Body):
    """`POST /api/v1/kill|pause|resume`: exactly one of agent, session, trace."""

    agent: str | None = Field(None, min_length=1, max_length=512)
    session: str | None = Field(None, min_length=1, max_length=512)
    trace: str | None = Field(None, min_length=1, max_length=128)
    reason: str = Field("", max_length=2000)
    actor: Literal["api", "cli", "dashboard"] = "api"
    ttl_s: float | None = Field(None, gt=0, le=30 * 86_400)

    def scope(self) -> Scope:
        """Return the one scope named, or raise ValueError."""
        given = [
            (k, v)
            for k, v in (("agent", self.agent), ("session", self.session), ("trace", self.trace))
            if v
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of agent, session, trace")
        return Scope(*given[0])  # type: ignore[arg-type]


class CancelBody(_Body):
    """`POST /api/v1/holds/{id}/cancel`."""

    reason: str = Field("", max_length=2000)
    actor: Literal["api", "cli", "dashboard"] = "api"


class ReleaseBody(_Body):
    """`POST /api/v1/release`."""

    reservation_id: str = Field(min_length=1, max_length=64)


def verdict_fields(v: Verdict | None) -> dict[str, Any]:
    """Render the fixed verdict fields of the guard API (`allow` when nothing stands)."""
    if v is None:
        return {"verdict": "allow", "reason": None, "scope": None, "alert_id": None}
    return v.to_json()


def _error(message: str, status: int = 400) -> web.Response:
    return json_response({"ok": False, "error": message}, status)


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(body)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError("body must be a JSON object") from err


class GuardMetrics:
    """Guard API self-metrics on their own registry (appended to the daemon's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.checks = Counter(
            "watchdog_guard_checks_total",
            "Guard checks by verdict.",
            ["verdict"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "watchdog_guard_check_seconds",
            "Server-side time of one guard check.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=self.registry,
        )
        self.streams = Counter(
            "watchdog_guard_stream_dropped_total",
            "SSE clients dropped because they fell behind.",
            registry=self.registry,
        )


class GuardApi:
    """Serves the guard API from the verdict store, the budget ledger and the hold manager."""

    name = "guard-api"

    def __init__(
        self,
        settings: EnforcementSettings,
        verdicts: VerdictStore,
        budgets: BudgetLedger,
        holds: HoldManager,
        *,
        load_budgets: Callable[[], Any] | None = None,
        action_checks: Sequence[ActionCheck] = (),
    ) -> None:
        self._settings = settings
        self._verdicts = verdicts
        self._budgets = budgets
        self._holds = holds
        self._rules = HoldRules(settings)
        self._load_budgets = load_budgets
        self._action_checks = list(action_checks)
        self._streams: set[asyncio.Queue[VerdictChange | None]] = set()
        self.metrics = GuardMetrics()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Mount the guard routes; streams are closed when the app shuts down."""
        r = app.router
        r.add_get("/api/v1/verdict", self.get_verdict)
        r.add_post("/api/v1/check", self.check)
        r.add_post("/api/v1/kill", self.kill)
        r.add_post("/api/v1/pause", self.pause)
        r.add_post("/api/v1/resume", self.resume)
        r.add_get("/api/v1/verdicts", self.list_verdicts)
        r.add_get("/api/v1/verdicts/stream", self.stream)
        r.add_get("/api/v1/holds", self.list_holds)
        r.add_get("/api/v1/holds/{hold_id}", self.get_hold)
        r.add_post("/api/v1/holds/{hold_id}/cancel", self.cancel_hold)
        r.add_post("/api/v1/release", self.release)
        r.add_get("/api/v1/status", self.status)
        app.on_shutdown.append(self._close_streams)

    async def start(self) -> None:
        """Load today's spend into the budget ledger."""
        if self._load_budgets is not None:
            await self._load_budgets()

    async def stop(self) -> None:
        """Close every open stream; idempotent."""
        await self._close_streams(None)

    async def _close_streams(self, _app: web.Application | None) -> None:
        # Runs on aiohttp's on_shutdown, before it waits for handlers: an open SSE stream
        # would otherwise hold shutdown for the whole grace period.
        self._closing = True
        for q in list(self._streams):
            try:
                q.put_nowait(None)
            except asyncio.QueueFull:
                pass

    # -- verdicts --------------------------------------------------------------------
    async def get_verdict(self, request: web.Request) -> web.Response:
        """`GET /api/v1/verdict?agent=&session=&trace=`."""
        q = request.query
        v = self._verdicts.effective(q.get("agent"), q.get("session"), q.get("trace"))
        return json_response({**verdict_fields(v), "seq": self._verdicts.seq})

    async def check(self, request: web.Request) -> web.Response:
        """`POST /api/v1/check`: verdict, then budget, then hold, then allow."""
        started = time.perf_counter()
        try:
            body = CheckBody.model_validate(await _read_json(request))
        except ValueError as err:
            msg = _validation_message(err) if isinstance(err, ValidationError) else str(err)
            return _error(msg)
        answer = await self._decide(body)
        self.metrics.checks.labels(verdict=answer["verdict"]).inc()
        self.metrics.check_seconds.observe(time.perf_counter() - started)
        return json_response(answer)

    async def _decide(self, b: CheckBody) -> dict[str, Any]:
        risky = self._rules.is_risky(b.tool)
        base: dict[str, Any] = {"risky": risky, "seq": self._verdicts.seq}
        v = self._verdicts.effective(b.agent, b.session, b.trace)
        if v is not None and v.state in ("kill", "pause", "deny"):
            return {**verdict_fields(v), **base}
        findings = self._judge(b)
        worst = max(
            (f for f in findings if self._enforced(f)),
            key=lambda f: severity_rank(f.severity),
            default=None,
        )
        if findings:
            base["findings"] = [
                {
                    "detector": f.detector,
                    "rule": f.rule,
                    "severity": f.severity,
                    "summary": f.summary,
                }
                for f in findings
            ]
        if worst is not None and worst.severity == "kill":
            return {
                "verdict": "deny",
                "reason": f"{worst.detector}.{worst.rule}: {worst.summary}",
                "scope": None,
                "alert_id": None,
                **base,
            }
        decision = self._budgets.reserve(b.agent, b.session, b.trace, b.est_cost_usd, b.tool)
        if not decision.allowed:
            return {
                "verdict": "deny",
                "reason": decision.reason,
                "scope": None,
                "alert_id": None,
                "budget": decision.to_json(),
                **base,
            }
        answer = {**verdict_fields(v), **base, "reservation_id": decision.reservation_id}
        held = self._rules.match(b.agent, b.tool, b.args)
        if held is None and worst is not None and worst.severity == "pause":
            # An abnormal-looking call a detector would pause for: a person gets the
            # hold window to look at it instead of the whole run stopping.
            held = (f"{worst.detector}.{worst.rule}", self._settings.hold_delay_s)
        elif v is None and worst is not None and worst.severity == "warn":
            answer.update(verdict="warn", reason=f"{worst.detector}.{worst.rule}: {worst.summary}")
        if held is not None and b.tool:
            rule, delay_s = held
            hold = await self._holds.hold(
                agent=b.agent,
                session=b.session,
                trace=b.trace,
                tool=b.tool,
                args=b.args,
                rule=rule,
                delay_s=delay_s,
            )
            answer.update(
                verdict="hold",
                reason=f"{b.tool} is held for {delay_s:g}s ({rule}); cancel with "
                f"`watchdog hold cancel {hold.id}`",
                hold_id=hold.id,
                release_at=hold.to_json()["release_at"],
                hold_s=delay_s,
            )
        return answer

    def _judge(self, b: CheckBody) -> list[Finding]:
        if not b.tool or not self._action_checks:
            return []
        out: list[Finding] = []
        for check in self._action_checks:
            try:
                out.extend(check(b.agent, b.session, b.tool, b.args))
            except Exception:  # an advisory check's bug must not block the agent
                logger.exception("pre-action check %r failed", check)
        return out

    def _enforced(self, f: Finding) -> bool:
        """Tell whether the policy acts on a pre-action finding (not dry-run, not `none`)."""
        policy = self._settings.policy
        rule = policy.rules.get(f"{f.detector}.{f.rule}") or policy.rules.get(f.rule)
        return not (
            policy.dry_run or (rule is not None and (rule.dry_run or rule.action == "none"))
        )

    async def _set(self, request: web.Request, state: str) -> web.Response:
        try:
            body = ScopeBody.model_validate(await _read_json(request))
            scope = body.scope()
        except ValidationError as err:
            return _error(_validation_message(err))
        except ValueError as err:
            return _error(str(err))
        try:
            v = await self._verdicts.set(
                scope,
                state,
                actor=body.actor,
                reason=body.reason or f"{state} by {body.actor}",
                ttl_s=body.ttl_s if state != "kill" else None,
            )
        except VerdictError as err:
            return _error(str(err))
        logger.warning(
            "%s set on %s %s by %s: %s", state, scope.type, scope.value, body.actor, body.reason
        )
        return json_response({"ok": True, **v.to_json()})

    async def kill(self, request: web.Request) -> web.Response:
        """`POST /api/v1/kill {agent|session|trace, reason}`: sticky until resumed."""
        return await self._set(request, "kill")

    async def pause(self, request: web.Request) -> web.Response:
        """`POST /api/v1/pause {agent|session|trace, reason, ttl_s?}`."""
        return await self._set(request, "pause")

    async def resume(self, request: web.Request) -> web.Response:
        """`POST /api/v1/resume {agent|session|trace, reason}`: clear the scope's verdict."""
        try:
            body = ScopeBody.model_validate(await _read_json(request))
            scope = body.scope()
        except ValidationError as err:
            return _error(_validation_message(err))
        except ValueError as err:
            return _error(str(err))
        cleared = await self._verdicts.clear(
            scope, actor=body.actor, reason=body.reason or f"resumed by {body.actor}"
        )
        return json_response(
            {
                "ok": True,
                "scope": scope.to_json(),
                "cleared": cleared.to_json() if cleared else None,
                "verdict": "allow",
            }
        )

    async def list_verdicts(self, request: web.Request) -> web.Response:
        """`GET /api/v1/verdicts`: every standing verdict."""
        return json_response(
            {
                "ok": True,
                "seq": self._verdicts.seq,
                "verdicts": [v.to_json() for v in self._verdicts.all()],
            }
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/v1/verdicts/stream`: SSE, a snapshot then one event per change."""
        wanted = {
            (k, request.query[k]) for k in ("agent", "session", "trace") if request.query.get(k)
        }

        def relevant(scope: Scope) -> bool:
            return not wanted or (scope.type, scope.value) in wanted

        queue: asyncio.Queue[VerdictChange | None] = asyncio.Queue(self._settings.stream_queue_size)

        def on_change(change: VerdictChange) -> None:
            if change.action == "dry-run" or not relevant(change.scope):
                return
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                # A client that cannot keep up is cut off; it reconnects and gets a
                # fresh snapshot, which is better than a silently stale cache.
                self.metrics.streams.inc()
                self._streams.discard(queue)
                self._verdicts.unsubscribe(on_change)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        if self._closing:
            return resp
        self._streams.add(queue)
        self._verdicts.subscribe(on_change)
        try:
            snapshot = {
                "seq": self._verdicts.seq,
                "verdicts": [v.to_json() for v in self._verdicts.all() if relevant(v.scope)],
            }
            await resp.write(_sse("snapshot", snapshot, self._verdicts.seq))
            keepalive = self._settings.stream_keepalive_s
            while True:
                try:
                    async with asyncio.timeout(keepalive):
                        change = await queue.get()
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if change is None:
                    break
                await resp.write(_sse("verdict", change.to_json(), change.seq))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._verdicts.unsubscribe(on_change)
            self._streams.discard(queue)
        return resp

    # -- holds and reservations ------------------------------------------------------
    async def list_holds(self, request: web.Request) -> web.Response:
        """`GET /api/v1/holds`: the pending holds."""
        return json_response({"ok": True, "pending": [h.to_json() for h in self._holds.pending()]})

    async def get_hold(self, request: web.Request) -> web.Response:
        """`GET /api/v1/holds/{id}?wait=S`: long-poll until decided or S seconds pass."""
        hold_id = request.match_info["hold_id"]
        try:
            wait_s = min(float(request.query.get("wait", "0")), _MAX_HOLD_WAIT_S)
        except ValueError:
            return _error("wait must be a number of seconds")
        if not math.isfinite(wait_s):
            return _error("wait must be finite")
        hold = await self._holds.wait(hold_id, wait_s)
        if hold is None:
            return _error(f"no hold {hold_id}", 404)
        v = self._verdicts.effective(hold.agent, hold.session, hold.trace)
        return json_response({"ok": True, "hold": hold.to_json(), **verdict_fields(v)})

    async def cancel_hold(self, request: web.Request) -> web.Response:
        """`POST /api/v1/holds/{id}/cancel {reason}`: cancel within the window."""
        hold_id = request.match_info["hold_id"]
        try:
            raw = await _read_json(request) if request.can_read_body else {}
            body = CancelBody.model_validate(raw)
        except ValidationError as err:
            return _error(_validation_message(err))
        except ValueError as err:
            return _error(str(err))
        hold = await self._holds.cancel(hold_id, actor=body.actor, reason=body.reason)
        if hold is None:
            return _error(f"no hold {hold_id}", 404)
        return json_response(
            {"ok": True, "cancelled": hold.state == "cancelled", "hold": hold.to_json()}
        )

    async def release(self, request: web.Request) -> web.Response:
        """`POST /api/v1/release {reservation_id}`: the action was not taken."""
        try:
            body = ReleaseBody.model_validate(await _read_json(request))
        except ValidationError as err:
            return _error(_validation_message(err))
        except ValueError as err:
            return _error(str(err))
        return json_response({"ok": True, "released": self._budgets.release(body.reservation_id)})

    async def status(self, request: web.Request) -> web.Response:
        """`GET /api/v1/status`: verdicts, pending holds, newest audit rows."""
        audit = await self._verdicts.audit(limit=20)
        return json_response(
            {
                "ok": True,
                "seq": self._verdicts.seq,
                "verdicts": [v.to_json() for v in self._verdicts.all()],
                "holds": [h.to_json() for h in self._holds.pending()],
                "audit": audit,
                "open_reservations": self._budgets.open_reservations,
            }
        )


def _sse(event: str, data: Any, seq: int) -> bytes:
    return f"id: {seq}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


# -- CLI: watchdog kill | pause | resume | status | hold ---------------------------------
def add_guard_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `watchdog kill|pause|resume|status|hold` (they call a running daemon)."""

    def scoped(name: str, help_text: str, fn: Callable[[argparse.Namespace], int]) -> None:
        p = sub.add_parser(name, help=help_text)
        add_common(p)
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--agent", help="agent name")
        who.add_argument("--session", help="session id")
        who.add_argument("--trace", help="trace (run) id")
        p.add_argument("--reason", default="", help="why (kept in the audit trail)")
        p.add_argument("--url", help="URL of the running daemon (default: from settings)")
        if name == "pause":
            p.add_argument("--ttl", type=float, help="seconds until the pause lapses")
        p.set_defaults(func=fn)

    scoped("kill", "stop an agent, session or run until someone resumes it", _cmd_kill)
    scoped("pause", "pause an agent, session or run (lapses after a timeout)", _cmd_pause)
    scoped("resume", "clear the verdict of an agent, session or run (audited)", _cmd_resume)

    st = sub.add_parser("status", help="standing verdicts, pending holds, recent audit")
    add_common(st)
    st.add_argument("--url", help="URL of the running daemon (default: from settings)")
    st.add_argument("--json", action="store_true", help="print the raw JSON answer")
    st.set_defaults(func=_cmd_status)

    hold = sub.add_parser("hold", help="list or cancel held actions")
    add_common(hold)
    hold.add_argument("action", choices=("list", "cancel"))
    hold.add_argument("hold_id", nargs="?", help="the hold to cancel")
    hold.add_argument("--reason", default="", help="why (kept with the hold)")
    hold.add_argument("--url", help="URL of the running daemon (default: from settings)")
    hold.set_defaults(func=_cmd_hold)


def _call(
    args: argparse.Namespace, path: str, payload: dict[str, Any] | None
) -> dict[str, Any] | None:
    from watchdog.cli import _settings_from, api_call, default_url

    settings = _settings_from(args)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    url = args.url or default_url(settings)
    try:
        return api_call(url, path, payload, token, timeout_s=10.0)
    except ConnectionError:
        print(f"error: no watchdog answers at {url}", file=sys.stderr)
        return None


def _scope_payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {"reason": args.reason, "actor": "cli"}
    for k in ("agent", "session", "trace"):
        if getattr(args, k, None):
            payload[k] = getattr(args, k)
    return payload


def _report(result: dict[str, Any] | None, ok_text: Callable[[dict[str, Any]], str]) -> int:
    if result is None:
        return 2
    if not result.get("ok"):
        print(f"error: {result.get('error')}", file=sys.stderr)
        return 1
    print(ok_text(result))
    return 0


def _cmd_kill(args: argparse.Namespace) -> int:
    result = _call(args, "/api/v1/kill", _scope_payload(args))
    return _report(result, lambda r: f"killed {r['scope']['type']} {r['scope']['value']}")


def _cmd_pause(args: argparse.Namespace) -> int:
    payload = _scope_payload(args)
    if args.ttl:
        payload["ttl_s"] = args.ttl
    result = _call(args, "/api/v1/pause", payload)
    return _report(
        result,
        lambda r: f"paused {r['scope']['type']} {r['scope']['value']} until {r['expires_at']}",
    )


def _cmd_resume(args: argparse.Namespace) -> int:
    result = _call(args, "/api/v1/resume", _scope_payload(args))

    def text(r: dict[str, Any]) -> str:
        s = r["scope"]
        if r.get("cleared"):
            return f"resumed {s['type']} {s['value']} (was {r['cleared']['verdict']})"
        return f"no verdict stood on {s['type']} {s['value']}"

    return _report(result, text)


def _cmd_status(args: argparse.Namespace) -> int:
    result = _call(args, "/api/v1/status", None)
    if args.json and result is not None:
        print(json.dumps(result, indent=2))
        return 0 if result.get("ok") else 1

    def text(r: dict[str, Any]) -> str:
        lines = ["verdicts:"]
        for v in r["verdicts"] or []:
            lines.append(
                f"  {v['verdict']:<5} {v['scope']['type']}={v['scope']['value']}  by {v['actor']}"
                f"  at {v['set_at']}{'  until ' + v['expires_at'] if v['expires_at'] else ''}"
                f"  — {v['reason']}"
            )
        if not r["verdicts"]:
            lines.append("  (none: every agent is allowed)")
        lines.append("held actions:")
        for h in r["holds"] or []:
            lines.append(
                f"  {h['hold_id']}  {h['tool']} of {h['agent']}  releases {h['release_at']}"
            )
        if not r["holds"]:
            lines.append("  (none)")
        lines.append("recent changes:")
        for a in r["audit"][:10]:
            lines.append(
                f"  {a['changed_at']}  {a['action']:<7} {a['state'] or '':<5} "
                f"{a['scope_type']}={a['scope_value']}  by {a['actor']}  — {a['reason'] or ''}"
            )
        return "\n".join(lines)

    return _report(result, text)


def _cmd_hold(args: argparse.Namespace) -> int:
    if args.action == "list":
        result = _call(args, "/api/v1/holds", None)
        return _report(
            result,
            lambda r: (
                "\n".join(
                    f"{h['hold_id']}  {h['tool']} of {h['agent']}  releases {h['release_at']}  ({h['rule']})"
                    for h in r["pending"]
                )
                or "(no held actions)"
            ),
        )
    if not args.hold_id:
        print("error: hold cancel needs HOLD_ID", file=sys.stderr)
        return 2
    result = _call(
        args, f"/api/v1/holds/{args.hold_id}/cancel", {"reason": args.reason, "actor": "cli"}
    )

    if result is not None and result.get("ok") and not result.get("cancelled"):
        h = result["hold"]
        print(
            f"too late: {h['hold_id']} was already {h['state']} by {h['decided_by']}",
            file=sys.stderr,
        )
        return 1
    return _report(
        result,
        lambda r: f"cancelled {r['hold']['hold_id']} ({r['hold']['tool']} of {r['hold']['agent']})",
    )

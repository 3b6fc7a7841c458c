"""Slack inbound: `/watchdog` slash commands and the alert message's buttons.

Guarantees:

- Every request's signature is checked on the raw body, before the form is parsed, with
  `slack_sdk.signature.SignatureVerifier` (5-minute window). A bad or stale signature gets
  401 and changes nothing; the answer never echoes a secret.
- Slack gets its answer within 3 seconds: a slash command's result inline when it is
  ready within `alerting.slack_ack_s`, else an acknowledgement and the result later
  through `response_url`; a button click an empty 200 and the result through
  `response_url`.
- Only users in `slack.allowed_users`, or anyone in a channel of
  `slack.allowed_channels`, may kill, pause, resume or silence. Verdict changes go
  through the verdict store as `slack:<user_id>`, so each lands in `verdict_audit`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient

from alerts.dispatch import AlertingMetrics, Dispatcher
from alerts.holds_slack import ACTION_CANCEL_HOLD, HoldControl
from alerts.matchers import Matcher, is_matcher, split_words
from alerts.silences import SilenceStore, parse_duration
from alerts.slack import (
    ACTION_KILL,
    ACTION_OPEN,
    ACTION_PAUSE,
    ACTION_RESUME,
    ACTION_SILENCE,
)
from watchdog.alertstore import Alert, AlertStore
from watchdog.http import json_response
from watchdog.lifecycle import Supervisor
from watchdog.policy import scope_for
from watchdog.settings import SlackSettings
from watchdog.store import Store
from watchdog.verdicts import SCOPE_TYPES, Scope, VerdictError, VerdictStore

logger = logging.getLogger(__name__)

# slack_sdk's webhook client logs the full URL at DEBUG when its logger's own level allows;
# a response_url is a bearer credential, so that client gets a logger that never does.
_QUIET = logging.getLogger("watchdog.alerts.slack_response_url")
_QUIET.setLevel(logging.INFO)

MAX_BODY_BYTES = 256 * 1024
HELP = (
    "*/watchdog* commands:\n"
    "• `status` — open alerts, standing verdicts, silences\n"
    "• `top` — agents by spend today\n"
    "• `kill [agent|session|trace] <id> [reason]` — stop it until someone resumes\n"
    "• `pause [agent|session|trace] <id> [reason]` — hold it (expires)\n"
    "• `resume [agent|session|trace] <id>` — clear its verdict\n"
    "• `cancel <hold id>` or `cancel [agent|session|trace] <id>` — cancel held actions\n"
    "• `silence <label=value>… [duration] [comment]` — e.g. `silence agent=bot detector=loop 2h`\n"
    "• `silence list` · `silence expire <id>`"
)


class _Clock(Clock):
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


def _reply(text: str, *, in_channel: bool = False) -> dict[str, Any]:
    return {"response_type": "in_channel" if in_channel else "ephemeral", "text": text}


class SlackInbound:
    """Serves POST /slack/commands and POST /slack/interactions."""

    def __init__(
        self,
        *,
        slack: SlackSettings,
        ack_s: float,
        verdicts: VerdictStore,
        silences: SilenceStore,
        alerts: AlertStore,
        dispatcher: Dispatcher,
        store: Store,
        supervisor: Supervisor,
        metrics: AlertingMetrics,
        clock: Callable[[], float] = time.time,
        holds: HoldControl | None = None,
    ) -> None:
        secret = slack.signing_secret.get_secret_value() if slack.signing_secret else ""
        self._verifier = SignatureVerifier(secret, clock=_Clock(clock)) if secret.strip() else None
        self._allowed_users = frozenset(slack.allowed_users)
        self._allowed_channels = frozenset(slack.allowed_channels)
        api = urlsplit(slack.base_url)
        self._follow_up_hosts = {("https", "hooks.slack.com"), (api.scheme, api.netloc)}
        self._ack_s = ack_s
        self.verdicts = verdicts
        self.silences = silences
        self.alerts = alerts
        self.dispatcher = dispatcher
        self.store = store
        self.supervisor = supervisor
        self.metrics = metrics
        self.clock = clock
        self.holds = holds
        self.tasks: set[asyncio.Task[Any]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        """Mount the two Slack endpoints."""
        app.router.add_post("/slack/commands", self.commands)
        app.router.add_post("/slack/interactions", self.interactions)

    async def close(self) -> None:
        """Cancel follow-ups still running and close the HTTP session; safe twice."""
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2.0)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def idle(self) -> bool:
        """True when no command or follow-up is still running."""
        return not self.tasks

    # -- HTTP ------------------------------------------------------------------------
    async def _verified_form(
        self, request: web.Request, endpoint: str
    ) -> dict[str, str] | web.Response:
        if self._verifier is None:
            self.metrics.slack_inbound.labels(endpoint, "not_configured").inc()
            return json_response(
                {"ok": False, "error": "Slack signing secret is not configured"}, 503
            )
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return json_response({"ok": False, "error": "request body too large"}, 413)
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return json_response({"ok": False, "error": "request body too large"}, 413)
        try:
            valid = self._verifier.is_valid_request(raw, dict(request.headers))
        except (ValueError, UnicodeDecodeError):  # a non-numeric timestamp, a non-UTF-8 body
            valid = False
        if not valid:
            self.metrics.slack_inbound.labels(endpoint, "bad_signature").inc()
            logger.warning(
                "refused a Slack %s request with a bad or stale signature from %s",
                endpoint,
                request.remote,
            )
            return json_response({"ok": False, "error": "invalid or stale Slack signature"}, 401)
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))

    async def commands(self, request: web.Request) -> web.StreamResponse:
        """`/watchdog …`: answer inline within the ack budget, else via response_url."""
        form = await self._verified_form(request, "commands")
        if isinstance(form, web.Response):
            return form
        user, channel = form.get("user_id", ""), form.get("channel_id", "")
        words = split_words(form.get("text", ""))
        retry_key = form.get("trigger_id", "")
        if request.headers.get("X-Slack-Retry-Num") and self._seen_before(retry_key):
            return web.Response(status=200)
        self._remember(retry_key)
        self.metrics.slack_inbound.labels("commands", words[0].lower() if words else "help").inc()
        holder = {"deferred": False}
        response_url = form.get("response_url", "")

        async def run() -> dict[str, Any]:
            try:
                msg = await self.run_command(words, user, channel)
            except Exception:  # the user gets a sentence, the log the details
                logger.exception("slack command %r failed", words[:1])
                msg = _reply("Sorry, that failed inside watchdog; see its log.")
            if holder["deferred"]:
                await self._follow_up(response_url, msg)
            return msg

        task = self._spawn(run(), "slack-command")
        await asyncio.wait({task}, timeout=self._ack_s)
        if task.done() and not task.cancelled() and task.exception() is None:
            return json_response(task.result())
        holder["deferred"] = True
        return json_response(_reply("Working on it…"))

    async def interactions(self, request: web.Request) -> web.StreamResponse:
        """Button clicks: acknowledge at once, act, and follow up through response_url."""
        form = await self._verified_form(request, "interactions")
        if isinstance(form, web.Response):
            return form
        try:
            payload = json.loads(form.get("payload", ""))
            action = payload["actions"][0]
            action_id = str(action.get("action_id", ""))
            user = str(payload["user"]["id"])
        except (ValueError, KeyError, IndexError, TypeError):
            return json_response(
                {"ok": False, "error": "payload is not a block_actions payload"}, 400
            )
        channel = str(
            (payload.get("channel") or {}).get("id")
            or (payload.get("container") or {}).get("channel_id")
            or ""
        )
        response_url = str(payload.get("response_url") or "")
        trigger = str(payload.get("trigger_id") or "")
        if self._seen_before(trigger):
            return web.Response(status=200)  # Slack's retry of a click we already took
        self._remember(trigger)
        if action_id == ACTION_OPEN:
            return web.Response(status=200)  # a link button: Slack opens the URL itself
        self.metrics.slack_inbound.labels("interactions", action_id).inc()

        async def run() -> None:
            try:
                msg = await self.run_button(
                    action_id, str(action.get("value") or ""), user, channel
                )
            except Exception:
                logger.exception("slack button %s failed", action_id)
                msg = _reply("Sorry, that failed inside watchdog; see its log.")
            await self._follow_up(response_url, {**msg, "replace_original": False})

        self._spawn(run(), "slack-button")
        return web.Response(status=200)

    # -- commands --------------------------------------------------------------------
    async def run_command(self, words: list[str], user: str, channel: str) -> dict[str, Any]:
        """Execute one `/watchdog` command and return the Slack message answering it."""
        sub = words[0].lower() if words else "help"
        args = words[1:]
        if sub == "status":
            return await self._status()
        if sub == "top":
            return await self._top()
        if sub in ("kill", "pause", "resume", "silence", "cancel"):
            if sub == "silence" and args[:1] == ["list"]:
                return self._silence_list()
            if not self.may_act(user, channel):
                self.metrics.slack_inbound.labels("commands", "forbidden").inc()
                return self._forbidden(user, sub)
            if sub == "silence":
                return await self._silence(args, user)
            if sub == "cancel":
                return await self._cancel_command(args, user)
            return await self._verdict_command(sub, args, user)
        return _reply(HELP)

    def may_act(self, user: str, channel: str) -> bool:
        """Tell whether `user` is allowed, or `channel` is an allowed channel."""
        return (bool(user) and user in self._allowed_users) or (
            bool(channel) and channel in self._allowed_channels
        )

    def _forbidden(self, user: str, verb: str) -> dict[str, Any]:
        logger.warning(
            "slack user %s may not %s (not in slack.allowed_users/allowed_channels)", user, verb
        )
        return _reply(
            f"Sorry <@{user}>, you may not {verb} from Slack. An admin can add your user id "
            f"`{user}` to slack.allowed_users."
        )

    async def _target(self, args: list[str]) -> tuple[Scope, list[str]] | str:
        """`[agent|session|trace] <id> [rest…]` → scope and the remaining words, or an error."""
        if not args:
            return "say which: `agent <name>`, `session <id>` or `trace <id>`"
        if args[0].lower() in SCOPE_TYPES:
            if len(args) < 2:
                return f"which {args[0].lower()}?"
            return Scope(args[0].lower(), args[1]), args[2:]  # type: ignore[arg-type]
        value = args[0]
        kind = await self._known_as(value)
        if kind is None:
            return (
                f"no agent, session or run named `{value}` has been seen; say "
                f"`agent {value}` or `session {value}` to act on it anyway"
            )
        return Scope(kind, value), args[1:]  # type: ignore[arg-type]

    async def _known_as(self, value: str) -> str | None:
        def find(cur: Any) -> str | None:
            for kind, col in (
                ("agent", "agent_name"),
                ("session", "session_id"),
                ("trace", "trace_id"),
            ):
                for table in ("steps", "alerts"):
                    row = cur.execute(
                        f"SELECT 1 FROM {table} WHERE {col} = ? LIMIT 1", [value]
                    ).fetchone()
                    if row:
                        return kind
            return None

        return await asyncio.wait_for(self.store.read(find), 5.0)

    async def _verdict_command(self, sub: str, args: list[str], user: str) -> dict[str, Any]:
        target = await self._target(args)
        if isinstance(target, str):
            return _reply(target)
        scope, rest = target
        actor = f"slack:{user}"
        reason = " ".join(rest) or f"{sub} from Slack"
        try:
            if sub == "resume":
                return await self._resume([scope], actor, reason, user)
            await self.verdicts.set(scope, sub, actor=actor, reason=reason)
        except VerdictError as err:
            return _reply(f"Refused: {err}")
        verb = {"kill": "killed", "pause": "paused"}[sub]
        held = await self._cancel_held(scope, actor, f"{sub} from Slack")
        return _reply(
            f"<@{user}> {verb} {scope.type} `{scope.value}` ({reason}).{held}", in_channel=True
        )

    async def _cancel_held(self, scope: Scope, actor: str, reason: str) -> str:
        """Cancel the scope's pending held actions (nothing held lands in a stopped run)."""
        if self.holds is None:
            return ""
        try:
            cancelled = await self.holds.cancel_scope(scope, actor=actor, reason=reason)
        except Exception:
            logger.warning("cancelling held actions of %s failed", scope, exc_info=True)
            return ""
        return f" Cancelled {len(cancelled)} held action(s)." if cancelled else ""

    async def _cancel_command(self, args: list[str], user: str) -> dict[str, Any]:
        if self.holds is None:
            return _reply("Held actions are not enabled in this watchdog.")
        actor = f"slack:{user}"
        if len(args) == 1 and args[0].lower() not in SCOPE_TYPES:
            was_pending = any(h.id == args[0] for h in self.holds.pending())
            hold = await self.holds.cancel(args[0], actor=actor, reason="cancelled from Slack")
            if hold is not None and was_pending and hold.decided_by == actor:
                return _reply(
                    f"<@{user}> cancelled held `{hold.tool}` ({hold.id}).", in_channel=True
                )
            if hold is not None:
                return _reply(f"Held action `{hold.id}` was already {hold.state}.")
        target = await self._target(args)
        if isinstance(target, str):
            return _reply(target)
        scope, _ = target
        held = await self._cancel_held(scope, actor, "cancelled from Slack")
        return _reply(held.strip() or f"No pending held action on {scope.type} `{scope.value}`.")

    async def _resume(
        self, scopes: list[Scope], actor: str, reason: str, user: str
    ) -> dict[str, Any]:
        cleared = []
        for scope in scopes:
            if await self.verdicts.clear(scope, actor=actor, reason=reason) is not None:
                cleared.append(f"{scope.type} `{scope.value}`")
        if not cleared:
            names = ", ".join(f"{s.type} `{s.value}`" for s in scopes)
            return _reply(f"No verdict stands on {names}; nothing to resume.")
        return _reply(f"<@{user}> resumed {', '.join(cleared)}.", in_channel=True)

    async def _silence(self, args: list[str], user: str) -> dict[str, Any]:
        if args[:1] == ["expire"]:
            if len(args) < 2:
                return _reply("which silence? `silence expire <id>`")
            ended = await self.silences.expire(args[1], actor=f"slack:{user}")
            return _reply(
                f"Silence `{args[1]}` ended." if ended else f"No running silence `{args[1]}`."
            )
        matchers = [a for a in args if is_matcher(a)]
        others = [a for a in args if not is_matcher(a)]
        duration_s = 3600.0
        if others:
            try:
                duration_s = parse_duration(others[0])
                others = others[1:]
            except ValueError:
                pass
        if not matchers:
            return _reply("give at least one matcher, e.g. `silence agent=my-bot detector=loop 2h`")
        try:
            s = await self.silences.add(
                matchers,
                duration_s=duration_s,
                created_by=f"slack:{user}",
                comment=" ".join(others),
            )
        except ValueError as err:
            return _reply(f"Refused: {err}")
        return _reply(f"<@{user}> silenced {s.describe()} (id `{s.id}`).", in_channel=True)

    def _silence_list(self) -> dict[str, Any]:
        active = self.silences.active()
        if not active:
            return _reply("No active silences.")
        return _reply(
            "Active silences:\n" + "\n".join(f"• `{s.id}` {s.describe()}" for s in active)
        )

    async def _status(self) -> dict[str, Any]:
        open_alerts = self.alerts.open_alerts()
        by_sev: dict[str, int] = {}
        for a in open_alerts:
            by_sev[a.severity] = by_sev.get(a.severity, 0) + 1
        lines = [
            f"*Open alerts:* {len(open_alerts)}"
            + (
                " (" + ", ".join(f"{n} {s}" for s, n in sorted(by_sev.items())) + ")"
                if by_sev
                else ""
            )
        ]
        verdicts = self.verdicts.all()
        lines.append(f"*Verdicts:* {len(verdicts)}")
        lines += [
            f"• {v.state} {v.scope.type} `{v.scope.value}` by {v.actor}" for v in verdicts[:10]
        ]
        lines.append(f"*Silences:* {len(self.silences.active())} active")
        broken = [w for w in self.dispatcher.workers.values() if w.disabled]
        lines += [
            f":warning: receiver `{w.receiver.name}` disabled: {w.disabled_reason}" for w in broken
        ]
        return _reply("\n".join(lines))

    async def _top(self) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock(), UTC).replace(tzinfo=None)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        rows = await asyncio.wait_for(
            self.store.read(
                lambda cur: cur.execute(
                    "SELECT agent_name, sum(cost_usd), count(*), count(DISTINCT session_id) "
                    "FROM steps WHERE start_time >= ? GROUP BY 1 ORDER BY 2 DESC NULLS LAST, 3 DESC "
                    "LIMIT 10",
                    [midnight],
                ).fetchall()
            ),
            5.0,
        )
        if not rows:
            return _reply("No agent steps recorded today (UTC).")
        firing: dict[str, int] = {}
        for a in self.alerts.open_alerts():
            firing[a.agent_name] = firing.get(a.agent_name, 0) + 1
        lines = ["*Top agents by spend today (UTC)*"]
        for agent, cost, steps, sessions in rows:
            usd = "n/a" if cost is None else f"${cost:,.4f}"
            lines.append(
                f"• `{agent}` {usd} · {steps} steps · {sessions} sessions · "
                f"{firing.get(agent, 0)} open alerts"
            )
        return _reply("\n".join(lines))

    # -- buttons ---------------------------------------------------------------------
    async def run_button(
        self, action_id: str, value: str, user: str, channel: str
    ) -> dict[str, Any]:
        """Execute one button of an alert message and return the follow-up message."""
        buttons = (ACTION_KILL, ACTION_PAUSE, ACTION_RESUME, ACTION_SILENCE, ACTION_CANCEL_HOLD)
        if action_id not in buttons:
            return _reply("Unknown button.")
        if not self.may_act(user, channel):
            self.metrics.slack_inbound.labels("interactions", "forbidden").inc()
            verb = action_id.removeprefix("watchdog_").split("_")[0]
            return self._forbidden(user, verb)
        if action_id == ACTION_CANCEL_HOLD:
            return await self._cancel_button(value, user)
        try:
            ref = json.loads(value)
            alert_id, group_key = str(ref["alert"]), str(ref.get("group", ""))
        except (ValueError, KeyError, TypeError):
            return _reply("This button carries no alert reference.")
        alert = await self.alerts.get(alert_id)
        if alert is None:
            return _reply(f"Alert `{alert_id}` no longer exists.")
        actor = f"slack:{user}"
        if action_id == ACTION_SILENCE:
            return await self._silence_group(alert, group_key, user)
        if action_id == ACTION_RESUME:
            scopes = [s for s in _scopes_of(alert) if self.verdicts.get(s) is not None]
            return await self._resume(
                scopes or _scopes_of(alert)[:1],
                actor,
                f"resumed from Slack (alert {alert.id})",
                user,
            )
        state = "kill" if action_id == ACTION_KILL else "pause"
        # The policy's choice of scope: the session, else the run, else the agent; never
        # agent `*` (an alert about every agent, e.g. the total-day cap).
        scope = scope_for(alert, "session")
        if scope is None:
            return _reply(
                f"Alert `{alert.id}` is about every agent and names no session or run to "
                f"{state}; the budget cap already refuses new spend. Use `/watchdog {state} agent "
                "<agent>` to stop a particular agent."
            )
        try:
            await self.verdicts.set(
                scope,
                state,
                actor=actor,
                alert_id=alert.id,
                reason=f"{state} from Slack on alert {alert.id}: {alert.summary}"[:500],
            )
        except VerdictError as err:
            return _reply(f"Refused: {err}")
        verb = {"kill": "killed", "pause": "paused"}[state]
        held = await self._cancel_held(scope, actor, f"{state} from Slack")
        return _reply(f"<@{user}> {verb} {scope.type} `{scope.value}`.{held}", in_channel=True)

    async def _cancel_button(self, value: str, user: str) -> dict[str, Any]:
        try:
            hold_id = str(json.loads(value)["hold"])
        except (ValueError, KeyError, TypeError):
            return _reply("This button carries no held-action reference.")
        if self.holds is None:
            return _reply("Held actions are not enabled in this watchdog.")
        was_pending = any(h.id == hold_id for h in self.holds.pending())
        hold = await self.holds.cancel(
            hold_id, actor=f"slack:{user}", reason="cancelled from Slack"
        )
        if hold is None:
            return _reply(f"No held action `{hold_id}`.")
        if not was_pending or hold.decided_by != f"slack:{user}":
            return _reply(f"Too late: `{hold.tool}` was already {hold.state}.")
        return _reply(f"<@{user}> cancelled held `{hold.tool}` of `{hold.agent}`.", in_channel=True)

    async def _silence_group(self, alert: Alert, group_key: str, user: str) -> dict[str, Any]:
        group = self.dispatcher.groups.get(group_key)
        labels = (
            dict(group.labels)
            if group is not None
            else {
                "agent": alert.agent_name,
                "detector": alert.detector,
            }
        )
        matchers = [str(Matcher(k, "=", v)) for k, v in sorted(labels.items())]
        s = await self.silences.add(
            matchers,
            duration_s=3600,
            created_by=f"slack:{user}",
            comment=f"Silence 1h button on alert {alert.id}",
        )
        return _reply(f"<@{user}> silenced {s.describe()} (id `{s.id}`).", in_channel=True)

    # -- plumbing --------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self.supervisor.spawn(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _seen_before(self, key: str) -> bool:
        return bool(key) and key in self._seen

    def _remember(self, key: str) -> None:
        if not key:
            return
        self._seen[key] = None
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)

    async def _follow_up(self, response_url: str, msg: dict[str, Any]) -> None:
        """POST `msg` to Slack's response_url (only to Slack's hooks host or the API host)."""
        if not response_url:
            return
        parts = urlsplit(response_url)
        if (parts.scheme, parts.netloc) not in self._follow_up_hosts:
            logger.warning("ignoring a response_url outside Slack's hosts")
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        client = AsyncWebhookClient(response_url, timeout=10, session=self._session, logger=_QUIET)
        try:
            resp = await asyncio.wait_for(client.send_dict(msg), 12.0)
        except Exception as err:  # the URL is a credential: log the error class only
            logger.warning("slack follow-up failed: %s", type(err).__name__)
            return
        if resp.status_code != 200:
            logger.warning("slack follow-up answered HTTP %d", resp.status_code)


def _scopes_of(a: Alert) -> list[Scope]:
    out = []
    if a.trace_id:
        out.append(Scope("trace", a.trace_id))
    if a.session_id:
        out.append(Scope("session", a.session_id))
    if a.agent_name:
        out.append(Scope("agent", a.agent_name))
    return out

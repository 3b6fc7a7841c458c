"""Slack outbound: one living Block Kit message per alert group, updated in place.

The first notification of an incident posts a message (`chat.postMessage`); every later
state change rewrites it (`chat.update`) and, when `thread_replies` is on, says what
changed in its thread. The message carries the summary, agent, session, cost so far, the
evidence, a link to the run in the dashboard, and the Kill / Pause / Resume / Silence 1h
buttons that `alerts.slack_inbound` answers.

`slack_sdk`'s own retry handlers are switched off: the delivery worker is the one retry
owner, and it honours `Retry-After`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from alerts.model import Notification
from alerts.receivers import ReceiverBroken, retry_after_s
from watchdog.alertstore import Alert
from watchdog.errors import PermanentError, RetryableError

logger = logging.getLogger(__name__)

# Slack error codes that no retry and no other message will fix.
_BROKEN = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "team_access_not_granted",
        "org_login_required",
        "ekm_access_denied",
        "access_denied",
    }
)
# chat.update refusals after which the group gets a fresh message instead.
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})

ACTION_KILL = "watchdog_kill"
ACTION_PAUSE = "watchdog_pause"
ACTION_RESUME = "watchdog_resume"
ACTION_SILENCE = "watchdog_silence_1h"
ACTION_OPEN = "watchdog_open_run"

_EMOJI = {
    "kill": ":red_circle:",
    "pause": ":large_orange_circle:",
    "warn": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}
_REASON_TEXT = {
    "first": "new incident",
    "new_alerts": "new alerts",
    "escalated": "escalated",
    "resolved": "alerts resolved",
    "silenced": "silenced",
    "verdict": "verdict changed",
    "repeat": "still firing",
}


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _usd(v: float | None) -> str:
    return "n/a" if v is None else f"${v:,.4f}"


def _evidence_text(a: Alert) -> str:
    ev = {k: v for k, v in a.evidence.items() if k != "span_ids"}
    span_ids = a.evidence.get("span_ids") or []
    if span_ids:
        ev["span_ids"] = list(span_ids)[:5] + (["…"] if len(span_ids) > 5 else [])
    body = json.dumps(ev, indent=1, default=str, ensure_ascii=False)
    return "```" + clip(escape(body), 2_600) + "```"


def _verdict_text(n: Notification) -> str:
    v = n.verdict
    if v is None:
        return "allow (no verdict)"
    return f"*{v.state}* on {v.scope.type} `{escape(v.scope.value)}` by {escape(v.actor)}"


def button_value(n: Notification, a: Alert) -> str:
    """Encode what a button carries back: the alert and group it acts on (≤ 2000 chars)."""
    return json.dumps({"alert": a.id, "group": n.group_key}, separators=(",", ":"))


def _button(
    text: str,
    action_id: str,
    value: str,
    style: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
    }
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def render_message(n: Notification) -> tuple[str, list[dict[str, Any]]]:
    """Render the fallback text and Block Kit blocks of the group's living message."""
    p = n.primary
    if p is None:  # a notification always has an alert; kept total for safety
        return "watchdog alert group", []
    status = n.status
    emoji = {"resolved": ":white_check_mark:", "silenced": ":no_bell:"}.get(
        status, _EMOJI.get(p.severity, ":warning:")
    )
    title = clip(
        f"{status.upper()} · {p.detector}/{p.rule} · {p.agent_name or 'unknown agent'}", 140
    )
    text = clip(
        f"[{status}] {p.severity} {p.detector}/{p.rule} agent {p.agent_name}: {p.summary}", 3000
    )
    summary = f"{emoji} *{escape(p.summary)}*"
    if n.run_url:
        summary += f"\n<{n.run_url}|Open the run in the dashboard>"
    cost = "n/a"
    if n.cost is not None:
        cost = f"{_usd(n.cost.session_usd)} session · {_usd(n.cost.run_usd)} run · {n.cost.steps} steps"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(summary, 3000)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Agent*\n`{escape(p.agent_name or '-')}`"},
                {"type": "mrkdwn", "text": f"*Session*\n`{escape(p.session_id or '-')}`"},
                {"type": "mrkdwn", "text": f"*Severity*\n{p.severity} ({status})"},
                {"type": "mrkdwn", "text": f"*Detector*\n{escape(p.detector)} / {escape(p.rule)}"},
                {"type": "mrkdwn", "text": f"*Cost so far*\n{cost}"},
                {"type": "mrkdwn", "text": f"*Verdict*\n{_verdict_text(n)}"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Evidence*\n" + _evidence_text(p)}},
    ]
    if len(n.alerts) > 1:
        lines = []
        for a, state in (
            [(a, "firing") for a in n.firing]
            + [(a, "silenced") for a in n.silenced]
            + [(a, "resolved") for a in n.resolved]
        ):
            lines.append(
                f"• {_EMOJI.get(a.severity, '')} {escape(clip(a.summary, 150))} — _{state}_"
                f" (`{escape(a.session_id or '-')}`)"
            )
        shown = lines[:8] + ([f"… and {len(lines) - 8} more"] if len(lines) > 8 else [])
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": clip(
                        f"*Alerts in this group ({len(lines)})*\n" + "\n".join(shown), 3000
                    ),
                },
            }
        )
    if n.silenced_by:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": clip(f":no_bell: Silenced: {escape(n.silenced_by)}", 2000),
                    }
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip(
                        f"{_REASON_TEXT.get(n.reason, n.reason)} · alert `{p.id}` · first seen "
                        f"{p.created_at:%Y-%m-%d %H:%M:%S} UTC · updated {n.at:%H:%M:%S} UTC",
                        2000,
                    ),
                }
            ],
        }
    )
    if status != "resolved" or n.verdict is not None:
        value = button_value(n, p)
        scope = f"session `{p.session_id}`" if p.session_id else f"agent `{p.agent_name}`"
        elements = [
            _button(
                "Kill",
                ACTION_KILL,
                value,
                "danger",
                confirm={
                    "title": {"type": "plain_text", "text": "Kill this run?"},
                    "text": {
                        "type": "mrkdwn",
                        "text": clip(f"Stops {escape(scope)} until someone resumes it.", 300),
                    },
                    "confirm": {"type": "plain_text", "text": "Kill"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            ),
            _button("Pause", ACTION_PAUSE, value),
            _button("Resume", ACTION_RESUME, value, "primary"),
            _button("Silence 1h", ACTION_SILENCE, value),
        ]
        if n.run_url:
            elements.append(
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open run"},
                    "action_id": ACTION_OPEN,
                    "url": n.run_url,
                }
            )
        blocks.append({"type": "actions", "block_id": "watchdog_actions", "elements": elements})
    return text, blocks


class SlackReceiver:
    """Posts, then updates, one message per group through `slack_sdk.AsyncWebClient`."""

    kind = "slack"

    def __init__(
        self,
        name: str,
        *,
        token: str,
        channel: str,
        base_url: str,
        timeout_s: float = 10.0,
        min_interval_s: float = 1.0,
        thread_replies: bool = True,
        send_resolved: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.send_resolved = send_resolved
        self.channel = channel
        self._token = token
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._min_interval_s = min_interval_s
        self._thread_replies = thread_replies
        self._monotonic = monotonic
        self._last_call = float("-inf")
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None

    def client(self) -> AsyncWebClient:
        """Return the Web API client (created on first use, inside the running loop)."""
        if self._client is None:
            self._session = aiohttp.ClientSession()
            self._client = AsyncWebClient(
                token=self._token,
                base_url=self._base_url,
                timeout=int(max(1, self._timeout_s)),
                session=self._session,
                retry_handlers=[],  # the delivery worker owns retries
            )
        return self._client

    async def notify(self, n: Notification, state: Mapping[str, Any]) -> dict[str, Any]:
        """Post the group's message, or update it and reply in its thread."""
        text, blocks = render_message(n)
        channel, ts = state.get("channel"), state.get("ts")
        if channel and ts:
            try:
                await self.call("chat_update", channel=channel, ts=ts, text=text, blocks=blocks)
            except _MessageGone:
                logger.info(
                    "slack message %s of group %s is gone; posting a new one", ts, n.group_key
                )
            else:
                if self._thread_replies and n.note:
                    await self.call(
                        "chat_postMessage", channel=channel, thread_ts=ts, text=clip(n.note, 3000)
                    )
                return {"channel": channel, "ts": ts}
        resp = await self.call(
            "chat_postMessage",
            channel=self.channel,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        return {"channel": resp.get("channel") or self.channel, "ts": resp.get("ts")}

    async def call(self, method: str, **kwargs: Any) -> Mapping[str, Any]:
        """Call one Web API method, paced; raise RetryableError, PermanentError or ReceiverBroken."""
        # Slack allows about one message per second per channel: pace here rather than
        # collect 429s.
        wait = self._last_call + self._min_interval_s - self._monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_call = self._monotonic()
        fn = getattr(self.client(), method)
        try:
            resp = await asyncio.wait_for(fn(**kwargs), self._timeout_s + 1)
        except SlackApiError as err:
            raise _classify(method, err) from None
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as err:
            raise RetryableError(f"slack {method}: {type(err).__name__}") from None
        return resp.data if isinstance(resp.data, dict) else {}

    async def close(self) -> None:
        """Close the HTTP session; safe twice."""
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()


class _MessageGone(PermanentError):
    """chat.update found no message to update."""


def _classify(method: str, err: SlackApiError) -> Exception:
    resp = err.response
    status = getattr(resp, "status_code", 0)
    code = str(resp.get("error", "")) if resp is not None else ""
    headers = getattr(resp, "headers", None) or {}
    if status == 429 or code == "ratelimited":
        return RetryableError(f"slack {method}: rate limited", retry_after=retry_after_s(headers))
    if code in _GONE and method == "chat_update":
        return _MessageGone(f"slack {method}: {code}")
    if code in _BROKEN:
        return ReceiverBroken(f"slack {method}: {code}")
    if status >= 500 or code in (
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    ):
        return RetryableError(
            f"slack {method}: {code or f'HTTP {status}'}", retry_after=retry_after_s(headers)
        )
    return PermanentError(f"slack {method}: {code or f'HTTP {status}'}")

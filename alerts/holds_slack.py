"""Held actions in Slack: the human review step before a risky tool call lands.

Each held tool call is posted at once (it does not wait for alert grouping: a hold
window is short) with a Cancel button; when the hold is decided — released when its
window ends, or cancelled from Slack, the API, the CLI or by a kill — the same message
is updated to say so. Delivery is best effort: a few attempts honouring `Retry-After`;
the hold itself never waits for Slack.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from typing import Any, Protocol

from alerts.slack import SlackReceiver, clip, escape
from watchdog.errors import PermanentError, RetryableError
from watchdog.holds import Hold, HoldEvent, HoldListener
from watchdog.verdicts import Scope

logger = logging.getLogger(__name__)

ACTION_CANCEL_HOLD = "watchdog_cancel_hold"
_ATTEMPTS = 3
_QUEUE = 1000
_KEEP_TS = 10_000


class HoldControl(Protocol):
    """What alerting needs from the hold manager (watchdog.holds.HoldManager)."""

    def subscribe(self, listener: HoldListener) -> None:
        """Call `listener` with every HoldEvent."""
        ...

    def pending(self) -> list[Hold]:
        """Holds still waiting for a decision."""
        ...

    async def cancel(self, hold_id: str, *, actor: str, reason: str = "") -> Hold | None:
        """Cancel one pending hold."""
        ...

    async def cancel_scope(self, scope: Scope, *, actor: str, reason: str = "") -> list[Hold]:
        """Cancel every pending hold of `scope`."""
        ...


def render_hold(hold: Hold) -> tuple[str, list[dict[str, Any]]]:
    """Render the fallback text and blocks of a held action's message."""
    where = f"session `{escape(hold.session)}`" if hold.session else f"agent `{escape(hold.agent)}`"
    if hold.state == "pending":
        head = f":hourglass_flowing_sand: Held: `{escape(hold.tool)}` by `{escape(hold.agent)}`"
        status = f"Runs at {hold.release_at:%H:%M:%S} UTC unless someone cancels it."
    elif hold.state == "cancelled":
        head = f":no_entry: Cancelled: `{escape(hold.tool)}` by `{escape(hold.agent)}`"
        status = f"Cancelled by {escape(hold.decided_by or '?')}" + (
            f" ({escape(hold.reason)})" if hold.reason else ""
        )
    else:
        head = f":arrow_forward: Released: `{escape(hold.tool)}` by `{escape(hold.agent)}`"
        status = f"Released by {escape(hold.decided_by or '?')}: nobody cancelled it in time."
    text = clip(f"[{hold.state}] held action {hold.tool} of {hold.agent}: {status}", 3000)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(head, 3000)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Where*\n{where}"},
                {"type": "mrkdwn", "text": f"*Rule*\n{escape(hold.rule)}"},
            ],
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*Arguments*\n```" + clip(escape(hold.args or "{}"), 2_500) + "```",
            },
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(status, 2000)}]},
    ]
    if hold.state == "pending":
        blocks.append(
            {
                "type": "actions",
                "block_id": "watchdog_hold",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Cancel action"},
                        "action_id": ACTION_CANCEL_HOLD,
                        "value": json.dumps({"hold": hold.id}),
                        "style": "danger",
                    }
                ],
            }
        )
    return text, blocks


class SlackHoldNotifier:
    """Posts held actions and updates them when decided; a bounded queue, one task."""

    def __init__(self, receiver: SlackReceiver) -> None:
        self.receiver = receiver
        self._queue: deque[HoldEvent] = deque()
        self._wake = asyncio.Event()
        self._busy = False
        self._ts: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.dropped = 0

    def on_hold(self, event: HoldEvent) -> None:
        """Queue a hold event (listener: quick; the oldest is dropped when full)."""
        if len(self._queue) >= _QUEUE:
            self._queue.popleft()
            self.dropped += 1
            logger.warning("held-action queue for Slack full; an update was dropped")
        self._queue.append(event)
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Tell whether nothing is queued or being sent."""
        return not self._queue and not self._busy

    async def run(self) -> None:
        """Send queued events in order, forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                event = self._queue.popleft()
                self._busy = True
                try:
                    await self._send(event)
                except Exception:  # one bad event must not stop the others
                    logger.exception("posting hold %s to Slack failed", event.hold.id)
                finally:
                    self._busy = False

    async def _send(self, event: HoldEvent) -> None:
        hold = event.hold
        text, blocks = render_hold(hold)
        if event.change == "held":
            resp = await self._attempt(
                "chat_postMessage", channel=self.receiver.channel, text=text, blocks=blocks
            )
            if resp is not None and resp.get("ts"):
                self._ts[hold.id] = (str(resp.get("channel")), str(resp["ts"]))
                while len(self._ts) > _KEEP_TS:
                    self._ts.popitem(last=False)
            return
        where = self._ts.pop(hold.id, None)
        if where is not None:
            await self._attempt(
                "chat_update", channel=where[0], ts=where[1], text=text, blocks=blocks
            )

    async def _attempt(self, method: str, **kwargs: Any) -> Any:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self.receiver.call(method, **kwargs)
            except RetryableError as err:
                if attempt == _ATTEMPTS:
                    logger.warning("held action to Slack: %s; giving up", err)
                    return None
                await asyncio.sleep(err.retry_after if err.retry_after is not None else attempt)
            except PermanentError as err:
                logger.warning("held action to Slack: %s", err)
                return None
        return None

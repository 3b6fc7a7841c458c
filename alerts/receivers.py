"""Receivers: where notifications go. One method each, like Alertmanager's notifiers.

`Receiver.notify(notification, state)` delivers one group's state and returns the state to
remember for the next call (Slack keeps its channel and message `ts` there). It raises
`RetryableError` (honouring `retry_after`) for transient refusals, `PermanentError` when
this message can never be delivered, and `ReceiverBroken` when no message can be until
the configuration changes (bad token, unknown channel): the worker disables the receiver.

Errors never carry a token, a signing secret or a webhook URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from alerts.model import Notification, alert_labels
from watchdog.errors import PermanentError, RetryableError
from watchdog.verdicts import iso

logger = logging.getLogger("watchdog.alerts")


class ReceiverBroken(PermanentError):
    """The receiver cannot deliver anything until its configuration is fixed."""


class Receiver(Protocol):
    """A notification target."""

    name: str
    kind: str
    send_resolved: bool

    async def notify(self, n: Notification, state: Mapping[str, Any]) -> dict[str, Any]:
        """Deliver `n`; return the receiver state to keep for the group's next notification."""
        ...

    async def close(self) -> None:
        """Release connections; safe twice."""
        ...


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Read the `Retry-After` header in seconds (the delta form), when present and sane."""
    if not headers:
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value <= 3600 else None


def notification_json(n: Notification) -> dict[str, Any]:
    """Render the receiver-neutral JSON form of a notification (the webhook body)."""

    def alert(a: Any, state: str) -> dict[str, Any]:
        return {
            "id": a.id,
            "fingerprint": a.fingerprint,
            "state": state,
            "labels": alert_labels(a),
            "summary": a.summary,
            "evidence": a.evidence,
            "created_at": iso(a.created_at),
            "updated_at": iso(a.updated_at),
            "resolved_at": iso(a.resolved_at),
        }

    return {
        "version": "1",
        "group_key": n.group_key,
        "receiver": n.receiver,
        "status": n.status,
        "reason": n.reason,
        "note": n.note,
        "group_labels": dict(n.group_labels),
        "alerts": [alert(a, "firing") for a in n.firing]
        + [alert(a, "silenced") for a in n.silenced]
        + [alert(a, "resolved") for a in n.resolved],
        "verdict": n.verdict.to_json() if n.verdict else None,
        "run_url": n.run_url,
        "cost": None
        if n.cost is None
        else {"session_usd": n.cost.session_usd, "run_usd": n.cost.run_usd, "steps": n.cost.steps},
        "silenced_by": n.silenced_by,
        "at": iso(n.at),
    }


class LogReceiver:
    """Writes each notification to the daemon log (the receiver when nothing else is set)."""

    kind = "log"

    def __init__(self, name: str = "log", *, send_resolved: bool = True) -> None:
        self.name = name
        self.send_resolved = send_resolved

    async def notify(self, n: Notification, state: Mapping[str, Any]) -> dict[str, Any]:
        """Log one line per alert of the group, then the change note."""
        level = logging.INFO if n.status == "resolved" else logging.WARNING
        for a in n.alerts:
            logger.log(
                level,
                "alert %s [%s %s/%s] agent=%s session=%s: %s",
                a.id,
                a.severity,
                a.detector,
                a.rule,
                a.agent_name,
                a.session_id or "-",
                a.summary,
            )
        logger.log(level, "alert group %s (%s): %s", n.group_key, n.reason, n.note)
        return {"count": int(state.get("count", 0)) + 1}

    async def close(self) -> None:
        """Nothing to release."""


class WebhookReceiver:
    """POSTs the notification as JSON, signed `X-Watchdog-Signature: v1=<hex>`.

    The signature is HMAC-SHA256 over `<timestamp>.<body>` with the shared secret; the
    timestamp (Unix seconds) goes in `X-Watchdog-Timestamp` so receivers can refuse replays.
    """

    kind = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        *,
        timeout_s: float = 10.0,
        send_resolved: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.name = name
        self.send_resolved = send_resolved
        self._url = url
        self._secret = secret.encode()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def sign(self, timestamp: str, body: bytes) -> str:
        """Compute the signature header value for `body` sent at `timestamp`."""
        mac = hmac.new(self._secret, timestamp.encode() + b"." + body, hashlib.sha256)
        return "v1=" + mac.hexdigest()

    async def notify(self, n: Notification, state: Mapping[str, Any]) -> dict[str, Any]:
        """POST once; classify the answer into retryable, permanent or broken."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(notification_json(n), default=str).encode()
        ts = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "X-Watchdog-Timestamp": ts,
            "X-Watchdog-Signature": self.sign(ts, body),
            "User-Agent": "watchdog-alerts/1",
        }
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                status = resp.status
                wait = retry_after_s(resp.headers)
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            # The exception text may contain the URL, which may embed a token: name the
            # class only.
            raise RetryableError(f"webhook {self.name}: {type(err).__name__}") from None
        if 200 <= status < 300:
            return {"status": status}
        if status == 429 or status >= 500:
            raise RetryableError(f"webhook {self.name}: HTTP {status}", retry_after=wait)
        if status in (401, 403, 404, 410):
            raise ReceiverBroken(f"webhook {self.name}: HTTP {status}")
        raise PermanentError(f"webhook {self.name}: HTTP {status}")

    async def close(self) -> None:
        """Close the HTTP session; safe twice."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

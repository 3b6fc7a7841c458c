"""The alerting component: builds receivers, routes and the dispatcher, and runs them.

This is the one place receivers are wired (grep for `Receiver(` here), like
Alertmanager's `BuildReceiverIntegrations`. `validate_alerting` runs the same
construction without starting anything, for `watchdog check-config`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from alerts.api import AlertingApi
from alerts.dispatch import AlertingMetrics, Dispatcher
from alerts.holds_slack import HoldControl, SlackHoldNotifier
from alerts.nflog import NotificationLog
from alerts.receivers import LogReceiver, Receiver, WebhookReceiver
from alerts.routing import Route, build_routes, receivers_used
from alerts.silences import SilenceStore
from alerts.slack import SlackReceiver
from alerts.slack_inbound import SlackInbound
from watchdog.alertstore import AlertStore
from watchdog.errors import ConfigError
from watchdog.lifecycle import Supervisor
from watchdog.settings import Settings
from watchdog.store import Store
from watchdog.verdicts import VerdictStore

if TYPE_CHECKING:
    from watchdog.daemon import Daemon

logger = logging.getLogger(__name__)


def slack_configured(settings: Settings) -> bool:
    """Tell whether a bot token and a default channel are set (the implicit `slack` receiver)."""
    return settings.slack.bot_token is not None and bool(settings.slack.channel)


def build_receivers(settings: Settings) -> dict[str, Receiver]:
    """Every receiver the settings define, by name; raise ConfigError naming the field."""
    a, slack = settings.alerting, settings.slack
    token = slack.bot_token.get_secret_value() if slack.bot_token else None

    def slack_receiver(
        name: str, channel: str | None, thread_replies: bool, send_resolved: bool, where: str
    ) -> SlackReceiver:
        if token is None or not channel:
            raise ConfigError(f"{where}: a Slack receiver needs slack.bot_token and a channel")
        return SlackReceiver(
            name,
            token=token,
            channel=channel,
            base_url=slack.base_url,
            timeout_s=a.slack_timeout_s,
            min_interval_s=a.slack_min_interval_s,
            thread_replies=thread_replies,
            send_resolved=send_resolved,
        )

    out: dict[str, Receiver] = {"log": LogReceiver()}
    if slack_configured(settings):
        out["slack"] = slack_receiver("slack", slack.channel, True, True, "slack")
    for i, r in enumerate(a.receivers):
        where = f"alerting.receivers.{i}"
        if r.slack is not None:
            out[r.name] = slack_receiver(
                r.name,
                r.slack.channel or slack.channel,
                r.slack.thread_replies,
                r.send_resolved,
                f"{where}.slack",
            )
        elif r.webhook is not None:
            out[r.name] = WebhookReceiver(
                r.name,
                r.webhook.url.get_secret_value(),
                r.webhook.secret.get_secret_value(),
                timeout_s=r.webhook.timeout_s,
                send_resolved=r.send_resolved,
            )
        else:
            out[r.name] = LogReceiver(r.name, send_resolved=r.send_resolved)
    return out


def build_tree(settings: Settings) -> tuple[Route, dict[str, Receiver]]:
    """Build the route tree and the receivers it uses; raise ConfigError on an unusable one."""
    receivers = build_receivers(settings)
    root = build_routes(settings.alerting, "slack" if slack_configured(settings) else "log")
    used = receivers_used(root)
    for name in used:
        if name not in receivers:
            where = "alerting.receiver" if name == root.receiver else "alerting.routes"
            raise ConfigError(
                f"{where}: receiver {name!r} is not available"
                + (" (set slack.bot_token and slack.channel)" if name == "slack" else "")
            )
    return root, {name: receivers[name] for name in used}


def validate_alerting(settings: Settings) -> None:
    """Build (and discard) routes and receivers exactly as `run` does."""
    build_tree(settings)


class AlertingComponent:
    """Alert lifecycle, grouping, silences, routing, delivery and Slack inbound."""

    name = "alerting"

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        alerts: AlertStore,
        verdicts: VerdictStore,
        supervisor: Supervisor,
        link_base: Callable[[], str],
        clock: Callable[[], float] = time.time,
        holds: HoldControl | None = None,
    ) -> None:
        root, receivers = build_tree(settings)
        self.settings = settings
        self.alerts = alerts
        self.supervisor = supervisor
        self.metrics = AlertingMetrics()
        self.silences = SilenceStore(store, clock)
        self.nflog = NotificationLog(store)
        self.receivers = receivers
        self.dispatcher = Dispatcher(
            settings=settings.alerting,
            root=root,
            receivers=receivers,
            alerts=alerts,
            verdicts=verdicts,
            silences=self.silences,
            nflog=self.nflog,
            store=store,
            metrics=self.metrics,
            link_base=link_base,
            clock=clock,
        )
        self.inbound = SlackInbound(
            slack=settings.slack,
            ack_s=settings.alerting.slack_ack_s,
            verdicts=verdicts,
            silences=self.silences,
            alerts=alerts,
            dispatcher=self.dispatcher,
            store=store,
            supervisor=supervisor,
            metrics=self.metrics,
            clock=clock,
            holds=holds,
        )
        self.api = AlertingApi(self)
        # Held actions go to the first Slack receiver at once, with a Cancel button.
        slack = next((r for r in receivers.values() if isinstance(r, SlackReceiver)), None)
        self.hold_notifier: SlackHoldNotifier | None = None
        if holds is not None and slack is not None and settings.alerting.slack_holds:
            self.hold_notifier = SlackHoldNotifier(slack)
            holds.subscribe(self.hold_notifier.on_hold)
        # Listeners are registered now (wiring time) and ignore events until start() has
        # rebuilt the groups; the rebuild reads the alert store's in-memory state, so an
        # alert recorded before start is not missed either.
        alerts.subscribe(self.dispatcher.on_alert)
        verdicts.subscribe(self.dispatcher.on_verdict)
        self.silences.subscribe(self.dispatcher.on_silence)
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._stopped = False

    def add_routes(self, app: web.Application) -> None:
        """Mount the Slack endpoints and the alerting API."""
        self.inbound.add_routes(app)
        self.api.add_routes(app)

    async def start(self) -> None:
        """Load silences and the notification log, rebuild groups, start the tasks."""
        if self._started:
            return
        self._started = True
        await self.silences.load()
        await self.nflog.load()
        await self.dispatcher.load()
        self.dispatcher.running = True  # no await between load() and here: no event lost
        self._tasks.append(self.supervisor.spawn(self.dispatcher.run(), name="alerts-dispatcher"))
        if self.hold_notifier is not None:
            self._tasks.append(self.supervisor.spawn(self.hold_notifier.run(), name="alerts-holds"))
        for name, worker in self.dispatcher.workers.items():
            self._tasks.append(
                self.supervisor.spawn(self.dispatcher.work(worker), name=f"alerts-receiver-{name}")
            )
        logger.info(
            "alerting: receivers %s, %d open groups, %d active silences",
            ", ".join(f"{n} ({r.kind})" for n, r in self.receivers.items()),
            len(self.dispatcher.groups),
            len(self.silences.active()),
        )

    async def settle(self) -> None:
        """Return once nothing is due, no delivery is queued or running, no Slack task runs."""
        notifier = self.hold_notifier
        while not (
            self.dispatcher.is_idle() and self.inbound.idle and (notifier is None or notifier.idle)
        ):
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop the tasks and close connections; safe before start and twice.

        Undelivered notifications are not lost: the notification log still differs from
        the alerts, so the next start delivers them.
        """
        if self._stopped:
            return
        self._stopped = True
        self.dispatcher.running = False
        # A delivery cut between Slack's answer and the log write would be sent again at
        # the next start: let the ones in flight finish (bounded), then cancel.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(w.busy for w in self.dispatcher.workers.values()):
            await asyncio.sleep(0.02)
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3.0)
        await self.inbound.close()
        for r in self.receivers.values():
            try:
                await r.close()
            except Exception:
                logger.warning("closing receiver %s failed", r.name, exc_info=True)


def build_alerting(daemon: Daemon) -> AlertingComponent:
    """Build the alerting component of `daemon` (routes mounted, metrics registered)."""
    settings = daemon.settings

    def link_base() -> str:
        return settings.server.public_url or daemon.url

    component = AlertingComponent(
        settings=settings,
        store=daemon.store,
        alerts=daemon.alerts,
        verdicts=daemon.verdicts,
        supervisor=daemon.supervisor,
        link_base=link_base,
        holds=daemon.services.get("holds"),
    )
    component.add_routes(daemon.app)
    daemon.metric_registries.append(component.metrics.registry)
    daemon.services["alerting"] = component
    return component

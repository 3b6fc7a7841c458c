"""The alert dispatcher: groups alerts, times their notifications and runs the stages.

Data path (Alertmanager's, with watchdog's additions):

1. Intake. Every `AlertEvent` is routed (`alerts.routing`) into one group per matching
   route, keyed by the route and the values of its `group_by` labels. A re-asserted
   finding ("repeat") only refreshes the alert; it never notifies by itself.
2. Timing. A new group waits `group_wait`; later changes wait until `group_interval`
   has passed since the previous flush; a group still firing is looked at again every
   `repeat_interval`. A person's verdict change or a silence is shown at once.
3. Resolution. An alert no finding re-asserted for `resolve_after_s` resolves; so does
   the alert of a verdict a person cleared (a Resume ends the incident).
4. Delivery, per receiver, in that receiver's own worker task (a slow or failing
   receiver never holds up another): silence → dedup → enrich → retry → record.
   Dedup compares the group with the notification log, so only state changes are sent:
   new alerts, escalations, resolutions, silences, verdict changes, or a repeat.

The notification log and the `alerts` table are the only state that matters across a
restart; groups are rebuilt from them at start.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerts.matchers import matches_all
from alerts.model import (
    CostSoFar,
    Notification,
    NotifyReason,
    alert_labels,
    epoch,
    naive_utc,
    primary_alert,
)
from alerts.nflog import DeliveryRecord, NflogEntry, NotificationLog
from alerts.receivers import Receiver, ReceiverBroken
from alerts.routing import Route
from alerts.silences import Silence, SilenceStore
from watchdog.alertstore import Alert, AlertEvent, AlertStore
from watchdog.errors import PermanentError, RetryableError
from watchdog.model import Finding
from watchdog.settings import AlertingSettings
from watchdog.store import Store
from watchdog.verdicts import Scope, Verdict, VerdictChange, VerdictStore, is_person

logger = logging.getLogger(__name__)


class AlertingMetrics:
    """Self-metrics of the alert pipeline, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.notifications = Counter(
            "watchdog_alerts_notifications_total",
            "Notification outcomes by receiver (sent, failed, dropped, disabled).",
            ["receiver", "outcome"],
            registry=r,
        )
        self.groups = Gauge("watchdog_alerts_groups", "Alert groups held in memory.", registry=r)
        self.groups_dropped = Counter(
            "watchdog_alerts_groups_dropped_total",
            "Alerts not grouped because max_groups was reached.",
            registry=r,
        )
        self.receiver_disabled = Gauge(
            "watchdog_alerts_receiver_disabled",
            "1 when a receiver was disabled after repeated failures.",
            ["receiver"],
            registry=r,
        )
        self.slack_inbound = Counter(
            "watchdog_slack_inbound_total",
            "Slack slash commands and button clicks by outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )


@dataclass(slots=True)
class Group:
    """Alerts that share a route and the values of its `group_by` labels."""

    key: str
    route: Route
    labels: dict[str, str]
    created_at: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    flushed: bool = False
    last_flush_at: float = 0.0
    next_flush_at: float | None = None

    def firing(self) -> list[Alert]:
        """Alerts of the group still firing."""
        return [a for a in self.alerts.values() if a.state == "firing"]


@dataclass(slots=True)
class Delivery:
    """What flows through the stages for one (group, receiver) flush."""

    group: Group
    receiver: Receiver
    now: float
    firing: list[Alert] = field(default_factory=list)
    silenced: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    silence: Silence | None = None
    verdict: Verdict | None = None
    verdict_key: str = ""
    entry: NflogEntry | None = None
    reason: NotifyReason | None = None
    notes: list[str] = field(default_factory=list)
    notification: Notification | None = None
    state: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0


class DeliveryWorker:
    """One receiver's queue of groups to deliver, drained by one task.

    The queue holds group keys only and coalesces: a group flushed again while waiting is
    delivered once, with its state at delivery time. Its size is bounded by max_groups.
    """

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.pending: OrderedDict[str, None] = OrderedDict()
        self.busy = False
        self.disabled = False
        self.disabled_reason = ""
        self.failures = 0
        self.wake = asyncio.Event()

    def submit(self, key: str) -> None:
        """Queue `key` for delivery (no-op while disabled)."""
        if self.disabled:
            return
        self.pending[key] = None
        self.wake.set()

    @property
    def idle(self) -> bool:
        """True when nothing is queued or in flight."""
        return not self.pending and not self.busy


class Dispatcher:
    """Owns the groups, their timers and the per-receiver delivery pipeline."""

    def __init__(
        self,
        *,
        settings: AlertingSettings,
        root: Route,
        receivers: Mapping[str, Receiver],
        alerts: AlertStore,
        verdicts: VerdictStore,
        silences: SilenceStore,
        nflog: NotificationLog,
        store: Store,
        metrics: AlertingMetrics,
        link_base: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.root = root
        self.workers = {name: DeliveryWorker(r) for name, r in receivers.items()}
        self.alerts = alerts
        self.verdicts = verdicts
        self.silences = silences
        self.nflog = nflog
        self.store = store
        self.metrics = metrics
        self.link_base = link_base
        self.clock = clock
        self.groups: dict[str, Group] = {}
        self.wake = asyncio.Event()
        self.running = False
        self._to_resolve: set[str] = set()
        # When each firing alert held in a group resolves unless re-asserted (with
        # `resolve_after_s` set). Kept up to date on every change, so a tick compares
        # floats instead of converting every firing alert's timestamp.
        self._resolve_at: dict[str, float] = {}
        self._silence_boundary: float | None = None
        self._ticking = False
        self._last_overflow_log = 0.0
        # One flush per route per group: every receiver of the tree has a worker.
        for route in root.walk():
            if route.receiver not in self.workers:
                raise KeyError(route.receiver)

    # -- start-up --------------------------------------------------------------------
    async def load(self) -> None:
        """Rebuild groups from the firing alerts and the open notification-log entries."""
        now = self.clock()
        known: dict[str, Alert] = {a.id: a for a in self.alerts.open_alerts()}
        # Alerts the receivers were shown that have since resolved (perhaps while we were
        # down): their resolution still has to be told.
        wanted = set().union(*(e.notified_ids for e in self.nflog.open_entries())) - set(known)
        for alert_id in sorted(wanted):
            a = await self.alerts.get(alert_id)
            if a is not None:
                known[a.id] = a
        for a in sorted(known.values(), key=lambda a: a.created_at):
            self._add(a, now, schedule=False, rebuilding=True)
        for g in self.groups.values():
            entry = self.nflog.get(g.key, g.route.receiver)
            if entry is not None and entry.is_open:
                g.flushed = True
                g.last_flush_at = epoch(entry.last_notified_at)
                g.next_flush_at = now  # dedup decides whether anything was missed
            else:
                g.created_at = min(epoch(a.created_at) for a in g.alerts.values())
                g.next_flush_at = g.created_at + g.route.group_wait_s
        self._silence_boundary = self.silences.next_change_s()
        self.metrics.groups.set(len(self.groups))

    # -- intake: listeners (quick, never block) --------------------------------------
    def on_alert(self, ev: AlertEvent) -> None:
        """Route an alert change into its groups and schedule their flushes."""
        if not self.running:
            return
        self._add(ev.alert, self.clock(), schedule=ev.change != "repeat")
        self.wake.set()

    def on_verdict(self, ch: VerdictChange) -> None:
        """Show verdict changes; a person clearing a verdict resolves its alert."""
        if not self.running or ch.action == "dry-run":
            return
        now = self.clock()
        # A person's action (Slack button, CLI) is shown at once; what a detector or the
        # policy set follows the group's timers like the alerts that caused it.
        urgent = is_person(ch.actor)
        for g in self.groups.values():
            if any(_in_scope(a, ch.scope) for a in g.alerts.values()):
                self._schedule(g, now, urgent=urgent)
        if ch.action == "clear" and is_person(ch.actor) and ch.previous and ch.previous.alert_id:
            self._to_resolve.add(ch.previous.alert_id)
        self.wake.set()

    def on_silence(self, silence: Silence) -> None:
        """Re-evaluate the groups a new or ended silence touches."""
        if not self.running:
            return
        now = self.clock()
        for g in self.groups.values():
            if any(matches_all(silence.matchers, alert_labels(a)) for a in g.alerts.values()):
                self._schedule(g, now, urgent=True)
        self._silence_boundary = self.silences.next_change_s()
        self.wake.set()

    def resolve_soon(self, alert_id: str) -> None:
        """Resolve `alert_id` on the next tick (an acknowledgement)."""
        self._to_resolve.add(alert_id)
        self.wake.set()

    def _add(self, a: Alert, now: float, *, schedule: bool, rebuilding: bool = False) -> None:
        labels = alert_labels(a)
        held = False
        for route in self.root.match(labels):
            key, group_labels = route.group_key(labels)
            g = self.groups.get(key)
            if g is None:
                if a.state != "firing" and not rebuilding:
                    continue  # nothing to tell about a group that no longer exists
                if len(self.groups) >= self.settings.max_groups:
                    self.metrics.groups_dropped.inc()
                    if now - self._last_overflow_log > 60:
                        self._last_overflow_log = now
                        logger.warning(
                            "alert groups full (%d): alert %s not notified",
                            len(self.groups),
                            a.id,
                        )
                    continue
                g = Group(key=key, route=route, labels=group_labels, created_at=now)
                self.groups[key] = g
                self.metrics.groups.set(len(self.groups))
            is_new = a.id not in g.alerts
            g.alerts[a.id] = a
            held = True
            if schedule or is_new:
                self._schedule(g, now)
        after = self.settings.resolve_after_s
        if held and a.state == "firing" and after is not None:
            self._resolve_at[a.id] = epoch(a.updated_at) + after
        else:
            self._resolve_at.pop(a.id, None)

    def _schedule(self, g: Group, now: float, *, urgent: bool = False) -> None:
        if not g.flushed:
            due = g.created_at + g.route.group_wait_s
        elif urgent:
            due = now
        else:
            due = max(now, g.last_flush_at + g.route.group_interval_s)
        g.next_flush_at = due if g.next_flush_at is None else min(g.next_flush_at, due)

    # -- timer -----------------------------------------------------------------------
    async def run(self) -> None:
        """Tick whenever something is due or an event arrives; never exits on an error."""
        while True:
            self.wake.clear()
            now = self.clock()
            self._ticking = True
            try:
                await self.tick(now)
            except Exception:  # a bug in one tick must not stop alerting for good
                logger.exception("alert dispatcher tick failed")
            finally:
                self._ticking = False
            wait_s = min(max(self._next_due(now) - self.clock(), 0.0), 60.0)
            try:
                await asyncio.wait_for(self.wake.wait(), wait_s)
            except TimeoutError:
                pass

    async def tick(self, now: float) -> None:
        """Resolve what is due, notice silence boundaries, flush the groups that are due."""
        due = self._to_resolve
        self._to_resolve = set()
        due.update(alert_id for alert_id, at in self._resolve_at.items() if at <= now)
        for alert_id in sorted(due):
            if await self.alerts.resolve(alert_id) is None:  # its event re-enters via on_alert
                self._mark_resolved(alert_id, now)  # already closed elsewhere: stop waiting on it
        if self._silence_boundary is not None and self._silence_boundary <= now:
            self.silences.prune()
            self._silence_boundary = self.silences.next_change_s()
            for g in self.groups.values():
                self._schedule(g, now, urgent=True)
        for g in list(self.groups.values()):
            if g.next_flush_at is not None and g.next_flush_at <= now:
                self._flush(g, now)

    def _mark_resolved(self, alert_id: str, now: float) -> None:
        self._resolve_at.pop(alert_id, None)
        for g in self.groups.values():
            a = g.alerts.get(alert_id)
            if a is not None and a.state == "firing":
                g.alerts[alert_id] = replace(a, state="resolved", resolved_at=naive_utc(now))
                self._schedule(g, now)

    def _flush(self, g: Group, now: float) -> None:
        g.flushed = True
        g.last_flush_at = now
        g.next_flush_at = now + g.route.repeat_interval_s if g.firing() else None
        self.workers[g.route.receiver].submit(g.key)

    def _next_due(self, now: float) -> float:
        times = [g.next_flush_at for g in self.groups.values() if g.next_flush_at is not None]
        if self._resolve_at:
            times.append(min(self._resolve_at.values()))
        if self._silence_boundary is not None:
            times.append(self._silence_boundary)
        if self._to_resolve:
            times.append(now)
        return min(times, default=now + 60.0)

    def is_idle(self) -> bool:
        """Tell whether nothing is due now and every worker is idle (tests settle on this)."""
        now = self.clock()
        if self._ticking or self._to_resolve or self._next_due(now) <= now:
            return False
        return all(w.idle for w in self.workers.values())

    # -- delivery --------------------------------------------------------------------
    async def work(self, worker: DeliveryWorker) -> None:
        """Drain one receiver's queue forever."""
        while True:
            await worker.wake.wait()
            worker.wake.clear()
            while worker.pending and not worker.disabled:
                key, _ = worker.pending.popitem(last=False)
                worker.busy = True
                try:
                    await self.deliver(worker, key)
                except Exception:  # one group's failure must not stop the receiver
                    logger.exception("delivery of group %s to %s failed", key, worker.receiver.name)
                finally:
                    worker.busy = False
            if worker.disabled:
                worker.pending.clear()

    async def deliver(self, worker: DeliveryWorker, key: str) -> None:
        """Run the stages for one group and receiver."""
        g = self.groups.get(key)
        if g is None:
            return
        d = Delivery(group=g, receiver=worker.receiver, now=self.clock())
        self._silence_stage(d)
        if not self._dedup_stage(d):
            self._prune(g, d.entry)
            return
        if d.reason is None:  # closing the incident without telling (send_resolved off)
            await self._record_stage(d, outcome="closed")
            self._prune(g, d.entry)
            return
        await self._enrich_stage(d)
        if await self._retry_stage(worker, d):
            await self._record_stage(d, outcome="sent")
            self._prune(g, d.entry)

    def _silence_stage(self, d: Delivery) -> None:
        """Split the group into firing, muted and resolved alerts."""
        now_dt = naive_utc(d.now)
        for a in d.group.alerts.values():
            if a.state != "firing":
                d.resolved.append(a)
                continue
            s = self.silences.muting(alert_labels(a), now_dt)
            if s is None:
                d.firing.append(a)
            else:
                d.silenced.append(a)
                d.silence = s if d.silence is None or s.end > d.silence.end else d.silence

    def _dedup_stage(self, d: Delivery) -> bool:
        """Decide whether (and why) the receiver hears about the group now.

        Muted and resolved alerts the receiver was never shown stay invisible: a silence
        hides what it matches, and an alert that came and went unseen is not news.
        """
        entry = self.nflog.get(d.group.key, d.receiver.name)
        d.entry = entry if entry is not None and entry.is_open else None
        notified = d.entry.notified_ids if d.entry is not None else set()
        d.silenced = [a for a in d.silenced if a.id in notified]
        d.resolved = [a for a in d.resolved if a.id in notified]
        if not d.silenced:
            d.silence = None
        lead = primary_alert(d.firing) or primary_alert(d.silenced) or primary_alert(d.resolved)
        if lead is not None:
            d.verdict = self.verdicts.effective(lead.agent_name, lead.session_id, lead.trace_id)
        if d.verdict is not None:
            v = d.verdict
            d.verdict_key = (
                f"{v.state}|{v.scope.type}|{v.scope.value}|{v.actor}|{v.set_at.isoformat()}"
            )
        entry = d.entry
        if entry is None:
            if not d.firing:
                return False  # never shown and nothing firing: stay quiet
            d.reason = "first"
            first = primary_alert(d.firing)
            assert first is not None
            d.notes.append(f"New incident: {first.summary}")
            return True
        firing = {f"{a.id}:{a.severity}" for a in d.firing}
        shown_before = {f.split(":", 1)[0] for f in entry.firing}
        added = [a for a in d.firing if f"{a.id}:{a.severity}" not in entry.firing]
        fresh = [a for a in added if a.id not in shown_before]
        escalated = [a for a in added if a.id in shown_before]
        resolved = [a for a in d.resolved if a.id not in entry.resolved]
        silenced = [a for a in d.silenced if a.id not in entry.silenced]
        reasons: list[NotifyReason] = []
        if fresh:
            reasons.append("new_alerts")
            d.notes += [f"New: {a.summary}" for a in fresh]
        if escalated:
            reasons.append("escalated")
            d.notes += [f"Escalated to {a.severity}: {a.summary}" for a in escalated]
        if resolved and d.receiver.send_resolved:
            reasons.append("resolved")
            d.notes += [f"Resolved: {a.summary}" for a in resolved]
        if silenced:
            reasons.append("silenced")
            if d.silence is not None:
                d.notes.append(f"Silenced: {d.silence.describe()}")
        if d.verdict_key != entry.verdict:
            reasons.append("verdict")
            d.notes.append(_verdict_note(d.verdict))
        if (
            not reasons
            and firing
            and d.now - epoch(entry.last_notified_at) >= d.group.route.repeat_interval_s
        ):
            reasons.append("repeat")
            d.notes.append(f"Still firing: {len(d.firing)} alert(s)")
        if reasons:
            d.reason = reasons[0]
            return True
        # All resolved but the receiver does not want resolutions: close the incident quietly.
        return not d.firing and not d.silenced

    async def _enrich_stage(self, d: Delivery) -> None:
        lead = primary_alert(d.firing) or primary_alert(d.silenced) or primary_alert(d.resolved)
        assert lead is not None and d.reason is not None
        base = self.link_base().rstrip("/")
        run_url = f"{base}/runs/{lead.trace_id}" if base and lead.trace_id else None
        d.notification = Notification(
            group_key=d.group.key,
            receiver=d.receiver.name,
            reason=d.reason,
            note="\n".join(d.notes),
            group_labels=dict(d.group.labels),
            firing=tuple(d.firing),
            resolved=tuple(d.resolved),
            silenced=tuple(d.silenced),
            verdict=d.verdict,
            at=naive_utc(d.now),
            run_url=run_url,
            cost=await self._cost(lead),
            silenced_by=d.silence.describe() if d.silence is not None else None,
        )

    async def _cost(self, a: Alert) -> CostSoFar | None:
        if not a.session_id and not a.trace_id:
            return None
        session, trace = a.session_id or "", a.trace_id or ""
        try:
            rows = await asyncio.wait_for(
                self.store.read(
                    lambda cur: cur.execute(
                        "SELECT sum(cost_usd) FILTER (WHERE session_id = ?), "
                        "sum(cost_usd) FILTER (WHERE trace_id = ?), "
                        "count(*) FILTER (WHERE session_id = ?) "
                        "FROM steps WHERE session_id = ? OR trace_id = ?",
                        [session, trace, session, session, trace],
                    ).fetchall()
                ),
                5.0,
            )
        except Exception:  # the message goes out without a cost rather than not at all
            logger.warning("cost lookup for alert %s failed", a.id, exc_info=True)
            return None
        s, r, n = rows[0] if rows else (None, None, 0)
        return CostSoFar(
            session_usd=float(s) if s is not None else None,
            run_usd=float(r) if r is not None else None,
            steps=int(n or 0),
        )

    async def _retry_stage(self, worker: DeliveryWorker, d: Delivery) -> bool:
        """Deliver with exponential backoff honouring Retry-After; False when it failed."""
        assert d.notification is not None
        s = self.settings
        previous_state = dict(d.entry.receiver_state) if d.entry is not None else {}
        last_error = ""
        while d.attempts < s.retry_max_attempts:
            d.attempts += 1
            try:
                d.state = await d.receiver.notify(d.notification, previous_state)
            except ReceiverBroken as err:
                await self._disable(worker, d, str(err))
                return False
            except PermanentError as err:
                # This message can never go out: remember it as told so it is not retried
                # forever; the next change is delivered normally.
                logger.error("alert group %s to %s dropped: %s", d.group.key, d.receiver.name, err)
                self.metrics.notifications.labels(d.receiver.name, "dropped").inc()
                d.state = previous_state
                await self._record_stage(d, outcome="dropped", error=str(err))
                self._prune(d.group, d.entry)
                return False
            except RetryableError as err:
                last_error = str(err)
                delay = self._backoff(d.attempts, err.retry_after)
            except Exception as err:  # an unexpected bug in a receiver: retry, then give up
                logger.exception("receiver %s raised", d.receiver.name)
                last_error = type(err).__name__
                delay = self._backoff(d.attempts, None)
            else:
                worker.failures = 0
                return True
            if d.attempts < s.retry_max_attempts:
                logger.info(
                    "receiver %s: %s; retry %d in %.1fs",
                    d.receiver.name,
                    last_error,
                    d.attempts,
                    delay,
                )
                await asyncio.sleep(delay)
        worker.failures += 1
        self.metrics.notifications.labels(d.receiver.name, "failed").inc()
        logger.warning(
            "receiver %s failed group %s after %d attempts: %s",
            d.receiver.name,
            d.group.key,
            d.attempts,
            last_error,
        )
        await self.nflog.log_delivery(self._record(d, "failed", last_error))
        if worker.failures >= s.disable_after_failures:
            await self._disable(
                worker, d, f"{worker.failures} failed notifications; last: {last_error}"
            )
        else:
            # Not told yet: look again after a group interval (nothing is dropped).
            g = d.group
            g.next_flush_at = self.clock() + max(g.route.group_interval_s, s.retry_initial_s)
            self.wake.set()
        return False

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        delay = min(s.retry_initial_s * 2.0 ** (attempt - 1), s.retry_max_s)
        delay *= random.uniform(0.8, 1.0)
        return max(delay, retry_after) if retry_after is not None else delay

    async def _disable(self, worker: DeliveryWorker, d: Delivery, why: str) -> None:
        """Stop using a receiver and say so: log line, delivery row, and an alert."""
        name = worker.receiver.name
        worker.disabled = True
        worker.disabled_reason = why
        worker.pending.clear()
        self.metrics.receiver_disabled.labels(name).set(1)
        self.metrics.notifications.labels(name, "disabled").inc()
        logger.error("alert receiver %s (%s) disabled: %s", name, worker.receiver.kind, why)
        await self.nflog.log_delivery(self._record(d, "disabled", why))
        await self.alerts.record(
            [
                Finding(
                    detector="rule",
                    rule="receiver_disabled",
                    # info: the verdict policy acts on nothing (there is no agent to stop)
                    severity="info",
                    summary=f"Alert receiver {name} ({worker.receiver.kind}) disabled: {why}",
                    agent_name="watchdog",
                    service_name="watchdog",
                    evidence={"receiver": name, "kind": worker.receiver.kind, "error": why},
                    key=name,
                )
            ]
        )

    def _record(self, d: Delivery, outcome: str, error: str | None = None) -> DeliveryRecord:
        return DeliveryRecord(
            group_key=d.group.key,
            receiver=d.receiver.name,
            reason=d.reason or "close",
            outcome=outcome,
            attempts=d.attempts,
            sent_at=naive_utc(d.now),
            error=error,
            alert_ids=sorted(d.group.alerts),
        )

    async def _record_stage(self, d: Delivery, *, outcome: str, error: str | None = None) -> None:
        now = naive_utc(d.now)
        entry = NflogEntry(
            group_key=d.group.key,
            receiver=d.receiver.name,
            group_labels=dict(d.group.labels),
            firing=frozenset(f"{a.id}:{a.severity}" for a in d.firing),
            resolved=frozenset(a.id for a in d.resolved),
            silenced=frozenset(a.id for a in d.silenced),
            verdict=d.verdict_key,
            receiver_state=d.state,
            first_notified_at=d.entry.first_notified_at if d.entry is not None else now,
            last_notified_at=now,
            notifications=(d.entry.notifications if d.entry is not None else 0) + 1,
        )
        await self.nflog.record(entry, self._record(d, outcome, error))
        d.entry = entry
        if outcome == "sent":
            self.metrics.notifications.labels(d.receiver.name, "sent").inc()

    def _prune(self, g: Group, entry: NflogEntry | None) -> None:
        """Forget resolved alerts with nothing left to tell; drop a group with none firing."""
        pending = set()  # shown while firing, resolution not yet told
        if entry is not None and entry.is_open:
            pending = entry.notified_ids - entry.resolved
        g.alerts = {k: a for k, a in g.alerts.items() if a.state == "firing" or a.id in pending}
        if not g.firing() and self.groups.get(g.key) is g:
            del self.groups[g.key]
            self.metrics.groups.set(len(self.groups))


def _verdict_note(v: Verdict | None) -> str:
    if v is None:
        return "Verdict cleared: the run may continue"
    return f"Verdict: {v.state} on {v.scope.type} {v.scope.value} by {v.actor}" + (
        f" ({v.reason})" if v.reason else ""
    )


def _in_scope(a: Alert, scope: Scope) -> bool:
    if scope.type == "agent":
        return a.agent_name == scope.value
    if scope.type == "session":
        return a.session_id == scope.value
    return a.trace_id == scope.value

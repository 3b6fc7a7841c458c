"""The enforcement policy: alert changes become verdicts, as configured data says.

Default (documented in `PolicySettings`): an alert's severity picks the verdict —
`info` → nothing, `warn` → warn, `pause` → pause, `kill` → kill — on the alert's
session, else its trace, else its agent. An alert about every agent (agent `*`) acts on
its session or trace only, never on an agent scope (see `scope_for`). `enforcement.policy.rules` overrides the
action, scope, ttl or dry-run per rule (keyed `detector.rule`, or `rule` alone);
`enforcement.policy.dry_run` turns every rule into a dry-run.

Guarantees:

- Only `new` and `escalated` alerts set verdicts; a `repeat` never re-sets a verdict a
  person cleared (the detector has to escalate to act again).
- A dry-run writes a `verdict_audit` row (action `dry-run`) with what would have been
  set, and sets nothing.
- A `resolved` alert clears the `warn`/`deny` verdicts it set; `pause` and `kill`
  stay until a person (or the pause's ttl) ends them.
- The actor of every verdict is `detector:<detector>.<rule>` with the alert id.
- Subscribed with `subscribe_batches(policy.on_alerts, urgent=policy.stops_agents)`, a
  storm's verdicts are written a batch per transaction, in commit order, and a kill,
  pause or deny is dispatched without waiting to batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Final

from watchdog.alertstore import Alert, AlertEvent
from watchdog.detection import RuleInfo
from watchdog.errors import ConfigError
from watchdog.settings import PolicyRule, PolicySettings
from watchdog.verdicts import Scope, VerdictError, VerdictRequest, VerdictStore

logger = logging.getLogger(__name__)

ALL_AGENTS: Final = "*"
"""The agent name of a finding about every agent (spend's total-day cap and burn rate)."""


def rule_key(detector: str, rule: str) -> str:
    """Return the policy key of a detector rule (`detector.rule`)."""
    return f"{detector}.{rule}"


def validate_policy_rules(settings: PolicySettings, known: Iterable[RuleInfo]) -> None:
    """Raise ConfigError for a `detector.rule` policy key that names no shipped rule.

    Keys of detectors that publish no rule list (declarative `rule` alerts) and bare rule
    keys are left alone: their ids come from user rules files.
    """
    rules_by_detector: dict[str, set[str]] = {}
    for info in known:
        rules_by_detector.setdefault(info.detector, set()).add(info.rule)
    for key in settings.rules:
        detector, dot, rule = key.partition(".")
        if dot and detector in rules_by_detector and rule not in rules_by_detector[detector]:
            choices = ", ".join(sorted(rules_by_detector[detector]))
            raise ConfigError(
                f"enforcement.policy.rules.{key}: {detector} has no rule {rule!r} "
                f"(its rules: {choices})"
            )


def scope_for(alert: Alert, how: str) -> Scope | None:
    """Pick the verdict scope for `alert`: `auto` = session, else trace, else agent.

    An alert about every agent (agent `*`: the total-day cap, the all-agent burn rate)
    never gets an agent scope, whatever `how` says; it acts on the session, else the
    run (trace), that crossed the line, or on nothing. Why: a verdict scope names one
    agent, session or trace, and no agent is called `*` (a verdict there would stop
    nobody while looking enforced). Pausing every agent instead would turn one global
    tally into a fleet-wide outage, and it is not needed to hold the cap: the guard's
    budget reservation (watchdog.budgets) already refuses every agent's new spend past
    `budgets.total_day_usd`. So the run that crossed it stops, the others are refused
    spend by the reservation, and a person decides on anything broader.
    """
    order = {
        "auto": ("session", "trace", "agent"),
        "session": ("session", "trace", "agent"),
        "trace": ("trace", "session", "agent"),
        "agent": ("agent",),
    }[how]
    if alert.agent_name == ALL_AGENTS:
        order = tuple(kind for kind in order if kind != "agent") or ("session", "trace")
    values = {"agent": alert.agent_name, "session": alert.session_id, "trace": alert.trace_id}
    for kind in order:
        value = values[kind]
        if value:
            return Scope(kind, value)  # type: ignore[arg-type]
    return None


class AlertPolicy:
    """Subscribes to alert changes and sets (or dry-runs) verdicts by the configured policy."""

    def __init__(self, settings: PolicySettings, verdicts: VerdictStore) -> None:
        self._settings = settings
        self._verdicts = verdicts

    def rule_for(self, alert: Alert) -> PolicyRule | None:
        """Return the per-rule override that applies to `alert`, if any."""
        rules = self._settings.rules
        return rules.get(rule_key(alert.detector, alert.rule)) or rules.get(alert.rule)

    def decide(self, alert: Alert) -> tuple[str, Scope | None, bool, float | None]:
        """Return (action, scope, dry_run, ttl_s) the policy assigns to `alert`."""
        rule = self.rule_for(alert)
        action = (rule.action if rule else None) or self._settings.severity_actions.get(
            alert.severity,
            "none",  # type: ignore[call-overload]
        )
        scope = scope_for(alert, (rule.scope if rule else None) or self._settings.scope)
        dry_run = self._settings.dry_run or bool(rule and rule.dry_run)
        return action, scope, dry_run, rule.ttl_s if rule else None

    def stops_agents(self, event: AlertEvent) -> bool:
        """Tell whether handling `event` sets a kill, pause or deny (not a dry-run).

        The alert store dispatches such an event at once instead of waiting to batch
        it (see `AlertStore.subscribe_batches`); everything committed before it is
        handled first, in order, in the same batch (one transaction).
        """
        if event.change not in ("new", "escalated"):
            return False
        action, scope, dry_run, _ = self.decide(event.alert)
        return action in ("kill", "pause", "deny") and scope is not None and not dry_run

    async def on_alert(self, event: AlertEvent) -> None:
        """React to one alert change (subscribed with `daemon.alerts.subscribe`)."""
        await self.on_alerts([event])

    async def on_alerts(self, events: Sequence[AlertEvent]) -> None:
        """React to alert changes in order (`daemon.alerts.subscribe_batches`).

        Consecutive verdicts are set in one transaction (`VerdictStore.set_many`), so an
        alert storm costs a few writes, not one per alert.
        """
        sets: list[tuple[Alert, VerdictRequest]] = []
        for event in events:
            alert = event.alert
            actor = f"detector:{rule_key(alert.detector, alert.rule)}"
            if event.change == "resolved":
                await self._set_all(sets)
                sets = []
                await self._clear_soft(alert, actor)
                continue
            if event.change not in ("new", "escalated"):
                continue
            action, scope, dry_run, ttl_s = self.decide(alert)
            if action == "none":
                continue
            if scope is None:
                logger.info(
                    "policy: alert %s (%s) names no scope to %s "
                    "(an all-agents alert acts on its session or run only)",
                    alert.id,
                    rule_key(alert.detector, alert.rule),
                    action,
                )
                continue
            reason = f"{alert.severity}: {alert.summary}"
            if not dry_run:
                ttl = None if action == "kill" else ttl_s
                sets.append((alert, VerdictRequest(scope, action, actor, reason, alert.id, ttl)))
                continue
            await self._set_all(sets)
            sets = []
            try:
                await self._verdicts.record_dry_run(
                    scope, action, actor=actor, reason=reason, alert_id=alert.id
                )
            except VerdictError as err:
                self._refused(alert, action, scope, err)
        await self._set_all(sets)

    async def _set_all(self, sets: list[tuple[Alert, VerdictRequest]]) -> None:
        if not sets:
            return
        try:
            await self._verdicts.set_many([r for _, r in sets])
            return
        except VerdictError:
            pass  # one bad request refuses the batch: set one by one, report the bad one
        for alert, r in sets:
            try:
                await self._verdicts.set_many([r])
            except VerdictError as err:  # bad data in one alert must not stop the others
                self._refused(alert, r.state, r.scope, err)

    @staticmethod
    def _refused(alert: Alert, action: str, scope: object, err: VerdictError) -> None:
        logger.warning(
            "policy could not set %s on %s for alert %s: %s", action, scope, alert.id, err
        )

    async def _clear_soft(self, alert: Alert, actor: str) -> None:
        for v in self._verdicts.all():
            if v.alert_id == alert.id and v.state in ("warn", "deny"):
                await self._verdicts.clear(v.scope, actor=actor, reason="alert resolved")

"""The composition root: the one module that imports the plugin packages and wires them.

`collectors/`, `detectors/`, `alerts/` and `dashboards/` never import each other; this
module builds their components for a daemon, in start order (sinks before sources).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alerts.actuators import AgentIndex, SignalActuator, WebhookActuator
from alerts.cli import add_silence_commands
from alerts.component import build_alerting, validate_alerting
from collectors.decode_pool import DecodePool
from collectors.otlp_http import OtlpHttpCollector
from dashboards.app import DashboardApp
from detectors.context import ContextDetector
from detectors.context_rules import ContextRule, load_rules
from detectors.drift import DriftDetector, validate_drift_context
from detectors.drift_judge import DriftJudge
from detectors.engine import DetectorEngine
from detectors.loop import LoopDetector
from detectors.spend import SpendDetector
from watchdog.budgets import BudgetLedger
from watchdog.demo import add_demo_command
from watchdog.detection import RuleInfo
from watchdog.guard_api import GuardApi, add_guard_commands
from watchdog.holds import HoldManager
from watchdog.policy import AlertPolicy, validate_policy_rules
from watchdog.pricing import Pricer
from watchdog.settings import Settings

if TYPE_CHECKING:
    from watchdog.daemon import Daemon


def wire_components(daemon: Daemon) -> None:
    """Create every component of `daemon`, mount its routes and append it to the start list."""
    settings = daemon.settings
    decode_pool = None
    if settings.ingest.decode_workers:
        decode_pool = DecodePool(settings.ingest.decode_workers, settings.prices.overrides_file)
        daemon.components.append(decode_pool)
    collector = OtlpHttpCollector(
        daemon.queue,
        daemon.pricer,
        max_body_bytes=settings.server.max_body_bytes,
        ack_timeout_s=settings.ingest.ack_timeout_s,
        decode_pool=decode_pool,
    )
    collector.add_routes(daemon.app)

    # -- detection (issue 3): one engine runs every detector; register one with engine.add --
    if settings.detectors.enabled:
        engine = DetectorEngine(
            settings.detectors, daemon.store, daemon.alerts.record, daemon.supervisor
        )
        every_s = settings.detectors.baseline_interval_s
        engine.add(LoopDetector(settings.detectors.loop, every_s))
        engine.add(SpendDetector(settings.budgets, settings.detectors.spend, every_s))
        # drift/context (issue 4); `.check_action(agent, session, tool, args)` serves the guard
        judge = DriftJudge(
            settings.detectors.drift.judge, daemon.alerts.record, daemon.supervisor, daemon.store
        )
        daemon.services["drift"] = DriftDetector(settings.detectors, judge_sink=judge.submit)
        daemon.services["context"] = ContextDetector(settings.detectors)
        engine.add(daemon.services["drift"])
        engine.add(daemon.services["context"])
        daemon.components.append(judge)
        daemon.writer.subscribe(engine.on_commit)
        daemon.metric_registries.append(engine.metrics.registry)
        daemon.services["detectors"] = engine
        daemon.components.append(engine)

    # -- enforcement (issue 5): verdicts, policy, budgets, holds, guard API, push --------
    enforcement = settings.enforcement
    # The alert listener queues, right after detection: settle() waits for detection's
    # alerts to reach every listener before the listeners' components settle.
    daemon.components.append(daemon.alerts)
    daemon.components.append(daemon.verdicts)  # built in Daemon.__init__, loaded in start
    policy = AlertPolicy(enforcement.policy, daemon.verdicts)
    daemon.alerts.subscribe_batches(policy.on_alerts, urgent=policy.stops_agents)
    ledger = BudgetLedger(settings.budgets, reservation_ttl_s=enforcement.reservation_ttl_s)
    daemon.writer.subscribe(ledger.on_commit)
    holds = HoldManager(daemon.store, daemon.verdicts, daemon.supervisor)
    guard_api = GuardApi(
        enforcement,
        daemon.verdicts,
        ledger,
        holds,
        load_budgets=lambda: ledger.load(daemon.store),
        action_checks=[
            daemon.services[name].check_action
            for name in ("drift", "context")
            if hasattr(daemon.services.get(name), "check_action")
        ],
    )
    guard_api.add_routes(daemon.app)
    agent_index = AgentIndex()
    daemon.writer.subscribe(agent_index.on_commit)
    webhook = WebhookActuator(enforcement.webhook, agent_index, daemon.supervisor)
    signals = SignalActuator(enforcement.signal, agent_index)
    daemon.verdicts.subscribe(webhook.on_verdict)
    daemon.verdicts.subscribe(signals.on_verdict)
    daemon.metric_registries += [guard_api.metrics.registry, webhook.registry]
    # `cancel_holds(scope, actor=…)` is what Slack's resume calls; `holds.cancel(id, …)` too.
    daemon.services.update(budgets=ledger, holds=holds, cancel_holds=holds.cancel_scope)
    daemon.components += [holds, guard_api, webhook, signals]

    # -- alerting (issue 6): groups, silences, routes, receivers, Slack inbound -----------
    alerting = build_alerting(daemon)  # mounts /slack/* and /api/v1/silences, adds metrics
    daemon.components.append(alerting)

    # -- dashboard (issue 7): pages at /, JSON under /api/dashboard/, agent metrics ---------
    if settings.dashboard.enabled:
        dashboard = DashboardApp(daemon)
        dashboard.add_routes(daemon.app)
        daemon.metric_registries.append(dashboard.metric_registry)
        daemon.services["dashboard"] = dashboard
        daemon.components.append(dashboard)


def known_rules() -> list[RuleInfo]:
    """Return every rule id the shipped detectors publish (policy keys are checked against them)."""
    from detectors import context, drift, loop, spend

    return [*loop.RULES, *spend.RULES, *drift.RULES, *context.RULES]


def shipped_context_rules() -> list[ContextRule]:
    """Return the declarative context rules shipped in detectors/rules/ (for the docs)."""
    return load_rules([])


def validate_config(settings: Settings) -> None:
    """Run every validation `watchdog run` runs before binding; raise ConfigError on a problem."""
    validate_policy_rules(settings.enforcement.policy, known_rules())
    Pricer(settings.prices.overrides_file)
    validate_drift_context(settings.detectors)
    validate_alerting(settings)


def add_cli_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the subcommands the plugin packages contribute (none yet)."""
    add_guard_commands(sub, add_common)
    add_silence_commands(sub, add_common)
    add_demo_command(sub)  # issue 8: `watchdog demo`

"""The route tree: which receiver an alert goes to and how it is grouped.

Matching follows Alertmanager: depth-first; a route matches when all its matchers match;
the first matching child wins unless it sets `continue_matching`; a route none of whose
children match takes the alert itself. The root (the `alerting` section) matches
everything. Child routes inherit every unset option from their parent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from alerts.matchers import Matcher, matches_all, parse_matchers
from watchdog.errors import ConfigError
from watchdog.settings import AlertingSettings, AlertRoute


@dataclass(frozen=True, slots=True)
class Route:
    """One node of the tree with its options resolved (nothing left to inherit)."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    continue_matching: bool
    children: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Find the routes (this one or descendants) that take an alert with `labels`."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.children:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_matching:
                break
        return found or [self]

    def walk(self) -> list[Route]:
        """List this route and every descendant, depth-first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def group_key(self, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Compute the stable id of the group an alert with `labels` joins, and its labels."""
        group_labels = {k: labels.get(k, "") for k in self.group_by}
        raw = json.dumps([self.path, self.receiver, sorted(group_labels.items())])
        return hashlib.sha256(raw.encode()).hexdigest()[:20], group_labels


def build_routes(settings: AlertingSettings, default_receiver: str) -> Route:
    """Resolve the settings into a route tree; raise ConfigError on a bad matcher."""

    def child(r: AlertRoute, parent: Route, path: str) -> Route:
        try:
            matchers = parse_matchers(r.matchers)
        except ValueError as err:  # settings validated these; kept for direct callers
            raise ConfigError(f"alerting.{path}.matchers: {err}") from err
        node = Route(
            path=path,
            receiver=r.receiver or parent.receiver,
            matchers=matchers,
            group_by=tuple(r.group_by) if r.group_by is not None else parent.group_by,
            group_wait_s=_pick(r.group_wait_s, parent.group_wait_s),
            group_interval_s=_pick(r.group_interval_s, parent.group_interval_s),
            repeat_interval_s=_pick(r.repeat_interval_s, parent.repeat_interval_s),
            continue_matching=r.continue_matching,
        )
        kids = tuple(child(c, node, f"{path}.routes.{i}") for i, c in enumerate(r.routes))
        return replace(node, children=kids)

    root = Route(
        path="root",
        receiver=settings.receiver or default_receiver,
        matchers=(),
        group_by=tuple(settings.group_by),
        group_wait_s=settings.group_wait_s,
        group_interval_s=settings.group_interval_s,
        repeat_interval_s=settings.repeat_interval_s,
        continue_matching=False,
    )
    kids = tuple(child(r, root, f"routes.{i}") for i, r in enumerate(settings.routes))
    return replace(root, children=kids)


def receivers_used(root: Route) -> Sequence[str]:
    """Every receiver name some route sends to, in tree order, without repeats."""
    return list(dict.fromkeys(r.receiver for r in root.walk()))


def _pick(value: float | None, inherited: float) -> float:
    return inherited if value is None else value

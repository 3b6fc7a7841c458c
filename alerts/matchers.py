"""Label matchers (`label=value`, `!=`, `=~`, `!~`) shared by routes and silences.

The grammar and the set of labels come from `watchdog.settings` so that a route in the
settings file and a silence typed in Slack are checked by the same code. Regexes match
the whole value, as in Alertmanager; a missing label matches as the empty string.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from watchdog.settings import MATCHER_RE, parse_matcher


@dataclass(frozen=True, slots=True)
class Matcher:
    """One condition on one label; `matches` is total (never raises)."""

    label: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse `label<op>value`; raise ValueError naming what is wrong."""
        label, op, value = parse_matcher(text)
        regex = re.compile(value) if op in ("=~", "!~") else None
        return cls(label, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Tell whether the label's value satisfies this matcher."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None  # set by parse() for regex operators
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """Parse several matchers; raise ValueError on the first bad one."""
    return tuple(Matcher.parse(t) for t in texts)


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Tell whether every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


def is_matcher(token: str) -> bool:
    """Tell whether `token` looks like a matcher (it may still name an unknown label)."""
    return MATCHER_RE.match(token) is not None


def split_words(text: str) -> list[str]:
    """Split command text into words, honouring quotes; unbalanced quotes split on spaces."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()

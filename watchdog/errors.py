"""The small error hierarchy every watchdog component raises from."""

from __future__ import annotations


class WatchdogError(Exception):
    """Base of every error watchdog raises on purpose."""


class ConfigError(WatchdogError):
    """A setting or rules file is invalid; the message names the path of the field."""


class PermanentError(WatchdogError):
    """The input can never succeed; the caller must not retry it."""


class RetryableError(WatchdogError):
    """A transient refusal (overload, storage hiccup); the caller may retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryRejected(WatchdogError):
    """A user SQL statement was refused by the guard or failed; the message says why."""


class QueryTimeout(QueryRejected):
    """A user SQL statement ran past its deadline and was interrupted."""

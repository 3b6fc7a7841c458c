"""The live-update feed: a change counter the dashboard's event stream waits on.

Commits, alert changes and verdict changes bump one sequence number and mark a topic.
Listeners only bump a counter and wake waiters (they run on the writer's and alert
store's paths, which must stay quick); pages then refetch what they show. A burst of
commits therefore costs one refetch per page per `stream_min_interval_ms`, not one per
commit, and the feed holds no per-event memory at all.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

TOPICS: Final = ("steps", "alerts", "verdicts", "silences")


class ChangeFeed:
    """A monotonically increasing change counter with the last sequence of each topic."""

    def __init__(self) -> None:
        self.seq = 0
        self.topic_seq: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self._changed = asyncio.Event()
        self.closed = False

    def bump(self, topic: str) -> None:
        """Record a change of `topic` and wake every waiter."""
        self.seq += 1
        self.topic_seq[topic] = self.seq
        self._changed.set()
        # Waiters hold the old event; a fresh one makes the next wait block again.
        self._changed = asyncio.Event()

    def topics_since(self, seq: int) -> list[str]:
        """Topics changed after sequence number `seq`."""
        return [t for t, s in self.topic_seq.items() if s > seq]

    async def wait_after(self, seq: int, timeout_s: float) -> bool:
        """Wait until the counter passes `seq` or the feed closes; False on timeout."""
        if self.seq > seq or self.closed:
            return True
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Wake every waiter for good (shutdown): streams see `closed` and end."""
        self.closed = True
        self._changed.set()

    # -- listeners (signatures of the writer, alert store and verdict store) --------------
    def on_commit(self, _notice: Any) -> None:
        """BatchWriter listener."""
        self.bump("steps")

    def on_alert(self, _event: Any) -> None:
        """AlertStore listener."""
        self.bump("alerts")

    def on_verdict(self, _change: Any) -> None:
        """Verdict store listener."""
        self.bump("verdicts")

    def on_silence(self, _silence: Any) -> None:
        """Silence store listener."""
        self.bump("silences")

"""An agent that calls one risky tool through the guard and reports what happened.

    python tests/agents/guard_hold_agent.py --url URL --agent A --tool send_email

Prints one JSON line: {"outcome": "sent"|"denied"|"halted", "reason", "hold_id", "elapsed_s"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchdog.guard import ActionDenied, AgentHalted, Guard


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--session", default="hold-session")
    p.add_argument("--tool", default="send_email")
    a = p.parse_args()
    guard = Guard(a.url, agent=a.agent, session=a.session, timeout_s=10.0)
    sent: list[str] = []

    @guard.tool(a.tool)
    def send(to: str, body: str) -> None:
        sent.append(to)

    started = time.monotonic()
    outcome: dict[str, object] = {}
    try:
        send("all-customers@example.com", body="Your refund is on its way")
        outcome = {"outcome": "sent" if sent else "not-called"}
    except ActionDenied as err:
        outcome = {
            "outcome": "denied",
            "reason": err.reason,
            "hold_id": err.answer.get("hold", {}).get("hold_id"),
        }
    except AgentHalted as err:
        outcome = {"outcome": "halted", "reason": err.reason}
    outcome["called"] = bool(sent)
    outcome["elapsed_s"] = round(time.monotonic() - started, 3)
    print(json.dumps(outcome), flush=True)
    guard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`watchdog demo`: every failure mode watchdog exists for, caught in under a minute on a laptop.

The demo starts the daemon (or uses one at `--url`), a local fake of OpenAI's
chat-completions API and five agent processes built the way a team would build them (the
`openai` client, OpenInference instrumentation, the OTel SDK exporting to watchdog, and
`watchdog.guard` before every step). One loops on a failing tool, one drifts from finding
articles to rewriting the website, one emails the wrong price to 200 customers, one runs
up its bill, and the others just work. It narrates what happens, then reports what each
detector found and what was done, and where to look (dashboard, `watchdog sql`).

The agents need the `demo` extra: `pip install 'agent-watchdog[demo]'`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_demo_command"]


def add_demo_command(sub: Any) -> None:
    """Register `watchdog demo` on the CLI's subparsers."""
    p = sub.add_parser(
        "demo",
        help="run a fleet of simulated agents and watch watchdog catch each failure",
        description="Run five agents (the openai client, OpenInference, the OTel SDK and "
        "watchdog.guard) against a local fake LLM and watch watchdog catch a loop, goal drift, "
        "a wrong-context email and a cost explosion, while the normal agents stay quiet.",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="run the scenario, print the report and exit (0 when every check passed)",
    )
    p.add_argument("--url", help="use the watchdog running at URL instead of starting one")
    p.add_argument(
        "--data-dir", type=Path, help="data directory of the started daemon (default: temporary)"
    )
    p.add_argument("--port", type=int, default=0, help="port of the started daemon (0 = free)")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the settings the demo runs the daemon with, then exit",
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from watchdog.demo.scenarios import DEMO_CONFIG

    if args.print_config:
        print(DEMO_CONFIG, end="")
        return 0
    from watchdog.demo.runner import run_demo

    return run_demo(once=args.once, url=args.url, data_dir=args.data_dir, port=args.port)

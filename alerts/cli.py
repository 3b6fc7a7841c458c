"""`watchdog silence add|list|expire`: manage silences of a running daemon through its API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from watchdog.cli import api_call, default_url
from watchdog.settings import load_settings


def add_silence_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `watchdog silence …` on the CLI's subparsers."""
    silence = sub.add_parser("silence", help="mute alerts that match label matchers")
    verbs = silence.add_subparsers(dest="silence_command", required=True)

    add = verbs.add_parser("add", help="create a silence")
    add.add_argument("matchers", nargs="+", help='e.g. agent=my-bot detector=loop severity!="kill"')
    add.add_argument(
        "--for", dest="duration", default="1h", help="how long (30m, 1h, 2d; default 1h)"
    )
    add.add_argument("--comment", default="", help="why")
    add.set_defaults(func=cmd_silence_add)

    ls = verbs.add_parser("list", help="show active silences")
    ls.add_argument("--all", action="store_true", help="include ended silences")
    ls.set_defaults(func=cmd_silence_list)

    expire = verbs.add_parser("expire", help="end a silence now")
    expire.add_argument("id", help="silence id")
    expire.set_defaults(func=cmd_silence_expire)

    for p in (add, ls, expire):
        add_common(p)
        p.add_argument("--url", help="URL of the running daemon (default: from settings)")


def _call(
    args: argparse.Namespace, path: str, payload: dict[str, Any] | None
) -> dict[str, Any] | None:
    settings = load_settings(args.config)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    url = args.url or default_url(settings)
    try:
        result = api_call(url, path, payload, token)
    except ConnectionError:
        print(
            f"error: no watchdog answers at {url} (silences live in the running daemon)",
            file=sys.stderr,
        )
        return None
    if not result.get("ok"):
        print(f"error: {result.get('error')}", file=sys.stderr)
        return None
    return result


def _line(s: dict[str, Any]) -> str:
    state = "active" if s.get("active") else ("ended" if s.get("expired_at") else "inactive")
    return (
        f"{s['id']}  {state:8}  until {s['ends_at']}  by {s['created_by']}  "
        f"{' '.join(s['matchers'])}" + (f"  # {s['comment']}" if s.get("comment") else "")
    )


def cmd_silence_add(args: argparse.Namespace) -> int:
    """Create a silence; print its id."""
    result = _call(
        args,
        "/api/v1/silences",
        {
            "matchers": args.matchers,
            "duration": args.duration,
            "comment": args.comment,
            "actor": "cli",
        },
    )
    if result is None:
        return 1
    print(_line(result["silence"]))
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    """Print silences, one per line."""
    result = _call(args, "/api/v1/silences" + ("?all=1" if args.all else ""), None)
    if result is None:
        return 1
    for s in result["silences"]:
        print(_line(s))
    if not result["silences"]:
        print("(no silences)")
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    """End a silence now."""
    result = _call(args, f"/api/v1/silences/{args.id}/expire", {"actor": "cli"})
    if result is None:
        return 1
    print(_line(result["silence"]))
    return 0

"""The `watchdog` command: run, sql, check-config (and the commands later issues add).

Every subcommand loads settings through the same validation as the daemon, so a bad
setting fails here with the path of the field before anything binds.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from watchdog.errors import ConfigError, QueryRejected
from watchdog.settings import Settings, load_settings

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    server: dict[str, Any] = {}
    if getattr(args, "host", None) is not None:
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    if server:
        overrides["server"] = server
    if getattr(args, "data_dir", None) is not None:
        overrides["storage"] = {"data_dir": args.data_dir}
    # pydantic-settings deep-merges sources, so `--port` keeps `server.max_body_bytes`
    # from the file or environment.
    settings = load_settings(args.config, **overrides)
    return settings


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.add_argument("--data-dir", type=Path, help="directory of the DuckDB file")


def cmd_run(args: argparse.Namespace) -> int:
    """Start the daemon and serve until SIGTERM/SIGINT."""
    from watchdog.daemon import Daemon
    from watchdog.telemetry import setup_logging

    settings = _settings_from(args)
    setup_logging(settings.log_level)
    return asyncio.run(Daemon(settings).run_forever())


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate settings (and, where present, rules) exactly as `run` would."""
    settings = _settings_from(args)
    from watchdog.registry import validate_config

    validate_config(settings)
    print(
        f"config ok (data dir {settings.storage.data_dir}, listener "
        f"{settings.server.host}:{settings.server.port})"
    )
    return 0


def default_url(settings: Settings) -> str:
    """The URL of a daemon running with `settings`."""
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.server.port}"


def api_call(
    url: str, path: str, payload: dict[str, Any] | None, token: str | None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """POST (or GET when `payload` is None) JSON to a running daemon; return its JSON answer.

    Raises ConnectionError when nothing listens; the daemon's JSON errors are returned.
    """
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(
        url.rstrip("/") + path, data=data, method="POST" if data else "GET"
    )
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return dict(json.loads(body))
        except ValueError:
            return {"ok": False, "error": f"HTTP {err.code}: {body[:200]!r}"}
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise ConnectionError(str(err)) from err


def _sql_local(settings: Settings, sql: str) -> dict[str, Any]:
    from watchdog.sql import run_guarded
    from watchdog.store import Store

    if not settings.db_path.exists():
        return {"ok": False, "error": f"no database at {settings.db_path} (and no daemon running)"}
    store = Store(settings.db_path, read_only=True)
    try:
        store.open()
        res = run_guarded(
            store.con.cursor(),
            sql,
            time_limit_ms=settings.sql.time_limit_ms,
            max_rows=settings.sql.max_rows,
        )
    except QueryRejected as err:
        return {"ok": False, "error": str(err)}
    except ConfigError as err:
        return {"ok": False, "error": f"{err} (is a daemon running elsewhere? pass --url)"}
    finally:
        store.close()
    return {"ok": True, "columns": res.columns, "rows": res.rows, "truncated": res.truncated}


def format_result(result: dict[str, Any], fmt: str) -> str:
    """Render an SQL API answer as an aligned table, CSV, or a JSON array of objects."""
    columns: list[str] = result["columns"]
    rows: list[list[Any]] = result["rows"]
    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in rows], indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        for r in rows:
            w.writerow(
                [
                    "" if v is None else (json.dumps(v) if isinstance(v, dict | list) else v)
                    for v in r
                ]
            )
        return buf.getvalue().rstrip("\n")

    def cell(v: Any) -> str:
        if v is None:
            return "NULL"
        return json.dumps(v) if isinstance(v, dict | list) else str(v)

    text = [[cell(v) for v in r] for r in rows]
    widths = [len(c) for c in columns]
    for r in text:
        widths = [max(w, min(len(c), 60)) for w, c in zip(widths, r, strict=True)]

    def line(vals: list[str]) -> str:
        return " | ".join(v[:60].ljust(w) for v, w in zip(vals, widths, strict=True))

    out = [line(columns), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in text]
    out.append(
        f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
        f"{', truncated' if result.get('truncated') else ''})"
    )
    return "\n".join(out)


def cmd_sql(args: argparse.Namespace) -> int:
    """Run one read-only query through a running daemon, or read-only on the data dir."""
    settings = _settings_from(args)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    url = args.url or default_url(settings)
    try:
        result = api_call(url, "/api/sql", {"sql": args.query}, token)
    except ConnectionError:
        if args.url:
            print(f"error: no watchdog answers at {args.url}", file=sys.stderr)
            return 2
        result = _sql_local(settings, args.query)
    if not result.get("ok"):
        print(f"error: {result.get('error')}", file=sys.stderr)
        return 1
    print(format_result(result, args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="watchdog", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the daemon")
    _add_common(run)
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to bind (default 4318; 0 = any free)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate settings and rules, then exit")
    _add_common(check)
    check.set_defaults(func=cmd_check_config)

    sql = sub.add_parser("sql", help="run one read-only SQL query")
    _add_common(sql)
    sql.add_argument("query", help="the SELECT statement")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--url", help="URL of a running daemon (default: from settings)")
    sql.set_defaults(func=cmd_sql)

    from watchdog.registry import add_cli_commands

    add_cli_commands(sub, _add_common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `watchdog` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Canned SQL queries kept as data: `dashboards/queries/*.sql`, each with a front-matter comment.

A file starts with `-- key: value` lines (`name`, `description`; unknown keys are an
error, like every other policy file) followed by one SELECT. The file stem is the
query's id. The SQL page lists them; they run through the same guarded `/api/sql`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from watchdog.errors import ConfigError

QUERIES_DIR: Final = Path(__file__).resolve().parent / "queries"
_FRONT: Final = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
_KEYS: Final = frozenset({"name", "description"})


@dataclass(frozen=True, slots=True)
class CannedQuery:
    """One stored query: id (file stem), display name, description and the SQL text."""

    id: str
    name: str
    description: str
    sql: str

    def as_json(self) -> dict[str, Any]:
        """The query as the JSON API lists it."""
        return {"id": self.id, "name": self.name, "description": self.description, "sql": self.sql}


def parse_query(query_id: str, text: str) -> CannedQuery:
    """Split `text` into front-matter and SQL; raise ConfigError on an unknown key or no SQL."""
    meta: dict[str, str] = {}
    lines = text.splitlines()
    body_start = 0
    for i, line in enumerate(lines):
        m = _FRONT.match(line)
        if not m:
            body_start = i
            break
        key, value = m.group(1), m.group(2)
        if key not in _KEYS:
            raise ConfigError(f"query {query_id}: unknown front-matter key {key!r}")
        meta[key] = value
    else:
        body_start = len(lines)
    sql = "\n".join(lines[body_start:]).strip()
    if not sql:
        raise ConfigError(f"query {query_id}: no SQL after the front-matter")
    return CannedQuery(query_id, meta.get("name", query_id), meta.get("description", ""), sql)


def load_queries(directory: Path = QUERIES_DIR) -> list[CannedQuery]:
    """Every `*.sql` file of `directory`, sorted by file name."""
    return [
        parse_query(path.stem, path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.sql"))
    ]

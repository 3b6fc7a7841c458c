"""The dashboard's read queries: plain functions of a DuckDB cursor that return JSON-ready dicts.

Every function here blocks and must run on a store reader thread (`Store.read`); none
reads the clock — `now` (naive UTC, like the stored timestamps) is passed in. Spend and
token sums cover `kind = 'llm'` steps only (framework spans may carry their children's
totals, see collectors/normalize.py), and an unpriced call adds nothing to spend but is
counted in `unpriced_calls`, so "unknown" never reads as "$0".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import duckdb

from watchdog.sql import jsonable

# Verdict states from weakest to strongest, as watchdog.verdicts orders them.
VERDICT_RANK: Final[dict[str, int]] = {"warn": 1, "deny": 2, "pause": 3, "kill": 4}
SEVERITY_RANK: Final[dict[str, int]] = {"info": 0, "warn": 1, "pause": 2, "kill": 3}

RangeName = Literal["24h", "7d", "30d"]
# Range → (length, bucket width). Buckets are aligned to the Unix epoch (UTC).
RANGES: Final[dict[str, tuple[timedelta, timedelta]]] = {
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
TOP_SERIES: Final = 8  # more agents/models than this are summed into "other"
OTHER: Final = "(other)"
UNKNOWN_MODEL: Final = "(unknown)"

RUN_SORTS: Final[dict[str, str]] = {
    "started": "started",
    "last_seen": "last_seen",
    "cost": "cost_usd",
    "steps": "steps",
    "llm_calls": "llm_calls",
    "tokens": "tokens",
    "errors": "errors",
    "alerts": "alerts",
    "duration": "duration_ms",
    "agent": "agent",
}


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """One active row of the `verdicts` table."""

    scope_type: str
    scope_value: str
    state: str
    reason: str | None
    alert_id: str | None
    set_by: str
    set_at: datetime
    expires_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        """The row as the JSON API shows it."""
        return {
            "scope_type": self.scope_type,
            "scope_value": self.scope_value,
            "state": self.state,
            "reason": self.reason,
            "alert_id": self.alert_id,
            "set_by": self.set_by,
            "set_at": iso(self.set_at),
            "expires_at": iso(self.expires_at),
        }


# Answers the question "which verdict applies to this run?": (agents, session, trace) → verdict.
VerdictLookup = Callable[[Sequence[str], str | None, str | None], dict[str, Any] | None]


def iso(value: datetime | None) -> str | None:
    """A naive-UTC timestamp as ISO 8601 with a `Z`, or None."""
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def day_start(now: datetime) -> datetime:
    """Midnight UTC of the day `now` falls in."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _rows(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    rel = cur.execute(sql, list(params))
    cols = [d[0] for d in rel.description or []]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


# --- verdicts -------------------------------------------------------------------------------


def active_verdicts(cur: duckdb.DuckDBPyConnection, now: datetime) -> list[VerdictRow]:
    """Verdict rows in force at `now` (not expired), strongest first."""
    rows = cur.execute(
        "SELECT scope_type, scope_value, state, reason, alert_id, set_by, set_at, expires_at "
        "FROM verdicts WHERE expires_at IS NULL OR expires_at > ? ORDER BY set_at DESC",
        [now],
    ).fetchall()
    out = [VerdictRow(*r) for r in rows if r[2] in VERDICT_RANK]
    out.sort(key=lambda v: -VERDICT_RANK[v.state])
    return out


def table_verdict_lookup(verdicts: Sequence[VerdictRow]) -> VerdictLookup:
    """A lookup answering from `verdicts` rows: the strongest one matching any scope of a run."""
    by_scope = {(v.scope_type, v.scope_value): v for v in verdicts}

    def lookup(
        agents: Sequence[str], session: str | None, trace: str | None
    ) -> dict[str, Any] | None:
        keys: list[tuple[str, str]] = [("agent", a) for a in agents]
        keys += [(t, v) for t, v in (("session", session), ("trace", trace)) if v is not None]
        found = [by_scope[k] for k in keys if k in by_scope]
        if not found:
            return None
        best = max(found, key=lambda v: VERDICT_RANK[v.state])
        return {
            "state": best.state,
            "reason": best.reason,
            "scope": {"type": best.scope_type, "value": best.scope_value},
            "alert_id": best.alert_id,
            "set_by": best.set_by,
        }

    return lookup


# --- overview -------------------------------------------------------------------------------


def _series(
    rows: Iterable[tuple[datetime, str, float]], buckets: list[datetime]
) -> list[dict[str, Any]]:
    """Fold (bucket, name, usd) rows into at most TOP_SERIES named series plus "other"."""
    index = {b: i for i, b in enumerate(buckets)}
    per_name: dict[str, list[float]] = {}
    for bucket, name, usd in rows:
        i = index.get(bucket)
        if i is None:
            continue
        values = per_name.setdefault(name, [0.0] * len(buckets))
        values[i] += usd
    ranked = sorted(per_name.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    top = ranked[:TOP_SERIES]
    rest = ranked[TOP_SERIES:]
    series = [
        {"name": n, "values": [round(v, 10) for v in vals], "total_usd": sum(vals)}
        for n, vals in top
    ]
    if rest:
        other = [sum(vals[i] for _, vals in rest) for i in range(len(buckets))]
        series.append({"name": OTHER, "values": other, "total_usd": sum(other)})
    return series


def spend_timeline(
    cur: duckdb.DuckDBPyConnection, now: datetime, range_name: str
) -> dict[str, Any]:
    """Spend per time bucket over `range_name`, split by agent and by model (one table scan)."""
    length, width = RANGES[range_name]
    width_s = int(width.total_seconds())
    epoch = datetime(1970, 1, 1)
    now_s = int((now - epoch).total_seconds())
    last = epoch + timedelta(seconds=now_s // width_s * width_s)
    count = int(length / width)
    buckets = [last - width * (count - 1 - i) for i in range(count)]
    rows = cur.execute(
        "SELECT time_bucket(to_seconds(?), start_time) AS b, agent_name, "
        f"coalesce(model, '{UNKNOWN_MODEL}') AS model, sum(cost_usd) AS usd "
        "FROM steps WHERE kind = 'llm' AND cost_usd IS NOT NULL AND start_time >= ? "
        "AND start_time < ? GROUP BY ALL",
        [width_s, buckets[0], last + width],
    ).fetchall()
    return {
        "range": range_name,
        "bucket_s": width_s,
        "buckets": [iso(b) for b in buckets],
        "by_agent": _series(((b, a, usd) for b, a, _, usd in rows), buckets),
        "by_model": _series(((b, m, usd) for b, _, m, usd in rows), buckets),
    }


def spend_today(cur: duckdb.DuckDBPyConnection, now: datetime) -> dict[str, Any]:
    """Today's (UTC) spend, LLM calls and tokens: total, by agent and by model."""
    start = day_start(now)
    rows = cur.execute(
        "SELECT agent_name, coalesce(model, ?) AS model, "
        "coalesce(sum(cost_usd), 0) AS usd, count(*) AS calls, "
        "count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced, "
        "coalesce(sum(input_tokens), 0) AS inp, coalesce(sum(output_tokens), 0) AS outp "
        "FROM steps WHERE kind = 'llm' AND start_time >= ? AND start_time < ? GROUP BY ALL",
        [UNKNOWN_MODEL, start, start + timedelta(days=1)],
    ).fetchall()

    def fold(pick: int, label: str) -> list[dict[str, Any]]:
        acc: dict[str, dict[str, Any]] = {}
        for r in rows:
            e = acc.setdefault(
                r[pick],
                {
                    label: r[pick],
                    "usd": 0.0,
                    "calls": 0,
                    "unpriced_calls": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                },
            )
            e["usd"] += float(r[2])
            e["calls"] += int(r[3])
            e["unpriced_calls"] += int(r[4])
            e["input_tokens"] += int(r[5])
            e["output_tokens"] += int(r[6])
        return sorted(acc.values(), key=lambda e: (-e["usd"], e[label]))

    return {
        "day": start.date().isoformat(),
        "usd": sum(float(r[2]) for r in rows),
        "calls": sum(int(r[3]) for r in rows),
        "unpriced_calls": sum(int(r[4]) for r in rows),
        "input_tokens": sum(int(r[5]) for r in rows),
        "output_tokens": sum(int(r[6]) for r in rows),
        "by_agent": fold(0, "agent"),
        "by_model": fold(1, "model"),
    }


_RUN_AGG: Final = """
    trace_id,
    arg_min(agent_name, start_time) AS agent,
    list(DISTINCT agent_name ORDER BY agent_name) AS agents,
    arg_min(session_id, start_time) AS session_id,
    arg_min(service_name, start_time) AS service_name,
    min(start_time) AS started,
    max(end_time) AS last_seen,
    count(*) AS steps,
    count(*) FILTER (WHERE kind = 'llm') AS llm_calls,
    count(*) FILTER (WHERE kind = 'tool') AS tool_calls,
    sum(cost_usd) FILTER (WHERE kind = 'llm') AS cost_usd,
    coalesce(sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0))
             FILTER (WHERE kind = 'llm'), 0) AS tokens,
    count(*) FILTER (WHERE is_error) AS errors
"""

# Alerts of a run: those naming its trace, plus session-wide ones (no trace) of its session.
_RUN_ALERTS: Final = """
    SELECT r.trace_id,
           count(a.id) AS alerts,
           count(a.id) FILTER (WHERE a.state = 'firing') AS open_alerts,
           max(CASE a.severity WHEN 'kill' THEN 3 WHEN 'pause' THEN 2 WHEN 'warn' THEN 1
               ELSE 0 END) AS max_severity
    FROM {runs} r JOIN alerts a
      ON a.trace_id = r.trace_id OR (a.trace_id IS NULL AND a.session_id = r.session_id)
    GROUP BY r.trace_id
"""
_SEVERITY_NAMES: Final = ("info", "warn", "pause", "kill")


def _run_json(row: Mapping[str, Any], verdict_of: VerdictLookup) -> dict[str, Any]:
    started, last = row["started"], row["last_seen"]
    agents = list(row["agents"] or [])
    sev = row.get("max_severity")
    return {
        "trace_id": row["trace_id"],
        "agent": row["agent"],
        "agents": agents,
        "session_id": row["session_id"],
        "service_name": row["service_name"],
        "started": iso(started),
        "last_seen": iso(last),
        "duration_ms": (last - started).total_seconds() * 1000 if started and last else 0,
        "steps": row["steps"],
        "llm_calls": row["llm_calls"],
        "tool_calls": row["tool_calls"],
        "cost_usd": row["cost_usd"],
        "tokens": row["tokens"],
        "errors": row["errors"],
        "alerts": row.get("alerts") or 0,
        "open_alerts": row.get("open_alerts") or 0,
        "max_severity": _SEVERITY_NAMES[sev] if sev is not None else None,
        "verdict": verdict_of(agents, row["session_id"], row["trace_id"]),
    }


def active_runs(
    cur: duckdb.DuckDBPyConnection,
    now: datetime,
    window_s: int,
    verdict_of: VerdictLookup,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Runs with a step ending within `window_s` of `now`, most recent first."""
    since = now - timedelta(seconds=window_s)
    rows = _rows(
        cur,
        f"""
        WITH recent AS (SELECT DISTINCT trace_id FROM steps WHERE end_time >= ?),
        runs AS (SELECT {_RUN_AGG} FROM steps WHERE trace_id IN (SELECT trace_id FROM recent)
                 GROUP BY trace_id ORDER BY last_seen DESC LIMIT ?),
        ra AS ({_RUN_ALERTS.format(runs="runs")})
        SELECT runs.*, ra.alerts, ra.open_alerts, ra.max_severity
        FROM runs LEFT JOIN ra USING (trace_id) ORDER BY last_seen DESC
        """,
        [since, limit],
    )
    return [_run_json(r, verdict_of) for r in rows]


_ALERT_COLS: Final = (
    "id, created_at, updated_at, detector, rule, severity, service_name, agent_name, "
    "session_id, trace_id, summary, evidence, state, fingerprint, resolved_at"
)


def _alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    evidence = row.get("evidence")
    try:
        parsed = json.loads(evidence) if isinstance(evidence, str) else (evidence or {})
    except ValueError:
        parsed = {"raw": evidence}
    span_ids = parsed.get("span_ids") if isinstance(parsed, dict) else None
    return {
        "id": row["id"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "resolved_at": iso(row.get("resolved_at")),
        "detector": row["detector"],
        "rule": row["rule"],
        "severity": row["severity"],
        "service_name": row["service_name"],
        "agent_name": row["agent_name"],
        "session_id": row["session_id"],
        "trace_id": row["trace_id"],
        "summary": row["summary"],
        "state": row["state"],
        "fingerprint": row["fingerprint"],
        "span_ids": [str(s) for s in span_ids] if isinstance(span_ids, list) else [],
        "evidence": jsonable(parsed),
    }


def _severity_order(column: str = "severity") -> str:
    return f"CASE {column} WHEN 'kill' THEN 3 WHEN 'pause' THEN 2 WHEN 'warn' THEN 1 ELSE 0 END"


def open_alerts(cur: duckdb.DuckDBPyConnection, limit: int = 100) -> dict[str, Any]:
    """Firing alerts (strongest, then newest first) and their counts by severity."""
    counts = dict(
        cur.execute(
            "SELECT severity, count(*) FROM alerts WHERE state = 'firing' GROUP BY severity"
        ).fetchall()
    )
    items = _rows(
        cur,
        f"SELECT {_ALERT_COLS} FROM alerts WHERE state = 'firing' "
        f"ORDER BY {_severity_order()} DESC, updated_at DESC LIMIT ?",
        [limit],
    )
    return {
        "count": sum(counts.values()),
        "by_severity": {s: int(counts.get(s, 0)) for s in _SEVERITY_NAMES},
        "items": [_alert_json(r) for r in items],
    }


def overview(
    cur: duckdb.DuckDBPyConnection,
    now: datetime,
    *,
    range_name: str,
    window_s: int,
    verdict_of: VerdictLookup | None = None,
) -> dict[str, Any]:
    """Everything the overview page shows, in one call."""
    verdicts = active_verdicts(cur, now)
    lookup = verdict_of or table_verdict_lookup(verdicts)
    runs_today = cur.execute(
        "SELECT count(DISTINCT trace_id) FROM steps WHERE start_time >= ? AND start_time < ?",
        [day_start(now), day_start(now) + timedelta(days=1)],
    ).fetchone()
    return {
        "now": iso(now),
        "today": spend_today(cur, now),
        "runs_today": int(runs_today[0]) if runs_today else 0,
        "timeline": spend_timeline(cur, now, range_name),
        "active_window_s": window_s,
        "active_runs": active_runs(cur, now, window_s, lookup),
        "alerts": open_alerts(cur, limit=20),
        "verdicts": [v.as_json() for v in verdicts],
    }


# --- runs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What the runs list is narrowed and ordered by (validated by the HTTP layer)."""

    agent: str | None = None
    min_cost_usd: float | None = None
    min_steps: int | None = None
    min_alerts: int | None = None
    since: datetime | None = None
    trace_prefix: str | None = None
    sort: str = "started"
    descending: bool = True
    limit: int = 200


def list_runs(
    cur: duckdb.DuckDBPyConnection, flt: RunFilter, verdict_of: VerdictLookup
) -> dict[str, Any]:
    """Runs matching `flt`, sorted, capped at `flt.limit`; with the total match count."""
    where_steps: list[str] = []
    params: list[Any] = []
    if flt.since is not None:
        # A run belongs to the window when it was seen in it; its totals still span it all.
        where_steps.append("trace_id IN (SELECT trace_id FROM steps WHERE end_time >= ?)")
        params.append(flt.since)
    if flt.trace_prefix:
        where_steps.append("starts_with(trace_id, ?)")
        params.append(flt.trace_prefix.lower())
    steps_where = ("WHERE " + " AND ".join(where_steps)) if where_steps else ""
    conds: list[str] = []
    if flt.agent:
        conds.append("list_contains(agents, ?)")
        params.append(flt.agent)
    if flt.min_cost_usd is not None:
        conds.append("coalesce(cost_usd, 0) >= ?")
        params.append(flt.min_cost_usd)
    if flt.min_steps is not None:
        conds.append("steps >= ?")
        params.append(flt.min_steps)
    if flt.min_alerts is not None:
        conds.append("alerts >= ?")
        params.append(flt.min_alerts)
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    order_col = RUN_SORTS.get(flt.sort, "started")
    direction = "DESC" if flt.descending else "ASC"
    rows = _rows(
        cur,
        f"""
        WITH runs AS (SELECT {_RUN_AGG} FROM steps {steps_where} GROUP BY trace_id),
        ra AS ({_RUN_ALERTS.format(runs="runs")}),
        joined AS (
            SELECT runs.*, coalesce(ra.alerts, 0) AS alerts,
                   coalesce(ra.open_alerts, 0) AS open_alerts, ra.max_severity,
                   date_diff('millisecond', started, last_seen) AS duration_ms
            FROM runs LEFT JOIN ra USING (trace_id)
        )
        SELECT *, count(*) OVER () AS total FROM joined {where}
        ORDER BY {order_col} {direction} NULLS LAST, trace_id
        LIMIT ?
        """,
        [*params, flt.limit],
    )
    total = int(rows[0]["total"]) if rows else 0
    agents = [
        r[0] for r in cur.execute("SELECT DISTINCT agent_name FROM steps ORDER BY 1").fetchall()
    ]
    return {
        "total": total,
        "truncated": total > len(rows),
        "agents": agents,
        "runs": [_run_json(r, verdict_of) for r in rows],
    }


_TEXT_CAP: Final = 4096


def _clip(text: Any) -> Any:
    if isinstance(text, str) and len(text) > _TEXT_CAP:
        return text[:_TEXT_CAP] + "…"
    return text


def run_detail(
    cur: duckdb.DuckDBPyConnection, trace_id: str, verdict_of: VerdictLookup
) -> dict[str, Any] | None:
    """One run as a timeline: its steps and other spans in start order, alerts attached by span."""
    steps = _rows(
        cur,
        "SELECT span_id, parent_span_id, start_time, end_time, service_name, agent_name, "
        "session_id, kind, operation, provider, model, input_tokens, output_tokens, "
        "cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, price_source, "
        "tool_name, tool_call_id, tool_args, tool_result, is_error, error_type, user_message, "
        "output_text, task, span_name FROM steps WHERE trace_id = ? ORDER BY start_time, span_id",
        [trace_id],
    )
    spans = _rows(
        cur,
        'SELECT "SpanId" AS span_id, "ParentSpanId" AS parent_span_id, "SpanName" AS span_name, '
        '"Timestamp" AS start_ns, "Duration" AS duration_ns, "StatusCode" AS status, '
        '"ServiceName" AS service_name FROM spans WHERE "TraceId" = ? ORDER BY "Timestamp"',
        [trace_id],
    )
    if not steps and not spans:
        return None
    session = next((s["session_id"] for s in steps), None)
    alerts = [
        _alert_json(r)
        for r in _rows(
            cur,
            f"SELECT {_ALERT_COLS} FROM alerts WHERE trace_id = ? "
            "OR (trace_id IS NULL AND session_id = ?) ORDER BY created_at",
            [trace_id, session],
        )
    ]
    step_ids = {s["span_id"] for s in steps}
    items: list[dict[str, Any]] = []
    for s in steps:
        start, end = s["start_time"], s["end_time"]
        items.append(
            {
                **{
                    k: _clip(jsonable(v))
                    for k, v in s.items()
                    if k not in ("start_time", "end_time")
                },
                "start": iso(start),
                "end": iso(end),
                "duration_ms": max((end - start).total_seconds() * 1000, 0.0),
                "is_step": True,
            }
        )
    for sp in spans:
        if sp["span_id"] in step_ids:
            continue
        start = sp["start_ns"]
        duration_ms = int(sp["duration_ns"] or 0) / 1e6
        items.append(
            {
                "span_id": sp["span_id"],
                "parent_span_id": sp["parent_span_id"],
                "span_name": sp["span_name"],
                "service_name": sp["service_name"],
                "kind": "span",
                "is_error": sp["status"] == "Error",
                "start": iso(start),
                "end": iso(start + timedelta(milliseconds=duration_ms)),
                "duration_ms": duration_ms,
                "is_step": False,
            }
        )
    items.sort(key=lambda it: (it["start"] or "", it["span_id"]))
    by_span: dict[str, list[str]] = {}
    for a in alerts:
        for sid in a["span_ids"]:
            by_span.setdefault(sid, []).append(a["id"])
    for it in items:
        it["alert_ids"] = by_span.get(it["span_id"], [])
    llm = [s for s in steps if s["kind"] == "llm"]
    agents = sorted({s["agent_name"] for s in steps})
    costs = [s["cost_usd"] for s in llm if s["cost_usd"] is not None]
    starts = [it["start"] for it in items if it["start"]]
    ends = [it["end"] for it in items if it["end"]]
    return {
        "trace_id": trace_id,
        "agent": steps[0]["agent_name"] if steps else None,
        "agents": agents,
        "session_id": session,
        "service_name": steps[0]["service_name"] if steps else spans[0]["service_name"],
        "started": min(starts) if starts else None,
        "last_seen": max(ends) if ends else None,
        "steps": len(steps),
        "spans": len(items),
        "llm_calls": len(llm),
        "tool_calls": sum(1 for s in steps if s["kind"] == "tool"),
        "cost_usd": sum(costs) if costs else None,
        "unpriced_calls": len(llm) - len(costs),
        "input_tokens": sum(s["input_tokens"] or 0 for s in llm),
        "output_tokens": sum(s["output_tokens"] or 0 for s in llm),
        "errors": sum(1 for it in items if it["is_error"]),
        "items": items,
        "alerts": alerts,
        "verdict": verdict_of(agents, session, trace_id),
    }


# --- alerts ---------------------------------------------------------------------------------


def alerts_page(
    cur: duckdb.DuckDBPyConnection, now: datetime, recent_days: int = 7
) -> dict[str, Any]:
    """Open alerts and the alerts of the last `recent_days` days in any state."""
    recent = _rows(
        cur,
        f"SELECT {_ALERT_COLS} FROM alerts WHERE updated_at >= ? "
        "ORDER BY updated_at DESC LIMIT 500",
        [now - timedelta(days=recent_days)],
    )
    by_detector = _rows(
        cur,
        "SELECT detector, severity, count(*) AS n FROM alerts WHERE state = 'firing' "
        "GROUP BY ALL ORDER BY ALL",
    )
    return {
        "open": open_alerts(cur, limit=500),
        "recent": [_alert_json(r) for r in recent],
        "recent_days": recent_days,
        "open_by_detector": by_detector,
    }


# --- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The figures /metrics exposes for the dashboard, as of one refresh."""

    spend_total_usd: dict[str, float]
    spend_today_usd: dict[str, float]
    llm_calls_total: dict[str, int]
    alerts_total: dict[tuple[str, str], int]
    alerts_open: dict[tuple[str, str], int]
    verdicts_active: dict[tuple[str, str], int]

    @classmethod
    def empty(cls) -> MetricsSnapshot:
        """A snapshot before the first refresh."""
        return cls({}, {}, {}, {}, {}, {})


def metrics_snapshot(cur: duckdb.DuckDBPyConnection, now: datetime) -> MetricsSnapshot:
    """Per-agent spend (all time and today), alerts by detector and severity, verdicts by state."""
    start = day_start(now)
    spend = cur.execute(
        "SELECT agent_name, coalesce(sum(cost_usd), 0), "
        "coalesce(sum(cost_usd) FILTER (WHERE start_time >= ? AND start_time < ?), 0), count(*) "
        "FROM steps WHERE kind = 'llm' GROUP BY agent_name",
        [start, start + timedelta(days=1)],
    ).fetchall()
    alerts = cur.execute(
        "SELECT detector, severity, count(*), count(*) FILTER (WHERE state = 'firing') "
        "FROM alerts GROUP BY ALL"
    ).fetchall()
    verdicts: dict[tuple[str, str], int] = {}
    for v in active_verdicts(cur, now):
        key = (v.state, v.scope_type)
        verdicts[key] = verdicts.get(key, 0) + 1
    return MetricsSnapshot(
        spend_total_usd={r[0]: float(r[1]) for r in spend},
        spend_today_usd={r[0]: float(r[2]) for r in spend},
        llm_calls_total={r[0]: int(r[3]) for r in spend},
        alerts_total={(r[0], r[1]): int(r[2]) for r in alerts},
        alerts_open={(r[0], r[1]): int(r[3]) for r in alerts},
        verdicts_active=verdicts,
    )

"""Dashboard speed with a large store: overview server time and full page load in Chromium.

Builds a DuckDB file in the real schema (watchdog.store.Store runs the migrations) with
`--spans` spans (default 1,000,000) and one step per span, by `INSERT … SELECT` from
`range()`: runs of 50 spans (an agent span, then alternating model and tool calls) over
the last 30 days, 20 agents, 6 models, plus alerts and verdicts. Then starts
`watchdog run --port 0` on it and prints:

- server time of `GET /api/dashboard/overview` (24 h and 30 d ranges), and of the
  other JSON endpoints, measured as the client's request time over loopback;
- full page load of `/` in headless Chromium (Debian's package via Playwright): from
  navigation start until the page has rendered its data (`<body data-loaded>`), each
  time in a fresh browser context (cold cache) — as the wall clock around Playwright
  sees it, and as the page itself measures it (`performance.now()` at first render).

Target: under 1 s each.

    .venv/bin/python benchmarks/dashboard.py [--spans 1000000] [--repeat 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchdog.store import Store  # noqa: E402

SPANS_PER_RUN = 50
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

# One row per span; `i` is the span number, `t` its run, `k` its place in the run.
SPAN_ROWS = """
WITH base AS (
    SELECT i, i // {per} AS t, i % {per} AS k,
           ?::TIMESTAMP + to_microseconds(((i // {per}) * {gap_us})::BIGINT)
               + to_microseconds(((i % {per}) * 2000000)::BIGINT) AS ts
    FROM range({n}) r(i)
)
SELECT i, t, k, ts,
       md5('t' || t) AS trace_id,
       substr(md5('s' || i), 1, 16) AS span_id,
       CASE WHEN k = 0 THEN '' ELSE substr(md5('s' || (t * {per})), 1, 16) END AS parent_id,
       'agent-' || lpad((t % 20)::VARCHAR, 2, '0') AS agent,
       'svc-' || (t % 5) AS service,
       'sess-' || (t // 3) AS session,
       CASE WHEN k = 0 THEN 'agent' WHEN k % 2 = 1 THEN 'llm' ELSE 'tool' END AS kind,
       ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet', 'gpt-4.1', 'o3-mini',
        'gemini-2.0-flash'][(i % 6) + 1] AS model,
       ['openai', 'openai', 'anthropic', 'openai', 'openai', 'google'][(i % 6) + 1] AS provider,
       ['web_search', 'read_file', 'lookup_order', 'send_email', 'sql_query'][(i % 5) + 1]
           AS tool,
       500 + (i * 37) % 4000 AS inp,
       20 + (i * 13) % 600 AS outp
FROM base
"""

INSERT_SPANS = """
INSERT INTO spans
SELECT ts, trace_id, span_id, parent_id, '',
       CASE kind WHEN 'agent' THEN 'invoke_agent ' || agent WHEN 'llm' THEN 'chat ' || model
            ELSE 'execute_tool ' || tool END,
       CASE kind WHEN 'llm' THEN 'Client' ELSE 'Internal' END,
       service,
       MAP {{'service.name': service, 'telemetry.sdk.language': 'python'}},
       'bench', '1.0',
       CASE kind
           WHEN 'llm' THEN MAP {{'gen_ai.operation.name': 'chat', 'gen_ai.provider.name': provider,
                                 'gen_ai.request.model': model, 'gen_ai.agent.name': agent,
                                 'gen_ai.conversation.id': session,
                                 'gen_ai.usage.input_tokens': inp::VARCHAR,
                                 'gen_ai.usage.output_tokens': outp::VARCHAR}}
           WHEN 'tool' THEN MAP {{'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': tool,
                                  'gen_ai.agent.name': agent, 'gen_ai.conversation.id': session,
                                  'gen_ai.tool.call.arguments': '{{"q": "item ' || i || '"}}'}}
           ELSE MAP {{'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': agent,
                      'gen_ai.conversation.id': session}}
       END,
       (CASE WHEN k = 0 THEN {per} * 2000000000::BIGINT ELSE 1500000000 END)::UBIGINT,
       CASE WHEN i % 211 = 0 THEN 'Error' ELSE 'Unset' END, '', NULL, NULL
FROM ({rows})
"""

INSERT_STEPS = """
INSERT INTO step_records BY NAME
SELECT trace_id, span_id, parent_id AS parent_span_id, ts AS start_time,
       ts + CASE WHEN k = 0 THEN INTERVAL ({per} * 2) SECOND ELSE INTERVAL 1500 MILLISECOND END
           AS end_time,
       service AS service_name, agent AS agent_name, session AS session_id, kind,
       CASE kind WHEN 'agent' THEN 'invoke_agent' WHEN 'llm' THEN 'chat' ELSE 'execute_tool' END
           AS operation,
       CASE WHEN kind = 'llm' THEN provider END AS provider,
       CASE WHEN kind = 'llm' THEN model END AS model,
       CASE WHEN kind = 'llm' THEN inp END AS input_tokens,
       CASE WHEN kind = 'llm' THEN outp END AS output_tokens,
       CASE WHEN kind = 'llm' THEN (i % 3) * 256 END AS cache_read_tokens,
       NULL AS cache_write_tokens, NULL AS reasoning_tokens,
       CASE WHEN kind = 'llm' AND i % 97 <> 0 THEN inp * 2.5e-6 + outp * 1e-5 END AS cost_usd,
       CASE WHEN kind <> 'llm' THEN 'none' WHEN i % 97 = 0 THEN 'unpriced' ELSE 'genai-prices' END
           AS price_source,
       CASE WHEN kind = 'tool' THEN tool END AS tool_name,
       CASE WHEN kind = 'tool' THEN 'call_' || i END AS tool_call_id,
       CASE WHEN kind = 'tool' THEN '{{"q": "item ' || i || '"}}' END AS tool_args,
       CASE WHEN kind = 'tool' THEN 'result ' || i || ': ' || repeat('x', 60) END AS tool_result,
       i % 211 = 0 AS is_error,
       CASE WHEN i % 211 = 0 THEN 'TimeoutError' END AS error_type,
       CASE WHEN kind <> 'tool' THEN 'Find the order status for customer ' || (t % 997) END
           AS user_message,
       CASE WHEN kind = 'llm' THEN 'Calling ' || tool || ' next; ' || repeat('y', 80) END
           AS output_text,
       NULL AS task,
       CASE kind WHEN 'agent' THEN 'invoke_agent ' || agent WHEN 'llm' THEN 'chat ' || model
            ELSE 'execute_tool ' || tool END AS span_name
FROM ({rows})
"""

INSERT_ALERTS = """
INSERT INTO alerts BY NAME
SELECT md5('a' || j) AS id, ts AS created_at, ts AS updated_at, detector,
       detector || '_rule' AS rule, severity, 'svc-' || (t % 5) AS service_name,
       'agent-' || lpad((t % 20)::VARCHAR, 2, '0') AS agent_name,
       'sess-' || (t // 3) AS session_id, md5('t' || t) AS trace_id,
       'bench alert ' || j AS summary,
       json_object('span_ids', [substr(md5('s' || (t * {per} + 2)), 1, 16)]) AS evidence,
       CASE WHEN j % 10 = 0 THEN 'firing' ELSE 'resolved' END AS state,
       md5('f' || j) AS fingerprint,
       CASE WHEN j % 10 = 0 THEN NULL ELSE ts END AS resolved_at
FROM (
    SELECT j, (j * 7919) % {runs} AS t,
           ?::TIMESTAMP + to_microseconds((((j * 7919) % {runs}) * {gap_us})::BIGINT) AS ts,
           ['loop', 'spend', 'drift', 'context'][(j % 4) + 1] AS detector,
           ['warn', 'info', 'pause', 'kill'][(j % 4) + 1] AS severity
    FROM range({alerts}) r(j)
)
"""


def build(path: Path, n_spans: int, n_alerts: int) -> float:
    """Create the DuckDB file at `path` (real schema) holding `n_spans` spans; return seconds."""
    started = time.perf_counter()
    runs = max(n_spans // SPANS_PER_RUN, 1)
    now = time.time()
    # Runs spread evenly over the last 30 days; the newest ends about now.
    span_s = 30 * 86400
    gap_us = int(span_s * 1e6 / runs)
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - span_s - SPANS_PER_RUN * 2))
    store = Store(path, memory_limit="2GB", threads=2)
    store.open()
    con = store.con
    rows = SPAN_ROWS.format(per=SPANS_PER_RUN, gap_us=gap_us, n=n_spans)
    con.execute(INSERT_SPANS.format(per=SPANS_PER_RUN, rows=rows), [start])
    con.execute(INSERT_STEPS.format(per=SPANS_PER_RUN, rows=rows), [start])
    con.execute(
        INSERT_ALERTS.format(per=SPANS_PER_RUN, runs=runs, gap_us=gap_us, alerts=n_alerts), [start]
    )
    con.execute(
        "INSERT INTO verdicts (scope_type, scope_value, state, reason, alert_id, set_by, "
        "set_at, expires_at) VALUES ('agent', 'agent-03', 'kill', 'bench', NULL, 'cli', "
        "now()::TIMESTAMP, NULL), ('session', 'sess-5', 'pause', 'bench', NULL, 'cli', "
        "now()::TIMESTAMP, NULL)"
    )
    store.close()
    return time.perf_counter() - started


def start_daemon(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "run", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"^watchdog listening on (http://\S+)", line)
        if m:
            return proc, m.group(1)
    sys.exit("daemon did not start")


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
    elapsed = time.perf_counter() - started
    assert json.loads(body)["ok"], body[:200]
    return elapsed, len(body)


def report(name: str, samples: list[float], size: int | None = None) -> None:
    extra = f", {size / 1024:.0f} KiB" if size is not None else ""
    print(
        f"  {name:<44} median {statistics.median(samples) * 1000:7.1f} ms   "
        f"min {min(samples) * 1000:7.1f} ms   max {max(samples) * 1000:7.1f} ms{extra}"
    )


def page_loads(url: str, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock (goto → data rendered, seen by Playwright) and the page's own figure."""
    from playwright.sync_api import ConsoleMessage, sync_playwright

    out: list[float] = []
    in_page: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for _ in range(repeat + 1):
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            errors: list[str] = []

            def on_console(msg: ConsoleMessage, errors: list[str] = errors) -> None:
                if msg.type == "error":
                    errors.append(msg.text)

            page.on("console", on_console)
            started = time.perf_counter()
            page.goto(url + "/")
            page.wait_for_selector("body[data-loaded]", state="attached", timeout=60_000)
            out.append(time.perf_counter() - started)
            # performance.now() at the first render with data, from navigation start.
            in_page.append(float(page.get_attribute("body", "data-rendered-ms") or "nan") / 1000)
            assert not errors, errors
            ctx.close()
        browser.close()
    return out[1:], in_page[1:]  # the first load warms the browser binary, not the daemon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--alerts", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="build in (or reuse) this data dir")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="wd-dash-bench-") as tmp:
        data_dir = args.keep or Path(tmp)
        db = data_dir / "watchdog.duckdb"
        if db.exists():
            print(f"reusing {db}")
        else:
            secs = build(db, args.spans, args.alerts)
            print(
                f"built {db}: {args.spans:,} spans + {args.spans:,} steps + {args.alerts:,} "
                f"alerts in {secs:.1f} s ({db.stat().st_size / 2**20:.0f} MiB)"
            )
        proc, url = start_daemon(data_dir)
        try:
            counts = json.loads(
                urllib.request.urlopen(
                    urllib.request.Request(
                        url + "/api/sql",
                        data=json.dumps(
                            {
                                "sql": "SELECT (SELECT count(*) FROM spans), "
                                "(SELECT count(*) FROM steps)"
                            }
                        ).encode(),
                        headers={"Content-Type": "application/json"},
                    ),
                    timeout=60,
                ).read()
            )
            print(f"daemon {url}: spans={counts['rows'][0][0]:,} steps={counts['rows'][0][1]:,}")
            trace = json.loads(
                urllib.request.urlopen(
                    url + "/api/dashboard/runs?limit=1&sort=cost", timeout=60
                ).read()
            )["runs"][0]["trace_id"]
            endpoints = [
                ("GET /api/dashboard/overview (24h)", "/api/dashboard/overview"),
                ("GET /api/dashboard/overview?range=30d", "/api/dashboard/overview?range=30d"),
                ("GET /api/dashboard/runs (newest 500)", "/api/dashboard/runs"),
                (
                    "GET /api/dashboard/runs?sort=cost&agent=…",
                    "/api/dashboard/runs?sort=cost&agent=agent-07",
                ),
                ("GET /api/dashboard/runs/<trace>", f"/api/dashboard/runs/{trace}"),
                ("GET /api/dashboard/alerts", "/api/dashboard/alerts"),
            ]
            print(f"server time over loopback ({args.repeat} requests each, after one warm-up):")
            for name, path in endpoints:
                timed_get(url + path)
                samples = []
                size = 0
                for _ in range(args.repeat):
                    elapsed, size = timed_get(url + path)
                    samples.append(elapsed)
                report(name, samples, size)
            print(f"full page load of / in headless Chromium ({args.repeat} cold contexts):")
            wall, in_page = page_loads(url, args.repeat)
            report("goto() → data rendered (wall clock)", wall)
            report("navigation start → data rendered (in page)", in_page)
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()

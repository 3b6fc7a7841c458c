"""Real OpenTelemetry SDK exporters (Python protobuf, Node JSON) sending to the daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from opentelemetry.trace import Status, StatusCode

from tests.conftest import ROOT, DaemonThread, otel_provider

JS_DIR = ROOT / "tests" / "js"


def test_python_sdk_otlp_http_protobuf_exporter(daemon: DaemonThread) -> None:
    provider = otel_provider(daemon.url, service="py-agent")
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span(
        "invoke_agent planner",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "planner",
            "gen_ai.conversation.id": "conv-7",
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat claude",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-3-5-sonnet-20241022",
                "gen_ai.usage.input_tokens": 1500,
                "gen_ai.usage.output_tokens": 200,
                "gen_ai.agent.name": "planner",
                "gen_ai.conversation.id": "conv-7",
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool web_search",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "web_search",
                "gen_ai.tool.call.arguments": '{"q": "duckdb"}',
                "gen_ai.agent.name": "planner",
                "gen_ai.conversation.id": "conv-7",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "timeout"))
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    rows = daemon.query(
        "SELECT kind, agent_name, session_id, model, input_tokens, tool_name, tool_args, is_error, "
        "service_name FROM steps WHERE trace_id = ? ORDER BY start_time",
        [trace_id],
    )
    assert rows == [
        ("agent", "planner", "conv-7", None, None, None, None, False, "py-agent"),
        (
            "llm",
            "planner",
            "conv-7",
            "claude-3-5-sonnet-20241022",
            1500,
            None,
            None,
            False,
            "py-agent",
        ),
        (
            "tool",
            "planner",
            "conv-7",
            None,
            None,
            "web_search",
            '{"q": "duckdb"}',
            True,
            "py-agent",
        ),
    ]
    spans = daemon.query(
        'SELECT "SpanName", "StatusCode", "StatusMessage", "ParentSpanId" <> \'\' FROM spans '
        'WHERE "TraceId" = ? ORDER BY "Timestamp"',
        [trace_id],
    )
    assert spans[0] == ("invoke_agent planner", "Unset", "", False)
    assert spans[2] == ("execute_tool web_search", "Error", "timeout", True)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_sdk_otlp_http_json_exporter(daemon: DaemonThread) -> None:
    if not (JS_DIR / "node_modules").is_dir():
        pytest.fail("run `npm ci --prefix tests/js` (scripts/test does it)")
    out = subprocess.run(
        ["node", str(JS_DIR / "send_spans.mjs"), daemon.url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(JS_DIR),
    )
    assert out.returncode == 0, out.stderr
    trace_id = json.loads(out.stdout.strip().splitlines()[-1])["traceId"]
    rows = daemon.query(
        "SELECT kind, agent_name, session_id, model, input_tokens, output_tokens, cost_usd, "
        "price_source, tool_name, is_error, service_name FROM steps WHERE trace_id = ? "
        "ORDER BY kind",
        [trace_id],
    )
    assert [r[0] for r in rows] == ["agent", "llm", "tool"]
    llm = rows[1]
    assert llm[1:6] == ("support-bot", "js-session-1", "gpt-4o-mini", 2000, 300)
    # gpt-4o-mini: $0.15/M input, $0.60/M output.
    assert llm[6] == pytest.approx(2000 * 0.15e-6 + 300 * 0.60e-6)
    assert llm[7] == "genai-prices"
    assert rows[2][8:10] == ("lookup_order", True)
    assert all(r[10] == "js-agent" for r in rows)
    status = daemon.query(
        'SELECT "StatusCode", "StatusMessage" FROM spans WHERE "TraceId" = ? AND "SpanName" LIKE '
        "'execute_tool%'",
        [trace_id],
    )
    assert status == [("Error", "order not found")]

"""Real instrumentations of the real openai client, calling a fake LLM, normalize to the same Step.

Each instrumentation runs in its own subprocess (`tests/agents/instrumented_openai.py`):
the three patch the same client and do not uninstrument cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.llm import FakeLLM, Reply
from tests.test_pricing import cost_from_rates, rates_langfuse

AGENT = Path(__file__).parent / "agents" / "instrumented_openai.py"
PROMPT = "What is the weather in Paris? Use the tool."
RESPONSE_MODEL = "gpt-4o-2024-08-06"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    reply = Reply.tool_call(
        "get_weather",
        {"city": "Paris"},
        call_id="call_weather_1",
        model=RESPONSE_MODEL,
        prompt_tokens=1200,
        completion_tokens=50,
        cached_tokens=1000,
        reasoning_tokens=20,
    )
    with FakeLLM(default=reply) as fake:
        yield fake


def run_agent(*args: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACELOOP_"))}
    proc = subprocess.run(
        [sys.executable, str(AGENT), "--prompt", PROMPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# What each instrumentation reports for the same call: (cache_read, reasoning, content on span).
EXPECTED = {
    "openai-v2": (None, None, False),  # content goes to log events in the default mode
    "openai-v2-latest": (None, None, True),
    "openinference": (1000, 20, True),
    "traceloop": (1000, 20, True),
}


@pytest.mark.parametrize("instrumentation", list(EXPECTED))
def test_instrumented_call_normalizes(llm: FakeLLM, instrumentation: str) -> None:
    before = len(llm.requests)
    spans = run_agent("--instrumentation", instrumentation, "--base-url", llm.base_url)

    # the real client really called the fake
    assert len(llm.requests) == before + 1
    request = llm.requests[-1].body
    assert request["model"] == "gpt-4o"
    assert request["messages"][-1] == {"role": "user", "content": PROMPT}
    assert request["tools"][0]["function"]["name"] == "get_weather"

    steps = [s["step"] for s in spans if s["step"] is not None]
    assert len(steps) == 1, spans
    step = steps[0]
    cache_read, reasoning, has_content = EXPECTED[instrumentation]
    assert step["kind"] == "llm"
    assert step["provider"] == "openai"
    assert step["model"] == RESPONSE_MODEL
    assert step["input_tokens"] == 1200
    assert step["output_tokens"] == 50
    assert step["cache_read_tokens"] == cache_read
    assert step["reasoning_tokens"] == reasoning
    assert step["cache_write_tokens"] is None
    assert step["service_name"] == "instrumented-openai-agent"
    assert step["agent_name"] == "instrumented-openai-agent"
    assert step["session_id"] == step["trace_id"]
    assert step["is_error"] is False
    assert step["tool_name"] is None  # requested tool calls are not tool steps

    # cost: genai-prices' figure for exactly the tokens the span reported ...
    usage = Usage(
        input_tokens=1200,
        output_tokens=50,
        cache_read_tokens=cache_read or 0,
        output_reasoning_tokens=reasoning or 0,
    )
    expected = float(calc_price(usage, RESPONSE_MODEL, provider_id="openai").total_price)
    assert step["price_source"] == "genai-prices"
    assert step["cost_usd"] == pytest.approx(expected, rel=1e-9)
    # ... and the same from Langfuse's independent table. Without the cache attribute
    # (openai-v2) the 1000 cached tokens are billed at the full input rate: an overstatement
    # of what OpenAI charges ($0.0035 instead of $0.00225) that only the emitter can fix.
    by_table = cost_from_rates(rates_langfuse("gpt-4o"), 1200, 50, cache_read or 0, 0, 0)
    assert step["cost_usd"] == pytest.approx(by_table, rel=1e-9)
    assert step["cost_usd"] == pytest.approx(0.00225 if cache_read else 0.0035, rel=1e-9)

    if has_content:
        assert step["user_message"] == PROMPT
        assert step["output_text"] == 'get_weather({"city":"Paris"})'
    else:
        assert step["user_message"] is None
        assert step["output_text"] is None


class _TraceSink(BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.server.received.append(request)  # type: ignore[attr-defined]
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_otlp_endpoint_flag_exports_real_otlp(llm: FakeLLM) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TraceSink)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        lines = run_agent(
            "--instrumentation",
            "traceloop",
            "--base-url",
            llm.base_url,
            "--otlp-endpoint",
            f"http://127.0.0.1:{port}/v1/traces",
            "--service-name",
            "otlp-agent",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert lines == [{"response_id": lines[0]["response_id"], "model": RESPONSE_MODEL}]
    received: list[ExportTraceServiceRequest] = server.received  # type: ignore[attr-defined]
    spans = [
        (resource_spans.resource, span)
        for request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert len(spans) == 1
    resource, span = spans[0]
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    attrs = {a.key: a.value for a in span.attributes}
    assert service == "otlp-agent"
    assert attrs["gen_ai.response.model"].string_value == RESPONSE_MODEL
    assert attrs["gen_ai.usage.cache_read.input_tokens"].int_value == 1000


@pytest.mark.parametrize(
    ("instrumentation", "error_type"),
    [
        ("openai-v2", "InternalServerError"),  # error.type attribute
        ("openinference", "openai.InternalServerError"),  # exception event, qualified name
    ],
)
def test_failed_call_is_an_error_step(llm: FakeLLM, instrumentation: str, error_type: str) -> None:
    llm.enqueue(Reply.error(500, "upstream exploded"))
    lines = run_agent(
        "--instrumentation", instrumentation, "--base-url", llm.base_url, "--tolerate-errors"
    )
    assert {"error": "InternalServerError"} in lines
    steps = [line["step"] for line in lines if line.get("step")]
    assert len(steps) == 1
    step = steps[0]
    assert (step["kind"], step["is_error"], step["error_type"]) == ("llm", True, error_type)
    assert step["input_tokens"] is None
    assert (step["cost_usd"], step["price_source"]) == (None, "unpriced")


def test_fake_llm_serves_the_real_client() -> None:
    import openai

    with FakeLLM() as fake:
        fake.enqueue(
            Reply.text("plain answer", prompt_tokens=7, completion_tokens=3),
            Reply.error(429, "slow down"),
        )
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        messages: Any = [{"role": "user", "content": "hi"}]
        first = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert first.choices[0].message.content == "plain answer"
        assert first.choices[0].finish_reason == "stop"
        assert first.model == "gpt-4o-mini"
        assert first.usage is not None and first.usage.total_tokens == 10
        with pytest.raises(openai.RateLimitError, match="slow down"):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        third = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert third.choices[0].message.content == Reply().content  # the default reply
        assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 3
        assert fake.requests[0].body["messages"] == messages
    fake.stop()  # safe twice
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.base_url

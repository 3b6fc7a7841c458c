"""A tiny agent: the real `openai` client, wrapped by one real OTel instrumentation, calling an LLM.

Run one instrumentation per process (the three patch the same client and do not
uninstrument cleanly)::

    python tests/agents/instrumented_openai.py --instrumentation openinference --base-url URL

`--instrumentation` is one of:

* `openai-v2`: opentelemetry-instrumentation-openai-v2 in its default mode (pre-1.37
  names such as `gen_ai.system`; `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`
  sends message content as log events, not span attributes);
* `openai-v2-latest`: the same with `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`
  and content `SPAN_ONLY` (`gen_ai.provider.name`, `gen_ai.input/output.messages`);
* `openinference`: openinference-instrumentation-openai;
* `traceloop`: Traceloop's opentelemetry-instrumentation-openai (OpenLLMetry).

Without `--base-url` the script starts its own `tests/fakes/llm.FakeLLM` answering with
a tool call. Without `--otlp-endpoint` it keeps spans in memory and prints one JSON line
per finished span: `{"name", "attributes", "step"}` where `step` is what
`collectors.normalize.normalize_span` makes of the span (null for non-GenAI spans).
With `--otlp-endpoint URL` (e.g. `http://127.0.0.1:4318/v1/traces`) it exports with the
real `OTLPSpanExporter` through a `SimpleSpanProcessor` instead and prints the response
summaries only. `--calls N` repeats the call; `--tolerate-errors` reports a failed call
as `{"error": "<exception class>"}` and goes on (the failed span is still exported).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTRUMENTATIONS = ("openai-v2", "openai-v2-latest", "openinference", "traceloop")

# Environment each instrumentation reads at import or instrument time; set before importing.
_ENV: dict[str, dict[str, str]] = {
    "openai-v2": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    "openai-v2-latest": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
    },
    "openinference": {},
    "traceloop": {"TRACELOOP_TRACE_CONTENT": "true"},
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instrumentation", choices=INSTRUMENTATIONS, required=True)
    parser.add_argument("--base-url", help="OpenAI-compatible base URL (default: own fake)")
    parser.add_argument("--otlp-endpoint", help="export spans over OTLP/HTTP to this URL")
    parser.add_argument("--service-name", default="instrumented-openai-agent")
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--calls", type=int, default=1, help="chat calls to make")
    parser.add_argument(
        "--prompt", default="What is the weather in Paris? Use the tool.", help="user message"
    )
    parser.add_argument(
        "--tolerate-errors",
        action="store_true",
        help="report a failed call as a JSON line and go on, instead of exiting non-zero",
    )
    return parser.parse_args(argv)


def _instrumentor(name: str) -> Any:
    if name.startswith("openai-v2"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    elif name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    return OpenAIInstrumentor()  # type: ignore[no-untyped-call]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Make `--calls` chat calls through the chosen instrumentation and report the spans."""
    args = _parse_args(argv)
    for key, value in _ENV[args.instrumentation].items():
        os.environ[key] = value
    repo = str(Path(__file__).resolve().parents[2])  # `collectors`, `watchdog`, `tests.fakes`
    if repo not in sys.path:
        sys.path.insert(0, repo)

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": args.service_name}))
    memory = InMemorySpanExporter()
    if args.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(args.otlp_endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(memory))
    _instrumentor(args.instrumentation).instrument(tracer_provider=provider)

    import openai

    fake = None
    base_url = args.base_url
    if base_url is None:
        from tests.fakes.llm import FakeLLM, Reply

        fake = FakeLLM(
            default=Reply.tool_call(
                "get_weather",
                {"city": "Paris"},
                prompt_tokens=1200,
                completion_tokens=50,
                cached_tokens=1000,
            )
        ).start()
        base_url = fake.base_url
    try:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
        for _ in range(args.calls):
            try:
                response = client.chat.completions.create(
                    model=args.model,
                    messages=[
                        {"role": "system", "content": "You are a weather agent."},
                        {"role": "user", "content": args.prompt},
                    ],
                    tools=[WEATHER_TOOL],  # type: ignore[list-item]
                )
            except openai.APIError as err:
                if not args.tolerate_errors:
                    raise
                print(json.dumps({"error": type(err).__name__}))
                continue
            if args.otlp_endpoint:
                print(json.dumps({"response_id": response.id, "model": response.model}))
    finally:
        provider.shutdown()
        if fake is not None:
            fake.stop()

    if not args.otlp_endpoint:
        _print_spans(memory.get_finished_spans())
    return 0


def _print_spans(spans: Sequence[Any]) -> None:
    from collectors.normalize import normalize_span
    from watchdog.pricing import Pricer

    pricer = Pricer()
    for span in spans:
        attrs = {k: _jsonable(v) for k, v in (span.attributes or {}).items()}
        resource = {k: _jsonable(v) for k, v in span.resource.attributes.items()}
        step = normalize_span(
            trace_id=format(span.context.trace_id, "032x"),
            span_id=format(span.context.span_id, "016x"),
            parent_span_id=format(span.parent.span_id, "016x") if span.parent else "",
            name=span.name,
            start_ns=span.start_time,
            end_ns=span.end_time,
            status_code=span.status.status_code.value,
            status_message=span.status.description or "",
            attrs=attrs,
            resource_attrs=resource,
            events=[(e.name, dict(e.attributes or {})) for e in span.events],
            pricer=pricer,
        )
        print(
            json.dumps(
                {
                    "name": span.name,
                    "attributes": attrs,
                    "step": dataclasses.asdict(step) if step is not None else None,
                }
            )
        )


if __name__ == "__main__":
    sys.exit(main())

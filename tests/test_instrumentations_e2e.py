"""The real `openai` client under each real instrumentation, exporting to a running daemon."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from genai_prices import Usage, calc_price

from tests.conftest import DaemonThread
from tests.fakes.llm import FakeLLM, Reply
from tests.test_instrumentations import PROMPT, RESPONSE_MODEL, run_agent
from tests.test_pricing import cost_from_rates, rates_langfuse


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    reply = Reply.tool_call(
        "lookup_order",
        {"order_id": 42},
        call_id="call_order_1",
        model=RESPONSE_MODEL,
        prompt_tokens=1200,
        completion_tokens=50,
        cached_tokens=1000,
    )
    with FakeLLM(default=reply) as fake:
        yield fake


# instrumentation → the cached-token count it reports (openai-v2 reports none).
CACHE_READ = {"openai-v2": None, "openinference": 1000, "traceloop": 1000}


@pytest.mark.parametrize("instrumentation", list(CACHE_READ))
def test_instrumented_agent_lands_in_steps(
    daemon: DaemonThread, llm: FakeLLM, instrumentation: str
) -> None:
    service = f"agent-{instrumentation}"
    run_agent(
        "--instrumentation",
        instrumentation,
        "--base-url",
        llm.base_url,
        "--otlp-endpoint",
        f"{daemon.url}/v1/traces",
        "--service-name",
        service,
    )
    rows = daemon.query(
        "SELECT kind, provider, model, input_tokens, output_tokens, cache_read_tokens, "
        "cost_usd, price_source, output_text FROM steps WHERE service_name = ?",
        [service],
    )
    assert len(rows) == 1, rows
    kind, provider, model, inp, out, cached, cost, source, output = rows[0]
    assert (kind, provider, model, inp, out, cached) == (
        "llm",
        "openai",
        RESPONSE_MODEL,
        1200,
        50,
        CACHE_READ[instrumentation],
    )
    assert source == "genai-prices"
    expected = calc_price(
        Usage(input_tokens=1200, output_tokens=50, cache_read_tokens=cached or 0),
        model_ref=RESPONSE_MODEL,
        provider_id="openai",
    ).total_price
    assert cost == pytest.approx(float(expected))
    # Independently of genai-prices: Langfuse's public table gives the same figure.
    rates = rates_langfuse(RESPONSE_MODEL)
    assert cost == pytest.approx(cost_from_rates(rates, 1200, 50, cached or 0, 0, 0), rel=1e-6)
    if instrumentation != "openai-v2":  # the others record content on the span
        assert output is not None and "lookup_order" in output
    spans = daemon.query('SELECT count(*) FROM spans WHERE "ServiceName" = ?', [service])
    assert spans == [(1,)]
    assert PROMPT  # the agent asked the fake LLM the shared prompt

"""Pricer: agrees with genai-prices and with the raw public price tables, offline and fast."""

from __future__ import annotations

import json
import socket
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices import types as gp_types
from genai_prices import update_prices as gp_update

from watchdog.errors import ConfigError
from watchdog.pricing import Pricer, canonical_provider

TABLES = Path("/work/shared/data/price-tables")
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def priced(cost: float, source: str) -> Any:
    """An expected (cost, source) pair with the cost compared approximately."""
    return (pytest.approx(cost), source)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer()


def genai_cost(
    model: str,
    provider_id: str | None,
    inp: int,
    out: int,
    cr: int = 0,
    cw: int = 0,
    rs: int = 0,
    at: datetime = AT,
) -> float:
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        output_reasoning_tokens=rs,
    )
    kwargs: dict[str, Any] = {"genai_request_timestamp": at}
    if provider_id is not None:
        kwargs["provider_id"] = provider_id
    return float(calc_price(usage, model, **kwargs).total_price)


def price(
    p: Pricer,
    provider: str | None,
    model: str | None,
    inp: int | None,
    out: int | None,
    cr: int | None = None,
    cw: int | None = None,
    rs: int | None = None,
    at: datetime = AT,
) -> tuple[float | None, str]:
    return p.price(
        provider=provider,
        model=model,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        reasoning_tokens=rs,
        at=at,
    )


# --- provider vocabulary ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("openai", "openai"),
        ("OpenAI", "openai"),
        ("azure.ai.openai", "azure"),
        ("az.ai.openai", "azure"),
        ("azure.ai.inference", "azure"),
        ("Azure", "azure"),
        ("anthropic", "anthropic"),
        ("Anthropic", "anthropic"),
        ("aws.bedrock", "bedrock"),
        ("aws", "bedrock"),
        ("amazon", "bedrock"),
        ("AWS", "bedrock"),
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gen_ai", "google"),
        ("vertexai", "google"),
        ("vertex_ai", "google"),
        ("gemini", "google"),
        ("Google", "google"),
        ("mistral_ai", "mistral"),
        ("mistralai", "mistral"),
        ("MistralAI", "mistral"),
        ("x_ai", "xai"),
        ("xai", "xai"),
        ("ibm.watsonx.ai", "ibm"),
        ("moonshot_ai", "moonshot"),
        ("  Groq ", "groq"),
        ("some-new-vendor", "some-new-vendor"),
        ("", None),
        (None, None),
    ],
)
def test_canonical_provider(raw: str | None, canonical: str | None) -> None:
    assert canonical_provider(raw) == canonical


# --- agreement with genai-prices ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "provider_id", "usage"),
    [
        ("openai", "gpt-4o", "openai", (1200, 50, 1000, 0, 0)),
        ("OpenAI", "gpt-4o-2024-08-06", "openai", (1200, 50, 1000, 0, 0)),
        ("openai", "gpt-4o-mini", "openai", (5000, 300, 0, 0, 0)),
        ("openai", "o3", "openai", (2000, 1500, 500, 0, 1000)),
        ("openai", "text-embedding-3-small", "openai", (800, 0, 0, 0, 0)),
        ("anthropic", "claude-3-5-sonnet-20241022", "anthropic", (10_000, 500, 2000, 3000, 0)),
        ("anthropic", "claude-sonnet-4-5", "anthropic", (300_000, 2000, 100_000, 10_000, 0)),
        ("anthropic", "claude-sonnet-4-5", "anthropic", (150_000, 2000, 100_000, 10_000, 0)),
        ("aws.bedrock", "anthropic.claude-3-haiku-20240307-v1:0", "aws", (4000, 100, 0, 0, 0)),
        ("gcp.vertex_ai", "gemini-2.5-pro", "google", (250_000, 800, 50_000, 0, 300)),
        ("gcp.gemini", "gemini-2.5-flash", "google", (1000, 900, 0, 0, 600)),
        ("azure.ai.openai", "gpt-4o", "azure", (1200, 50, 1000, 0, 0)),
        ("mistral_ai", "mistral-large-latest", "mistral", (700, 70, 0, 0, 0)),
        ("x_ai", "grok-4", "x-ai", (700, 70, 100, 0, 0)),
        ("deepseek", "deepseek-chat", "deepseek", (700, 70, 100, 0, 0)),
        ("groq", "llama-3.1-8b-instant", "groq", (700, 70, 0, 0, 0)),
    ],
)
def test_matches_genai_prices(
    pricer: Pricer,
    provider: str,
    model: str,
    provider_id: str,
    usage: tuple[int, int, int, int, int],
) -> None:
    expected = genai_cost(model, provider_id, *usage)
    cost, source = price(pricer, provider, model, *usage)
    assert source == "genai-prices"
    assert cost == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert cost is not None and cost > 0


def test_compiled_prices_match_genai_prices_for_every_model() -> None:
    """Every model of the bundled table: our float arithmetic equals calc_price's Decimals."""
    pricer = Pricer()
    snapshot = data_snapshot.get_snapshot()
    usages = [
        (1000, 100, 0, 0, 0),
        (1200, 50, 1000, 0, 0),
        (5000, 700, 1000, 2000, 300),
        (300_000, 1000, 10_000, 5000, 200),  # above the usual 200k tier threshold
    ]
    compared = 0
    for provider in snapshot.providers:
        for model in provider.models:
            # input sizes on both sides of each tier threshold ("cliff" pricing: > start)
            starts = {
                tier.start
                for value in vars(model.get_prices(AT)).values()
                if isinstance(value, gp_types.TieredPrices)
                for tier in value.tiers
            }
            edges = [(n, 100, n // 10, 0, 10) for s in starts for n in (s, s + 1)]
            for usage in usages + edges:
                try:
                    expected = genai_cost(model.id, provider.id, *usage)
                except LookupError:
                    continue  # the model id is not one of its own match refs
                cost, source = price(pricer, provider.id, model.id, *usage)
                if source == "unpriced":
                    # Only models not priced per token may be unpriced, and for a
                    # token-only usage genai-prices charges them nothing either.
                    assert expected == 0, (provider.id, model.id, usage)
                    continue
                assert source == "genai-prices"
                assert cost == pytest.approx(expected, rel=1e-9, abs=1e-12), (
                    provider.id,
                    model.id,
                    usage,
                )
                compared += 1
    assert compared > 5000


def test_date_conditional_prices_follow_at(pricer: Pricer) -> None:
    # o3 cost $10/$40 per MTok until 2025-06-10 and $2/$8 after.
    before = datetime(2025, 5, 1, tzinfo=UTC)
    old, _ = price(pricer, "openai", "o3", 1_000_000, 0, at=before)
    new, _ = price(pricer, "openai", "o3", 1_000_000, 0, at=AT)
    assert old == pytest.approx(10.0)
    assert new == pytest.approx(2.0)
    assert old == pytest.approx(genai_cost("o3", "openai", 1_000_000, 0, at=before))
    at_ns = int(before.timestamp() * 1e9)
    by_ns = pricer.price(
        provider="openai",
        model="o3",
        input_tokens=1_000_000,
        output_tokens=0,
        at_ns=at_ns,
    )
    assert by_ns == priced(10.0, "genai-prices")


def test_time_of_day_prices(pricer: Pricer) -> None:
    peak = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    off_peak = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
    for at in (peak, off_peak):
        cost, _ = price(pricer, "deepseek", "deepseek-chat", 10_000, 1000, 2000, at=at)
        assert cost == pytest.approx(
            genai_cost("deepseek-chat", "deepseek", 10_000, 1000, 2000, at=at)
        )
    assert (
        price(pricer, "deepseek", "deepseek-chat", 10_000, 1000, at=peak)[0]
        != price(pricer, "deepseek", "deepseek-chat", 10_000, 1000, at=off_peak)[0]
    )


# --- token conventions ---------------------------------------------------------------------


def test_cache_tokens_are_a_subset_of_input(pricer: Pricer) -> None:
    # 1,000 input with 500 cache reads on gpt-4o: 500 x 2.5 + 500 x 1.25 per MTok.
    cost, _ = price(pricer, "openai", "gpt-4o", 1000, 0, 500)
    assert cost == pytest.approx(0.001875)
    uncached, _ = price(pricer, "openai", "gpt-4o", 1000, 0)
    assert uncached == pytest.approx(0.0025)


def test_genai_prices_counts_cache_inside_input() -> None:
    """The semantics Pricer relies on: genai-prices subtracts cache tokens from input_tokens."""
    inclusive = genai_cost("gpt-4o", "openai", 1000, 0, cr=500)
    assert inclusive == pytest.approx((500 * 2.5 + 500 * 1.25) / 1e6)
    with pytest.raises(ValueError, match="cannot exceed"):
        genai_cost("gpt-4o", "openai", 100, 0, cr=1000)


def test_exclusive_cache_convention_is_added(pricer: Pricer) -> None:
    # Anthropic's raw API: input_tokens=100 excludes 1,000 cache reads and 200 writes.
    cost, _ = price(pricer, "anthropic", "claude-3-5-sonnet-20241022", 100, 50, 1000, 200)
    assert cost == pytest.approx(
        genai_cost("claude-3-5-sonnet-20241022", "anthropic", 1300, 50, 1000, 200)
    )
    assert cost == pytest.approx((100 * 3 + 1000 * 0.3 + 200 * 3.75 + 50 * 15) / 1e6)


def test_reasoning_beside_output_is_added(pricer: Pricer) -> None:
    # Gemini-style: 100 visible output tokens reported beside 400 thought tokens.
    cost, _ = price(pricer, "google", "gemini-2.5-flash", 1000, 100, rs=400)
    assert cost == pytest.approx(genai_cost("gemini-2.5-flash", "google", 1000, 500, rs=400))


@pytest.mark.parametrize(
    ("provider", "model", "inp", "out"),
    [
        ("openai", "my-private-finetune-xyz", 100, 10),
        ("acme", "totally-unknown-model", 100, 10),
        (None, "llama3.1:8b", 100, 10),
        ("openai", None, 100, 10),
        ("openai", "", 100, 10),
        ("openai", "gpt-4o", None, None),
        ("ollama", "gpt-4o", 100, 10),  # self-hosted: a public list price would be fiction
    ],
)
def test_unpriced_is_none_never_zero(
    pricer: Pricer, provider: str | None, model: str | None, inp: int | None, out: int | None
) -> None:
    assert price(pricer, provider, model, inp, out) == (None, "unpriced")


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("acme-proxy", "gpt-4o"),  # unknown provider: model-only matching
        (None, "gpt-4o"),
        ("openai", "openai/gpt-4o"),  # LiteLLM / OpenRouter style prefix
        ("az.ai.openai", "gpt-4o"),  # azure falls back to openai's table
        ("openai", "gpt-4o-2024-11-20"),
    ],
)
def test_model_resolution_fallbacks(pricer: Pricer, provider: str | None, model: str) -> None:
    cost, source = price(pricer, provider, model, 1200, 50, 1000)
    assert source == "genai-prices"
    assert cost == pytest.approx(genai_cost("gpt-4o", "openai", 1200, 50, 1000))


# --- independent cross-check against the raw tables ----------------------------------------


def _tier(value: Any, total_input: int) -> float:
    if isinstance(value, dict):
        rate = value["base"]
        for tier in sorted(value["tiers"], key=lambda t: t["start"]):
            if total_input > tier["start"]:
                rate = tier["price"]
        return float(rate)
    return float(value)


def rates_genai_raw(provider_id: str, model_id: str, total_input: int) -> dict[str, float]:
    """Per-MTok rates from genai-prices' published data.json (date conditions as of AT)."""
    providers = json.loads((TABLES / "genai-prices-v2-data.json").read_text())
    provider = next(p for p in providers if p["id"] == provider_id)
    model = next(m for m in provider["models"] if m["id"] == model_id)
    prices = model["prices"]
    if isinstance(prices, list):
        active = [
            c
            for c in prices
            if "constraint" not in c
            or datetime.fromisoformat(c["constraint"]["start_date"]).date() <= AT.date()
        ]
        prices = active[-1]["prices"]
    rates = {k: _tier(v, total_input) for k, v in prices.items()}
    return {
        "input": rates["input_mtok"],
        "output": rates["output_mtok"],
        "cache_read": rates.get("cache_read_mtok", rates["input_mtok"]),
        "cache_write": rates.get("cache_write_mtok", rates["input_mtok"]),
        "reasoning": rates.get("output_reasoning_mtok", rates["output_mtok"]),
    }


def rates_langfuse(model_name: str) -> dict[str, float]:
    """Per-MTok rates from Langfuse's default tier (its prices are USD per token)."""
    models = json.loads((TABLES / "langfuse-default-model-prices.json").read_text())
    model = next(m for m in models if m["modelName"] == model_name)
    tier = next(t for t in model["pricingTiers"] if t["isDefault"])
    p = {k: v * 1e6 for k, v in tier["prices"].items()}
    return {
        "input": p["input"],
        "output": p["output"],
        "cache_read": p.get("input_cache_read", p.get("input_cached_tokens", p["input"])),
        "cache_write": p.get("input_cache_creation", p["input"]),
        "reasoning": p.get("output_reasoning", p["output"]),
    }


def rates_litellm(key: str) -> dict[str, float]:
    """Per-MTok rates from the LiteLLM table (tokencost's 2025-09 copy; USD per token)."""
    entry = json.loads((TABLES / "tokencost-litellm-model_prices.json").read_text())[key]
    inp = entry["input_cost_per_token"] * 1e6
    out = entry["output_cost_per_token"] * 1e6
    return {
        "input": inp,
        "output": out,
        "cache_read": entry.get("cache_read_input_token_cost", entry["input_cost_per_token"]) * 1e6,
        "cache_write": entry.get("cache_creation_input_token_cost", entry["input_cost_per_token"])
        * 1e6,
        "reasoning": entry.get("output_cost_per_reasoning_token", entry["output_cost_per_token"])
        * 1e6,
    }


def cost_from_rates(r: dict[str, float], inp: int, out: int, cr: int, cw: int, rs: int) -> float:
    """The LiteLLM / Langfuse decomposition: cache inside input, reasoning inside output."""
    return (
        (inp - cr - cw) * r["input"]
        + cr * r["cache_read"]
        + cw * r["cache_write"]
        + (out - rs) * r["output"]
        + rs * r["reasoning"]
    ) / 1e6


# All three tables agree on these models, so the tolerance is float rounding only.
CROSS_CHECKS = [
    pytest.param(
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o"),
        "gpt-4o",
        "gpt-4o",
        (1200, 50, 1000, 0, 0),
        0.00225,
        id="gpt-4o-cached",
    ),
    pytest.param(
        ("anthropic", "claude-sonnet-4-20250514"),
        ("anthropic", "claude-sonnet-4-0"),
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-20250514",
        (10_000, 500, 2000, 3000, 0),
        0.03435,
        id="claude-sonnet-4-cache-write",
    ),
    pytest.param(
        ("openai", "o3"),
        ("openai", "o3"),
        "o3",
        "o3",
        (2000, 1500, 500, 0, 1000),
        0.01525,
        id="o3-reasoning",
    ),
]


@pytest.mark.parametrize(
    ("call", "genai_model", "langfuse_name", "litellm_key", "usage", "by_hand"), CROSS_CHECKS
)
def test_cross_check_against_raw_tables(
    pricer: Pricer,
    call: tuple[str, str],
    genai_model: tuple[str, str],
    langfuse_name: str,
    litellm_key: str,
    usage: tuple[int, int, int, int, int],
    by_hand: float,
) -> None:
    cost, source = price(pricer, *call, *usage)
    assert source == "genai-prices"
    assert cost == pytest.approx(by_hand, rel=1e-9)
    inp = usage[0]
    for rates in (
        rates_genai_raw(*genai_model, inp),
        rates_langfuse(langfuse_name),
        rates_litellm(litellm_key),
    ):
        assert cost == pytest.approx(cost_from_rates(rates, *usage), rel=1e-9)


def test_cross_check_where_tables_disagree(pricer: Pricer) -> None:
    """Gemini 2.5 Pro cached input: $0.125/M in genai-prices and Langfuse (2026), $0.3125/M
    in the stale 2025 LiteLLM copy. We follow genai-prices; the old copy must cost more."""
    usage = (100_000, 2000, 60_000, 0, 500)
    cost, _ = price(pricer, "google", "gemini-2.5-pro", *usage)
    assert cost == pytest.approx(
        cost_from_rates(rates_genai_raw("google", "gemini-2.5-pro", usage[0]), *usage), rel=1e-9
    )
    assert cost == pytest.approx(
        cost_from_rates(rates_langfuse("gemini-2.5-pro"), *usage), rel=1e-9
    )
    stale = cost_from_rates(rates_litellm("gemini-2.5-pro"), *usage)
    assert cost is not None
    assert stale - cost == pytest.approx(60_000 * (0.3125 - 0.125) / 1e6, rel=1e-9)


# --- overrides -----------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_override_file_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prices.yaml",
        """
- model: gpt-4o            # a negotiated rate beats the public table
  input_mtok: 1.0
  output_mtok: 2.0
  cache_read_mtok: 0.1
- model: "acme-llm-*"
  input_mtok: 0.5
  output_mtok: 1.5
  reasoning_mtok: 3.0
- model: llama3.1:8b
  provider: ollama
  input_mtok: 0.01
  output_mtok: 0.02
""",
    )
    p = Pricer(path)
    assert price(p, "openai", "gpt-4o", 1200, 50, 1000) == priced(
        (200 * 1.0 + 1000 * 0.1 + 50 * 2.0) / 1e6, "override"
    )
    # glob, case-insensitive; unset cache rates bill cache reads at the input rate
    assert price(p, "whatever", "ACME-LLM-7b", 1000, 100, 400, rs=60) == priced(
        (1000 * 0.5 + 40 * 1.5 + 60 * 3.0) / 1e6, "override"
    )
    # provider-restricted entry: any spelling of the provider matches, others do not
    assert price(p, "Ollama", "llama3.1:8b", 1000, 1000) == priced(0.03 / 1000, "override")
    assert price(p, "vllm", "llama3.1:8b", 1000, 1000) == (None, "unpriced")
    # models not overridden still come from genai-prices
    assert price(p, "openai", "gpt-4o-mini", 1000, 100)[1] == "genai-prices"


def test_override_file_json(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prices.json",
        json.dumps([{"model": "in-house", "input_mtok": 1, "output_mtok": 4}]),
    )
    assert price(Pricer(path), None, "in-house", 1_000_000, 1_000_000) == (5.0, "override")


def test_empty_override_file(tmp_path: Path) -> None:
    p = Pricer(write(tmp_path, "prices.yaml", "# nothing yet\n"))
    assert price(p, "openai", "gpt-4o", 1000, 0)[1] == "genai-prices"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "prices.yaml",
            "- model: a\n  input_mtok: 1\n  output_mtok: 1\n- model: b\n  input_mtok: 1\n",
            ["entry 1", "output_mtok", "Field required"],
        ),
        (
            "prices.yaml",
            "- model: a\n  input_mtok: 1\n  output_mtok: 1\n  price: 3\n",
            ["entry 0", "price", "Extra inputs are not permitted"],
        ),
        (
            "prices.yaml",
            "- model: a\n  input_mtok: -1\n  output_mtok: 1\n",
            ["entry 0", "input_mtok", "greater than or equal to 0"],
        ),
        (
            "prices.json",
            '[{"model": "a", "input_mtok": "cheap", "output_mtok": 1}]',
            ["entry 0", "input_mtok"],
        ),
        ("prices.yaml", "model: a\ninput_mtok: 1\n", ["expected a list"]),
        ("prices.yaml", "- model: [unclosed\n", ["cannot parse"]),
        ("prices.json", "[{", ["cannot parse"]),
    ],
)
def test_bad_override_file(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as err:
        Pricer(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_missing_override_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        Pricer(missing)


# --- offline and fast ------------------------------------------------------------------------


def test_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    p = Pricer()
    cost, source = price(p, "openai", "gpt-4o", 1000, 100)
    assert source == "genai-prices" and cost == pytest.approx(0.0035)
    assert price(p, "anthropic", "claude-3-5-haiku-20241022", 1000, 100)[1] == "genai-prices"
    assert attempts == []
    # genai-prices' background updater (the only code in it that fetches) never ran
    assert gp_update._shared_updater.thread is None
    assert gp_update._shared_updater.ref_count == 0
    assert data_snapshot.get_snapshot().from_auto_update is False
    assert genai_prices.__version__ == "0.2.3"


def test_steady_state_price_is_microseconds(pricer: Pricer) -> None:
    """Loose bound (CI machines are noisy): calc_price itself costs ~120 µs a call."""
    kwargs: dict[str, Any] = dict(
        provider="openai",
        model="gpt-4o-2024-08-06",
        input_tokens=1200,
        output_tokens=50,
        cache_read_tokens=1000,
        at=AT,
    )
    pricer.price(**kwargs)
    n = 20_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            pricer.price(**kwargs)
        best = min(best, (time.perf_counter() - start) / n)
    assert best < 20e-6


def test_usage_keys_we_pass_are_known_to_genai_prices() -> None:
    # genai-prices warns on usage keys it does not know; ours must all be real unit keys.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        genai_cost("gpt-4o", "openai", 10, 10, 1, 1, 1)

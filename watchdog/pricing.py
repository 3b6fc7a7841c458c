"""Model prices: one `Pricer` that turns token counts into USD, offline and in microseconds.

Sources, first match wins:

1. the user's override file (custom or self-hosted models), `price_source="override"`;
2. the `genai-prices` table bundled with the installed package, `price_source="genai-prices"`.
   Its background auto-update (`genai_prices.UpdatePrices`) is never started, so pricing
   never touches the network; prices change when the package is upgraded;
3. otherwise `(None, "unpriced")`: an unknown model costs "unknown", never 0.

Token semantics (reference §5 rule 1): cache reads and writes are subsets of
`input_tokens`, reasoning tokens a subset of `output_tokens`. When an emitter reports
`cache_read + cache_write > input_tokens` it used the exclusive convention (Anthropic's
raw API does) and the cache counts are added to the input instead; likewise
`reasoning > output` means reasoning was reported beside the output (Gemini's API does)
and it is added. A sub-count with no price of its own is billed at its parent's rate.

Speed: `genai_prices.calc_price` costs about 120 µs a call (Decimal arithmetic and a
unit-registry walk). `Pricer` resolves each (provider, model) pair once, compiles the
model's prices to floats, and computes each call with a handful of float operations.
The compiled arithmetic reproduces `genai-prices` exactly for the units watchdog
reports (input, cache read, cache write, output, reasoning, per-request fees,
input-size tiers, date- and time-of-day-conditional prices);
`tests/test_pricing.py` checks it against `calc_price` for every model in the table.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import yaml
from genai_prices import data_snapshot
from genai_prices import types as gp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from watchdog.errors import ConfigError

__all__ = ["PriceOverride", "Pricer", "canonical_provider", "load_overrides"]

# Raw provider names as the three conventions spell them (lower-cased) → one canonical
# vocabulary (reference §5 rule 3). Unlisted names canonicalize to themselves, lower-cased.
_PROVIDER_ALIASES: Final[dict[str, str]] = {
    # OpenAI and Azure (OTel's value names the API flavour, not the model vendor)
    "openai": "openai",
    "azure": "azure",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azureopenai": "azure",
    "anthropic": "anthropic",
    # Google
    "google": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "vertex": "google",
    "gemini": "google",
    "google_genai": "google",
    # AWS
    "bedrock": "bedrock",
    "aws.bedrock": "bedrock",
    "aws": "bedrock",
    "amazon": "bedrock",
    "aws_bedrock": "bedrock",
    # Others with several spellings
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "xai": "xai",
    "x_ai": "xai",
    "x-ai": "xai",
    "ibm.watsonx.ai": "ibm",
    "watsonx": "ibm",
    "ibm": "ibm",
    "moonshot": "moonshot",
    "moonshot_ai": "moonshot",
    "moonshotai": "moonshot",
    "together": "together",
    "together_ai": "together",
    "together-ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "fireworks-ai": "fireworks",
    "huggingface": "huggingface",
    "hugging_face": "huggingface",
}

# Canonical provider → genai-prices provider id. Canonical names not listed here and not
# themselves a genai-prices id are priced by model name alone.
_GENAI_PRICES_IDS: Final[dict[str, str]] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "google": "google",
    "bedrock": "aws",
    "mistral": "mistral",
    "xai": "x-ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "perplexity": "perplexity",
    "moonshot": "moonshotai",
    "together": "together",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
    "openrouter": "openrouter",
    "meta": "meta",
}

# Inference servers people run themselves: public list prices would be fiction, so these
# stay unpriced unless the override file names them.
_SELF_HOSTED: Final[frozenset[str]] = frozenset(
    {"ollama", "vllm", "lmstudio", "lm_studio", "llama.cpp", "llamacpp", "localai", "local", "tgi"}
)

_canonical_cache: dict[str, str | None] = {}


def canonical_provider(raw: str | None) -> str | None:
    """Map any convention's provider name to one canonical lower-case name (None stays None).

    `azure.ai.openai`, `az.ai.openai`, OpenInference `azure` and old OpenLLMetry `Azure`
    all become `azure`; `aws.bedrock`/`aws`/`amazon` → `bedrock`; `gcp.*`/`vertexai`/
    `gemini` → `google`; `mistral_ai`/`mistralai` → `mistral`; `x_ai` → `xai`.
    Unknown names are returned stripped and lower-cased. Blank names become None.
    """
    if raw is None:
        return None
    hit = _canonical_cache.get(raw)
    if hit is not None or raw in _canonical_cache:
        return hit
    key = raw.strip().lower()
    result = _PROVIDER_ALIASES.get(key, key) or None
    if len(_canonical_cache) < 1024:  # bounded: provider names are emitter-controlled
        _canonical_cache[raw] = result
    return result


class PriceOverride(BaseModel):
    """One user price entry, USD per million tokens; `model` is a name or a glob (`my-llm-*`).

    Unset cache and reasoning rates bill those tokens at the input and output rates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="Model name or glob, matched case-insensitively.")
    provider: str | None = Field(
        None, description="Only match spans of this provider (any spelling; canonicalized)."
    )
    input_mtok: float = Field(ge=0, description="USD per million uncached input tokens.")
    output_mtok: float = Field(ge=0, description="USD per million output tokens.")
    cache_read_mtok: float | None = Field(None, ge=0, description="USD per million cache reads.")
    cache_write_mtok: float | None = Field(None, ge=0, description="USD per million cache writes.")
    reasoning_mtok: float | None = Field(
        None, ge=0, description="USD per million reasoning tokens."
    )


_OVERRIDES_ADAPTER: Final = TypeAdapter(list[PriceOverride])


def load_overrides(path: Path) -> list[PriceOverride]:
    """Read and validate an override file (YAML, or JSON by `.json` suffix).

    Raises ConfigError naming the file and, for each wrong field, `entry N, field: message`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read price overrides file {path}: {err}") from err
    try:
        raw: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse price overrides file {path}: {err}") from err
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(
            f"invalid price overrides file {path}: expected a list of entries, "
            f"got {type(raw).__name__}"
        )
    try:
        return _OVERRIDES_ADAPTER.validate_python(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = list(e["loc"])
            where = f"entry {loc[0]}" if loc and isinstance(loc[0], int) else "(root)"
            fields = ".".join(str(p) for p in loc[1:])
            lines.append(f"  {where}, {fields or '(entry)'}: {e['msg']}")
        raise ConfigError(f"invalid price overrides file {path}:\n" + "\n".join(lines)) from err


@dataclass(frozen=True, slots=True)
class _FlatRates:
    """A model's prices in USD per million tokens; None where the table prices no such unit."""

    input: float | None
    output: float | None
    cache_read: float | None
    cache_write: float | None
    reasoning: float | None
    per_request: float = 0.0  # USD per call (genai-prices `requests_kcount` / 1000)

    def cost(self, inp: int, out: int, cr: int, cw: int, rs: int) -> float:
        """USD for one call; counts are already in the inclusive convention."""
        return _cost(
            self.input,
            self.output,
            self.cache_read,
            self.cache_write,
            self.reasoning,
            self.per_request,
            inp,
            out,
            cr,
            cw,
            rs,
        )


def _cost(
    in_rate: float | None,
    out_rate: float | None,
    cr_rate: float | None,
    cw_rate: float | None,
    rs_rate: float | None,
    per_request: float,
    inp: int,
    out: int,
    cr: int,
    cw: int,
    rs: int,
) -> float:
    """USD for one call from per-million rates.

    A sub-count (cache, reasoning) is carved out of its parent only when it has a price of
    its own; otherwise it stays in the parent and pays the parent's rate, as genai-prices does.
    """
    total = 0.0
    if cr_rate is not None:
        inp -= cr
        total += cr * cr_rate
    if cw_rate is not None:
        inp -= cw
        total += cw * cw_rate
    if in_rate is not None:
        total += inp * in_rate
    if rs_rate is not None:
        out -= rs
        total += rs * rs_rate
    if out_rate is not None:
        total += out * out_rate
    return total / 1_000_000 + per_request


# (base, ((start, price), ...)): all tokens pay the price of the highest tier whose
# `start` the call's total input exceeds, else the base (genai-prices' "cliff" model).
_Tiered = tuple[float, tuple[tuple[int, float], ...]]


@dataclass(frozen=True, slots=True)
class _TieredRates:
    """Like `_FlatRates` for models whose rates depend on the size of the input."""

    input: _Tiered | None
    output: _Tiered | None
    cache_read: _Tiered | None
    cache_write: _Tiered | None
    reasoning: _Tiered | None
    per_request: float = 0.0

    def cost(self, inp: int, out: int, cr: int, cw: int, rs: int) -> float:
        """USD for one call; counts are already in the inclusive convention."""
        return _cost(
            _tier_rate(self.input, inp),
            _tier_rate(self.output, inp),
            _tier_rate(self.cache_read, inp),
            _tier_rate(self.cache_write, inp),
            _tier_rate(self.reasoning, inp),
            self.per_request,
            inp,
            out,
            cr,
            cw,
            rs,
        )


_Rates = _FlatRates | _TieredRates


def _tier_rate(rate: _Tiered | None, total_input: int) -> float | None:
    if rate is None:
        return None
    base, tiers = rate
    for start, price in reversed(tiers):
        if total_input > start:
            return price
    return base


def _compile_rate(value: object) -> _Tiered | None:
    """Convert a genai-prices price to tiers (a flat price is a base with no tiers)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return (float(value), ())
    if isinstance(value, gp.TieredPrices):
        tiers = sorted(value.tiers, key=_tier_start)
        return (float(value.base), tuple((int(t.start), float(t.price)) for t in tiers))
    raise TypeError(f"unsupported genai-prices price value {value!r}")


def _tier_start(tier: gp.Tier) -> int:
    return tier.start


def _compile_model_price(mp: gp.ModelPrice) -> _Rates | None:
    """Compile a genai-prices ModelPrice; None when it prices no token unit watchdog reports."""
    # ModelPrice.__getattr__ answers None for registered price keys it does not carry.
    keys = (
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "output_reasoning_mtok",
    )
    inp, out, cr, cw, rs = (_compile_rate(getattr(mp, key)) for key in keys)
    if inp is None and out is None and cr is None and cw is None and rs is None:
        return None  # priced per character, second, image... not per token
    requests = getattr(mp, "requests_kcount")  # noqa: B009 - resolved by ModelPrice.__getattr__
    per_request = float(requests) / 1000 if isinstance(requests, Decimal) else 0.0
    if any(r is not None and r[1] for r in (inp, out, cr, cw, rs)):
        return _TieredRates(inp, out, cr, cw, rs, per_request)

    def flat(r: _Tiered | None) -> float | None:
        return None if r is None else r[0]

    return _FlatRates(flat(inp), flat(out), flat(cr), flat(cw), flat(rs), per_request)


class _Entry:
    """What a (provider, model) pair resolved to: override rates, a table model, or nothing."""

    __slots__ = ("conditional", "rates", "source")

    def __init__(
        self, source: str, rates: _Rates | None, conditional: gp.ModelInfo | None = None
    ) -> None:
        self.source = source
        self.rates = rates
        self.conditional = conditional


_UNPRICED: Final = _Entry("unpriced", None)


class _CompiledOverride:
    __slots__ = ("matcher", "provider", "rates")

    def __init__(self, entry: PriceOverride) -> None:
        pattern = entry.model.lower()
        self.matcher: re.Pattern[str] | str = (
            re.compile(fnmatch.translate(pattern)) if any(c in pattern for c in "*?[") else pattern
        )
        self.provider = canonical_provider(entry.provider)
        self.rates = _FlatRates(
            input=entry.input_mtok,
            output=entry.output_mtok,
            cache_read=entry.cache_read_mtok,
            cache_write=entry.cache_write_mtok,
            reasoning=entry.reasoning_mtok,
        )

    def matches(self, provider: str | None, model_lower: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if isinstance(self.matcher, str):
            return self.matcher == model_lower
        return self.matcher.fullmatch(model_lower) is not None


class Pricer:
    """Prices LLM calls from token counts; never touches the network; thread-safe to share.

    `overrides_file` (YAML or JSON, see `PriceOverride`) is validated at construction and
    raises ConfigError when wrong. Lookups are cached per (provider, model) in a bounded
    cache, so steady-state `price()` costs a few microseconds.
    """

    MAX_CACHED_MODELS: Final = 4096

    def __init__(self, overrides_file: Path | None = None) -> None:
        """Load and validate `overrides_file` (ConfigError if wrong) and the bundled table."""
        self.overrides_file = overrides_file
        entries = load_overrides(overrides_file) if overrides_file is not None else []
        self._overrides = [_CompiledOverride(e) for e in entries]
        self._snapshot = data_snapshot.get_snapshot()
        self._providers = self._snapshot.providers
        self._provider_by_id: dict[str, gp.Provider | None] = {}
        self._compiled: dict[int, tuple[gp.ModelPrice, _Rates | None]] = {}
        self._cache: dict[tuple[str | None, str], _Entry] = {}

    def price(
        self,
        *,
        provider: str | None,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        at: datetime | None = None,
        at_ns: int | None = None,
    ) -> tuple[float | None, str]:
        """Return (cost in USD, price_source) for one call; (None, "unpriced") when unknown.

        price_source is "override", "genai-prices" or "unpriced". A call with no model, or
        with neither input nor output tokens, is unpriced. `at` (or `at_ns`, Unix
        nanoseconds, cheaper on hot paths) selects date- and time-of-day-dependent prices;
        it defaults to now.
        """
        if not model or (input_tokens is None and output_tokens is None):
            return None, "unpriced"
        key = (provider, model)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._resolve(provider, model)
            if len(self._cache) >= self.MAX_CACHED_MODELS:
                self._cache.clear()  # bounded: model names are emitter-controlled
            self._cache[key] = entry
        rates = entry.rates
        if entry.conditional is not None:
            when = at or (
                datetime.fromtimestamp(at_ns / 1e9, UTC) if at_ns is not None else datetime.now(UTC)
            )
            rates = self._rates_for(entry.conditional.get_prices(when))
        if rates is None:
            return None, "unpriced"

        inp = input_tokens or 0
        out = output_tokens or 0
        cr = cache_read_tokens or 0
        cw = cache_write_tokens or 0
        rs = reasoning_tokens or 0
        if cr < 0 or cw < 0 or rs < 0 or inp < 0 or out < 0:
            return None, "unpriced"
        if cr + cw > inp:  # exclusive convention: cache counted beside the input
            inp += cr + cw
        if rs > out:  # reasoning reported beside the output
            out += rs
        return rates.cost(inp, out, cr, cw, rs), entry.source

    def _resolve(self, provider: str | None, model: str) -> _Entry:
        canonical = canonical_provider(provider)
        model_lower = model.strip().lower()
        for override in self._overrides:
            if override.matches(canonical, model_lower):
                return _Entry("override", override.rates)
        if canonical in _SELF_HOSTED:
            return _UNPRICED
        refs = [model_lower]
        if "/" in model_lower:  # "openai/gpt-4o", "models/gemini-2.5-pro", "meta-llama/…"
            refs.append(model_lower.rsplit("/", 1)[1])
        found = self._find_model(canonical, refs)
        if found is None:
            return _UNPRICED
        if isinstance(found.prices, gp.ModelPrice):
            return _Entry("genai-prices", self._rates_for(found.prices))
        return _Entry("genai-prices", None, conditional=found)

    def _find_model(self, canonical: str | None, refs: Sequence[str]) -> gp.ModelInfo | None:
        # The provider's own table (with genai-prices' fallbacks, e.g. azure → openai) first;
        # then by model name alone, because the provider names the API flavour, not
        # necessarily who serves the model (OpenAI-compatible proxies).
        # genai-prices' own lookup caches every model ref it is asked about, unbounded; these
        # calls reproduce its matching without that cache.
        prov = self._genai_provider(canonical)
        if prov is not None:
            for ref in refs:
                if found := prov.find_model(ref, all_providers=self._providers):
                    return found
        for ref in refs:
            for candidate in self._providers:
                if candidate.model_match is not None and candidate.model_match.is_match(ref):
                    if found := candidate.find_model(ref, all_providers=self._providers):
                        return found
                    break
        return None

    def _genai_provider(self, canonical: str | None) -> gp.Provider | None:
        if canonical is None:
            return None
        pid = _GENAI_PRICES_IDS.get(canonical, canonical)
        if pid not in self._provider_by_id:
            self._provider_by_id[pid] = next((p for p in self._providers if p.id == pid), None)
        return self._provider_by_id[pid]

    def _rates_for(self, mp: gp.ModelPrice) -> _Rates | None:
        hit = self._compiled.get(id(mp))
        if hit is not None and hit[0] is mp:
            return hit[1]
        rates = _compile_model_price(mp)
        self._compiled[id(mp)] = (mp, rates)
        return rates

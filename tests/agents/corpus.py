"""Simulated agents that emit real OpenTelemetry spans with GenAI attributes.

`AgentSim` writes what an instrumented agent writes: an `invoke_agent` root span per run
(one trace), `chat` spans with model, token usage and input/output messages, and
`execute_tool` spans with tool name, call id, arguments and result, all carrying
`gen_ai.conversation.id` and `gen_ai.agent.name`. Spans go through whatever
TracerProvider is given (tests: the real SDK exporting over OTLP/HTTP to a daemon).

The scenario functions below are the labeled corpus shared by the detector tests and
`benchmarks/detect_eval.py`: each plays one run and returns the rules it must trip
(an empty set for normal behaviour, which must stay quiet).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

_counter = itertools.count()


def new_id(prefix: str) -> str:
    """A unique id with a readable prefix."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class AgentSim:
    """One simulated agent in one session; `run()` opens a run (a trace) for its steps.

    Time is simulated: every step advances `clock_ns` by `step_ns`, so tests control
    span timestamps exactly (`clock_ns=None` starts from the wall clock).
    """

    provider: TracerProvider
    agent: str
    session: str | None = None
    model: str = "gpt-4o-mini"
    provider_name: str = "openai"
    clock_ns: int | None = None
    step_ns: int = 200_000_000
    capture_content: bool = True
    cost_per_call: float | None = None
    ledger: list[tuple[str, str, float | None]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    _root: Span | None = None
    _trace_id: str = ""

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer("watchdog-corpus")
        if self.session is None:
            self.session = new_id("sess")
        if self.clock_ns is None:
            self.clock_ns = time.time_ns()

    # -- time -------------------------------------------------------------------------
    def _tick(self) -> tuple[int, int]:
        assert self.clock_ns is not None
        start = self.clock_ns
        self.clock_ns += self.step_ns
        return start, self.clock_ns - self.step_ns // 10

    def _common(self) -> dict[str, Any]:
        return {"gen_ai.conversation.id": self.session, "gen_ai.agent.name": self.agent}

    # -- runs -------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, task: str) -> Iterator[AgentSim]:
        """One run of the agent on `task`: a root `invoke_agent` span; steps are its children."""
        start, _ = self._tick()
        root = self.tracer.start_span(
            f"invoke_agent {self.agent}",
            kind=SpanKind.INTERNAL,
            start_time=start,
            attributes={**self._common(), "gen_ai.operation.name": "invoke_agent"},
        )
        self._root = root
        self._trace_id = format(root.get_span_context().trace_id, "032x")
        self.history = [{"role": "user", "content": task}]
        try:
            yield self
        finally:
            self._root = None
            assert self.clock_ns is not None
            root.end(end_time=self.clock_ns)

    @property
    def trace_id(self) -> str:
        """Hex trace id of the current (or last) run."""
        return self._trace_id

    def user(self, text: str) -> None:
        """A person adds a message to the conversation (the next chat sees it)."""
        self.history.append({"role": "user", "content": text})

    def _child(self, name: str, attrs: dict[str, Any]) -> tuple[Span, int]:
        start, end = self._tick()
        ctx = set_span_in_context(self._root) if self._root is not None else None
        span = self.tracer.start_span(
            name,
            context=ctx,
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes={**self._common(), **attrs},
        )
        return span, end

    def chat(
        self,
        output: str | None = "Thinking about the next step.",
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        tool_calls: list[tuple[str, Any]] | None = None,
        cost_usd: float | None = None,
    ) -> str:
        """A model call; returns its span id. Input tokens default to the history size.

        The cost is `cost_usd`, else `cost_per_call`, sent as `gen_ai.usage.cost` (None:
        priced by the daemon from tokens). `ledger` records (span id, trace id, cost).
        """
        model = model or self.model
        if cost_usd is None:
            cost_usd = self.cost_per_call
        if input_tokens is None:
            input_tokens = 200 + sum(len(json.dumps(m)) for m in self.history) // 4
        if output_tokens is None:
            output_tokens = max(len(output or "") // 4, 1) + 20 * len(tool_calls or [])
        parts: list[dict[str, Any]] = []
        if output:
            parts.append({"type": "text", "content": output})
        for name, args in tool_calls or []:
            parts.append(
                {"type": "tool_call", "id": new_id("call"), "name": name, "arguments": args}
            )
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider_name,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        if self.capture_content:
            attrs["gen_ai.input.messages"] = json.dumps(
                [
                    {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
                    for m in self.history
                ]
            )
            attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": parts}])
        if cost_usd is not None:
            attrs["gen_ai.usage.cost"] = cost_usd
        span, end = self._child(f"chat {model}", attrs)
        span.end(end_time=end)
        self.history.append({"role": "assistant", "content": output or ""})
        span_id = format(span.get_span_context().span_id, "016x")
        self.ledger.append((span_id, self._trace_id, cost_usd))
        return span_id

    def tool(self, name: str, args: Any, result: Any, *, error: bool = False) -> str:
        """A tool call with its arguments and result; returns its span id."""
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": new_id("call"),
            "gen_ai.tool.call.arguments": args if isinstance(args, str) else json.dumps(args),
        }
        if result is not None:
            attrs["gen_ai.tool.call.result"] = (
                result if isinstance(result, str) else json.dumps(result)
            )
        if error:
            attrs["error.type"] = "ToolError"
        span, end = self._child(f"execute_tool {name}", attrs)
        if error:
            span.set_status(Status(StatusCode.ERROR, str(result)[:100]))
        span.end(end_time=end)
        self.history.append({"role": "tool", "content": str(result)[:500]})
        return format(span.get_span_context().span_id, "016x")

    def act(self, name: str, args: Any, result: Any, *, error: bool = False) -> str:
        """The usual agent step: a chat that asks for a tool, then the tool call."""
        self.chat(None, tool_calls=[(name, args)])
        return self.tool(name, args, result, error=error)


# --- the labeled corpus ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One kind of run: who plays it, how, and which rules it must (and may) trip.

    `expect` are the rules the run must trip; `allow` are rules that may also fire
    without being wrong (a looping agent's context does bloat). Anything else that fires
    is a false positive.
    """

    name: str
    agent: str
    play: Callable[[AgentSim, random.Random], None]
    expect: frozenset[str] = frozenset()
    allow: frozenset[str] = frozenset()
    model: str = "gpt-4o-mini"
    weight: int = 1


def _cost(rng: random.Random, lo: float = 0.002, hi: float = 0.01) -> float:
    return round(rng.uniform(lo, hi), 5)


def _words(rng: random.Random, n: int = 3) -> str:
    vocab = [
        "refund",
        "policy",
        "latency",
        "invoice",
        "deploy",
        "python",
        "weather",
        "orders",
        "paris",
        "schema",
        "billing",
        "retry",
        "cache",
        "tokens",
        "outage",
        "budget",
    ]
    return " ".join(rng.sample(vocab, n))


def _finish(a: AgentSim, rng: random.Random, text: str = "Here is what I found.") -> None:
    a.chat(f"{text} ({_words(rng, 2)})", cost_usd=_cost(rng))


# normal agents: natural repetition that must stay quiet -------------------------------------


def normal_research(a: AgentSim, rng: random.Random) -> None:
    """Searches with varied queries, opens pages, retries one transient failure once."""
    for i in range(rng.randint(3, 6)):
        q = f"{_words(rng)} {i}"
        a.chat(None, tool_calls=[("web_search", {"q": q})], cost_usd=_cost(rng))
        a.tool("web_search", {"q": q}, {"hits": [f"https://ex.com/{q.replace(' ', '-')}"]})
        url = f"https://ex.com/{i}/{rng.randint(1, 10**6)}"
        if rng.random() < 0.3:
            a.tool("fetch_url", {"url": url}, "timeout after 10s", error=True)
        a.tool("fetch_url", {"url": url}, f"<html>page {i} {rng.random()}</html>")
    _finish(a, rng)


def normal_paginate(a: AgentSim, rng: random.Random) -> None:
    """Reads every page of a listing (same tool, changing page), then writes one report."""
    pages = rng.randint(5, 14)
    for page in range(1, pages + 1):
        if page % 4 == 1:
            a.chat(None, tool_calls=[("list_orders", {"page": page})], cost_usd=_cost(rng))
        a.tool(
            "list_orders",
            {"page": page, "per_page": 100},
            {"orders": [page * 100 + k for k in range(3)], "next": page < pages},
        )
    a.act(
        "write_file",
        {"path": f"reports/orders-{rng.randint(1, 10**6)}.csv", "content": "id,total"},
        "ok",
    )
    _finish(a, rng, "The report is written.")


def normal_poll_progress(a: AgentSim, rng: random.Random) -> None:
    """Starts a job and polls it; every poll shows progress."""
    job = new_id("job")
    a.act("start_export", {"table": "orders"}, {"job": job})
    progress = 0
    while progress < 100:
        progress = min(progress + rng.randint(8, 30), 100)
        a.tool(
            "export_status",
            {"job": job},
            {
                "state": "done" if progress == 100 else "running",
                "progress": progress,
                "checked_at": time.time(),
            },
        )
    a.act("download", {"job": job}, {"rows": rng.randint(10, 1000)})
    _finish(a, rng)


def normal_coder(a: AgentSim, rng: random.Random) -> None:
    """The same edit applied to several files; tests run until they pass (results change)."""
    files = [f"src/mod{k}.py" for k in rng.sample(range(40), rng.randint(3, 6))]
    for path in files:
        a.act("read_file", {"path": path}, f"import old_helper  # {path}")
    for path in files:
        a.act("edit_file", {"path": path, "old": "old_helper", "new": "helper"}, "ok")
    failures = rng.randint(1, 3)
    while True:
        a.act("run_tests", {"suite": "unit"}, {"failed": failures, "passed": 40 - failures})
        if failures == 0:
            break
        failures -= 1
        a.act("edit_file", {"path": files[0], "old": f"bug{failures}", "new": "fix"}, "ok")
    _finish(a, rng, "All tests pass.")


def normal_support(a: AgentSim, rng: random.Random) -> None:
    """Looks a customer up, reads orders, replies once, updates the ticket once."""
    customer = f"c{rng.randint(1000, 9999)}"
    a.act("lookup_customer", {"customer_id": customer}, {"name": "Ann", "tier": "gold"})
    for order in rng.sample(range(100, 999), rng.randint(1, 4)):
        a.act("get_order", {"order_id": order}, {"status": rng.choice(["shipped", "late"])})
    a.chat("Drafting the reply.", cost_usd=_cost(rng))
    a.act(
        "send_email",
        {
            "to": f"{customer}@example.com",
            "subject": "Your orders",
            "body": f"Hello, update {rng.random():.4f}",
        },
        {"status": "sent"},
    )
    a.act("update_ticket", {"ticket": rng.randint(1, 10**6), "status": "solved"}, "ok")
    _finish(a, rng, "Replied and closed the ticket.")


def normal_reask(a: AgentSim, rng: random.Random) -> None:
    """A person asks again; the agent repeats its check after each request."""
    build = rng.randint(1, 999)
    for turn in range(rng.randint(2, 3)):
        for _ in range(2):
            a.act("ci_status", {"build": build}, {"state": "failed", "step": "lint"})
        a.chat("The build is still failing at lint.", cost_usd=_cost(rng))
        a.user(f"Check build {build} again please ({turn})")
    _finish(a, rng)


def normal_retry_changed(a: AgentSim, rng: random.Random) -> None:
    """Failing calls retried with changed arguments each time."""
    base = _words(rng, 2)
    for i in range(rng.randint(3, 6)):
        a.act("search_kb", {"q": f"{base} variant {i}"}, "no index for query", error=True)
    a.act("search_kb", {"q": base}, {"hits": 3})
    _finish(a, rng)


def normal_checker(a: AgentSim, rng: random.Random) -> None:
    """Says the same sentence before each tool call (not a monologue: tools between)."""
    for host in rng.sample(range(1, 60), rng.randint(3, 6)):
        a.chat("Let me check the next server.", cost_usd=_cost(rng))
        a.tool("ping", {"host": f"web{host}"}, {"ok": rng.random() < 0.9, "ms": rng.randint(1, 80)})
    _finish(a, rng, "All servers checked.")


def normal_crawler(a: AgentSim, rng: random.Random) -> None:
    """A long but bounded crawl (under the crawler's step cap)."""
    for i in range(rng.randint(8, 13)):
        a.tool(
            "fetch_page", {"url": f"https://site.example/{i}/{rng.randint(1, 10**6)}"}, f"page {i}"
        )
    _finish(a, rng)


def normal_analyst(a: AgentSim, rng: random.Random) -> None:
    """An analyst run costing about its usual amount."""
    for i in range(rng.randint(2, 4)):
        a.act("run_sql", {"sql": f"select {i} from t{rng.randint(1, 99)}"}, {"rows": i})
        a.chat(f"Step {i} done.", cost_usd=_cost(rng, 0.01, 0.02))
    _finish(a, rng)


# hard negatives: legit behaviour close to a loop rule ----------------------------------------


def hard_poll_plateau(a: AgentSim, rng: random.Random) -> None:
    """Polling where the status stalls for two polls at a time before moving on."""
    job = new_id("job")
    for state in ["queued", "running 10%", "running 60%", "done"]:
        for _ in range(rng.randint(1, 2)):
            a.act("job_status", {"job": job}, {"state": state})
    _finish(a, rng)


def hard_retry_once(a: AgentSim, rng: random.Random) -> None:
    """One transient failure retried unchanged, then success; several independent fetches."""
    for i in range(rng.randint(2, 4)):
        url = f"https://api.example/{i}/{rng.randint(1, 10**6)}"
        a.act("fetch_url", {"url": url}, "503 Service Unavailable", error=True)
        a.act("fetch_url", {"url": url}, {"ok": True, "body": f"{rng.random()}"})
    _finish(a, rng)


def hard_edit_same_file(a: AgentSim, rng: random.Random) -> None:
    """Several different edits to one file, tests between them."""
    path = f"src/core{rng.randint(1, 99)}.py"
    for i in range(rng.randint(3, 5)):
        a.act("edit_file", {"path": path, "old": f"v{i}", "new": f"v{i + 1}"}, "ok")
        a.act("run_tests", {"suite": "unit"}, {"failed": max(0, 3 - i), "seed": rng.random()})
    _finish(a, rng)


def hard_notify_many(a: AgentSim, rng: random.Random) -> None:
    """The same announcement to many different recipients."""
    for k in rng.sample(range(1000), rng.randint(5, 12)):
        a.tool("send_email", {"to": f"user{k}@example.com", "subject": "Maintenance",
                              "body": "We will be down Sunday 02:00-03:00 UTC."},
               {"status": "sent"})  # fmt: skip
    _finish(a, rng, "Everyone was notified.")


def hard_long_crawl(a: AgentSim, rng: random.Random) -> None:
    """A crawl just under the crawler's warn cap."""
    for i in range(rng.randint(25, 28)):
        a.tool("fetch_page", {"url": f"https://site.example/{i}/{rng.randint(1, 10**6)}"},
               f"page {i}")  # fmt: skip


def hard_reask_same_words(a: AgentSim, rng: random.Random) -> None:
    """A person types the same words again ("try again"); the agent retries its check."""
    build = rng.randint(1, 999)
    a.user("try again")
    for _ in range(2):
        for _ in range(2):
            a.act("ci_status", {"build": build}, {"state": "failed", "step": "lint"})
        a.chat("The build still fails at lint.", cost_usd=_cost(rng))
        a.user("try again")


# looping agents ------------------------------------------------------------------------------


def loop_repeat(a: AgentSim, rng: random.Random) -> None:
    """The same call again and again; the tool's result is not captured."""
    args = {"city": rng.choice(["Paris", "Oslo", "Lima"]), "request_id": new_id("r")}
    for _ in range(rng.randint(5, 9)):
        args["request_id"] = new_id("r")
        a.act("get_weather", dict(args), None)


def loop_same_result(a: AgentSim, rng: random.Random) -> None:
    """The same call with the same result, over and over."""
    job = new_id("job")
    for _ in range(rng.randint(4, 8)):
        a.act("job_status", {"job": job}, {"state": "pending", "checked_at": time.time()})


def loop_error(a: AgentSim, rng: random.Random) -> None:
    """The same failing call retried unchanged."""
    path = f"/etc/app{rng.randint(1, 99)}.yaml"
    for _ in range(rng.randint(3, 6)):
        a.act("read_file", {"path": path}, f"ENOENT {path} at {time.time()}", error=True)


def loop_cycle2(a: AgentSim, rng: random.Random) -> None:
    """A-B-A-B: reading the same file and running the same failing tests."""
    path = f"src/app{rng.randint(1, 99)}.py"
    for _ in range(rng.randint(3, 5)):
        a.act("read_file", {"path": path}, "def f(): return 1")
        a.act("run_tests", {"suite": "unit"}, {"failed": 1, "duration_ms": rng.randint(1, 999)})


def loop_cycle3(a: AgentSim, rng: random.Random) -> None:
    """A-B-C-A-B-C with unchanged results."""
    for _ in range(rng.randint(3, 4)):
        a.act("list_dir", {"path": "/data"}, ["a.csv", "b.csv"])
        a.act("grep", {"pattern": "total", "path": "/data/a.csv"}, "no match")
        a.act("read_file", {"path": "/data/b.csv"}, "x,y\n1,2")


def loop_no_progress(a: AgentSim, rng: random.Random) -> None:
    """Polling a stuck job between other work (never consecutive enough for L2)."""
    job = new_id("job")
    for i in range(rng.randint(7, 12)):
        a.tool("export_status", {"job": job}, {"state": "queued"})
        a.tool("export_status", {"job": job}, {"state": "queued"})
        a.tool("read_log", {"page": i}, {"lines": [f"line {i} {rng.random()}"]})


def loop_duplicate_send(a: AgentSim, rng: random.Random) -> None:
    """The same email to the same person twice."""
    to = f"user{rng.randint(1, 9999)}@example.com"
    body = {"to": to, "subject": "Refund", "body": "Your refund is on its way."}
    a.act("send_email", {**body, "idempotency_key": new_id("k")}, {"status": "sent"})
    a.act("lookup_order", {"order_id": rng.randint(1, 999)}, {"status": "refunded"})
    a.act("send_email", {**body, "idempotency_key": new_id("k")}, {"status": "sent"})


def loop_duplicate_pay(a: AgentSim, rng: random.Random) -> None:
    """The same payment twice."""
    args = {"account": f"acct-{rng.randint(1, 999)}", "amount": rng.randint(10, 500)}
    a.act("pay_invoice", args, {"ok": True, "transaction": new_id("tx")})
    a.chat("Confirming the payment went through.", cost_usd=_cost(rng))
    a.act("pay_invoice", args, {"ok": True, "transaction": new_id("tx")})


def loop_monologue(a: AgentSim, rng: random.Random) -> None:
    """The model repeats itself without acting."""
    text = f"I will now {_words(rng, 2)} the document."
    for _ in range(rng.randint(3, 5)):
        a.chat(text, cost_usd=_cost(rng))


def loop_empty(a: AgentSim, rng: random.Random) -> None:
    """Empty responses in a row."""
    a.chat("Working on it.", cost_usd=_cost(rng))
    for _ in range(rng.randint(3, 5)):
        a.chat("", output_tokens=0, cost_usd=_cost(rng))


def loop_runaway_crawl(a: AgentSim, rng: random.Random) -> None:
    """A crawl that never stops (distinct pages: only the step cap catches it)."""
    for i in range(rng.randint(32, 45)):
        a.tool("fetch_page", {"url": f"https://site.example/deep/{i}/{rng.random()}"}, f"p{i}")


# spending agents -----------------------------------------------------------------------------


def spend_run_over_cap(a: AgentSim, rng: random.Random) -> None:
    """Reads chunk after chunk with an expensive model until the run is well past its cap."""
    for i in range(rng.randint(18, 26)):
        a.tool("read_chunk", {"doc": "annual-report.pdf", "chunk": i}, f"chunk {i}: {rng.random()}")
        a.chat(f"analysis of chunk {i}", cost_usd=_cost(rng, 0.08, 0.16))


def spend_session_over_cap(a: AgentSim, rng: random.Random) -> None:
    """Each run is under the run cap; the session adds up past its cap."""
    for i in range(rng.randint(5, 7)):
        a.tool("read_chunk", {"doc": a.trace_id, "chunk": i}, f"chunk {i}: {rng.random()}")
        a.chat(f"notes on chunk {i}", cost_usd=_cost(rng, 0.08, 0.1))


def spend_bloat(a: AgentSim, rng: random.Random) -> None:
    """Distinct searches that all come back empty while the context keeps growing."""
    tokens = rng.randint(2000, 4000)
    for i in range(rng.randint(9, 12)):
        tokens += rng.randint(600, 1200)
        q = f"{_words(rng)} {i}"
        a.chat(
            None, tool_calls=[("search_docs", {"q": q})], input_tokens=tokens, cost_usd=_cost(rng)
        )
        a.tool("search_docs", {"q": q}, {"hits": []})


def spend_cost_explosion(a: AgentSim, rng: random.Random) -> None:
    """An analyst run costing many times its usual amount."""
    for i in range(rng.randint(3, 5)):
        a.act("run_sql", {"sql": f"select * from big{i}"}, {"rows": rng.randint(10**5, 10**7)})
        a.chat(f"Step {i} done.", cost_usd=_cost(rng, 0.2, 0.4))


def spend_unpriced(a: AgentSim, rng: random.Random) -> None:
    """Calls to a model no price table knows."""
    for i in range(rng.randint(2, 4)):
        a.chat(f"answer {i} {_words(rng, 2)}")


_LOOPY = frozenset({"context_bloat"})

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("research", "researcher", normal_research, weight=20),
    Scenario("paginate", "exporter", normal_paginate, weight=16),
    Scenario("poll_progress", "exporter", normal_poll_progress, weight=16),
    Scenario("coder", "coder", normal_coder, weight=18),
    Scenario("support", "support", normal_support, weight=18),
    Scenario("reask", "ops", normal_reask, weight=12),
    Scenario("retry_changed", "researcher", normal_retry_changed, weight=12),
    Scenario("checker", "ops", normal_checker, weight=12),
    Scenario("crawl", "crawler", normal_crawler, weight=10),
    Scenario("analyst", "analyst", normal_analyst, weight=14),
    Scenario("hard_poll_plateau", "exporter", hard_poll_plateau, weight=8),
    Scenario("hard_retry_once", "researcher", hard_retry_once, weight=8),
    Scenario("hard_edit_same_file", "coder", hard_edit_same_file, weight=8),
    Scenario("hard_notify_many", "support", hard_notify_many, weight=6),
    Scenario("hard_long_crawl", "crawler", hard_long_crawl, weight=6),
    Scenario("hard_reask_same_words", "ops", hard_reask_same_words, weight=6),
    Scenario("loop_repeat", "ops", loop_repeat, frozenset({"repeat"}), _LOOPY, weight=8),
    Scenario("loop_same_result", "exporter", loop_same_result,
             frozenset({"repeat_same_result"}), _LOOPY, weight=8),
    Scenario("loop_error", "coder", loop_error, frozenset({"repeat_error"}), _LOOPY, weight=8),
    Scenario("loop_cycle2", "coder", loop_cycle2, frozenset({"cycle"}), _LOOPY, weight=7),
    Scenario("loop_cycle3", "researcher", loop_cycle3, frozenset({"cycle"}), _LOOPY, weight=6),
    Scenario("loop_no_progress", "exporter", loop_no_progress,
             frozenset({"no_progress"}), _LOOPY, weight=7),
    Scenario("loop_duplicate_send", "support", loop_duplicate_send,
             frozenset({"side_effect_duplicate"}), weight=6),
    Scenario("loop_duplicate_pay", "billing", loop_duplicate_pay,
             frozenset({"side_effect_duplicate"}), weight=5),
    Scenario("loop_monologue", "writer", loop_monologue, frozenset({"monologue"}), _LOOPY,
             weight=7),
    Scenario("loop_empty", "writer", loop_empty, frozenset({"empty_response"}), weight=6),
    Scenario("loop_runaway", "crawler", loop_runaway_crawl, frozenset({"max_steps"}), weight=5),
    Scenario("spend_run_cap", "spender", spend_run_over_cap, frozenset({"run_cap"}), weight=6),
    Scenario("spend_bloat", "researcher", spend_bloat, frozenset({"context_bloat"}), weight=6),
    Scenario("spend_explosion", "analyst", spend_cost_explosion, frozenset({"cost_zscore"}),
             weight=6),
    Scenario("spend_unpriced", "lab", spend_unpriced, frozenset({"unpriced"}), weight=5),
)  # fmt: skip
"""The weighted scenario mix of `benchmarks/detect_eval.py` (session caps, day caps and
burn rates are played there as multi-run sequences)."""

# Settings the corpus is labeled against (the eval daemon runs with these).
CORPUS_SETTINGS: dict[str, Any] = {
    "budgets": {
        "per_run_usd": 1.0,
        "per_session_usd": 3.0,
        "per_agent_day_usd": 100.0,
        "agents": {"sessionbot": {"per_run_usd": 1.0, "per_session_usd": 1.5,
                                  "per_agent_day_usd": 100.0},
                   "daybot": {"per_agent_day_usd": 2.0},
                   "burner": {"per_agent_day_usd": 24.0}},
    },
    "detectors": {
        "agents": {"crawler": {"loop": {"max_steps": {"warn": 30, "pause": 40, "kill": 60}}}},
    },
}  # fmt: skip

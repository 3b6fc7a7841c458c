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
    history: list[dict[str, Any]] = field(default_factory=list)
    _root: Span | None = None
    _trace_id: str = ""

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer("watchdog-corpus")
        if self.session is None:
            self.session = new_id("sess")
        if self.clock_ns is None:
            import time

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
        """A model call; returns its span id. Input tokens default to the history size."""
        model = model or self.model
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
        return format(span.get_span_context().span_id, "016x")

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


Scenario = Callable[[AgentSim, random.Random], set[str]]

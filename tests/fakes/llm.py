"""A local fake of OpenAI's chat-completions endpoint answering real `chat.completion` objects.

`FakeLLM` runs an HTTP server on 127.0.0.1 (port 0 by default) in a daemon thread, so it
serves the real `openai` client from a pytest fixture or from a plain script alike::

    with FakeLLM() as llm:
        llm.enqueue(Reply.tool_call("get_weather", {"city": "Paris"}, cached_tokens=1000))
        client = openai.OpenAI(base_url=llm.base_url, api_key="test")
        ...
        assert llm.requests[0].body["model"] == "gpt-4o"

Replies are served in the order they were queued; when the queue is empty the
`default` reply answers. Every request is recorded, including the ones that get an
error reply. Streaming (`"stream": true`) is not implemented and answers 400. The HTTP
server and the `chat.completion` wire format are the demo's (watchdog/demo/fake_llm.py),
which plays per-key scripts instead of this queue.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdog.demo.fake_llm import Answer, ChatCompletionsServer, RecordedRequest, chat_completion

__all__ = ["FakeLLM", "RecordedRequest", "Reply", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """One function call the fake model requests; `arguments` is serialized to JSON text."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted answer: assistant text and/or tool calls plus the usage block to report.

    Token counts follow OpenAI's convention: `prompt_tokens` includes `cached_tokens` and
    `completion_tokens` includes `reasoning_tokens`. `status` other than 200 turns the
    reply into an OpenAI-style error body carrying `error_message`.
    """

    content: str | None = "Hello from the fake model."
    tool_calls: Sequence[ToolCall] = ()
    model: str | None = None  # None: echo the requested model
    prompt_tokens: int = 20
    completion_tokens: int = 10
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None  # None: "tool_calls" when there are tool calls, else "stop"
    status: int = 200
    error_message: str = "fake server error"

    @classmethod
    def text(cls, content: str, **kwargs: Any) -> Reply:
        """A plain assistant message."""
        return cls(content=content, **kwargs)

    @classmethod
    def tool_call(
        cls, name: str, arguments: Mapping[str, Any], *, call_id: str | None = None, **kwargs: Any
    ) -> Reply:
        """An assistant message with no text that requests one tool call."""
        return cls(content=None, tool_calls=(ToolCall(name, arguments, call_id),), **kwargs)

    @classmethod
    def error(cls, status: int, message: str = "fake server error") -> Reply:
        """An HTTP error in OpenAI's `{"error": {...}}` shape."""
        return cls(status=status, error_message=message)


class FakeLLM(ChatCompletionsServer):
    """A scriptable OpenAI chat-completions server; safe to `stop()` twice or before `start()`."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, default: Reply | None = None
    ) -> None:
        super().__init__(host=host, port=port)
        self.default = default or Reply()
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies to serve, in order, before falling back to `default`."""
        with self._lock:
            self._queue.extend(replies)

    def received(self, request: RecordedRequest) -> None:
        """Record every request, including the ones answered with an error."""
        with self._lock:
            self.requests.append(request)

    def complete(self, n: int, headers: Mapping[str, str], body: Mapping[str, Any]) -> Answer:
        """Serve the next queued reply (else `default`) with its scripted usage."""
        with self._lock:
            reply = self._queue.popleft() if self._queue else self.default
        if reply.status != 200:
            return reply.status, {"error": {"message": reply.error_message, "type": "server_error"}}
        usage: dict[str, Any] = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        if reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {
                "cached_tokens": reply.cached_tokens,
                "audio_tokens": 0,
            }
        if reply.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        calls = [
            (tc.id, tc.name, json.dumps(dict(tc.arguments), separators=(",", ":")))
            for tc in reply.tool_calls
        ]
        model = reply.model or str(body["model"])
        return 200, chat_completion(
            n, model, reply.content, calls, usage, finish_reason=reply.finish_reason
        )

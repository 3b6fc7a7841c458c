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
error reply. Streaming (`"stream": true`) is not implemented and answers 400.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received: method, path, headers and the decoded JSON body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class FakeLLM:
    """A scriptable OpenAI chat-completions server; safe to `stop()` twice or before `start()`."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, default: Reply | None = None
    ) -> None:
        self.default = default or Reply()
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._port = port
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to give the OpenAI client as `base_url` (ends in `/v1`)."""
        if self._server is None:
            raise RuntimeError("FakeLLM is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies to serve, in order, before falling back to `default`."""
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeLLM:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep test output clean

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                fake._record(RecordedRequest("POST", self.path, dict(self.headers), body))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(
                        404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
                    )
                    return
                if not isinstance(body, dict) or "model" not in body:
                    self._send(400, {"error": {"message": "body must be JSON with a model"}})
                    return
                if body.get("stream"):
                    self._send(
                        400, {"error": {"message": "streaming is not supported by the fake"}}
                    )
                    return
                reply = fake._next_reply()
                if reply.status != 200:
                    self._send(
                        reply.status,
                        {"error": {"message": reply.error_message, "type": "server_error"}},
                    )
                    return
                self._send(200, fake._completion(reply, str(body["model"])))

            def _send(self, status: int, payload: Mapping[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; does nothing if not running."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _completion(self, reply: Reply, requested_model: str) -> dict[str, Any]:
        n = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": tc.id or f"call_fake_{n}_{i}",
                    "type": "function",
                    "function": {
                        "name": tc.name,
                        "arguments": json.dumps(dict(tc.arguments), separators=(",", ":")),
                    },
                }
                for i, tc in enumerate(reply.tool_calls)
            ]
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
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
        return {
            "id": f"chatcmpl-fake{n:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or requested_model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }

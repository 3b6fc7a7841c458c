"""A local stand-in for OpenAI's chat-completions endpoint that plays scripted model behaviour.

The demo's agents use the real `openai` client; this server answers their
`POST /v1/chat/completions` with real `chat.completion` objects. Each agent run talks to
it with its own API key, and the key picks the run's *script*: the assistant messages
(text and tool calls) the "model" answers, in order. When a script is used up the model
says `done_text` and stops calling tools.

Usage is computed from the request the way a provider bills it, approximately:
`prompt_tokens` ≈ characters of every message and tool definition / 4, and
`completion_tokens` ≈ characters of the answer / 4 (at least 12). So an agent whose
context grows pays more per call, exactly as it would against a real model.

Only the standard library is used; the server runs in a daemon thread and is safe to
`stop()` twice or before `start()`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLM", "Reply", "ToolCall", "count_tokens"]

_MAX_BODY = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the scripted model asks for."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted assistant message: text, tool calls, or both."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def say(cls, text: str) -> Reply:
        """A final answer: text and no tool call."""
        return cls(content=text)

    @classmethod
    def call(cls, name: str, arguments: Mapping[str, Any], text: str | None = None) -> Reply:
        """A message asking for one tool call (optionally with some text)."""
        return cls(content=text, tool_calls=(ToolCall(name, dict(arguments)),))


def count_tokens(messages: Iterable[Any], tools: Iterable[Any] = ()) -> int:
    """Approximate prompt tokens of a request: characters of its content / 4."""
    chars = 0
    for m in messages:
        if isinstance(m, Mapping):
            content = m.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
            for call in m.get("tool_calls") or ():
                if isinstance(call, Mapping):
                    chars += len(json.dumps(call.get("function", {})))
        chars += 16  # role and framing
    chars += sum(len(json.dumps(t)) for t in tools)
    return max(chars // 4, 1)


class FakeLLM:
    """An OpenAI-compatible chat-completions server answering each API key's script."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, done_text: str = "Done.") -> None:
        self.done_text = done_text
        self._host = host
        self._port = port
        self._scripts: dict[str, deque[Reply]] = {}
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The `base_url` to give the OpenAI client (ends in `/v1`)."""
        if self._server is None:
            raise RuntimeError("the fake LLM is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, api_key: str, replies: Sequence[Reply]) -> None:
        """Set what the model answers to requests made with `api_key`, in order."""
        with self._lock:
            self._scripts[api_key] = deque(replies)

    def calls(self, api_key: str) -> int:
        """Count the completions served to `api_key`."""
        with self._lock:
            return self._calls.get(api_key, 0)

    def start(self) -> FakeLLM:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # the demo prints its own progress

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY:
                    self._send(413, {"error": {"message": "request too large"}})
                    return
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if not isinstance(body, dict) or "model" not in body or body.get("stream"):
                    self._send(400, {"error": {"message": "expected a non-streaming chat body"}})
                    return
                key = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                self._send(200, fake._complete(key, body))

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
            target=self._server.serve_forever, name="demo-fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; does nothing when not running."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _complete(self, key: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            queue = self._scripts.get(key)
            reply = queue.popleft() if queue else Reply.say(self.done_text)
            self._calls[key] = self._calls.get(key, 0) + 1
        n = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
        answer_chars = len(reply.content or "")
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_demo_{n}_{i}",
                    "type": "function",
                    "function": {"name": tc.name, "arguments": json.dumps(dict(tc.arguments))},
                }
                for i, tc in enumerate(reply.tool_calls)
            ]
            answer_chars += sum(len(json.dumps(dict(tc.arguments))) for tc in reply.tool_calls)
        prompt = count_tokens(body.get("messages") or (), body.get("tools") or ())
        completion = max(answer_chars // 4, 12)
        return {
            "id": f"chatcmpl-demo{n:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body["model"]),
            "system_fingerprint": "fp_demo",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

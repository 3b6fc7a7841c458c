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
`stop()` twice or before `start()`. `ChatCompletionsServer` and `chat_completion` are the
wire-format part, shared with the tests' queue-driven fake (tests/fakes/llm.py).
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
from typing import Any, Self

__all__ = [
    "Answer",
    "ChatCompletionsServer",
    "FakeLLM",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "chat_completion",
    "count_tokens",
]

_MAX_BODY = 32 * 1024 * 1024

Answer = tuple[int, dict[str, Any]]


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


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request a fake received: method, path, headers and the decoded JSON body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


def chat_completion(
    n: int,
    model: str,
    content: str | None,
    tool_calls: Sequence[tuple[str | None, str, str]],
    usage: Mapping[str, Any],
    *,
    finish_reason: str | None = None,
    tag: str = "fake",
) -> dict[str, Any]:
    """Build the `n`-th `chat.completion` object as OpenAI's API answers it.

    One assistant message with its tool calls (id or None, name, arguments as JSON text)
    and the usage block.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call_id or f"call_{tag}_{n}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (call_id, name, arguments) in enumerate(tool_calls)
        ]
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    return {
        "id": f"chatcmpl-{tag}{n:06d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": f"fp_{tag}",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": dict(usage),
    }


class ChatCompletionsServer:
    """A local `POST /v1/chat/completions` server in a daemon thread; subclasses answer.

    It refuses what no chat client sends (another path: 404; a body that is not a JSON
    object with a `model`, or asks to stream: 400; a body over 32 MiB: 413), records
    every request it read (`received`) and hands the rest to `complete`. Safe to
    `stop()` twice or before `start()`; a context manager.
    """

    thread_name = "fake-llm"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
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

    def received(self, request: RecordedRequest) -> None:
        """Called with every request read, before it is answered (override to record)."""

    def complete(self, n: int, headers: Mapping[str, str], body: Mapping[str, Any]) -> Answer:
        """Answer the `n`-th valid chat request (header names lowercased): (status, JSON)."""
        raise NotImplementedError

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # tests and the demo print their own progress

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY:
                    self._send(413, {"error": {"message": "request too large"}})
                    return
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                fake.received(RecordedRequest("POST", self.path, dict(self.headers), body))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    error = {"message": f"no route {self.path}", "type": "not_found"}
                    self._send(404, {"error": error})
                    return
                if not isinstance(body, dict) or "model" not in body:
                    self._send(400, {"error": {"message": "body must be JSON with a model"}})
                    return
                if body.get("stream"):
                    error = {"message": "streaming is not supported by the fake"}
                    self._send(400, {"error": error})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._send(*fake.complete(next(fake._ids), headers, body))

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
            target=self._server.serve_forever, name=self.thread_name, daemon=True
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeLLM(ChatCompletionsServer):
    """An OpenAI-compatible chat-completions server answering each API key's script."""

    thread_name = "demo-fake-llm"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, done_text: str = "Done.") -> None:
        super().__init__(host=host, port=port)
        self.done_text = done_text
        self._scripts: dict[str, deque[Reply]] = {}
        self._calls: dict[str, int] = {}

    def script(self, api_key: str, replies: Sequence[Reply]) -> None:
        """Set what the model answers to requests made with `api_key`, in order."""
        with self._lock:
            self._scripts[api_key] = deque(replies)

    def calls(self, api_key: str) -> int:
        """Count the completions served to `api_key`."""
        with self._lock:
            return self._calls.get(api_key, 0)

    def complete(self, n: int, headers: Mapping[str, str], body: Mapping[str, Any]) -> Answer:
        """Answer with the key's next scripted reply, billed by the size of the request."""
        key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self._lock:
            queue = self._scripts.get(key)
            reply = queue.popleft() if queue else Reply.say(self.done_text)
            self._calls[key] = self._calls.get(key, 0) + 1
        answer_chars = len(reply.content or "")
        answer_chars += sum(len(json.dumps(dict(tc.arguments))) for tc in reply.tool_calls)
        prompt = count_tokens(body.get("messages") or (), body.get("tools") or ())
        completion = max(answer_chars // 4, 12)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        calls = [(None, tc.name, json.dumps(dict(tc.arguments))) for tc in reply.tool_calls]
        return 200, chat_completion(n, str(body["model"]), reply.content, calls, usage, tag="demo")

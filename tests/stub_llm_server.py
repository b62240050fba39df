"""A real HTTP server on 127.0.0.1 that speaks enough of two vendor APIs for the official SDKs.

* ``POST /v1/messages`` - Anthropic Messages API (``AsyncAnthropic(base_url=server.url)``)
* ``POST /v1/chat/completions`` - OpenAI Chat Completions (``AsyncOpenAI(base_url=server.openai_base_url)``)

The reply echoes the prompt: ``"stub reply: <prompt>"``. Token usage counts whitespace-separated
words (input: system + every message; output: the reply). When ``max_tokens`` /
``max_completion_tokens`` is lower than the reply's word count the reply is cut to that
many words and the stop reason is ``max_tokens`` (Anthropic) or ``length`` (OpenAI).

With ``answer_batches`` set, a combined batch prompt (``cache_app.llm.prompt_format``) is answered
in the batch format, one ``RESPONSE i [batch n]`` section per prompt, each the stub's reply to it;
``batch_sizes()`` lists the prompts each Anthropic request carried (1 for a plain prompt).

Scripting: ``fail_next(status, times)`` answers the next ``times`` requests with an error
(with ``retry-after-ms: 1`` so SDK retries take a millisecond, not seconds);
``gate`` (a threading.Event) holds answers until set (``stop()`` sets it): a slow upstream,
for a client's timeout, without a sleep.
Every request is recorded in ``requests`` (path, headers, parsed JSON body).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cache_app.llm import prompt_format


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0  # what the stub answered


@dataclass
class _Failure:
    status: int
    remaining: int


@dataclass
class StubLLMServer:
    requests: list[RecordedRequest] = field(default_factory=list)
    gate: threading.Event | None = None
    reply_prefix: str = "stub reply: "
    answer_batches: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> StubLLMServer:
        stub = self

        class Handler(_Handler):
            server_stub = stub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="stub-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL for the Anthropic SDK (it appends /v1/messages)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for the OpenAI SDK (it appends /chat/completions)."""
        return f"{self.url}/v1"

    # --- scripting ---------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.append(_Failure(status, times))

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self.requests.clear()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def batch_sizes(self) -> list[int]:
        """Prompts per Anthropic request, in arrival order (1 for a plain prompt)."""
        sizes = []
        for request in self.requests_to("/v1/messages"):
            split = prompt_format.split_combined_prompt(_last_user_text(request.body))
            sizes.append(1 if split is None else len(split.atoms))
        return sizes

    def _next_failure(self) -> int | None:
        with self._lock:
            while self._failures and self._failures[0].remaining <= 0:
                self._failures.pop(0)
            if not self._failures:
                return None
            self._failures[0].remaining -= 1
            return self._failures[0].status

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    content = next((m for m in reversed(messages) if m.get("role") == "user"), {}).get("content")
    if isinstance(content, list):  # content blocks
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return str(content or "")


def _words(text: Any) -> list[str]:
    if isinstance(text, list):  # content blocks
        text = " ".join(block.get("text", "") for block in text if isinstance(block, dict))
    return str(text or "").split()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    server_stub: StubLLMServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        stub = self.server_stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        path = self.path.split("?", 1)[0]
        recorded = RecordedRequest("POST", path, {k.lower(): v for k, v in self.headers.items()}, body)
        stub._record(recorded)
        if stub.gate is not None:
            stub.gate.wait(timeout=30)
        anthropic = path == "/v1/messages"
        if not anthropic and path != "/v1/chat/completions":
            recorded.status = 404
            self._send(404, {"error": {"type": "not_found_error", "message": f"no route {path}"}})
            return
        failure = stub._next_failure()
        if failure is not None:
            recorded.status = failure
            kind = "rate_limit_error" if failure == 429 else "api_error"
            payload = (
                {"type": "error", "error": {"type": kind, "message": f"stub {failure}"}}
                if anthropic
                else {"error": {"message": f"stub {failure}", "type": kind, "code": None, "param": None}}
            )
            self._send(failure, payload, {"retry-after-ms": "1", "retry-after": "0"})
            return
        recorded.status = 200
        self._send(200, self._anthropic(body) if anthropic else self._openai(body))

    def _reply(self, prompt_words: list[str], limit: int | None) -> tuple[list[str], bool]:
        reply = [*self.server_stub.reply_prefix.split(), *prompt_words]
        if limit is not None and len(reply) > limit:
            return reply[:limit], True
        return reply, False

    def _batch_reply(self, prompt: str) -> str | None:
        split = prompt_format.split_combined_prompt(prompt) if self.server_stub.answer_batches else None
        if split is None:
            return None
        return "".join(
            f"{prompt_format.response_marker(i, split.nonce)}\n{self.server_stub.reply_prefix}{text}\n\n"
            for i, (_, text) in enumerate(split.atoms, start=1)
        )

    def _anthropic(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        input_words = _words(body.get("system")) + [w for m in messages for w in _words(m.get("content"))]
        reply, cut = self._reply(_words(last_user.get("content")), body.get("max_tokens"))
        text = self._batch_reply(_last_user_text(body))
        if text is not None:
            reply, cut = text.split(), False
        return {
            "id": f"msg_stub_{len(self.server_stub.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "stub-model"),
            "content": [{"type": "text", "text": " ".join(reply) if text is None else text}],
            "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(input_words), "output_tokens": len(reply)},
        }

    def _openai(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        input_words = [w for m in messages for w in _words(m.get("content"))]
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        reply, cut = self._reply(_words(last_user.get("content")), limit)
        return {
            "id": f"chatcmpl-stub-{len(self.server_stub.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(reply), "refusal": None},
                    "finish_reason": "length" if cut else "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": len(input_words),
                "completion_tokens": len(reply),
                "total_tokens": len(input_words) + len(reply),
            },
        }

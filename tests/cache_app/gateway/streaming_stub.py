"""The LLM stub server (tests/stub_llm_server.py), also answering ``stream: true`` with each vendor's events.

Anthropic: message_start, content_block_start, ping, one content_block_delta per word,
content_block_stop, message_delta (stop reason, output tokens), message_stop. OpenAI: a role
chunk, one chunk per word, a finish chunk, a usage chunk (with ``stream_options.include_usage``),
``data: [DONE]``. The reply and token counts are the stub's own.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from tests.stub_llm_server import RecordedRequest, StubLLMServer, _Handler


class StreamingStubServer(StubLLMServer):
    def start(self) -> StreamingStubServer:
        stub = self

        class Handler(_StreamingHandler):
            server_stub = stub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="stub-llm-stream", daemon=True
        )
        self._thread.start()
        return self


class _StreamingHandler(_Handler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        body = json.loads(raw or b"{}")
        if not body.get("stream"):  # the plain stub (failures, gate) reads the body again
            self.rfile = io.BytesIO(raw)
            super().do_POST()
            return
        path = self.path.split("?", 1)[0]
        self.server_stub._record(
            RecordedRequest("POST", path, {k.lower(): v for k, v in self.headers.items()}, body, 200)
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        events = self._anthropic_events(body) if path == "/v1/messages" else self._openai_events(body)
        for event in events:
            self.wfile.write(event)
            self.wfile.flush()

    def _anthropic_events(self, body: dict[str, Any]) -> list[bytes]:
        message = self._anthropic(body)
        words = message["content"][0]["text"].split(" ")
        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        events = [
            _sse({"type": "message_start", "message": start}, "message_start"),
            _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            _sse({"type": "ping"}),
        ]
        for i, word in enumerate(words):
            text = word if i == 0 else f" {word}"
            events.append(
                _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
            )
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        events += [
            _sse({"type": "content_block_stop", "index": 0}),
            _sse(
                {"type": "message_delta", "delta": delta, "usage": {"output_tokens": message["usage"]["output_tokens"]}}
            ),
            _sse({"type": "message_stop"}),
        ]
        return events

    def _openai_events(self, body: dict[str, Any]) -> list[bytes]:
        completion = self._openai(body)
        choice = completion["choices"][0]
        head = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, named=False)

        words = choice["message"]["content"].split(" ")
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": word if i == 0 else f" {word}"}) for i, word in enumerate(words)]
        events.append(chunk({}, choice["finish_reason"]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**head, "choices": [], "usage": completion["usage"]}, named=False))
        events.append(b"data: [DONE]\n\n")
        return events


def _sse(data: dict[str, Any], event: str | None = None, *, named: bool = True) -> bytes:
    head = f"event: {event or data['type']}\n" if named else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()

"""The two endpoints. Each parses, calls the service once, and answers in its API's format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from cache_app.gateway import auth, service
from cache_app.gateway.conversation import ChatRequest
from cache_app.gateway.errors import GatewayError, Kind, invalid
from cache_app.gateway.formats import AnthropicFormat, OpenAIFormat, WireFormat
from cache_app.gateway.service import Scope
from cache_app.gateway.streaming import DeltaStream, pieces
from cache_app.llm.client import LLMResponse


def _read_json(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body  # bounded by DATA_UPLOAD_MAX_MEMORY_SIZE
    except RequestDataTooBig:
        raise GatewayError(Kind.TOO_LARGE, "The request body is too large.")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise invalid("The request body must be JSON.")
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def _saved(result: LLMResponse) -> str:
    return f"{result.saved_usd:.8f}"


# Bearer tokens carry no cookies: the CSRF check (for session-authenticated forms) does not apply.
@method_decorator(csrf_exempt, name="dispatch")
class GatewayView(View):
    http_method_names = ["post"]
    wire: ClassVar[WireFormat]

    def post(self, request: HttpRequest) -> HttpResponseBase:
        try:
            caller = auth.authenticate(request)
            auth.throttle(caller)
            chat = self.wire.parse(_read_json(request))
            scope = service.scope_from_headers(request.headers)
            auth.check_scope(caller, scope.masterplan_id)
            service.check_model(chat.model, chat.max_tokens)
            if chat.stream:
                return self._stream(chat, scope)
            result = service.complete(chat, scope)
        except Exception as exc:
            return self.error(service.as_gateway_error(exc))
        response = JsonResponse(self.wire.response(chat, result))
        return self._headers(response, service.cache_status(scope, result), result)

    def error(self, err: GatewayError) -> JsonResponse:
        response = JsonResponse(self.wire.error_body(err), status=err.status)
        for name, value in err.headers.items():
            response[name] = value
        return response

    @staticmethod
    def _headers(response: HttpResponseBase, status: str, result: LLMResponse | None) -> HttpResponseBase:
        response["X-Mgecache-Cache"] = status
        response["X-Mgecache-Saved-USD"] = _saved(result) if result is not None else "0.00000000"
        if result is not None and result.simulated:
            response["X-Mgecache-Simulated"] = "true"
        return response

    def _stream(self, chat: ChatRequest, scope: Scope) -> HttpResponseBase:
        # Wait for the first delta (a miss streaming through) or the end (a hit, or a merged
        # duplicate): the cache status header must be known before the body starts.
        stream = service.start_stream(chat, scope)
        first = stream.next_delta()
        writer = self.wire.stream_writer(chat, service.estimated_prompt_tokens(chat))
        if first is None:
            result = stream.result()
            events: Iterator[bytes] = _replay(writer, result)
            status = service.cache_status(scope, result)
        else:
            result = None
            events = _live(writer, first, stream)
            status = "BYPASS" if scope.cache_mode != "use" else "MISS"
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # no proxy buffering of the event stream
        return self._headers(response, status, result)


def _replay(writer: Any, result: LLMResponse) -> Iterator[bytes]:
    yield writer.start()
    for piece in pieces(result.text):
        yield writer.delta(piece)
    yield writer.finish(result)


def _live(writer: Any, first: str, stream: DeltaStream) -> Iterator[bytes]:
    yield writer.start()
    yield writer.delta(first)
    try:
        while (piece := stream.next_delta()) is not None:
            yield writer.delta(piece)
        result = stream.result()
    except Exception as exc:  # the status line is sent: report in the stream's own error event
        yield writer.error(service.as_gateway_error(exc))
        return
    yield writer.finish(result)


class ChatCompletionsView(GatewayView):
    """OpenAI-compatible ``POST /v1/chat/completions``."""

    wire = OpenAIFormat()


class MessagesView(GatewayView):
    """Anthropic-compatible ``POST /v1/messages``."""

    wire = AnthropicFormat()

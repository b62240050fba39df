"""One gateway request into LLMClient: the cache mode, the scope headers, the model check, the call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from django.http.request import HttpHeaders

from cache_app.access.limits import max_tokens_error
from cache_app.core import conf, keys
from cache_app.gateway.conversation import ChatRequest
from cache_app.gateway.errors import GatewayError, Kind, invalid
from cache_app.gateway.streaming import DeltaStream
from cache_app.llm.client import LLMResponse, get_llm_client
from cache_app.llm.loop import run_sync
from cache_app.llm.pricing import get_ledger
from cache_app.llm.providers import estimate_tokens
from cache_app.llm.singleflight import LeaderFailedError

logger = logging.getLogger(__name__)

# "use": look up and store; "refresh" (Cache-Control: no-cache): skip the lookup, store the
# fresh answer; "bypass" (no-store): neither.
CacheMode = Literal["use", "refresh", "bypass"]


@dataclass(frozen=True)
class Scope:
    masterplan_id: str | None = None
    atom_id: UUID | None = None
    cache_mode: CacheMode = "use"


def cache_mode(cache_control: str) -> CacheMode:
    directives = {part.strip().split("=", 1)[0].lower() for part in cache_control.split(",")}
    if "no-store" in directives:
        return "bypass"
    if "no-cache" in directives:
        return "refresh"
    return "use"


def scope_from_headers(headers: HttpHeaders) -> Scope:
    """X-Mgecache-Masterplan, X-Mgecache-Atom (UUIDs) and Cache-Control; 400 if malformed."""
    try:
        masterplan_id = keys.normalize_masterplan_id(headers.get("X-Mgecache-Masterplan") or None)
    except (ValueError, TypeError):
        raise invalid("X-Mgecache-Masterplan must be a UUID.", "X-Mgecache-Masterplan")
    raw_atom = headers.get("X-Mgecache-Atom") or None
    try:
        atom_id = UUID(raw_atom) if raw_atom else None
    except ValueError:
        raise invalid("X-Mgecache-Atom must be a UUID.", "X-Mgecache-Atom")
    return Scope(masterplan_id, atom_id, cache_mode(headers.get("Cache-Control", "")))


def check_model(model: str, max_tokens: int | None = None) -> None:
    """A model without a ModelPricing row is refused (its calls could not be priced), and so is
    ``max_tokens`` above the model's maximum output (the limit is named, as on the v2 API)."""
    if get_ledger().prices.price(model) is None:
        raise GatewayError(
            Kind.NOT_FOUND,
            f"The model {model!r} is not served by this mgecache gateway (it has no ModelPricing row).",
            param="model",
            code="model_not_found",
        )
    error = max_tokens_error(model, max_tokens)
    if error:
        raise invalid(f"max_tokens: {error}", "max_tokens")


def cache_status(scope: Scope, result: LLMResponse) -> str:
    """The X-Mgecache-Cache header: HIT, MISS, or BYPASS when the lookup was skipped."""
    if scope.cache_mode != "use":
        return "BYPASS"
    return "HIT" if result.cached else "MISS"


def _timeout() -> float:
    # As the pipeline's own endpoint: every retry of the provider may take the full timeout.
    return float(conf.get("LLM_TIMEOUT_SECONDS")) * (int(conf.get("LLM_MAX_RETRIES")) + 2)


def _arguments(chat: ChatRequest, scope: Scope) -> dict[str, Any]:
    return {
        "prompt": chat.prompt,
        "model": chat.model,
        "temperature": chat.temperature,
        "max_tokens": chat.max_tokens,
        "system": chat.system,
        "use_cache": scope.cache_mode != "bypass",
        "refresh": scope.cache_mode == "refresh",
        "atom_id": scope.atom_id,
        "masterplan_id": scope.masterplan_id,
    }


def complete(chat: ChatRequest, scope: Scope) -> LLMResponse:
    """The whole answer (cached, single-flighted, priced by LLMClient)."""
    try:
        return run_sync(get_llm_client().generate(**_arguments(chat, scope)), timeout=_timeout())
    except Exception as exc:
        raise as_gateway_error(exc) from exc


def start_stream(chat: ChatRequest, scope: Scope) -> DeltaStream:
    """The request, started on the client loop; read its deltas (a miss) or its result (a hit)."""
    arguments = _arguments(chat, scope)
    return DeltaStream(lambda on_delta: get_llm_client().generate(**arguments, on_delta=on_delta), timeout=_timeout())


def estimated_prompt_tokens(chat: ChatRequest) -> int:
    return estimate_tokens(chat.prompt) + estimate_tokens(chat.system)


def as_gateway_error(exc: BaseException) -> GatewayError:
    """What to tell the client about a failed request."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ValueError):  # LLMClient's argument checks
        return invalid(str(exc))
    if _is_timeout(exc):
        logger.warning("gateway: upstream timed out: %s: %s", type(exc).__name__, exc)
        return GatewayError(Kind.TIMEOUT, "The upstream model did not answer in time.", code="upstream_timeout")
    status = getattr(exc, "status_code", None)
    if status == 429:
        retry_after = _retry_after(exc)
        return GatewayError(
            Kind.RATE_LIMIT,
            "The upstream model is rate limited; retry later.",
            code="upstream_rate_limited",
            headers={"Retry-After": retry_after},
        )
    if _is_upstream(exc):
        logger.warning("gateway: upstream failed: %s: %s", type(exc).__name__, exc)
        return GatewayError(Kind.UPSTREAM, f"The upstream model failed ({type(exc).__name__}).", code="upstream_error")
    logger.error("gateway: request failed", exc_info=exc)
    return GatewayError(Kind.INTERNAL, "Internal error in the mgecache gateway.", code="internal_error")


def _is_timeout(exc: BaseException) -> bool:
    import anthropic
    import openai

    return isinstance(exc, (TimeoutError, anthropic.APITimeoutError, openai.APITimeoutError))


def _is_upstream(exc: BaseException) -> bool:
    import anthropic
    import openai

    return isinstance(exc, (anthropic.APIError, openai.APIError, LeaderFailedError))


def _retry_after(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    return str(max(1, int(value))) if value and value.isdigit() else "1"

"""The pipeline's LLM client: prompt cache, single-flight, optional batching, and dollars.

Order of work for ``generate``:

1. the prompt cache (if ``use_cache`` and the policy allow) -> a hit costs 0 and saves the
   price of the cached tokens;
2. on a miss, single-flight on the cache key: one caller (across processes, through a
   short Redis lock) leads, the identical concurrent callers wait for its outcome;
3. the leader calls the batcher (``use_batching`` with an ``atom_id``) or the provider;
4. the answer is stored under the prompt cache's store rules, and its cost recorded.

Followers of a single-flight are reported as ``cached=True, cache_layer="singleflight"``:
they made no call, and the money they saved is recorded under that layer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, TypeVar
from uuid import UUID

from django.utils.module_loading import import_string

from cache_app.core import conf, keys, metrics
from cache_app.core.lru import LRU
from cache_app.core.policies import PolicySource, get_policy_source
from cache_app.core.state import process_wide
from cache_app.llm.cache import CachedLLMResponse, LLMPromptCache
from cache_app.llm.loop import run_sync
from cache_app.llm.pricing import SavingsLedger, get_ledger
from cache_app.llm.providers import (
    LLMProvider,
    ProviderRequest,
    ProviderResponse,
    estimate_tokens,
    get_provider,
    stream_completion,
)
from cache_app.llm.singleflight import SingleFlight

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Batcher(Protocol):
    """What the client needs of a batcher (``MGECACHE['LLM_BATCHER']``, batching_app's RequestBatcher)."""

    async def execute_with_batching(self, atom_id: UUID, prompt: str) -> str: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class LLMResponse:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    cache_layer: str | None  # "llm" on a cache hit, "singleflight" for a merged duplicate
    cost_usd: float  # what this call cost (0 when no call was made)
    saved_usd: float  # what not calling saved
    latency_s: float
    finish_reason: str | None
    provider: str = ""
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Call:
    """One generate() request, validated and normalised."""

    prompt: str
    model: str
    temperature: float
    max_tokens: int | None
    system: str | None
    atom_id: UUID | None
    masterplan_id: str | None
    # How the answer is produced (not part of its identity): ``refresh`` skips the lookup and
    # single-flight but stores the answer; ``on_delta`` receives a miss's text as it streams.
    refresh: bool = False
    on_delta: Callable[[str], None] | None = None

    @classmethod
    def parse(
        cls,
        prompt: Any,
        model: Any,
        temperature: Any,
        max_tokens: Any,
        system: Any,
        atom_id: Any,
        masterplan_id: Any,
    ) -> _Call:
        """Raises ValueError for a bad argument. ``model`` defaults to LLM_DEFAULT_MODEL."""
        model = model or conf.get("LLM_DEFAULT_MODEL")
        _validate(prompt, model, temperature, max_tokens, system)
        mp = keys.normalize_masterplan_id(masterplan_id)
        atom = None if atom_id is None else UUID(str(atom_id))
        return cls(prompt, model, temperature, max_tokens, system, atom, mp)

    @property
    def params(self) -> dict[str, Any]:
        """The generation parameters that are part of the answer's identity."""
        params: dict[str, Any] = {}
        if self.system is not None:
            params["system"] = self.system
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params


@dataclass(frozen=True)
class _Generated:
    """What the single-flight leader shares with its followers (JSON-able)."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    cost_usd: float


class LLMClient:
    """Collaborators are injected; defaults: the configured provider, prompt cache, ledger and policies.

    ``batcher``: one ``RequestBatcher`` for every batched request (the caller keeps the
    requests homogeneous). Without it the client keeps one batcher per event loop and per
    (model, temperature, max_tokens, system, masterplan), reading ``BatchPolicy`` live; at
    most ``LLM_BATCHERS_MAX`` of them, the least recently used closed first.
    """

    def __init__(
        self,
        provider: LLMProvider | None = None,
        *,
        prompt_cache: LLMPromptCache | None = None,
        batcher: Batcher | None = None,
        pricing: SavingsLedger | None = None,
        singleflight: SingleFlight | None = None,
        policies: PolicySource | None = None,
    ) -> None:
        self._provider = provider
        self.prompt_cache = prompt_cache or LLMPromptCache()
        self._batcher = batcher
        self._ledger = pricing
        self._policies = policies
        self.singleflight = singleflight or SingleFlight(
            encode=asdict, decode=lambda data: _Generated(**data), redis=None
        )
        self._batchers: LRU[tuple, Batcher] = LRU(lambda: int(conf.get("LLM_BATCHERS_MAX")))
        self._closing: set[asyncio.Task] = set()

    @property
    def provider(self) -> LLMProvider:
        return self._provider if self._provider is not None else get_provider()

    @property
    def ledger(self) -> SavingsLedger:
        return self._ledger if self._ledger is not None else get_ledger()

    @property
    def policies(self) -> PolicySource:
        return self._policies if self._policies is not None else get_policy_source()

    async def generate(
        self,
        prompt: str,
        model: str | None = None,
        temperature: float = 0.7,
        *,
        max_tokens: int | None = None,
        system: str | None = None,
        use_cache: bool = True,
        use_batching: bool = False,
        atom_id: UUID | None = None,
        masterplan_id: UUID | None = None,
        lookup: bool = True,
        refresh: bool = False,
        on_delta: Callable[[str], None] | None = None,
    ) -> LLMResponse:
        """Answer ``prompt``. Bad arguments raise ValueError; provider errors reach the caller, uncached.

        ``lookup=False``: the caller has just looked the prompt up (:meth:`lookup`, a wave),
        so go straight to single-flight, the call and the store, without counting a second miss;
        the answer is then stored under the scope's current tag (no miss token to check).
        ``refresh=True`` (a client's ``Cache-Control: no-cache``) does the same without a lookup at
        all. ``on_delta`` receives a miss's text piece by piece as the provider streams it.
        """
        started = time.perf_counter()
        call = _Call.parse(prompt, model, temperature, max_tokens, system, atom_id, masterplan_id)
        call = replace(call, refresh=refresh, on_delta=on_delta)
        provider = self.provider
        token = None  # the miss's write token: the answer is refused if the scope is invalidated meanwhile
        if use_cache and lookup and not refresh:
            found = await self.prompt_cache.alookup(
                call.prompt, call.model, call.temperature, masterplan_id=call.masterplan_id, **call.params
            )
            hit, token = found.hit, found.token
            if hit is not None:
                return self._hit_response(hit, call, provider, started)
        return await self._answer_miss(provider, call, use_cache, use_batching, token, started)

    async def _answer_miss(
        self, provider: LLMProvider, call: _Call, use_cache: bool, use_batching: bool, token: Any, started: float
    ) -> LLMResponse:
        generated, led = await self._produce(
            provider, call, use_cache=use_cache, use_batching=use_batching, token=token
        )
        return self._generated_response(generated, led, call, provider, started)

    async def lookup(
        self,
        prompt: str,
        model: str | None = None,
        temperature: float = 0.7,
        *,
        max_tokens: int | None = None,
        system: str | None = None,
        masterplan_id: UUID | None = None,
    ) -> LLMResponse | None:
        """The cached answer (a hit, priced as saved), or None (a miss); never calls the provider."""
        started = time.perf_counter()
        call = _Call.parse(prompt, model, temperature, max_tokens, system, None, masterplan_id)
        hit = await self.prompt_cache.aget(
            call.prompt, call.model, call.temperature, masterplan_id=call.masterplan_id, **call.params
        )
        return None if hit is None else self._hit_response(hit, call, self.provider, started)

    def generate_sync(
        self,
        prompt: str,
        model: str | None = None,
        temperature: float = 0.7,
        *,
        max_tokens: int | None = None,
        system: str | None = None,
        use_cache: bool = True,
        use_batching: bool = False,
        atom_id: UUID | None = None,
        masterplan_id: UUID | None = None,
    ) -> LLMResponse:
        """:meth:`generate` for synchronous callers such as WSGI views, bounded by :func:`request_timeout`.

        The lookup runs on the caller's thread with the sync client: a hit never waits for the
        client loop (a thread hop each way, a quarter of a hit's time under load). A miss goes
        to the loop with the lookup's write token, so concurrent callers meet in single-flight
        and the batcher exactly as with :meth:`generate`.
        """
        started = time.perf_counter()
        call = _Call.parse(prompt, model, temperature, max_tokens, system, atom_id, masterplan_id)
        provider = self.provider
        token = None
        if use_cache:
            found = self.prompt_cache.lookup(
                call.prompt, call.model, call.temperature, masterplan_id=call.masterplan_id, **call.params
            )
            if found.hit is not None:
                return self._hit_response(found.hit, call, provider, started)
            token = found.token
        coro = self._answer_miss(provider, call, use_cache, use_batching, token, started)
        return run_sync(coro, timeout=request_timeout())

    async def _produce(
        self, provider: LLMProvider, call: _Call, *, use_cache: bool, use_batching: bool, token: Any = None
    ) -> tuple[_Generated, bool]:
        """The answer, and whether this caller made the call (False: it shared an identical caller's)."""
        led = False

        async def work() -> _Generated:
            nonlocal led
            led = True
            generated = await self._call(provider, call, use_batching)
            if use_cache:
                await self.prompt_cache.aset(
                    call.prompt,
                    call.model,
                    call.temperature,
                    generated.text,
                    prompt_tokens=generated.prompt_tokens,
                    completion_tokens=generated.completion_tokens,
                    masterplan_id=call.masterplan_id,
                    finish_reason=generated.finish_reason,
                    token=token,
                    **call.params,
                )
            return generated

        if not use_cache or call.refresh:
            return await work(), True
        key = self.prompt_cache.key_for(
            call.prompt, call.model, call.temperature, masterplan_id=call.masterplan_id, **call.params
        )
        generated = await self.singleflight.run(key, work)
        return generated, led

    def _hit_response(self, hit: CachedLLMResponse, call: _Call, provider: LLMProvider, started: float) -> LLMResponse:
        saved = self.ledger.record_saving(
            "llm", call.model, hit.prompt_tokens, hit.completion_tokens, masterplan_id=call.masterplan_id
        )
        metrics.LLM_REQUESTS.labels(provider.name, "hit").inc()
        return LLMResponse(
            text=hit.text,
            model=hit.model,
            prompt_tokens=hit.prompt_tokens,
            completion_tokens=hit.completion_tokens,
            cached=True,
            cache_layer="llm",
            cost_usd=0.0,
            saved_usd=saved,
            latency_s=time.perf_counter() - started,
            finish_reason=hit.finish_reason,
            provider=provider.name,
            simulated=provider.simulated,
        )

    def _generated_response(
        self, generated: _Generated, led: bool, call: _Call, provider: LLMProvider, started: float
    ) -> LLMResponse:
        if led:
            cost, saved, layer = generated.cost_usd, 0.0, None
        else:  # a merged duplicate: no call made, the money it saved is recorded under single-flight
            cost, layer = 0.0, "singleflight"
            saved = self.ledger.record_saving(
                layer,
                call.model,
                generated.prompt_tokens,
                generated.completion_tokens,
                masterplan_id=call.masterplan_id,
            )
            metrics.LLM_REQUESTS.labels(provider.name, "merged").inc()
        return LLMResponse(
            text=generated.text,
            model=generated.model,
            prompt_tokens=generated.prompt_tokens,
            completion_tokens=generated.completion_tokens,
            cached=not led,
            cache_layer=layer,
            cost_usd=cost,
            saved_usd=saved,
            latency_s=time.perf_counter() - started,
            finish_reason=generated.finish_reason,
            provider=provider.name,
            simulated=provider.simulated,
        )

    async def _call(self, provider: LLMProvider, call: _Call, use_batching: bool) -> _Generated:
        if use_batching and call.atom_id is not None:
            batcher = self._batcher_for(provider, call)
            text = await batcher.execute_with_batching(call.atom_id, call.prompt)
            # The combined call's real spend was recorded by the batch; this atom's share is estimated.
            prompt_tokens = estimate_tokens((call.system or "") + call.prompt)
            completion_tokens = estimate_tokens(text)
            cost = self.ledger.prices.cost_usd(call.model, prompt_tokens, completion_tokens)
            return _Generated(text, call.model, prompt_tokens, completion_tokens, None, cost)
        request = ProviderRequest(call.prompt, call.model, call.temperature, call.max_tokens, call.system)
        response = await self._complete(provider, request, call.on_delta)
        cost = self.ledger.record_spend(
            call.model, response.prompt_tokens, response.completion_tokens, masterplan_id=call.masterplan_id
        )
        return _Generated(
            response.text,
            response.model,
            response.prompt_tokens,
            response.completion_tokens,
            response.finish_reason,
            cost,
        )

    async def _complete(
        self, provider: LLMProvider, request: ProviderRequest, on_delta: Callable[[str], None] | None = None
    ) -> ProviderResponse:
        started = time.perf_counter()
        try:
            if on_delta is None:
                response = await provider.complete(request)
            else:
                response = await _streamed(provider, request, on_delta)
        except Exception:
            metrics.LLM_REQUESTS.labels(provider.name, "error").inc()
            raise
        finally:
            metrics.LLM_PROVIDER_SECONDS.labels(provider.name).observe(time.perf_counter() - started)
        metrics.LLM_REQUESTS.labels(provider.name, "miss").inc()
        return response

    def _batcher_for(self, provider: LLMProvider, call: _Call) -> Batcher:
        if self._batcher is not None:
            return self._batcher
        batcher_class = import_string(conf.get("LLM_BATCHER"))
        loop = asyncio.get_running_loop()
        model, temperature, max_tokens, system = call.model, call.temperature, call.max_tokens, call.system
        system_digest = None if system is None else keys.digest(system)  # not a 200k-character dict key
        key = (id(loop), model, temperature, max_tokens, system_digest, call.masterplan_id)
        batcher = self._batchers.get(key)
        if batcher is None:

            async def combined_call(combined_prompt: str) -> str:
                # A combined prompt answers several atoms: give it room for all of them.
                budget = None if max_tokens is None else max_tokens * self.policies.batch().max_batch_size
                request = ProviderRequest(combined_prompt, model, temperature, budget, system)
                response = await self._complete(provider, request)
                self.ledger.record_spend(
                    model, response.prompt_tokens, response.completion_tokens, masterplan_id=call.masterplan_id
                )
                return response.text

            batcher = batcher_class(combined_call, policies=self._policies, masterplan_id=call.masterplan_id)
            evicted = self._batchers.put(key, batcher)
            self._close_evicted(evicted, loop)
        return batcher

    def _close_evicted(self, evicted: list[tuple[tuple, Batcher]], loop: asyncio.AbstractEventLoop) -> None:
        """The least recently used batchers, dropped beyond the bound: this loop's are closed (flushed)."""
        for old_key, old in evicted:
            if old_key[0] == id(loop):
                task = loop.create_task(old.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            # Another loop's batcher still sends what it holds when its window ends.

    async def aclose(self) -> None:
        """Send what the batchers of this event loop hold, then stop them."""
        loop_id = id(asyncio.get_running_loop())
        mine = [k for k in self._batchers if k[0] == loop_id]
        for key in mine:
            await self._batchers.pop(key).aclose()


async def _streamed(
    provider: LLMProvider, request: ProviderRequest, on_delta: Callable[[str], None]
) -> ProviderResponse:
    response = None
    async for item in stream_completion(provider, request):
        if isinstance(item, ProviderResponse):
            response = item
        else:
            on_delta(item)
    if response is None:
        raise RuntimeError(f"the {provider.name} stream ended without a final response")
    return response


def _validate(prompt: Any, model: Any, temperature: Any, max_tokens: Any, system: Any) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model must be a non-empty string")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}")
    if not 0 <= temperature <= 2:
        raise ValueError(f"temperature must be between 0 and 2, got {temperature!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if system is not None and not isinstance(system, str):
        raise ValueError("system must be a string")


@process_wide
def get_llm_client() -> LLMClient:
    """The process-wide client (the API's; one set of batchers and single-flight state per process)."""
    return LLMClient()


def request_timeout() -> float:
    """How long a synchronous caller waits for an answer: each provider attempt (the first and
    LLM_MAX_RETRIES retries) may take LLM_TIMEOUT_SECONDS, plus one more for the cache and batching."""
    return float(conf.get("LLM_TIMEOUT_SECONDS")) * (int(conf.get("LLM_MAX_RETRIES")) + 2)

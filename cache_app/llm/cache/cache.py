"""LLMPromptCache: exact-match answers in Redis, scoped invalidation in O(1), fail-open.

Hot path: a lookup is ONE round trip, ``MGET(epoch, generation, entry)``; the entry is a
hit only if its stored tag equals the scope's current ``e<epoch>g<generation>`` tag, so an
invalidation (one INCR) makes every earlier entry unreachable at once. See docs/llm_cache.md.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from cache_app.core import keys, metrics, scripts
from cache_app.core.layer import RedisCacheLayer
from cache_app.core.policies import LayerPolicy
from cache_app.core.tags import make_tag
from cache_app.llm.cache.codec import TRUNCATED_FINISH_REASONS, CachedLLMResponse, CorruptEntryError, decode, encode
from cache_app.llm.cache.codec import identity_digest as _digest
from cache_app.llm.cache.codec import normalize_temperature as _temperature
from cache_app.llm.cache.reclaim import areclaim_scope, reclaim_layer, reclaim_scope

logger = logging.getLogger(__name__)

LAYER = "llm"
_HITS = metrics.CACHE_HITS.labels(LAYER)
_MISSES = metrics.CACHE_MISSES.labels(LAYER)
_WRITES = metrics.CACHE_WRITES.labels(LAYER)
_RECLAIMED = metrics.CACHE_KEYS_RECLAIMED.labels(LAYER)
_LOOKUP = metrics.CACHE_LOOKUP_SECONDS.labels(LAYER)
_ANY_TAG = re.compile(rb"e\d+g\d+\|")


class LLMPromptCache(RedisCacheLayer):
    """Exact-match LLM response cache. Collaborators are injected; defaults come from settings.

    ``redis``: a sync client (default: the configured connection). With an injected client
    and no ``guard``/``breaker``, a private circuit breaker probes that client.
    ``async_redis``: an asyncio client or a zero-argument factory for one (default: the
    configured server per event loop, or a client derived from an injected ``redis``).
    """

    layer = LAYER
    reclaim_scope_task = "reclaim_llm_masterplan"
    reclaim_layer_task = "reclaim_llm_dead_keys"

    def __init__(self, redis: Any = None, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._sync_scripts: tuple[Any, Any, Any] | None = None
        self._async_scripts: tuple[Any, Any, Any] | None = None

    def _llm_policy(self) -> LayerPolicy:
        return self.policies.llm()

    def _count(self, field: str, masterplan_id: str | None) -> None:
        self.counters.incr(LAYER, field, masterplan_id=masterplan_id)

    def _scripts(self) -> tuple[Any, Any, Any]:
        if self._sync_scripts is None:
            self._sync_scripts = (
                self.redis.register_script(scripts.SET_LUA),
                self.redis.register_script(scripts.RECLAIM_LUA),
                self.redis.register_script(scripts.RECLAIM_SCAN_LUA),
            )
        return self._sync_scripts

    def _ascripts(self, client: Any) -> tuple[Any, Any, Any]:
        if self._async_scripts is None:
            self._async_scripts = (
                client.register_script(scripts.SET_LUA),
                client.register_script(scripts.RECLAIM_LUA),
                client.register_script(scripts.RECLAIM_SCAN_LUA),
            )
        return self._async_scripts

    # --- keys ----------------------------------------------------------------------------
    def key_for(self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any) -> str:
        """The entry's Redis key (pure: no I/O). Deterministic across processes and machines."""
        return keys.llm_entry(masterplan_id, _digest(prompt, model, temperature, params))

    # --- lookups -------------------------------------------------------------------------
    def _lookup_plan(
        self, prompt: str, model: str, temperature: Any, masterplan_id: Any, params: dict[str, Any]
    ) -> tuple[str | None, tuple[str, str, str]] | None:
        """(masterplan id, (epoch, generation, entry) keys), or None if the policy bypasses the cache."""
        normalized_mp = keys.normalize_masterplan_id(masterplan_id)
        entry_digest = _digest(prompt, model, temperature, params)
        if not self._policy_allows(self._llm_policy(), temperature):
            self._count("bypassed", normalized_mp)
            return None
        return normalized_mp, keys.llm_lookup(normalized_mp, entry_digest)

    @staticmethod
    def _policy_allows(policy: LayerPolicy, temperature: Any) -> bool:
        return policy.enabled and (policy.cache_nonzero_temperature or _temperature(temperature) == 0)

    def _interpret(
        self, masterplan_id: str | None, lookup_keys: tuple[str, str, str], reply: Any, model: str
    ) -> tuple[CachedLLMResponse | None, bool]:
        """Turn an MGET reply into (response, delete_entry). Counts hit/miss."""
        response, corrupt = None, False
        if reply is not None:
            epoch, generation, raw = reply
            tag = make_tag(epoch, generation)
            if raw is not None and raw.startswith(tag):
                try:
                    response = decode(raw[len(tag) :], expected_model=model)
                except CorruptEntryError as exc:
                    corrupt = True
                    self._count_corrupt(lookup_keys[2], exc)
            elif raw is not None and not _ANY_TAG.match(raw):
                corrupt = True
                self._count_corrupt(lookup_keys[2], CorruptEntryError("no generation tag"))
            if response is None:
                self._remember_tag(lookup_keys[2], tag)
        if response is None:
            _MISSES.inc()
            self._count("misses", masterplan_id)
        else:
            _HITS.inc()
            self._count("hits", masterplan_id)
        return response, corrupt

    def _count_corrupt(self, key: str, exc: Exception) -> None:
        metrics.CACHE_ERRORS.labels(LAYER, "corrupt").inc()
        logger.warning("LLM cache entry %s is corrupt (%s); deleting it", key, exc)

    def get(
        self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any
    ) -> CachedLLMResponse | None:
        """The cached answer, or None (miss, bypass, or Redis unavailable). Never raises on Redis errors."""
        started = time.perf_counter()
        plan = self._lookup_plan(prompt, model, temperature, masterplan_id, params)
        if plan is None:
            return None
        normalized_mp, lookup_keys = plan
        client = self.redis
        reply = self.guard.run("get", lambda: client.execute_command("MGET", *lookup_keys), None)
        response, corrupt = self._interpret(normalized_mp, lookup_keys, reply, model)
        if corrupt:
            self.guard.run("delete", lambda: client.unlink(lookup_keys[2]), None)
        _LOOKUP.observe(time.perf_counter() - started)
        return response

    async def aget(
        self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any
    ) -> CachedLLMResponse | None:
        started = time.perf_counter()
        plan = self._lookup_plan(prompt, model, temperature, masterplan_id, params)
        if plan is None:
            return None
        normalized_mp, lookup_keys = plan
        client = self.async_client()
        reply = await self.guard.arun("get", lambda: client.execute_command("MGET", *lookup_keys), None)
        response, corrupt = self._interpret(normalized_mp, lookup_keys, reply, model)
        if corrupt:
            await self.guard.arun("delete", lambda: client.unlink(lookup_keys[2]), None)
        _LOOKUP.observe(time.perf_counter() - started)
        return response

    # --- the miss -> set handshake ---------------------------------------------------------
    # --- writes --------------------------------------------------------------------------
    def _write_plan(
        self,
        prompt: str,
        model: str,
        temperature: Any,
        response_text: str,
        prompt_tokens: int,
        completion_tokens: int,
        masterplan_id: Any,
        ttl: int | None,
        finish_reason: str | None,
        params: dict[str, Any],
    ) -> tuple[str | None, list[str], list[Any]] | None:
        """Validate and apply the store rules; (masterplan, keys, args) or None if skipped."""
        normalized_mp = keys.normalize_masterplan_id(masterplan_id)
        entry_digest = _digest(prompt, model, temperature, params)
        for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not isinstance(response_text, str):
            raise TypeError("response_text must be a str")
        if finish_reason is not None and not isinstance(finish_reason, str):
            raise TypeError("finish_reason must be a str or None")
        policy = self._llm_policy()
        seconds = policy.ttl_seconds if ttl is None else ttl
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
            raise ValueError(f"ttl must be a positive int (seconds), got {seconds!r}")
        reason = None
        if not policy.enabled:
            reason = "disabled"
        elif not response_text.strip():
            reason = "empty"
        elif _temperature(temperature) > 0 and not policy.cache_nonzero_temperature:
            reason = "nonzero_temperature"
        elif finish_reason in TRUNCATED_FINISH_REASONS and not policy.cache_truncated:
            reason = "truncated"
        if reason is not None:
            metrics.CACHE_SKIPPED_WRITES.labels(LAYER, reason).inc()
            return None
        epoch_key, gen_key, entry_key = keys.llm_lookup(normalized_mp, entry_digest)
        payload = encode(
            CachedLLMResponse(
                text=response_text,
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached_at=self._clock(),
                finish_reason=finish_reason,
                masterplan_id=normalized_mp,
            )
        )
        return normalized_mp, [epoch_key, gen_key, entry_key], [payload, seconds, self._take_tag(entry_key)]

    def _written(self, masterplan_id: str | None, stored: Any) -> None:
        if stored is None:  # Redis failed; the guard counted and logged it
            return
        if int(stored) == 1:
            _WRITES.inc()
            self._count("writes", masterplan_id)
        else:
            metrics.CACHE_SKIPPED_WRITES.labels(LAYER, "stale_generation").inc()

    def set(
        self,
        prompt: str,
        model: str,
        temperature: float,
        response_text: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        masterplan_id: Any = None,
        ttl: int | None = None,
        finish_reason: str | None = None,
        **params: Any,
    ) -> None:
        """Store an answer (if the policy allows it). Never raises on Redis errors; invalid arguments raise."""
        plan = self._write_plan(
            prompt,
            model,
            temperature,
            response_text,
            prompt_tokens,
            completion_tokens,
            masterplan_id,
            ttl,
            finish_reason,
            params,
        )
        if plan is None:
            return
        normalized_mp, script_keys, args = plan
        client = self.redis
        set_script = self._scripts()[0]
        stored = self.guard.run("set", lambda: set_script(keys=script_keys, args=args, client=client), None)
        self._written(normalized_mp, stored)

    async def aset(
        self,
        prompt: str,
        model: str,
        temperature: float,
        response_text: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        masterplan_id: Any = None,
        ttl: int | None = None,
        finish_reason: str | None = None,
        **params: Any,
    ) -> None:
        plan = self._write_plan(
            prompt,
            model,
            temperature,
            response_text,
            prompt_tokens,
            completion_tokens,
            masterplan_id,
            ttl,
            finish_reason,
            params,
        )
        if plan is None:
            return
        normalized_mp, script_keys, args = plan
        client = self.async_client()
        set_script = self._ascripts(client)[0]
        stored = await self.guard.arun("set", lambda: set_script(keys=script_keys, args=args, client=client), None)
        self._written(normalized_mp, stored)

    # --- invalidation --------------------------------------------------------------------
    def _generation_key(self, masterplan_id: str | None) -> str:
        return keys.llm_generation(masterplan_id)

    def _epoch_key(self) -> str:
        return keys.llm_epoch()

    async def _areclaim_masterplan(self, masterplan_id: str | None) -> int:
        # One server-side SCAN step per call on the async client (no thread needed).
        client = self.async_client()
        removed = await areclaim_scope(client, self._ascripts(client)[2], masterplan_id)
        _RECLAIMED.inc(removed)
        return removed

    # --- physical deletion (raises on Redis errors: callers retry) ---------------------------
    def reclaim_masterplan(self, masterplan_id: Any) -> int:
        """Delete the dead entries of one scope with SCAN + batched UNLINK; returns the count."""
        removed = reclaim_scope(self.redis, self._scripts()[2], keys.normalize_masterplan_id(masterplan_id))
        _RECLAIMED.inc(removed)
        return removed

    def reclaim_dead_keys(self) -> int:
        """Delete the dead entries of every scope of the layer; returns the count."""
        removed = reclaim_layer(self.redis, self._scripts()[1])
        _RECLAIMED.inc(removed)
        return removed

    # --- statistics ------------------------------------------------------------------------
    def hit_rate(self) -> float:
        """Hits / (hits + misses) over every process (durable counters); 0.0 without lookups."""
        return self.counters.hit_rate(LAYER)

    def stats(self, masterplan_id: Any = None) -> dict[str, float]:
        """Durable totals (hits, misses, writes, invalidations, bypassed) of the layer or one masterplan."""
        return self.counters.read(LAYER, masterplan_id=keys.normalize_masterplan_id(masterplan_id))

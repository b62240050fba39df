"""LLMPromptCache: exact-match answers in Redis, scoped invalidation in O(1), fail-open.

Hot path: a lookup is ONE round trip, ``MGET(epoch, generation, entry)``; the entry is a
hit only if its stored tag equals the scope's current ``e<epoch>g<generation>`` tag, so an
invalidation (one INCR) makes every earlier entry unreachable at once. See docs/llm_cache.md.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript, Script

from cache_app.core import keys, metrics, scripts
from cache_app.core.layer import AsyncRedis, Lookup, RedisCacheLayer, SyncRedis, expected_tag
from cache_app.core.policies import LayerPolicy
from cache_app.core.tags import WriteToken, make_tag
from cache_app.llm.cache.codec import TRUNCATED_FINISH_REASONS, CachedLLMResponse, CorruptEntryError, decode, encode
from cache_app.llm.cache.codec import identity_digest as _digest
from cache_app.llm.cache.codec import normalize_temperature as _temperature
from cache_app.llm.cache.reclaim import areclaim_scope, reclaim_layer, reclaim_scope
from cache_app.llm.cache.wire import AsyncMget, SyncMget

logger = logging.getLogger(__name__)

LAYER = "llm"
_HITS = metrics.CACHE_HITS.labels(LAYER)
_MISSES = metrics.CACHE_MISSES.labels(LAYER)
_WRITES = metrics.CACHE_WRITES.labels(LAYER)
_RECLAIMED = metrics.CACHE_KEYS_RECLAIMED.labels(LAYER)
_LOOKUP = metrics.CACHE_LOOKUP_SECONDS.labels(LAYER)
_ANY_TAG = re.compile(rb"e\d+g\d+\|")


@dataclass(frozen=True)
class _Write:
    """One ``set`` call's arguments (validated by ``_write_plan``)."""

    prompt: str
    model: str
    temperature: Any
    text: str
    prompt_tokens: int
    completion_tokens: int
    masterplan_id: Any
    ttl: int | None
    finish_reason: str | None
    params: dict[str, Any]
    token: WriteToken | None

    def validate(self) -> None:
        for name, value in (("prompt_tokens", self.prompt_tokens), ("completion_tokens", self.completion_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not isinstance(self.text, str):
            raise TypeError("response_text must be a str")
        if self.finish_reason is not None and not isinstance(self.finish_reason, str):
            raise TypeError("finish_reason must be a str or None")


@dataclass(frozen=True)
class _WritePlan:
    """What the write script receives: KEYS (epoch, generation, entry) and ARGV (payload, ttl, expected tag)."""

    masterplan_id: str | None
    keys: list[str]
    args: list[Any]


class LLMPromptCache(RedisCacheLayer):
    """Exact-match LLM response cache. Collaborators are injected; defaults come from settings.

    ``redis``: a sync client (default: the configured connection). With an injected client
    and no ``guard``/``breaker``, a private circuit breaker probes that client.
    ``async_redis``: an asyncio client or a zero-argument factory for one (default: the
    configured server per event loop, or a client derived from an injected ``redis``).
    """

    layer = LAYER

    def __init__(self, redis: SyncRedis | None = None, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._sync_scripts: tuple[Script, Script, Script] | None = None
        self._async_scripts: tuple[AsyncScript, AsyncScript, AsyncScript] | None = None
        self._mget: SyncMget | None = None  # the hit path's lean MGET (wire.py), bound to self.redis
        self._amget = AsyncMget()

    def _sync_mget(self) -> SyncMget:
        client = self.redis
        mget = self._mget
        if mget is None or mget.client is not client:
            mget = self._mget = SyncMget(client)
        return mget

    def _llm_policy(self) -> LayerPolicy:
        return self.policies.llm()

    def _count(self, field: str, masterplan_id: str | None) -> None:
        self.counters.incr(LAYER, field, masterplan_id=masterplan_id)

    def _scripts(self) -> tuple[Script, Script, Script]:
        if self._sync_scripts is None:
            self._sync_scripts = (
                self.redis.register_script(scripts.SET_LUA),
                self.redis.register_script(scripts.RECLAIM_LUA),
                self.redis.register_script(scripts.RECLAIM_SCAN_LUA),
            )
        return self._sync_scripts

    def _ascripts(self, client: AsyncRedis) -> tuple[AsyncScript, AsyncScript, AsyncScript]:
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
    ) -> tuple[Lookup[CachedLLMResponse], bool]:
        """Turn an MGET reply into (lookup, delete_entry). Counts hit/miss."""
        response, corrupt, token = None, False, None
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
                token = WriteToken(lookup_keys[2], tag)
        if response is None:
            _MISSES.inc()
            self._count("misses", masterplan_id)
        else:
            _HITS.inc()
            self._count("hits", masterplan_id)
        return Lookup(response, token), corrupt

    def _count_corrupt(self, key: str, exc: Exception) -> None:
        metrics.CACHE_ERRORS.labels(LAYER, "corrupt").inc()
        logger.warning("LLM cache entry %s is corrupt (%s); deleting it", key, exc)

    def lookup(
        self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any
    ) -> Lookup[CachedLLMResponse]:
        """``Lookup(hit, token)``: the cached answer, or on a miss the token the matching ``set`` carries.

        Never raises on Redis errors (they count as a miss, with no token).
        """
        return self._lookup(prompt, model, temperature, masterplan_id, params)

    async def alookup(
        self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any
    ) -> Lookup[CachedLLMResponse]:
        return await self._alookup(prompt, model, temperature, masterplan_id, params)

    def get(
        self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any
    ) -> CachedLLMResponse | None:
        """The cached answer, or None (miss, bypass, or Redis unavailable). Never raises on Redis errors.

        A caller that will ``set`` the answer after a miss uses :meth:`lookup` and passes its token.
        """
        return self._lookup(prompt, model, temperature, masterplan_id, params).hit

    async def aget(
        self, prompt: str, model: str, temperature: float, *, masterplan_id: Any = None, **params: Any
    ) -> CachedLLMResponse | None:
        return (await self._alookup(prompt, model, temperature, masterplan_id, params)).hit

    def _lookup(
        self, prompt: str, model: str, temperature: Any, masterplan_id: Any, params: dict[str, Any]
    ) -> Lookup[CachedLLMResponse]:
        started = time.perf_counter()
        plan = self._lookup_plan(prompt, model, temperature, masterplan_id, params)
        if plan is None:
            return Lookup(None)
        normalized_mp, lookup_keys = plan
        mget = self._sync_mget()
        reply = self.guard.run("get", lambda: mget(lookup_keys), None)
        found, corrupt = self._interpret(normalized_mp, lookup_keys, reply, model)
        if corrupt:
            client = self.redis
            self.guard.run("delete", lambda: client.unlink(lookup_keys[2]), None)
        _LOOKUP.observe(time.perf_counter() - started)
        return found

    async def _alookup(
        self, prompt: str, model: str, temperature: Any, masterplan_id: Any, params: dict[str, Any]
    ) -> Lookup[CachedLLMResponse]:
        started = time.perf_counter()
        plan = self._lookup_plan(prompt, model, temperature, masterplan_id, params)
        if plan is None:
            return Lookup(None)
        normalized_mp, lookup_keys = plan
        client = self.async_client()
        reply = await self.guard.arun("get", lambda: self._amget(client, lookup_keys), None)
        found, corrupt = self._interpret(normalized_mp, lookup_keys, reply, model)
        if corrupt:
            await self.guard.arun("delete", lambda: client.unlink(lookup_keys[2]), None)
        _LOOKUP.observe(time.perf_counter() - started)
        return found

    # --- writes --------------------------------------------------------------------------
    @staticmethod
    def _skip_reason(policy: LayerPolicy, write: _Write) -> str | None:
        """Why the store rules skip this answer, or None to store it."""
        if not policy.enabled:
            return "disabled"
        if not write.text.strip():
            return "empty"
        if _temperature(write.temperature) > 0 and not policy.cache_nonzero_temperature:
            return "nonzero_temperature"
        if write.finish_reason in TRUNCATED_FINISH_REASONS and not policy.cache_truncated:
            return "truncated"
        return None

    def _write_plan(self, write: _Write) -> _WritePlan | None:
        """Validate and apply the store rules; the script's keys and arguments, or None if skipped."""
        normalized_mp = keys.normalize_masterplan_id(write.masterplan_id)
        entry_digest = _digest(write.prompt, write.model, write.temperature, write.params)
        write.validate()
        policy = self._llm_policy()
        seconds = policy.ttl_seconds if write.ttl is None else write.ttl
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
            raise ValueError(f"ttl must be a positive int (seconds), got {seconds!r}")
        script_keys = list(keys.llm_lookup(normalized_mp, entry_digest))
        expected = expected_tag(script_keys[2], write.token)
        reason = self._skip_reason(policy, write)
        if reason is not None:
            metrics.CACHE_SKIPPED_WRITES.labels(LAYER, reason).inc()
            return None
        payload = encode(
            CachedLLMResponse(
                text=write.text,
                model=write.model,
                prompt_tokens=write.prompt_tokens,
                completion_tokens=write.completion_tokens,
                cached_at=self._clock(),
                finish_reason=write.finish_reason,
                masterplan_id=normalized_mp,
            )
        )
        return _WritePlan(normalized_mp, script_keys, [payload, seconds, expected])

    def _written(self, masterplan_id: str | None, stored: Any) -> bool:
        if stored is None:  # Redis failed; the guard counted and logged it
            return False
        if int(stored) == 1:
            _WRITES.inc()
            self._count("writes", masterplan_id)
            return True
        metrics.CACHE_SKIPPED_WRITES.labels(LAYER, "stale_generation").inc()
        return False

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
        token: WriteToken | None = None,
        **params: Any,
    ) -> bool:
        """Store an answer (if the policy allows it); True if it was stored.

        ``token``: the one the miss's :meth:`lookup` returned. The answer is then refused
        (``stale_generation``) if the scope was invalidated since that miss. Without a token
        it is written under the scope's current tag. Never raises on Redis errors (False);
        invalid arguments raise.
        """
        write = _Write(
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
            token,
        )
        plan = self._write_plan(write)
        if plan is None:
            return False
        client = self.redis
        set_script = self._scripts()[0]
        stored = self.guard.run("set", lambda: set_script(keys=plan.keys, args=plan.args, client=client), None)
        return self._written(plan.masterplan_id, stored)

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
        token: WriteToken | None = None,
        **params: Any,
    ) -> bool:
        write = _Write(
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
            token,
        )
        plan = self._write_plan(write)
        if plan is None:
            return False
        client = self.async_client()
        set_script = self._ascripts(client)[0]
        stored = await self.guard.arun("set", lambda: set_script(keys=plan.keys, args=plan.args, client=client), None)
        return self._written(plan.masterplan_id, stored)

    # --- invalidation --------------------------------------------------------------------
    def _generation_key(self, masterplan_id: str | None) -> str:
        return keys.llm_generation(masterplan_id)

    def _epoch_keys(self) -> list[str]:
        return keys.llm_epoch_copies()

    def _enqueue_reclaim(self, masterplan_id: str | None, *, layer: bool) -> None:
        from cache_app.llm.cache import tasks  # the tasks build this cache: import at call time

        if layer:
            tasks.reclaim_llm_dead_keys.delay()
        else:
            tasks.reclaim_llm_masterplan.delay(masterplan_id)

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

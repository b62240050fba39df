"""RAGQueryCache: exact and embedding-similarity hits for RAG retrievals, fail-open.

Hot path (see docs/rag_cache.md):

* a lookup is ONE pipelined round trip: ``MGET(epoch, generation, entry, log head)``, the
  namespace's dimension (``HGET``) and ``GETRANGE`` of what was appended to the
  namespace's vector log since this process last looked. An exact hit ends there.
* on an exact miss the local index (index.py) is brought up to date with those bytes and
  searched in memory; the best candidates are confirmed with one more ``MGET`` (an
  expired or invalidated entry never matches, even if the index still holds it).
* no lookup ever issues SCAN or KEYS. Invalidation is one INCR (the LLM layer's tag scheme).

Every Redis exchange is written once, as a generator that yields the commands of one
round trip and receives their replies; a sync and an async driver run the same flows (flows.py,
with the call's validated request and the sync of a namespace's mirror).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from cache_app.core import conf, keys, metrics
from cache_app.core.counters import histogram_field
from cache_app.core.layer import Lookup, RedisCacheLayer, SyncRedis, expected_tag
from cache_app.core.scripts import SET_LUA
from cache_app.core.tags import WriteToken
from cache_app.rag.cache.codec import (
    CachedRAGResult,
    CorruptEntryError,
    as_vector,
    decode_entry,
    documents_json,
    encode_entry,
    load_documents,
    make_tag,
    pack_record,
    validate_model,
    validate_query,
    validate_top_k,
)
from cache_app.rag.cache.flows import (
    Commands,
    Confirmation,
    Flow,
    Outcome,
    Request,
    adrive,
    cosine,
    drive,
    extend_ttl,
    int_or_none,
    int_or_zero,
    sync_namespace,
    tail_reads,
)
from cache_app.rag.cache.index import Horizon, RAGIndex, SearchResult, get_rag_index
from cache_app.rag.cache.reclaim import reclaim_layer, reclaim_scope
from cache_app.rag.cache.scripts import APPEND_ATTEMPTS, LOG_APPEND_LUA
from cache_app.rag.guard import candidate_batches, screen_for

logger = logging.getLogger(__name__)

LAYER = "rag"
SIMILARITY_LAYER = "rag_similarity"
HIT_FIELDS = ("hits", "similar_hits")
# Durable histogram of the best similarity score of each similarity lookup (operator console).
SCORES_LAYER = "rag_scores"
# Candidates confirmed per round trip, and round trips at most, on a similarity lookup.
CONFIRM_BATCH = 4
CONFIRM_ROUNDS = 3
_ANY_TAG = re.compile(rb"e\d+g\d+\|")
_HITS = metrics.CACHE_HITS.labels(LAYER)
_SIMILAR_HITS = metrics.CACHE_HITS.labels(SIMILARITY_LAYER)
_MISSES = metrics.CACHE_MISSES.labels(LAYER)
_SIMILAR_MISSES = metrics.CACHE_MISSES.labels(SIMILARITY_LAYER)
_WRITES = metrics.CACHE_WRITES.labels(LAYER)
_RECLAIMED = metrics.CACHE_KEYS_RECLAIMED.labels(LAYER)
_LOOKUP = metrics.CACHE_LOOKUP_SECONDS.labels(LAYER)


class RAGQueryCache(RedisCacheLayer):
    """Exact + similarity cache of RAG retrievals. Collaborators are injected; defaults from settings.

    ``index``: the in-memory vector index (default: the process-wide one, shared by every
    instance; pass ``RAGIndex()`` for a private one, e.g. to simulate a restarted process).
    ``clock``: wall-clock seconds, used for cached_at and local expiry.
    """

    layer = LAYER

    def __init__(self, redis: SyncRedis | None = None, *, index: RAGIndex | None = None, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._index = index

    @property
    def index(self) -> RAGIndex:
        return self._index if self._index is not None else get_rag_index()

    # --- requests --------------------------------------------------------------------------
    def _request(
        self, query: Any, query_embedding: Any, embedding_model: Any, top_k: Any, masterplan_id: Any
    ) -> Request:
        query = validate_query(query)
        model = validate_model(embedding_model)
        top_k = validate_top_k(top_k)
        embedding, unit = as_vector(query_embedding)
        normalized_mp = keys.normalize_masterplan_id(masterplan_id)
        digest = keys.rag_entry_digest(query, model, top_k, normalized_mp)
        nsid = keys.rag_namespace_id(model, top_k)
        epoch_key, gen_key, entry_key, registry_key, log_base, head_key = keys.rag_lookup(
            normalized_mp, digest, nsid, int(unit.shape[0])
        )
        return Request(
            query=query,
            model=model,
            top_k=top_k,
            masterplan_id=normalized_mp,
            embedding=embedding,
            unit=unit,
            digest=digest,
            entry_key=entry_key,
            epoch_key=epoch_key,
            gen_key=gen_key,
            registry_key=registry_key,
            nsid=nsid,
            log_base=log_base,
            head_key=head_key,
            first_key=keys.rag_log_first(log_base),
            ns=self.index.namespace(log_base, int(unit.shape[0])),
        )

    @staticmethod
    def _check_dim(req: Request, recorded: Any) -> None:
        if recorded is not None and int(recorded) != req.dim:
            raise ValueError(
                f"query_embedding has {req.dim} dimensions but namespace (embedding_model={req.model!r}, "
                f"top_k={req.top_k}, scope={keys.scope(req.masterplan_id)}) holds {int(recorded)}-dimension vectors"
            )

    # --- lookups -----------------------------------------------------------------------------
    def _get_flow(self, req: Request, threshold: float) -> Flow:
        ns = req.ns
        pos = ns.position()
        commands: Commands = [
            ("MGET", req.epoch_key, req.gen_key, req.entry_key, req.head_key, req.first_key),
            ("HGET", req.registry_key, req.nsid),
            *tail_reads(req, pos),
        ]
        replies = yield commands
        (epoch_raw, gen_raw, raw, head_raw, first_raw), recorded_dim, *tails = replies
        self._check_dim(req, recorded_dim)
        horizon = Horizon(int_or_none(head_raw), int_or_none(first_raw))
        tag, epoch, gen = make_tag(epoch_raw, gen_raw), int_or_zero(epoch_raw), int_or_zero(gen_raw)
        now = self._clock()
        ns.observe_tag(epoch, gen, pos.reading)
        corrupt: list[str] = []
        exact = self._exact(req, raw, tag, now, corrupt)
        if exact is not None:
            ns.advance(pos, horizon, tails, now)
            return Outcome(exact)
        # Exact miss: bring the mirror up to date (usually with the bytes already read), then search.
        yield from sync_namespace(req, pos, horizon, tails, now, self.index)
        found = ns.search(req.unit, threshold, now=now, tag=(epoch, gen))
        if found.best_score is not None:
            metrics.RAG_SIMILARITY_SCORE.observe(max(0.0, found.best_score))
            score_field = histogram_field(found.best_score, metrics.SIMILARITY_SCORE_BUCKETS)
            self.counters.incr(SCORES_LAYER, score_field)
        result = yield from self._confirm(req, found, threshold, now, corrupt)
        return Outcome(result, tuple(corrupt), tag)

    def _exact(
        self, req: Request, raw: bytes | None, tag: bytes, now: float, corrupt: list[str]
    ) -> CachedRAGResult | None:
        """The exact hit in ``raw`` (the entry's value), or None; a corrupt value is added to ``corrupt``."""
        if raw is None:
            return None
        if not raw.startswith(tag):
            if not _ANY_TAG.match(raw):
                corrupt.append(req.entry_key)
                self._count_corrupt(req.entry_key, CorruptEntryError("no generation tag"))
            return None  # else written under a dead tag
        try:
            entry = decode_entry(raw[len(tag) :], model=req.model, top_k=req.top_k)
            if entry.expires_at <= now:
                return None
            documents = load_documents(entry.documents_json)
        except CorruptEntryError as exc:
            corrupt.append(req.entry_key)
            self._count_corrupt(req.entry_key, exc)
            return None
        return CachedRAGResult(entry.query, entry.embedding.tolist(), documents, entry.cached_at, "exact", 1.0)

    def _confirm(
        self, req: Request, found: SearchResult, threshold: float, now: float, corrupt: list[str]
    ) -> Confirmation:
        """Confirm the best candidates against Redis (CONFIRM_BATCH per round trip); the first live one wins."""
        for batch in candidate_batches(found.candidates, req.screen, CONFIRM_BATCH, CONFIRM_ROUNDS):
            entry_keys = [keys.rag_entry(req.masterplan_id, c.digest) for c in batch]
            (reply,) = yield [("MGET", req.epoch_key, req.gen_key, *entry_keys)]
            current = make_tag(reply[0], reply[1])
            dead: list[int] = []
            for candidate, key, value in zip(batch, entry_keys, reply[2:], strict=True):
                result, gone = self._candidate(req, key, value, current, now, threshold, corrupt)
                if gone:
                    dead.append(candidate.row)
                if result is not None:
                    req.ns.drop(found.layout, dead)
                    return result
            req.ns.drop(found.layout, dead)
        return None

    def _candidate(
        self,
        req: Request,
        key: str,
        value: bytes | None,
        current: bytes,
        now: float,
        threshold: float,
        corrupt: list[str],
    ) -> tuple[CachedRAGResult | None, bool]:
        """(the similar hit or None, whether the candidate's row is dead) for one confirmed entry."""
        if value is None or not value.startswith(current):
            return None, True  # expired, reclaimed or invalidated in Redis
        try:
            entry = decode_entry(value[len(current) :], model=req.model, top_k=req.top_k)
            documents = load_documents(entry.documents_json)
        except CorruptEntryError as exc:
            corrupt.append(key)
            self._count_corrupt(key, exc)
            return None, True
        if entry.expires_at <= now:
            return None, True
        similarity = cosine(entry.embedding, req.unit)
        if similarity < threshold:
            return None, False  # the entry was rewritten with another vector; its newer row decides
        if not req.screen.admit(entry.query, similarity):
            return None, False  # the hit guard refused it (the next best is tried), or shadow mode withheld it
        result = CachedRAGResult(
            entry.query, entry.embedding.tolist(), documents, entry.cached_at, "similar", similarity
        )
        return result, False

    def _begin_get(
        self, query: Any, query_embedding: Any, embedding_model: Any, top_k: Any, masterplan_id: Any
    ) -> tuple[Request, float | None]:
        req = self._request(query, query_embedding, embedding_model, top_k, masterplan_id)
        policy = self.policies.rag()
        if not policy.enabled:
            self.counters.incr(LAYER, "bypassed", masterplan_id=req.masterplan_id)
            return req, None
        req.screen = screen_for(req.query, policy, embedding_model=req.model, scope=req.masterplan_id)
        return req, req.screen.search_threshold

    def _finish_get(self, req: Request, outcome: Outcome | None) -> Lookup[CachedRAGResult]:
        result = None if outcome is None else outcome.result
        if result is None:
            _MISSES.inc()
            _SIMILAR_MISSES.inc()
            self.counters.incr(LAYER, "misses", masterplan_id=req.masterplan_id)
            return Lookup(None, None if outcome is None else WriteToken(req.entry_key, outcome.tag))
        if result.match == "exact":
            _HITS.inc()
            self.counters.incr(LAYER, "hits", masterplan_id=req.masterplan_id)
        else:
            _MISSES.inc()  # the exact layer missed; the similarity layer answered
            _SIMILAR_HITS.inc()
            self.counters.incr(LAYER, "similar_hits", masterplan_id=req.masterplan_id)
        return Lookup(result)

    def lookup(
        self, query: str, query_embedding: Any, *, embedding_model: str, top_k: int, masterplan_id: Any = None
    ) -> Lookup[CachedRAGResult]:
        """``Lookup(hit, token)``: the exact or most similar live retrieval, or on a miss the token for ``set``.

        Invalid arguments raise ValueError; Redis errors never raise (they count as a miss, with no token).
        """
        return self._lookup(query, query_embedding, embedding_model, top_k, masterplan_id)

    async def alookup(
        self, query: str, query_embedding: Any, *, embedding_model: str, top_k: int, masterplan_id: Any = None
    ) -> Lookup[CachedRAGResult]:
        return await self._alookup(query, query_embedding, embedding_model, top_k, masterplan_id)

    def get(
        self, query: str, query_embedding: Any, *, embedding_model: str, top_k: int, masterplan_id: Any = None
    ) -> CachedRAGResult | None:
        """The cached retrieval for this query (exact) or the most similar live one, else None.

        A caller that will ``set`` the retrieval after a miss uses :meth:`lookup` and passes its token.
        """
        return self._lookup(query, query_embedding, embedding_model, top_k, masterplan_id).hit

    async def aget(
        self, query: str, query_embedding: Any, *, embedding_model: str, top_k: int, masterplan_id: Any = None
    ) -> CachedRAGResult | None:
        return (await self._alookup(query, query_embedding, embedding_model, top_k, masterplan_id)).hit

    def _lookup(
        self, query: Any, query_embedding: Any, embedding_model: Any, top_k: Any, masterplan_id: Any
    ) -> Lookup[CachedRAGResult]:
        started = time.perf_counter()
        req, threshold = self._begin_get(query, query_embedding, embedding_model, top_k, masterplan_id)
        if threshold is None:
            return Lookup(None)
        client = self.redis
        outcome = self.guard.run("get", lambda: drive(client, self._get_flow(req, threshold)), None)
        if outcome is not None and outcome.corrupt:
            self.guard.run("delete", lambda: client.unlink(*outcome.corrupt), None)
        found = self._finish_get(req, outcome)
        _LOOKUP.observe(time.perf_counter() - started)
        return found

    async def _alookup(
        self, query: Any, query_embedding: Any, embedding_model: Any, top_k: Any, masterplan_id: Any
    ) -> Lookup[CachedRAGResult]:
        started = time.perf_counter()
        req, threshold = self._begin_get(query, query_embedding, embedding_model, top_k, masterplan_id)
        if threshold is None:
            return Lookup(None)
        client = self.async_client()
        outcome = await self.guard.arun("get", lambda: adrive(client, self._get_flow(req, threshold)), None)
        if outcome is not None and outcome.corrupt:
            await self.guard.arun("delete", lambda: client.unlink(*outcome.corrupt), None)
        found = self._finish_get(req, outcome)
        _LOOKUP.observe(time.perf_counter() - started)
        return found

    def _count_corrupt(self, key: str, exc: Exception) -> None:
        metrics.CACHE_ERRORS.labels(LAYER, "corrupt").inc()
        logger.warning("RAG cache entry %s is corrupt (%s); deleting it", key, exc)

    # --- writes ------------------------------------------------------------------------------
    def _set_flow(self, req: Request, payload: bytes, ttl: int, expected: bytes) -> Flow:
        replies = yield [("MGET", req.epoch_key, req.gen_key, req.head_key), ("HGET", req.registry_key, req.nsid)]
        (epoch_raw, gen_raw, head_raw), recorded_dim = replies
        self._check_dim(req, recorded_dim)
        tag = make_tag(epoch_raw, gen_raw)
        if expected and expected != tag:
            return "stale_generation"  # retrieved for a generation invalidated since the miss
        record = pack_record(req.digest, self._clock() + ttl, int_or_zero(epoch_raw), int_or_zero(gen_raw), req.unit)
        # A new log starts at a time-based segment number, so a reader still positioned in an
        # older, expired log of this namespace sees a jump and rebuilds (index.advance).
        head = int_or_none(head_raw)
        replies = yield [
            ("EVAL", SET_LUA, 3, req.epoch_key, req.gen_key, req.entry_key, payload, ttl, tag),
            self._append_command(req, record, ttl, int(time.time() * 1000) if head is None else head),
            ("HSETNX", req.registry_key, req.nsid, req.dim),
            *extend_ttl(req.registry_key, ttl),
        ]
        stored, appended = int(replies[0]) == 1, replies[1]
        for _ in range(APPEND_ATTEMPTS - 1):
            if int(appended[0]) != -1:
                break
            (appended,) = yield [self._append_command(req, record, ttl, int(appended[1]))]  # the head moved
        return "stored" if stored else "stale_generation"

    def _append_command(self, req: Request, record: bytes, ttl: int, head: int) -> tuple[Any, ...]:
        """LOG_APPEND_LUA on segment ``head`` (every key in KEYS: the script builds none)."""
        retention = self.index.retention_segments(req.dim)
        return (
            "EVAL",
            LOG_APPEND_LUA,
            4,
            req.head_key,
            req.first_key,
            req.segment(head),
            req.segment(head + 1 - retention),
            record,
            int(conf.get("RAG_LOG_SEGMENT_BYTES")),
            ttl,
            head,
        )

    def _begin_set(
        self,
        query: Any,
        query_embedding: Any,
        documents: Any,
        embedding_model: Any,
        top_k: Any,
        masterplan_id: Any,
        ttl: Any,
        token: WriteToken | None,
    ) -> tuple[Request, bytes, int, bytes] | None:
        """Validate and apply the store rules: (request, payload, ttl, expected tag), or None if skipped."""
        req = self._request(query, query_embedding, embedding_model, top_k, masterplan_id)
        expected = expected_tag(req.entry_key, token)
        docs = documents_json(documents)
        policy = self.policies.rag()
        seconds = policy.ttl_seconds if ttl is None else ttl
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise ValueError(f"ttl must be a positive int (seconds), got {seconds!r}")
        if not policy.enabled:
            metrics.CACHE_SKIPPED_WRITES.labels(LAYER, "disabled").inc()
            return None
        now = self._clock()
        payload = encode_entry(
            req.query, req.embedding, docs, cached_at=now, expires_at=now + seconds, model=req.model, top_k=req.top_k
        )
        if len(payload) > int(conf.get("RAG_MAX_ENTRY_BYTES")):
            metrics.CACHE_SKIPPED_WRITES.labels(LAYER, "too_large").inc()
            logger.info("RAG cache entry of %d bytes not stored (RAG_MAX_ENTRY_BYTES)", len(payload))
            return None
        return req, payload, seconds, expected

    def _written(self, req: Request, status: str | None) -> bool:
        if status == "stored":
            _WRITES.inc()
            self.counters.incr(LAYER, "writes", masterplan_id=req.masterplan_id)
            return True
        if status is not None:
            metrics.CACHE_SKIPPED_WRITES.labels(LAYER, status).inc()
        return False

    def set(
        self,
        query: str,
        query_embedding: Any,
        documents: list[dict],
        *,
        embedding_model: str,
        top_k: int,
        masterplan_id: Any = None,
        ttl: int | None = None,
        token: WriteToken | None = None,
    ) -> bool:
        """Store a retrieval (if the policy allows it); True if it was stored.

        ``token``: the one the miss's :meth:`lookup` returned. The retrieval is then refused
        (``stale_generation``) if the scope was invalidated since that miss. Without a token
        it is written under the scope's current tag. Invalid arguments raise; Redis errors
        never do (False).
        """
        plan = self._begin_set(query, query_embedding, documents, embedding_model, top_k, masterplan_id, ttl, token)
        if plan is None:
            return False
        req, payload, seconds, expected = plan
        client = self.redis
        status = self.guard.run("set", lambda: drive(client, self._set_flow(req, payload, seconds, expected)), None)
        return self._written(req, status)

    async def aset(
        self,
        query: str,
        query_embedding: Any,
        documents: list[dict],
        *,
        embedding_model: str,
        top_k: int,
        masterplan_id: Any = None,
        ttl: int | None = None,
        token: WriteToken | None = None,
    ) -> bool:
        plan = self._begin_set(query, query_embedding, documents, embedding_model, top_k, masterplan_id, ttl, token)
        if plan is None:
            return False
        req, payload, seconds, expected = plan
        client = self.async_client()
        status = await self.guard.arun(
            "set", lambda: adrive(client, self._set_flow(req, payload, seconds, expected)), None
        )
        return self._written(req, status)

    # --- invalidation ------------------------------------------------------------------------
    def _generation_key(self, masterplan_id: str | None) -> str:
        return keys.rag_generation(masterplan_id)

    def _epoch_keys(self) -> list[str]:
        return keys.rag_epoch_copies()

    def _enqueue_reclaim(self, masterplan_id: str | None, *, layer: bool) -> None:
        from cache_app.rag.cache import tasks  # the tasks build this cache: import at call time

        if layer:
            tasks.reclaim_rag_dead_keys.delay()
        else:
            tasks.reclaim_rag_masterplan.delay(masterplan_id)

    # --- physical deletion (raises on Redis errors: callers retry) ---------------------------
    def reclaim_masterplan(self, masterplan_id: Any) -> int:
        """Delete the dead entries and dead log segments of one scope; returns the entries deleted."""
        removed = reclaim_scope(self.redis, self.index, keys.normalize_masterplan_id(masterplan_id))
        _RECLAIMED.inc(removed)
        return removed

    def reclaim_dead_keys(self) -> int:
        """Delete the dead entries and log segments of every scope of the layer (periodic sweep)."""
        removed = reclaim_layer(self.redis, self.index)
        _RECLAIMED.inc(removed)
        return removed

    # --- statistics ------------------------------------------------------------------------
    def hit_rate(self) -> float:
        """(Exact + similar hits) / lookups over every process (durable counters); 0.0 without lookups."""
        return self.counters.hit_rate(LAYER, hit_fields=HIT_FIELDS)

    def stats(self, masterplan_id: Any = None) -> dict[str, float]:
        """Durable totals (hits, similar_hits, misses, writes, invalidations, bypassed)."""
        return self.counters.read(LAYER, masterplan_id=keys.normalize_masterplan_id(masterplan_id))

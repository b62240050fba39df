"""mgecache's own settings: one namespaced dict, ``settings.MGECACHE``.

Every key has a documented default here; ``cache_app.checks`` validates the merged
result at startup. Read values through :func:`app_settings`, never from ``settings``
directly, so defaults apply everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from cache_app.core.state import Memo

DEFAULTS: dict[str, Any] = {
    # Every Redis key starts with f"{KEY_PREFIX}:v2:" (see cache_app.core.keys).
    "KEY_PREFIX": "mgecache",
    # How long a process may serve a policy it read from the database. An admin edit
    # is seen by every process within this many seconds (the contract is <= 5 s).
    "POLICY_REFRESH_SECONDS": 2.0,
    # Circuit breaker around Redis: after this many consecutive failures the breaker
    # opens and calls skip Redis entirely; after RESET seconds one probe is let through.
    # A timeout counts only once the breaker's own ping times out too (a CPU-starved
    # event loop can time out a read whose answer has arrived: CircuitBreaker).
    "BREAKER_FAILURE_THRESHOLD": 1,
    "BREAKER_RESET_SECONDS": 1.0,
    # Errors are logged at most once per this many seconds per operation.
    "ERROR_LOG_INTERVAL_SECONDS": 5.0,
    # Durable (Redis-backed) statistics counters are flushed this often (a count, or a background
    # thread while the buffer is dirty): statistics lag other processes by at most this; shorter
    # costs a round trip more often, and requests are not flushed one by one (a hit's round trip).
    "COUNTER_FLUSH_SECONDS": 0.5,
    # RAG: entries larger than this are not stored.
    "RAG_MAX_ENTRY_BYTES": 1024 * 1024,
    # RAG similarity index (docs/rag_cache.md). Each process mirrors a namespace's vector
    # log into memory: about 4 * dim + 60 bytes per entry (1.6 KB at 384 dimensions).
    # A namespace keeps its newest RAG_INDEX_MAX_ENTRIES entries (also the Redis log's
    # retention); a process holds at most RAG_INDEX_MAX_TOTAL_ENTRIES entries over all
    # namespaces and drops the least recently used namespaces beyond that.
    "RAG_INDEX_MAX_ENTRIES": 100_000,
    "RAG_INDEX_MAX_TOTAL_ENTRIES": 200_000,
    # Size at which a namespace's Redis log starts a new segment (bounded GETs on rebuild).
    "RAG_LOG_SEGMENT_BYTES": 2 * 1024 * 1024,
    # BLAS threads for the index's matrix-vector products (set once per process through
    # threadpoolctl; None leaves numpy alone). A memory-bound product gains little from a
    # second thread, and on a busy host a multi-threaded one waits for its threads: p50
    # went from 0.2 ms to 15 ms at 10k entries on a loaded 2-core machine.
    "RAG_INDEX_BLAS_THREADS": 1,
    # From this many live rows a namespace is searched through an int8 IVF index (faiss,
    # rag/cache/ann.py) instead of brute force: 457 instead of 1 605 bytes a row at 384
    # dimensions, and p50 ~1 ms at 100k rows instead of ~3. Below it brute force is exact and
    # already fast (<= 0.7 ms at 10k). None: never. Candidates are confirmed exactly either way.
    "RAG_INDEX_ANN_MIN_ENTRIES": 20_000,
    # LLM provider: "simulated" (offline, deterministic), "anthropic" or "openai".
    "LLM_PROVIDER": "simulated",
    "LLM_DEFAULT_MODEL": "claude-3-5-sonnet",
    # Dotted path of the query embedder used by the RAG engine.
    "EMBEDDER": "cache_app.rag.embedders.HashedNgramEmbedder",
    # Real providers (anthropic, openai): retries of 408/409/429/5xx and connection errors,
    # done by the official SDK with capped exponential backoff (or the server's retry-after),
    # and the per-request timeout. Keys and base URLs are settings of their own
    # (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, OPENAI_API_KEY, OPENAI_BASE_URL), never here.
    "LLM_MAX_RETRIES": 2,
    "LLM_TIMEOUT_SECONDS": 60.0,
    # max_tokens sent when the caller gives none (the Anthropic API requires one).
    "LLM_DEFAULT_MAX_TOKENS": 1024,
    # The simulated provider's latency model: overhead + output_tokens * per-token time,
    # with SIMULATED_OUTPUT_TOKENS tokens generated (fewer if max_tokens is lower).
    # Defaults resemble a hosted model: ~0.3 s to first token, ~200 tokens/s.
    "SIMULATED_CALL_OVERHEAD_SECONDS": 0.3,
    "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.005,
    "SIMULATED_OUTPUT_TOKENS": 120,
    # Document store: how often a process checks the database for documents changed by
    # other processes (a cheap count/max query). Changes made in this process are seen at once.
    "DOCUMENT_REFRESH_SECONDS": 2.0,
    # The batcher LLMClient combines concurrent prompts with (dotted path). It lives in
    # batching_app, which sits above cache_app: cache_app never imports it by name.
    "LLM_BATCHER": "batching_app.batcher.RequestBatcher",
    # --- Access control and abuse resistance (cache_app.access, docs/operations.md) ---
    # Input bounds: a request over one gets a 400 naming the field and the limit.
    # 200k characters is about 50k tokens: larger than any prompt the pipeline sends.
    "MAX_PROMPT_CHARS": 200_000,
    "MAX_SYSTEM_CHARS": 200_000,
    # A RAG query is a question, not a document; embedding 1 MB took seconds of CPU.
    "MAX_RAG_QUERY_CHARS": 8_000,
    # One wave is one request; 500 atoms at the prompt bound still fit the body bound below.
    "MAX_WAVE_ATOMS": 500,
    # Request bodies (also Django's DATA_UPLOAD_MAX_MEMORY_SIZE), checked before JSON parsing.
    "MAX_REQUEST_BYTES": 4 * 1024 * 1024,
    # JSON nesting deeper than this is refused before it can exhaust the parser's stack.
    "MAX_JSON_DEPTH": 32,
    # DRF scoped throttles per API key (or user), on the shared Django cache (Redis).
    # "generate": generation, retrieval and waves; "read": statistics and wave results;
    # "invalidate": invalidations. DRF rate syntax: "<n>/<second|minute|hour|day>".
    "THROTTLE_RATES": {"generate": "1200/minute", "read": "600/minute", "invalidate": "10/minute"},
    # Per-process LRU bounds on state that callers' values would otherwise grow without end:
    # batchers per (model, temperature, max_tokens, system, masterplan), and document
    # matrices per (masterplan, embedding model).
    "LLM_BATCHERS_MAX": 64,
    "DOCUMENT_SCOPES_MAX": 64,
    # /healthz: each dependency check gets this long (a hung one reports "timeout"),
    # and the answer is reused for HEALTH_CACHE_SECONDS.
    "HEALTH_CHECK_TIMEOUT_SECONDS": 0.8,
    "HEALTH_CACHE_SECONDS": 1.0,
    # A resolved API key (with its user's permissions and masterplans) is reused for this many
    # seconds: four queries saved per request, most of a cached answer's server time. A change made
    # in the admin or a command applies at once in its own process, within this bound elsewhere
    # (so a revoked key stops working everywhere within 5 s). 0: resolve on every request.
    "API_KEY_CACHE_SECONDS": 5.0,
    # An API key's last_used_at is written at most once per this many seconds (not per request).
    "API_KEY_LAST_USED_RESOLUTION_SECONDS": 60,
    # Seed nodes ("host:port") of a Redis Cluster for the cache layers (env REDIS_CLUSTER_NODES).
    # Empty: the cache layers use REDIS_URL (one server, or Sentinel), which stays the home of
    # Django's cache, throttles and the Celery broker in either case (django-redis has no Cluster).
    "REDIS_CLUSTER_NODES": [],
    # LLM waves (batching_app.waves): no atom stays pending longer than this after submission;
    # a waiting request (wait=true) returns by then at the latest.
    "WAVE_DEADLINE_SECONDS": 120.0,
    # How long a wave's state (progress, per-atom results) can be read back after submission.
    "WAVE_TTL_SECONDS": 86400,
    # Waves cannot fail open like the caches: a wave's Redis operations are retried (capped
    # exponential backoff) for up to this many seconds, then the API answers 503. A Sentinel or
    # Cluster failover takes about 2-3 s from the failure to the promotion (the load test
    # measured 2.0-2.3 s), so 5 s rides one out. The budget runs from the outage's start in this
    # process, so a long outage holds web threads for its first 5 s only. 0: no retries.
    "WAVE_STORE_RETRY_SECONDS": 5.0,
    # Idempotency-Key records: a retry within this time replays the first response.
    "IDEMPOTENCY_TTL_SECONDS": 86400,
    # An in-flight record expires after this, so a crashed request does not block its key for a day.
    "IDEMPOTENCY_LOCK_SECONDS": 600,
    # Masterplan ids remembered as registered, per process (bounded LRU): repeat ids skip the database.
    "MASTERPLAN_MEMO_SIZE": 10_000,
    # RAG similarity hit guard (docs/rag_cache.md, "Semantic correctness"): dotted path of the
    # class that decides whether a similar query means the same as the cached one.
    "RAG_HIT_GUARD": "cache_app.rag.guard.RuleGuard",
    # Shadow mode records (CachePolicy.similarity_shadow): at most this many wait in a process's
    # memory for the database (older ones are dropped, never the lookup slowed down) ...
    "RAG_SHADOW_BUFFER": 1000,
    # ... written in one batch at most this often, off the lookup's thread ...
    "RAG_SHADOW_FLUSH_SECONDS": 5.0,
    # ... and the table keeps only the newest this many rows.
    "RAG_SHADOW_MAX_RECORDS": 10_000,
    # Operator console (cache_app.console): minute snapshots of the statistics are kept this
    # many days (the dashboard's longest range is 7 days; a week is ~10,000 rows).
    "CONSOLE_SNAPSHOT_RETENTION_DAYS": 14,
    # Masterplans with the largest savings recorded in each snapshot (the dashboard's top list).
    "CONSOLE_TOP_MASTERPLANS": 10,
    # The live-entry count (snapshot task, invalidation confirmation) SCANs the keyspace;
    # it stops after this many keys and says the count is partial.
    "CONSOLE_CENSUS_MAX_KEYS": 5_000_000,
    # OpenAI/Anthropic-compatible gateway (/v1/...): requests per caller (DRF rate syntax,
    # "N/second|minute|hour|day"), a 429 with Retry-After beyond it; None turns it off.
    "GATEWAY_THROTTLE_RATE": "600/minute",
}

LLM_PROVIDERS = ("simulated", "anthropic", "openai")


_memo: Memo[object, Mapping[str, Any]] = Memo()


def app_settings() -> Mapping[str, Any]:
    """The merged MGECACHE settings (read-only): DEFAULTS overlaid with ``settings.MGECACHE``.

    Memoised on the identity of ``settings.MGECACHE`` (hot paths read settings on every
    call); ``override_settings`` and the pytest ``settings`` fixture replace that object
    and send ``setting_changed``, either of which refreshes the memo.
    """
    raw = getattr(settings, "MGECACHE", None) or {}
    pair = _memo.pair
    if pair is not None and pair[0] is raw:
        return pair[1]
    merged = MappingProxyType({**DEFAULTS, **raw})
    _memo.pair = (raw, merged)
    return merged


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting == "MGECACHE":
        _memo.pair = None


def get(name: str) -> Any:
    return app_settings()[name]

"""Every Prometheus metric mgecache exports, in one place.

Names start with ``mgecache_`` and use base units (``_seconds``, ``_usd``). These are
per-process prometheus_client metrics; under several gunicorn workers set
``PROMETHEUS_MULTIPROC_DIR`` so ``/metrics`` aggregates them (docs/operations.md).
Cross-process totals that the application itself reads (hit rate, dollars saved) are
kept durably in Redis by ``cache_app.core.counters``, not derived from these.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# --- Cache layers (cache_layer: "llm", "rag", "rag_similarity") -------------------------
CACHE_HITS = Counter("mgecache_cache_hits_total", "Cache lookups answered from the cache.", ["cache_layer"])
CACHE_MISSES = Counter("mgecache_cache_misses_total", "Cache lookups that found nothing usable.", ["cache_layer"])
CACHE_WRITES = Counter("mgecache_cache_writes_total", "Entries written to the cache.", ["cache_layer"])
CACHE_ERRORS = Counter(
    "mgecache_cache_errors_total",
    "Cache operations that failed (Redis error, timeout, open breaker, corrupt value).",
    ["cache_layer", "operation"],
)
CACHE_INVALIDATIONS = Counter(
    "mgecache_cache_invalidations_total", "Masterplan or layer invalidations performed.", ["cache_layer"]
)
CACHE_SKIPPED_WRITES = Counter(
    "mgecache_cache_skipped_writes_total",
    "Writes refused by policy or validation (empty, disabled, truncated, too_large, ...).",
    ["cache_layer", "reason"],
)
CACHE_KEYS_RECLAIMED = Counter(
    "mgecache_cache_keys_reclaimed_total", "Dead keys physically deleted after an invalidation.", ["cache_layer"]
)
CACHE_LOOKUP_SECONDS = Histogram(
    "mgecache_cache_lookup_seconds", "Time spent in a cache lookup.", ["cache_layer"], buckets=LATENCY_BUCKETS
)

# --- Redis health ------------------------------------------------------------------------
REDIS_BREAKER_OPEN = Gauge(
    "mgecache_redis_breaker_open",
    "1 while the Redis circuit breaker is open (cache bypassed).",
    ["client"],
    multiprocess_mode="max",
)
REDIS_BREAKER_TRIPS = Counter(
    "mgecache_redis_breaker_trips_total", "Times the Redis circuit breaker opened.", ["client"]
)
# A timeout is checked by a ping of the breaker's own before it counts (CircuitBreaker.record_failure):
# answered = the ping succeeded, so the timeout was this process's stall, not Redis's.
REDIS_TIMEOUTS_VERIFIED = Counter(
    "mgecache_redis_timeouts_verified_total",
    "Timeouts re-checked by a ping before the breaker counts them, by the ping's result.",
    ["client", "result"],
)
# One observation per outage: from the breaker opening until a probe closed it (a failover's gap).
REDIS_OUTAGE_SECONDS = Histogram(
    "mgecache_redis_outage_seconds",
    "Duration of each Redis outage seen by a process (breaker open until Redis answered again).",
    ["client"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
# Calls answered without Redis (a lookup became a miss, a write was skipped): failed = Redis
# raised or timed out; skipped = the breaker was open. Also counted durably (fail_open hash).
CACHE_FAIL_OPEN = Counter(
    "mgecache_cache_fail_open_total",
    "Cache calls served without Redis (fail open), by why.",
    ["cache_layer", "operation", "reason"],
)

# --- RAG similarity index ---------------------------------------------------------------
# Also the buckets of the durable score histogram the operator console charts.
SIMILARITY_SCORE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0)
RAG_SIMILARITY_SCORE = Histogram(
    "mgecache_rag_similarity_score",
    "Best cosine similarity found on each similarity lookup.",
    buckets=SIMILARITY_SCORE_BUCKETS,
)
RAG_INDEX_ENTRIES = Gauge(
    "mgecache_rag_index_entries",
    "Entries held in a process's RAG similarity index (max over processes).",
    multiprocess_mode="max",
)
RAG_SIMILARITY_REJECTIONS = Counter(
    "mgecache_rag_similarity_rejections_total",
    "Similarity candidates the hit guard refused (reason: negation, antonym, number, identifier, too_long, error, "
    "other).",
    ["reason"],
)
RAG_SIMILARITY_SHADOW_HITS = Counter(
    "mgecache_rag_similarity_shadow_hits_total",
    "Similarity hits recorded and withheld (a miss for the caller) because the RAG policy is in shadow mode.",
)
RAG_SHADOW_RECORDS_DROPPED = Counter(
    "mgecache_rag_shadow_records_dropped_total",
    "Shadow-mode records lost: the in-memory buffer was full or the database write failed.",
)

# --- Batching ------------------------------------------------------------------------------
BATCH_SIZE = Histogram(
    "mgecache_batch_size", "Prompts per upstream batch call.", buckets=(1, 2, 3, 4, 5, 6, 8, 10, 20, 50)
)
BATCH_REQUESTS_PROCESSED = Counter("mgecache_batch_requests_processed_total", "Requests answered through the batcher.")
BATCH_PARSE_FALLBACKS = Counter(
    "mgecache_batch_parse_fallbacks_total", "Atoms re-sent alone because their batched answer was missing or garbled."
)
BATCH_DEDUPLICATED = Counter(
    "mgecache_batch_deduplicated_total", "Requests answered by an identical prompt in the same batch window."
)
BATCH_WAIT_SECONDS = Histogram(
    "mgecache_batch_wait_seconds",
    "Time a request waited for its batch to be sent.",
    buckets=(*LATENCY_BUCKETS, 5.0, 10.0),
)
BATCH_EXECUTION_SECONDS = Histogram(
    "mgecache_batch_execution_seconds", "Time an upstream batch call took.", buckets=(*LATENCY_BUCKETS, 5.0, 10.0, 30.0)
)

# --- LLM client and money ------------------------------------------------------------------
LLM_REQUESTS = Counter(
    "mgecache_llm_requests_total", "LLM client requests by provider and outcome.", ["provider", "outcome"]
)
LLM_PROVIDER_SECONDS = Histogram(
    "mgecache_llm_provider_seconds",
    "Upstream LLM call latency.",
    ["provider"],
    buckets=(*LATENCY_BUCKETS, 5.0, 10.0, 30.0),
)
SINGLEFLIGHT_WAITERS = Counter(
    "mgecache_singleflight_waiters_total", "Requests that waited for an identical in-flight request.", ["scope"]
)
COST_SAVED_USD = Counter("mgecache_cost_saved_usd_total", "Dollars not spent thanks to cache hits.", ["cache_layer"])
LLM_SPEND_USD = Counter("mgecache_llm_spend_usd_total", "Dollars spent on upstream LLM calls.", ["model"])
PRICING_UNKNOWN_MODEL = Counter(
    "mgecache_pricing_unknown_model_total", "Requests for a model with no ModelPricing row (priced at 0).", ["model"]
)

# --- Waves, invalidation operations, idempotency -----------------------------------------------
WAVE_ATOMS = Counter("mgecache_wave_atoms_total", "LLM wave atoms by final status.", ["status"])
INVALIDATION_OPERATIONS = Counter(
    "mgecache_invalidation_operations_total",
    "Audited invalidation operations by outcome and source.",
    ["status", "source"],
)
IDEMPOTENT_REQUESTS = Counter(
    "mgecache_idempotent_requests_total",
    "Requests carrying an Idempotency-Key, by outcome (first, replayed, conflict, in_progress).",
    ["outcome"],
)

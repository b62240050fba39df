"""System checks for ``settings.MGECACHE`` (ids cache_app.E001...)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from cache_app.core import conf


@checks.register(checks.Tags.compatibility)
def check_mgecache_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    raw = getattr(settings, "MGECACHE", {})
    if not isinstance(raw, dict):
        return [checks.Error("settings.MGECACHE must be a dict.", id="cache_app.E001")]
    unknown = sorted(set(raw) - set(conf.DEFAULTS))
    if unknown:
        errors.append(
            checks.Error(
                f"Unknown MGECACHE keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(conf.DEFAULTS))}.",
                id="cache_app.E002",
            )
        )
    s = conf.app_settings()
    if not isinstance(s["KEY_PREFIX"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s["KEY_PREFIX"]):
        errors.append(
            checks.Error(
                "MGECACHE['KEY_PREFIX'] must be 1-64 characters of letters, digits, '_', '.', '-'.",
                id="cache_app.E003",
            )
        )
    for name, low, high in (
        ("POLICY_REFRESH_SECONDS", 0.0, 5.0),
        ("BREAKER_RESET_SECONDS", 0.01, 60.0),
        ("ERROR_LOG_INTERVAL_SECONDS", 0.0, 3600.0),
        ("COUNTER_FLUSH_SECONDS", 0.0, 60.0),
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            errors.append(
                checks.Error(f"MGECACHE['{name}'] must be a number between {low} and {high}.", id="cache_app.E004")
            )
    for name in ("BREAKER_FAILURE_THRESHOLD", "RAG_MAX_ENTRY_BYTES"):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(checks.Error(f"MGECACHE['{name}'] must be a positive integer.", id="cache_app.E005"))
    if s["LLM_PROVIDER"] not in conf.LLM_PROVIDERS:
        errors.append(
            checks.Error(
                f"MGECACHE['LLM_PROVIDER'] (env LLM_PROVIDER) is {s['LLM_PROVIDER']!r}.",
                hint=f"Use one of: {', '.join(conf.LLM_PROVIDERS)}.",
                id="cache_app.E006",
            )
        )
    try:
        import_string(s["EMBEDDER"])
    except ImportError as exc:
        errors.append(
            checks.Error(
                f"MGECACHE['EMBEDDER'] (env MGECACHE_EMBEDDER) cannot be imported: {exc}",
                id="cache_app.E007",
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_llm_provider_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Provider credentials and knobs (ids cache_app.E020-E029)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    provider = s["LLM_PROVIDER"]
    key_setting = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}.get(provider)
    if key_setting and not getattr(settings, key_setting, ""):
        errors.append(
            checks.Error(
                f"LLM_PROVIDER is {provider!r} but {key_setting} is not set.",
                hint=f"Set {key_setting} in the environment, or LLM_PROVIDER=simulated (offline, not a real model).",
                id="cache_app.E020",
            )
        )
    for name, low, high in (
        ("LLM_TIMEOUT_SECONDS", 0.1, 3600.0),
        ("SIMULATED_CALL_OVERHEAD_SECONDS", 0.0, 60.0),
        ("SIMULATED_SECONDS_PER_OUTPUT_TOKEN", 0.0, 10.0),
        ("DOCUMENT_REFRESH_SECONDS", 0.0, 3600.0),
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            errors.append(
                checks.Error(f"MGECACHE['{name}'] must be a number between {low} and {high}.", id="cache_app.E021")
            )
    for name, low in (("LLM_MAX_RETRIES", 0), ("LLM_DEFAULT_MAX_TOKENS", 1), ("SIMULATED_OUTPUT_TOKENS", 1)):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(checks.Error(f"MGECACHE['{name}'] must be an integer >= {low}.", id="cache_app.E022"))
    return errors


@checks.register(checks.Tags.compatibility)
def check_batching_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Batching (ids cache_app.E030-E039)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    for name in ("LLM_BATCHER",):
        try:
            target = import_string(s[name])
        except (ImportError, TypeError) as exc:
            errors.append(checks.Error(f"MGECACHE['{name}'] cannot be imported: {exc}", id="cache_app.E030"))
        else:
            if not callable(target):
                errors.append(checks.Error(f"MGECACHE['{name}'] is not callable.", id="cache_app.E030"))
    return errors


@checks.register(checks.Tags.compatibility)
def check_rag_index_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """RAG similarity index bounds (ids cache_app.E040-E049)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    for name, low in (
        ("RAG_INDEX_MAX_ENTRIES", 1),
        ("RAG_INDEX_MAX_TOTAL_ENTRIES", 1),
        ("RAG_LOG_SEGMENT_BYTES", 4096),
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(checks.Error(f"MGECACHE['{name}'] must be an integer >= {low}.", id="cache_app.E040"))
    threads = s["RAG_INDEX_BLAS_THREADS"]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        errors.append(
            checks.Error("MGECACHE['RAG_INDEX_BLAS_THREADS'] must be None or an integer >= 1.", id="cache_app.E040")
        )
    if not errors and s["RAG_INDEX_MAX_TOTAL_ENTRIES"] < s["RAG_INDEX_MAX_ENTRIES"]:
        errors.append(
            checks.Error(
                "MGECACHE['RAG_INDEX_MAX_TOTAL_ENTRIES'] must be >= RAG_INDEX_MAX_ENTRIES.", id="cache_app.E041"
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_access_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Input bounds, throttles and process-state bounds (ids cache_app.E050-E059)."""
    from rest_framework.throttling import SimpleRateThrottle

    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    for name in (
        "MAX_PROMPT_CHARS",
        "MAX_SYSTEM_CHARS",
        "MAX_RAG_QUERY_CHARS",
        "MAX_WAVE_ATOMS",
        "MAX_REQUEST_BYTES",
        "MAX_JSON_DEPTH",
        "LLM_BATCHERS_MAX",
        "DOCUMENT_SCOPES_MAX",
        "API_KEY_LAST_USED_RESOLUTION_SECONDS",
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(checks.Error(f"MGECACHE['{name}'] must be a positive integer.", id="cache_app.E050"))
    for name, low, high in (
        ("HEALTH_CHECK_TIMEOUT_SECONDS", 0.05, 0.95),
        ("HEALTH_CACHE_SECONDS", 0.0, 60.0),
        ("API_KEY_CACHE_SECONDS", 0.0, 300.0),  # bounds how long a revoked key may still work
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            errors.append(
                checks.Error(f"MGECACHE['{name}'] must be a number between {low} and {high}.", id="cache_app.E051")
            )
    rates = s["THROTTLE_RATES"]
    scopes = ("generate", "read", "invalidate")
    if not isinstance(rates, dict) or set(rates) != set(scopes):
        errors.append(
            checks.Error(
                f"MGECACHE['THROTTLE_RATES'] must be a dict with exactly the keys {', '.join(scopes)}.",
                id="cache_app.E052",
            )
        )
    else:
        for scope, rate in rates.items():
            try:
                if not isinstance(rate, str):
                    raise ValueError(rate)
                SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]  # self is unused
            except (ValueError, KeyError, IndexError):
                errors.append(
                    checks.Error(
                        f"MGECACHE['THROTTLE_RATES'][{scope!r}] is {rate!r}; use e.g. '600/minute'.",
                        id="cache_app.E052",
                    )
                )
    upload = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None)
    if upload is None or (isinstance(s["MAX_REQUEST_BYTES"], int) and upload > s["MAX_REQUEST_BYTES"]):
        errors.append(
            checks.Error(
                "DATA_UPLOAD_MAX_MEMORY_SIZE must be set and at most MGECACHE['MAX_REQUEST_BYTES'].",
                id="cache_app.E053",
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_pipeline_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Waves, idempotency records and masterplan registration (ids cache_app.E060-E069)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    deadline = s["WAVE_DEADLINE_SECONDS"]
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 1 <= deadline <= 3600:
        errors.append(
            checks.Error("MGECACHE['WAVE_DEADLINE_SECONDS'] must be a number between 1 and 3600.", id="cache_app.E060")
        )
    for name, low in (
        ("WAVE_TTL_SECONDS", 60),
        ("IDEMPOTENCY_TTL_SECONDS", 60),
        ("IDEMPOTENCY_LOCK_SECONDS", 1),
        ("MASTERPLAN_MEMO_SIZE", 1),
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(checks.Error(f"MGECACHE['{name}'] must be an integer >= {low}.", id="cache_app.E061"))
    retry = s["WAVE_STORE_RETRY_SECONDS"]
    if isinstance(retry, bool) or not isinstance(retry, (int, float)) or not 0 <= retry <= 60:
        errors.append(
            checks.Error("MGECACHE['WAVE_STORE_RETRY_SECONDS'] must be a number between 0 and 60.", id="cache_app.E063")
        )
    limit = getattr(settings, "CELERY_TASK_SOFT_TIME_LIMIT", None)
    if not errors and isinstance(limit, (int, float)) and deadline >= limit:
        errors.append(
            checks.Warning(
                "MGECACHE['WAVE_DEADLINE_SECONDS'] is not below CELERY_TASK_SOFT_TIME_LIMIT: a wave batch task "
                "may be stopped before its deadline (its atoms then fail at the deadline).",
                id="cache_app.W062",
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_rag_guard_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """RAG similarity hit guard and shadow mode (ids cache_app.E070-E079)."""
    from django.core.exceptions import ImproperlyConfigured

    from cache_app.rag.guard import load_guard

    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    path = s["RAG_HIT_GUARD"]
    if not isinstance(path, str) or not path:
        errors.append(checks.Error("MGECACHE['RAG_HIT_GUARD'] must be a dotted path.", id="cache_app.E070"))
    else:
        try:
            load_guard(path)
        except (ImproperlyConfigured, TypeError) as exc:
            errors.append(
                checks.Error(
                    f"MGECACHE['RAG_HIT_GUARD'] is not a usable hit guard: {exc}",
                    hint="Name a class with prepare(query) and check(prepared, candidate_query), "
                    "e.g. cache_app.rag.guard.RuleGuard.",
                    id="cache_app.E070",
                )
            )
    for name, low, high in (("RAG_SHADOW_BUFFER", 1, 1_000_000), ("RAG_SHADOW_MAX_RECORDS", 1, 10_000_000)):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors.append(
                checks.Error(f"MGECACHE['{name}'] must be an integer between {low} and {high}.", id="cache_app.E071")
            )
    flush = s["RAG_SHADOW_FLUSH_SECONDS"]
    if isinstance(flush, bool) or not isinstance(flush, (int, float)) or not 0.1 <= flush <= 3600:
        errors.append(
            checks.Error(
                "MGECACHE['RAG_SHADOW_FLUSH_SECONDS'] must be a number between 0.1 and 3600.", id="cache_app.E072"
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_console_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Operator console bounds (ids cache_app.E080-E089)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    for name, low, high in (
        ("CONSOLE_SNAPSHOT_RETENTION_DAYS", 1, 3650),
        ("CONSOLE_TOP_MASTERPLANS", 1, 100),
        ("CONSOLE_CENSUS_MAX_KEYS", 1000, 1_000_000_000),
    ):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors.append(
                checks.Error(f"MGECACHE['{name}'] must be an integer between {low} and {high}.", id="cache_app.E080")
            )
    return errors


@checks.register(checks.Tags.compatibility)
def check_gateway_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The compatible gateway (ids cache_app.E090-E099)."""
    rate = conf.app_settings()["GATEWAY_THROTTLE_RATE"]
    if rate is None or (isinstance(rate, str) and re.fullmatch(r"[1-9]\d*/(s|m|h|d)[a-z]*", rate)):
        return []
    return [
        checks.Error(
            f"MGECACHE['GATEWAY_THROTTLE_RATE'] is {rate!r}.",
            hint='Use None or "N/second", "N/minute", "N/hour", "N/day".',
            id="cache_app.E090",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_redis_cluster_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Redis Cluster for the cache layers (ids cache_app.E100-E109)."""
    from cache_app.core.cluster import parse_nodes

    nodes = conf.app_settings()["REDIS_CLUSTER_NODES"]
    if not nodes:
        return []
    hint = "Set REDIS_CLUSTER_NODES=host:port,host:port (seed nodes of the cluster)."
    try:
        if isinstance(nodes, str) or not isinstance(nodes, (list, tuple)):
            raise ValueError("not a list")
        parse_nodes(nodes)
    except ValueError as exc:
        return [checks.Error(f"MGECACHE['REDIS_CLUSTER_NODES'] is invalid: {exc}.", hint=hint, id="cache_app.E100")]
    if getattr(settings, "REDIS_EMBEDDED", False):
        return [
            checks.Error(
                "REDIS_CLUSTER_NODES needs REDIS_URL too: Django's cache, throttles and the broker stay there.",
                hint="Set REDIS_URL to a plain Redis (or Sentinel) server.",
                id="cache_app.E101",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_rag_ann_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The RAG index's approximate (int8 IVF) mode (id cache_app.E042)."""
    value = conf.app_settings()["RAG_INDEX_ANN_MIN_ENTRIES"]
    if value is None or (not isinstance(value, bool) and isinstance(value, int) and value >= 1000):
        return []
    return [
        checks.Error(
            f"MGECACHE['RAG_INDEX_ANN_MIN_ENTRIES'] is {value!r}.",
            hint="Use None (exact search only) or an integer >= 1000 (the IVF index trains on the rows it has).",
            id="cache_app.E042",
        )
    ]

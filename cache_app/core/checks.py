"""System checks for ``settings.MGECACHE`` (ids cache_app.E001...)."""

from __future__ import annotations

import re

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from cache_app.core import conf


@checks.register(checks.Tags.compatibility)
def check_mgecache_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
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
def check_llm_provider_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Provider credentials and knobs (ids cache_app.E020-E029)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    provider = s.get("LLM_PROVIDER")
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
def check_batching_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Batching's Celery path (ids cache_app.E030-E039)."""
    errors: list[checks.CheckMessage] = []
    s = conf.app_settings()
    for name in ("BATCH_LLM_CALL", "LLM_BATCHER"):
        try:
            target = import_string(s[name])
        except (ImportError, TypeError) as exc:
            errors.append(checks.Error(f"MGECACHE['{name}'] cannot be imported: {exc}", id="cache_app.E030"))
        else:
            if not callable(target):
                errors.append(checks.Error(f"MGECACHE['{name}'] is not callable.", id="cache_app.E030"))
    ttl = s["BATCH_RESULT_TTL_SECONDS"]
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        errors.append(
            checks.Error("MGECACHE['BATCH_RESULT_TTL_SECONDS'] must be a positive integer.", id="cache_app.E031")
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_rag_index_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
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
def check_gateway_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The compatible gateway (ids cache_app.E050-E059)."""
    rate = conf.app_settings()["GATEWAY_THROTTLE_RATE"]
    if rate is None or (isinstance(rate, str) and re.fullmatch(r"[1-9]\d*/(s|m|h|d)[a-z]*", rate)):
        return []
    return [
        checks.Error(
            f"MGECACHE['GATEWAY_THROTTLE_RATE'] is {rate!r}.",
            hint='Use None or "N/second", "N/minute", "N/hour", "N/day".',
            id="cache_app.E050",
        )
    ]

"""Changing a cache layer's policy outside the admin form, with the admin's validation."""

from __future__ import annotations

from typing import Any

from cache_app import actions
from cache_app.actions import PolicyUpdate

TUNABLE = ("enabled", "ttl_seconds", "similarity_threshold", "cache_nonzero_temperature", "cache_truncated", "notes")
RAG_ONLY = ("similarity_threshold",)
LLM_ONLY = ("cache_nonzero_temperature", "cache_truncated")


def tune_layer_policy(layer: str, changes: dict[str, Any], *, source: str, actor: Any) -> PolicyUpdate:
    """Apply ``changes`` to the layer's CachePolicy through the audited operation (old and new values recorded).

    Raises ValueError for an unknown layer or field, or a knob of the other layer, and
    django's ValidationError (the admin form's messages) for out-of-range values.
    Every process sees the change within ``POLICY_REFRESH_SECONDS``.
    """
    unknown = sorted(set(changes) - set(TUNABLE))
    if unknown:
        raise ValueError(f"unknown policy fields: {', '.join(unknown)}")
    if not changes:
        raise ValueError("nothing to change")
    wrong_layer = [name for name in changes if name in (RAG_ONLY if layer == "llm" else LLM_ONLY)]
    if wrong_layer:
        raise ValueError(f"{', '.join(wrong_layer)} does not apply to the {layer} layer")
    return actions.update_policy(layer, changes, source=source, actor=actor)

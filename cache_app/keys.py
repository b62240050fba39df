"""The one owner of mgecache's Redis key scheme. Nothing else builds keys by hand.

Layout (``P`` is ``f"{MGECACHE['KEY_PREFIX']}:v1:"``, default ``mgecache:v1:``)::

    P stats:<layer>                       hash: durable counters shared by all processes
    P stats:<layer>:<masterplan-uuid>     hash: the same, per masterplan
    P lock:<name>                         short single-flight / coordination locks
    P batch:result:<atom-uuid>            a batched atom's answer (idempotent Celery path)

Layer-specific layouts (LLM entries, RAG entries) are documented next to the function
that builds them, below. Bump ``VERSION`` when a stored format changes: old keys then
become unreachable and expire on their own.

Scopes: an entry belongs to a masterplan (its UUID, validated) or to the global scope.
A masterplan id is only ever rendered as a canonical lowercase UUID, so no glob or
control character can reach a Redis pattern.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from . import conf

VERSION = "v1"
GLOBAL_SCOPE = "global"


def prefix() -> str:
    return f"{conf.get('KEY_PREFIX')}:{VERSION}:"


def normalize_masterplan_id(value: Any) -> str | None:
    """Return the canonical UUID string, None for the global scope, or raise ValueError."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise ValueError(f"masterplan_id must be a UUID, got {value!r}") from None
        return str(parsed)
    raise ValueError(f"masterplan_id must be a UUID or None, got {type(value).__name__}")


def scope(masterplan_id: Any) -> str:
    """``global`` or the masterplan's canonical UUID."""
    normalized = normalize_masterplan_id(masterplan_id)
    return GLOBAL_SCOPE if normalized is None else normalized


def canonical_json(value: Any) -> str:
    """A deterministic encoding: sorted keys, no whitespace, UTF-8 kept as is.

    Unlike ``repr`` or ``hash()`` this is identical across processes, machines and
    Python versions.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(value: Any) -> str:
    """SHA-256 hex digest of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def layer_prefix(layer: str) -> str:
    return f"{prefix()}{layer}:"


def stats(layer: str, masterplan_id: Any = None) -> str:
    normalized = normalize_masterplan_id(masterplan_id)
    base = f"{prefix()}stats:{layer}"
    return base if normalized is None else f"{base}:{normalized}"


def stats_pattern(layer: str) -> str:
    """SCAN pattern for per-masterplan stats hashes of a layer (admin statistics pages only)."""
    return f"{prefix()}stats:{layer}:*"


def lock(name: str) -> str:
    return f"{prefix()}lock:{name}"


def batch_result(atom_id: Any) -> str:
    return f"{prefix()}batch:result:{uuid.UUID(str(atom_id))}"

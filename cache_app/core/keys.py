"""The one owner of mgecache's Redis key scheme. Nothing else builds keys by hand.

Layout (``P`` is ``f"{MGECACHE['KEY_PREFIX']}:v2:"``, default ``mgecache:v2:``)::

    P stats:<layer>                       hash: durable counters shared by all processes
    P stats:<layer>:{<masterplan-uuid>}   hash: the same, per masterplan (in the masterplan's slot)
    P lock:<name>                         short single-flight / coordination locks
    P batch:result:<scope>:<atom-uuid>:<sha256 of prompt, model, params>
                                          a batched atom's answer (idempotent Celery path)
    P batch:wave:<wave-uuid>              a wave's record (masterplan, atoms' result addresses)
    P stats:activity                      hash: masterplan UUID -> unix time of its last counted event
    P console:census                      hash: ``<layer>:<scope>`` -> live entries at the last count (operator console)

Layer-specific layouts (LLM entries ``P llm:...``, RAG entries and vector logs ``P rag:...``)
are documented next to the functions that build them, below. Bump ``VERSION`` when a stored
format changes: old keys then become unreachable; they expire on their own, and
``manage.py reclaim_retired_keys`` (cache_app.core.retired) deletes them sooner. Versions
no longer written are listed in ``RETIRED_VERSIONS``.

Redis Cluster (v2): every key of one scope carries the hash tag ``{<scope>}``, so an entry,
its scope's generation, its counters and its RAG log sit in one slot, and every lookup,
write, script and invalidation of one scope is a single-slot operation. The layer-wide
epoch (``invalidate_all``) cannot be one key that every slot reads, so it is kept as one
copy per slot: ``P <layer>:epoch:{<t>}`` where ``<t>`` is a short tag that hashes to the
same slot as the scope (``slot_tag``). A lookup reads the copy of its own slot; a layer
invalidation INCRs all 16,384 copies (a constant, whatever the number of scopes or
entries). Copies only ever grow, and a partly bumped layer is retried by the invalidation
task; an entry dies as soon as its own slot's copy moved.

Scopes: an entry belongs to a masterplan (its UUID, validated) or to the global scope.
A masterplan id is only ever rendered as a canonical lowercase UUID, so no glob or
control character can reach a Redis pattern.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import importlib
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from cache_app.core import conf
from cache_app.core.state import Memo

VERSION = "v2"
# Key-scheme versions no longer written: their keys are unreachable (cache_app.core.retired).
RETIRED_VERSIONS = ("v1",)
GLOBAL_SCOPE = "global"
CLUSTER_SLOTS = 16384


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


def key_slot(hash_tag: str) -> int:
    """The Redis Cluster slot of a key whose hash tag is ``hash_tag`` (CRC16-XMODEM, as Redis)."""
    return binascii.crc_hqx(hash_tag.encode("utf-8"), 0) % CLUSTER_SLOTS


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For every slot, the shortest hex string that hashes to it (slot_tags.txt, generated once).

    Searching for them costs ~0.3 s of CPU; read from the file it is ~1 ms. Built by
    ``generate_slot_tags()``; tests/cache_app/core/test_keys_cluster.py checks every entry.
    """
    with open(Path(__file__).with_name("slot_tags.txt"), encoding="ascii") as handle:
        return tuple(handle.read().split())


def generate_slot_tags() -> list[str]:
    """The content of slot_tags.txt: the first hex number (0, 1, 2, ...) found for each slot."""
    tags: list[str | None] = [None] * CLUSTER_SLOTS
    missing, number = CLUSTER_SLOTS, 0
    while missing:
        candidate = format(number, "x")
        slot = key_slot(candidate)
        if tags[slot] is None:
            tags[slot] = candidate
            missing -= 1
        number += 1
    return [t for t in tags if t is not None]


@functools.lru_cache(maxsize=65_536)
def slot_tag(scope_name: str) -> str:
    """The epoch-copy tag of ``scope_name``'s slot: ``{slot_tag(s)}`` and ``{s}`` hash alike."""
    return _slot_tags()[key_slot(scope_name)]


def all_slot_tags() -> tuple[str, ...]:
    """One tag per cluster slot (the layer epoch's copies; see the module docstring)."""
    return _slot_tags()


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
    return base if normalized is None else f"{base}:{{{normalized}}}"


def stats_pattern(layer: str) -> str:
    """SCAN pattern for per-masterplan stats hashes of a layer (admin statistics pages only)."""
    return f"{prefix()}stats:{layer}:*"


def _untag(part: str) -> str:
    """``{x}`` -> ``x`` (a scope as written in a key); anything else unchanged (then refused by the caller)."""
    return part[1:-1] if len(part) > 2 and part[0] == "{" and part[-1] == "}" else part


def lock(name: str) -> str:
    return f"{prefix()}lock:{name}"


# --- LLM prompt cache (cache_app.llm.cache) -------------------------------------------------
#
#     P llm:epoch:{<slot tag>}     string (INCR): the layer-wide epoch's copy for one slot; all
#                                  16,384 copies are bumped by invalidate_all()
#     P llm:gen:{<scope>}          string (INCR): the scope's generation; bumped by invalidate_masterplan()
#     P llm:{<scope>}:<sha256>     string: one entry, TTL from CachePolicy('llm') or the call
#
# <sha256> is ``llm_digest()`` of every input that changes the answer (prompt, model, normalised
# temperature, canonical JSON of the generation params). The entry's value is ``e<epoch>g<gen>|`` followed by the
# msgpack-encoded response: an entry whose tag is not the scope's current one is dead
# (unreachable) even while it still exists, so invalidation is one INCR whatever the number
# of entries. Dead entries are deleted later by SCAN (scope pattern) + a Lua batch that
# re-checks each tag. Epoch and generation keys never expire and are never deleted: resetting
# one could make an old entry's tag current again.


def _fast_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256: same digest, without OpenSSL 3's per-call algorithm fetch (~3 us)."""
    for name in ("_sha2", "_sha256"):  # Python >= 3.12, then 3.11
        try:
            return importlib.import_module(name).sha256
        except ImportError:
            continue
    return hashlib.sha256


_sha256 = _fast_sha256()


def llm_digest(prompt: str, model: str, temperature: int | float, params: dict[str, Any]) -> str:
    """SHA-256 over a length-prefixed (so unambiguous) encoding of the request's identity.

    ``temperature`` and ``params`` must already be normalised (cache_app.llm.cache.codec):
    ``repr`` of an int or float is the shortest round-trip form on every Python 3, and the
    params go through ``canonical_json``. Cheaper than hashing one JSON document, which
    matters on the hot path.
    """
    p = prompt.encode("utf-8", "surrogatepass")
    m = model.encode("utf-8", "surrogatepass")
    t = repr(temperature).encode()
    a = canonical_json(params).encode("utf-8", "surrogatepass") if params else b"{}"
    return _sha256(b"mgecache-llm-v1%d:%b%d:%b%d:%b%d:%b" % (len(p), p, len(m), m, len(t), t, len(a), a)).hexdigest()


def llm_epoch(masterplan_id: Any = None) -> str:
    """The layer epoch's copy read by the scope's lookups (in the scope's slot)."""
    return f"{prefix()}llm:epoch:{{{slot_tag(scope(masterplan_id))}}}"


def llm_epoch_copies() -> list[str]:
    """Every copy of the layer epoch (one per slot): what invalidate_all() INCRs."""
    base = f"{prefix()}llm:epoch:"
    return [f"{base}{{{tag}}}" for tag in all_slot_tags()]


def llm_generation(masterplan_id: Any = None) -> str:
    return f"{prefix()}llm:gen:{{{scope(masterplan_id)}}}"


def llm_entry(masterplan_id: Any, entry_digest: str) -> str:
    if len(entry_digest) != 64 or any(c not in "0123456789abcdef" for c in entry_digest):
        raise ValueError("entry_digest must be a lowercase SHA-256 hex digest")
    return f"{prefix()}llm:{{{scope(masterplan_id)}}}:{entry_digest}"


_llm_base: Memo[Any, str] = Memo()


def llm_base() -> str:
    """``P llm:``, memoised on the configured KEY_PREFIX value.

    Every LLM lookup builds three keys from it: reading the raw setting and comparing it
    skips ``prefix()``'s settings lookup and string formatting on the hot path. The prefix
    is rebuilt whenever the setting changes (tests give every test its own prefix).
    """
    raw = getattr(settings, "MGECACHE", None)
    configured = raw.get("KEY_PREFIX") if isinstance(raw, dict) else None
    pair = _llm_base.pair
    if pair is None or pair[0] != configured:
        pair = _llm_base.pair = (configured, f"{prefix()}llm:")
    return pair[1]


def llm_lookup(masterplan_id: Any, entry_digest: str) -> tuple[str, str, str]:
    """``(epoch, generation, entry)`` keys of one lookup (hot path: no settings merge)."""
    base = llm_base()
    scope_name = GLOBAL_SCOPE if masterplan_id is None else scope(masterplan_id)
    return (
        f"{base}epoch:{{{slot_tag(scope_name)}}}",
        f"{base}gen:{{{scope_name}}}",
        f"{base}{{{scope_name}}}:{entry_digest}",
    )


def llm_scope_pattern(masterplan_id: Any = None) -> str:
    """SCAN pattern for the entries of one scope (never the epoch/generation keys)."""
    return f"{prefix()}llm:{{{scope(masterplan_id)}}}:*"


def llm_layer_pattern() -> str:
    """SCAN pattern for every key of the LLM layer (parse results with :func:`parse_llm_entry`)."""
    return f"{prefix()}llm:*"


def _parse_entry(key: str | bytes, layer: str) -> str | None:
    """The scope of an entry key of ``layer`` (``<prefix><layer>:{<scope>}:<sha256>``), None for any other key."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    base = f"{prefix()}{layer}:"
    if not key.startswith(base):
        return None
    parts = key[len(base) :].split(":")
    if len(parts) != 2 or len(parts[1]) != 64 or not parts[0].startswith("{"):
        return None
    name = _untag(parts[0])
    try:
        return scope(None if name == GLOBAL_SCOPE else name)
    except ValueError:
        return None


def parse_llm_entry(key: str | bytes) -> str | None:
    """The scope (``global`` or a UUID) of an LLM entry key, None for any other key."""
    return _parse_entry(key, "llm")


# --- RAG query cache (cache_app.rag.cache) --------------------------------------------------
#
#     P rag:epoch:{<slot tag>}               string (INCR): the layer epoch's copy for one slot (as LLM)
#     P rag:gen:{<scope>}                    string (INCR): the scope's generation; invalidate_masterplan()
#     P rag:{<scope>}:<sha256>               string: one entry, ``e<epoch>g<gen>|`` + msgpack (same tag
#                                            scheme as the LLM layer), TTL from CachePolicy('rag') or the call
#     P rag:ns:{<scope>}                     hash: <nsid> -> embedding dimension (the scope's namespaces)
#     P rag:log:{<scope>}:<nsid>:<dim>:head  string: number of the log segment being appended to
#     P rag:log:{<scope>}:<nsid>:<dim>:first string: number of the log's first segment
#     P rag:log:{<scope>}:<nsid>:<dim>:<n>   string: log segment n, concatenated fixed-size vector records
#
# <sha256> is ``digest()`` of (query, embedding model, top_k, scope). A namespace is
# (embedding model, top_k, scope); <nsid> is the first 32 hex digits of ``digest()`` of
# (embedding model, top_k). Every process mirrors a namespace's log into a local vector
# index (see docs/rag_cache.md); the log never needs a SCAN. Epoch and generation keys
# never expire and are never deleted, as in the LLM layer.


def rag_epoch(masterplan_id: Any = None) -> str:
    """The layer epoch's copy read by the scope's lookups (in the scope's slot)."""
    return f"{prefix()}rag:epoch:{{{slot_tag(scope(masterplan_id))}}}"


def rag_epoch_copies() -> list[str]:
    """Every copy of the RAG layer epoch (one per slot): what invalidate_all() INCRs."""
    base = f"{prefix()}rag:epoch:"
    return [f"{base}{{{tag}}}" for tag in all_slot_tags()]


def rag_generation(masterplan_id: Any = None) -> str:
    return f"{prefix()}rag:gen:{{{scope(masterplan_id)}}}"


_LOWER_HEX = frozenset("0123456789abcdef")


def _check_hex(value: str, length: int, what: str) -> str:
    if len(value) != length or not _LOWER_HEX.issuperset(value):
        raise ValueError(f"{what} must be {length} lowercase hex digits")
    return value


def rag_entry_digest(query: str, embedding_model: str, top_k: int, masterplan_id: Any = None) -> str:
    return digest(["rag", query, embedding_model, int(top_k), scope(masterplan_id)])


def rag_namespace_id(embedding_model: str, top_k: int) -> str:
    return digest(["rag-ns", embedding_model, int(top_k)])[:32]


def rag_entry(masterplan_id: Any, entry_digest: str) -> str:
    return f"{prefix()}rag:{{{scope(masterplan_id)}}}:{_check_hex(entry_digest, 64, 'entry_digest')}"


def rag_namespaces(masterplan_id: Any = None) -> str:
    return f"{prefix()}rag:ns:{{{scope(masterplan_id)}}}"


def rag_log_base(masterplan_id: Any, namespace_id: str, dim: int) -> str:
    """Prefix of one namespace's log keys; append ``head`` or a segment number (see rag_log_segment)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError("dim must be a positive int")
    return f"{prefix()}rag:log:{{{scope(masterplan_id)}}}:{_check_hex(namespace_id, 32, 'namespace_id')}:{dim}:"


def rag_log_head(log_base: str) -> str:
    return f"{log_base}head"


def rag_log_first(log_base: str) -> str:
    """The number of the log's first segment (a rebuild never reads below it)."""
    return f"{log_base}first"


def rag_log_segment(log_base: str, number: int) -> str:
    return f"{log_base}{int(number)}"


def rag_lookup(masterplan_id: Any, entry_digest: str, namespace_id: str, dim: int) -> tuple[str, ...]:
    """``(epoch, generation, entry, namespaces, log base, log head)`` of one call, with one prefix() read (hot path)."""
    scope_name = scope(masterplan_id)
    _check_hex(entry_digest, 64, "entry_digest")
    _check_hex(namespace_id, 32, "namespace_id")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError("dim must be a positive int")
    base = f"{prefix()}rag:"
    log_base = f"{base}log:{{{scope_name}}}:{namespace_id}:{dim}:"
    return (
        f"{base}epoch:{{{slot_tag(scope_name)}}}",
        f"{base}gen:{{{scope_name}}}",
        f"{base}{{{scope_name}}}:{entry_digest}",
        f"{base}ns:{{{scope_name}}}",
        log_base,
        f"{log_base}head",
    )


def rag_scope_pattern(masterplan_id: Any = None) -> str:
    """SCAN pattern for the entries of one scope (never its log, registry or generation keys)."""
    return f"{prefix()}rag:{{{scope(masterplan_id)}}}:*"


def rag_layer_pattern() -> str:
    """SCAN pattern for every key of the RAG layer (filter entries with :func:`parse_rag_entry`)."""
    return f"{prefix()}rag:*"


def parse_rag_entry(key: str | bytes) -> str | None:
    """The scope (``global`` or a UUID) of a RAG entry key, None for any other key."""
    return _parse_entry(key, "rag")


# --- single-flight (cache_app.llm.singleflight) ---------------------------------------------------
#   P lock:sf:{<sha256(request key)>}               the leader's lock (short TTL; value: leader token)
#   P lock:sf:{<sha256(request key)>}:out:<token>   that leader's outcome (result or error), short TTL
#
# One hash tag: on a Cluster the outcome and the lock are on one node, so the leader's pipeline
# publishes the outcome before it releases the lock (waiters rely on that order).


def singleflight_lock(request_key: str) -> str:
    return lock("sf:{" + hashlib.sha256(request_key.encode("utf-8")).hexdigest() + "}")


def singleflight_outcome(request_key: str, token: str) -> str:
    if not token.isalnum():
        raise ValueError("token must be alphanumeric")
    return f"{singleflight_lock(request_key)}:out:{token}"


def parse_rag_namespaces(key: str | bytes) -> str | None:
    """The scope (``global`` or a UUID) of a RAG namespace registry key, None for any other key."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    base = f"{prefix()}rag:ns:"
    if not key.startswith(base):
        return None
    name = _untag(key[len(base) :])
    try:
        return scope(None if name == GLOBAL_SCOPE else name)
    except ValueError:
        return None


# --- LLM waves (batching_app.waves) -----------------------------------------------------------
#   P wave:<wave-uuid>     hash: one wave's state (meta, per-atom spec/status/result, batches), TTL WAVE_TTL_SECONDS


def wave(wave_id: Any) -> str:
    return f"{prefix()}wave:{uuid.UUID(str(wave_id))}"


# --- idempotent requests (cache_app.idempotency) -----------------------------------------------
#   P idem:<sha256(scope, key)>   string: JSON record (in flight or done), TTL IDEMPOTENCY_TTL_SECONDS
#
# The client's key is hashed with its scope (route and caller), so any string is safe and two
# callers never share a record.


def idempotency(scope_name: str, key: str) -> str:
    return f"{prefix()}idem:{digest(['idem', scope_name, key])}"


# --- API throttles (cache_app.access.throttles) ---------------------------------------------------
#   P throttle:{<scope>:<ident>}:<window>   string: requests allowed in one fixed window, TTL 2 windows
#
# On Django's default Redis (REDIS_URL), not on the Cluster; hash-tagged anyway, so the two
# windows one check reads sit in one slot. ``ident`` is the caller (``key:<prefix>``, ``user:<pk>``
# or ``ip:<address>``); an address comes from a header, so anything but a short plain one is hashed.
_PLAIN_IDENT = re.compile(r"[A-Za-z0-9:._-]{1,64}")


def throttle(scope_name: str, ident: str, window: int) -> str:
    if not _PLAIN_IDENT.fullmatch(ident):
        ident = "h:" + digest(["throttle", ident])[:32]
    return f"{prefix()}throttle:{{{scope_name}:{ident}}}:{int(window)}"


# --- operator console (cache_app.console) ---------------------------------------------------


def activity() -> str:
    """Hash: masterplan UUID -> unix time of its last counted event (written by the durable counters' flush)."""
    return f"{prefix()}stats:activity"


def console_census() -> str:
    """Hash: ``<layer>:<scope>`` -> live entries, plus ``taken_at`` and ``complete`` (cache_app.console.census)."""
    return f"{prefix()}console:census"


def parse_stats_scope(key: str | bytes, layer: str) -> str | None:
    """The masterplan UUID of a per-masterplan stats hash of ``layer``, None for any other key."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    base = f"{prefix()}stats:{layer}:"
    if not key.startswith(base):
        return None
    try:
        return normalize_masterplan_id(_untag(key[len(base) :]))
    except ValueError:
        return None

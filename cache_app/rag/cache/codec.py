"""What a RAG cache entry is, how inputs are validated, and how entries and vector records are stored.

Entry value (``keys.rag_entry``): the scope's generation tag ``e<epoch>g<gen>|`` (the LLM
layer's tag scheme, shared through ``cache_app.core.tags.make_tag``) followed by a
msgpack map. Documents are kept as their JSON text, so what comes back is exactly what
``json.loads(json.dumps(documents))`` gives, whatever msgpack would have made of them.

Vector record (appended to a namespace log, see docs/rag_cache.md): a fixed-size
little-endian struct, decoded with one ``np.frombuffer`` per segment (no per-record
Python work, which is what makes a 100k-entry rebuild take well under 2 s)::

    digest   32 bytes   raw SHA-256 of the entry (its key is rebuilt from it)
    expires   float64   unix seconds after which the entry is dead
    epoch       int64   layer epoch the entry was written under
    gen         int64   scope generation the entry was written under
    vector  dim*float32 the query embedding, L2-normalised

This is a packed numeric array, not an object serialisation: nothing in it is executed
or instantiated on decode (the house rule "JSON or msgpack, never pickle" is about that).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgpack
import numpy as np

from cache_app.core.tags import TAG_SEPARATOR, make_tag

FORMAT_VERSION = 1

__all__ = [
    "TAG_SEPARATOR",
    "CachedRAGResult",
    "CorruptEntryError",
    "EntryPayload",
    "as_vector",
    "decode_entry",
    "documents_json",
    "encode_entry",
    "make_tag",
    "pack_record",
    "record_dtype",
    "validate_model",
    "validate_query",
    "validate_top_k",
]


@dataclass(frozen=True)
class CachedRAGResult:
    query: str
    query_embedding: list[float] = field(repr=False)
    documents: list[dict]
    cached_at: float  # unix seconds
    match: str  # "exact" or "similar"
    similarity: float  # 1.0 for exact


class CorruptEntryError(ValueError):
    """A stored value that is not a valid RAG entry of this format."""


@dataclass(frozen=True)
class EntryPayload:
    query: str
    embedding: np.ndarray  # float32, as given by the caller (not normalised)
    documents_json: str
    cached_at: float
    expires_at: float


# --- input validation (ValueError with a message that names the argument) -----------------


def validate_query(query: Any) -> str:
    if not isinstance(query, str):
        raise ValueError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query must not be empty")
    return query


def validate_model(embedding_model: Any) -> str:
    if not isinstance(embedding_model, str) or not embedding_model.strip():
        raise ValueError("embedding_model must be a non-empty str")
    return embedding_model


def validate_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return int(top_k)


def as_vector(query_embedding: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(embedding as float32, L2-normalised float32)``. Accepts a list or a numpy float32/float64 array."""
    if isinstance(query_embedding, np.ndarray):
        if query_embedding.dtype.kind not in "fiu" or query_embedding.dtype == np.float16:
            raise ValueError(f"query_embedding must be float32 or float64, got dtype {query_embedding.dtype}")
        values = query_embedding.astype(np.float64, copy=False)
    else:
        if isinstance(query_embedding, (str, bytes, dict)) or not hasattr(query_embedding, "__len__"):
            raise ValueError("query_embedding must be a list of floats or a numpy array")
        if any(isinstance(v, bool) for v in query_embedding):
            raise ValueError("query_embedding must contain numbers, not booleans")
        try:
            values = np.asarray(query_embedding, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("query_embedding must contain only numbers") from None
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"query_embedding must be a non-empty 1-D vector, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("query_embedding contains NaN or Inf")
    norm = float(np.linalg.norm(values))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("query_embedding is a zero vector (cosine similarity is undefined)")
    return values.astype(np.float32), (values / norm).astype(np.float32)


def documents_json(documents: Any) -> str:
    if not isinstance(documents, list):
        raise ValueError(f"documents must be a list of dicts, got {type(documents).__name__}")
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise ValueError(f"documents[{index}] must be a dict, got {type(document).__name__}")
    try:
        return json.dumps(documents, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"documents must be JSON-serialisable: {exc}") from None


# --- entries -------------------------------------------------------------------------------


def encode_entry(
    query: str, embedding: np.ndarray, docs_json: str, *, cached_at: float, expires_at: float, model: str, top_k: int
) -> bytes:
    """The msgpack payload (the tag is prepended by the write script)."""
    return msgpack.packb(
        {
            "f": FORMAT_VERSION,
            "q": query,
            "e": np.ascontiguousarray(embedding, dtype="<f4").tobytes(),
            "d": docs_json,
            "t": float(cached_at),
            "x": float(expires_at),
            "m": model,
            "k": top_k,
        },
        use_bin_type=True,
    )


def decode_entry(payload: bytes, *, model: str, top_k: int) -> EntryPayload:
    try:
        data = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptEntryError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("f") != FORMAT_VERSION:
        raise CorruptEntryError("unknown entry format")
    try:
        query, raw, docs, cached_at, expires_at = data["q"], data["e"], data["d"], data["t"], data["x"]
    except KeyError as exc:
        raise CorruptEntryError(f"missing field {exc}") from None
    if not isinstance(query, str) or not isinstance(raw, bytes) or not isinstance(docs, str):
        raise CorruptEntryError("bad field types")
    if len(raw) == 0 or len(raw) % 4:
        raise CorruptEntryError("bad embedding length")
    if data.get("m") != model or data.get("k") != top_k:
        raise CorruptEntryError("entry belongs to another namespace")
    if not isinstance(cached_at, (int, float)) or not isinstance(expires_at, (int, float)):
        raise CorruptEntryError("bad timestamps")
    return EntryPayload(query, np.frombuffer(raw, dtype="<f4"), docs, float(cached_at), float(expires_at))


def load_documents(docs_json: str) -> list[dict]:
    try:
        documents = json.loads(docs_json)
    except ValueError:
        raise CorruptEntryError("documents are not JSON") from None
    if not isinstance(documents, list):
        raise CorruptEntryError("documents are not a list")
    return documents


# --- vector records -----------------------------------------------------------------------


@lru_cache(maxsize=64)
def record_dtype(dim: int) -> np.dtype:
    return np.dtype([("digest", "V32"), ("expires", "<f8"), ("epoch", "<i8"), ("gen", "<i8"), ("vec", "<f4", (dim,))])


def pack_record(entry_digest: str, expires_at: float, epoch: int, gen: int, unit: np.ndarray) -> bytes:
    record = np.zeros(1, dtype=record_dtype(unit.shape[0]))
    record["digest"] = np.void(bytes.fromhex(entry_digest))
    record["expires"] = expires_at
    record["epoch"] = epoch
    record["gen"] = gen
    record["vec"][0] = unit
    return record.tobytes()

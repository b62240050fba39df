"""A bounded least-recently-used map, for the per-process memos that must not grow without end.

Several objects keep a small memo keyed by caller-chosen values (document scopes, RAG
namespaces, LLM batchers, resolved API keys, registered masterplans). Each bounded it with the
same ``OrderedDict`` moves (``move_to_end``, ``popitem(last=False)``); :class:`LRU` writes them
once. What to do with an evicted value (close it, reset it, nothing) stays with the caller:
:meth:`LRU.put` returns what it evicted, so the caller can act on it after releasing its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, ValuesView
from typing import Any, Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MISSING: Any = object()


class LRU(Generic[K, V]):
    """A map that holds at most ``maxsize`` items, dropping the least recently used first.

    ``maxsize``: an int, a callable read at every :meth:`put` (so a setting changed at runtime
    applies at the next insertion), or None for no bound (the caller evicts with
    :meth:`popoldest`, e.g. by a budget other than the item count).

    :meth:`get`, :meth:`touch` and :meth:`put` mark a key recently used; :meth:`peek`,
    ``in``, iteration and :meth:`values` do not. Iteration runs from the least to the most
    recently used.

    Not thread-safe: callers lock, each in its own way (some not at all: one event loop). A
    single :meth:`peek` or ``len()`` is one dict operation, as safe without the lock as the
    ``OrderedDict`` it replaces.
    """

    __slots__ = ("_data", "_maxsize")

    def __init__(self, maxsize: int | Callable[[], int] | None = None) -> None:
        self._maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    @property
    def maxsize(self) -> int | None:
        """The bound now in force (None: unbounded)."""
        return self._maxsize() if callable(self._maxsize) else self._maxsize

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        try:
            self._data.move_to_end(key)
        except KeyError:
            return None
        return self._data[key]

    def peek(self, key: K) -> V | None:
        """The value of ``key``, or None, leaving the order alone."""
        return self._data.get(key)

    def touch(self, key: K) -> bool:
        """Mark ``key`` recently used; False if it is absent (a None value still counts as present)."""
        try:
            self._data.move_to_end(key)
        except KeyError:
            return False
        return True

    def put(self, key: K, value: V, *, touch: bool = True) -> list[tuple[K, V]]:
        """Store ``value``; returns the evicted ``(key, value)`` pairs, least recently used first.

        ``touch=False``: replacing the value of a present key leaves it in its place, as a plain
        dict assignment does (a new key always goes last). With a bound below one, even the new
        item is evicted (and returned).
        """
        self._data[key] = value
        if touch:
            self._data.move_to_end(key)
        bound = self.maxsize
        evicted: list[tuple[K, V]] = []
        if bound is not None:
            while len(self._data) > bound:
                evicted.append(self._data.popitem(last=False))
        return evicted

    @overload
    def pop(self, key: K) -> V: ...

    @overload
    def pop(self, key: K, default: T) -> V | T: ...

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; KeyError if absent and no ``default`` is given."""
        if default is _MISSING:
            return self._data.pop(key)
        return self._data.pop(key, default)

    def popoldest(self) -> tuple[K, V]:
        """Remove and return the least recently used item; KeyError if empty."""
        return self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def values(self) -> ValuesView[V]:
        return self._data.values()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

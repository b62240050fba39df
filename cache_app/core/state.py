"""Process-wide state: one idiom for the objects a process shares, and one way to forget them.

A process shares a few long-lived objects (the policy source, the price table, the counters,
the LLM client, ...). Each is built on first use by a zero-argument getter decorated with
:func:`process_wide`::

    @process_wide
    def get_counters() -> DurableCounters:
        return DurableCounters()

The object is built once per process under a lock, so concurrent first calls share one
instance (``functools.cache`` may build twice and hand different callers different objects,
which matters for a circuit breaker or a client that holds batchers). Domain objects still
take these as injected collaborators; the getters are only their defaults.

:func:`reset_process_state` forgets every such object; the next call builds a fresh one.
Tests call it between tests (``tests/conftest.py``). Not process state in this sense:
memos keyed on their own inputs, which follow the settings by themselves (a :class:`Memo`:
``conf.app_settings``, ``keys.llm_base``; the embedders per dotted path, kept because a
model takes seconds to load, and the hit guards per dotted path), rate limits on logging (a
``lograte.LogInterval`` each), the document generation (it only grows, so it never goes
stale), and threads (the client loop, the ORM thread).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, cast

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

_resets: list[Callable[[], None]] = []
_resets_lock = threading.Lock()


class ProcessWide(Protocol[T]):
    """A getter made by :func:`process_wide`."""

    def __call__(self) -> T: ...

    def set(self, value: T) -> None:
        """Use ``value`` as this process's object until the next reset (tests inject fakes this way)."""

    def reset(self) -> None:
        """Forget the object; the next call builds a new one."""


def process_wide(factory: Callable[[], T]) -> ProcessWide[T]:
    """Decorator: ``factory`` becomes the getter of a process-wide object (see the module docstring).

    A closure rather than an object with ``__call__``: hot paths call these getters on every
    request, and a plain function call is about half the cost.
    """
    cell: list[T] = []
    lock = threading.Lock()

    def getter() -> T:
        try:
            return cell[0]
        except IndexError:
            pass
        with lock:
            if not cell:
                cell.append(factory())
            return cell[0]

    def set_value(value: T) -> None:
        with lock:
            cell[:] = [value]

    def reset() -> None:
        with lock:
            cell.clear()

    functools.update_wrapper(getter, factory)
    wrapped = cast(ProcessWide[T], getter)
    wrapped.set = set_value  # type: ignore[method-assign]
    wrapped.reset = reset  # type: ignore[method-assign]
    with _resets_lock:
        _resets.append(reset)
    return wrapped


def reset_process_state() -> None:
    """Forget every process-wide object built by a :func:`process_wide` getter."""
    with _resets_lock:
        resets = list(_resets)
    for reset in resets:
        reset()


class Memo(Generic[K, V]):
    """A one-entry memo: the last input and the value derived from it, held as one tuple so that a
    reader never pairs one input with another's value. The caller compares the input (by identity
    or equality) and stores a new pair when it changed, so the memo follows its input by itself and
    is never reset."""

    __slots__ = ("pair",)

    def __init__(self) -> None:
        self.pair: tuple[K, V] | None = None

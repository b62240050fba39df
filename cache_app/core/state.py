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
memos keyed on their own inputs, which follow the settings by themselves
(``conf.app_settings``, ``keys.llm_base``, the embedders per dotted path, kept because a
model takes seconds to load), and threads (the client loop, the ORM thread).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_registry: list[ProcessWide[Any]] = []
_registry_lock = threading.Lock()


class ProcessWide(Generic[T]):
    """A getter for one process-wide object, built by ``factory`` on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: tuple[T] | None = None  # a 1-tuple, so a factory may return None
        functools.update_wrapper(self, factory)
        with _registry_lock:
            _registry.append(self)

    def __call__(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    value = self._value = (self._factory(),)
        return value[0]

    def set(self, value: T) -> None:
        """Use ``value`` as this process's object until the next reset (tests inject fakes this way)."""
        with self._lock:
            self._value = (value,)

    def reset(self) -> None:
        """Forget the object; the next call builds a new one."""
        with self._lock:
            self._value = None


def process_wide(factory: Callable[[], T]) -> ProcessWide[T]:
    """Decorator: ``factory`` becomes the getter of a process-wide object (see the module docstring)."""
    return ProcessWide(factory)


def reset_process_state() -> None:
    """Forget every process-wide object built by a :func:`process_wide` getter."""
    with _registry_lock:
        getters = list(_registry)
    for getter in getters:
        getter.reset()

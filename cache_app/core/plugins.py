"""Components named by dotted path in the settings, one instance per path per process.

The embedder (``MGECACHE['EMBEDDER']``) and the similarity hit guard (``MGECACHE['RAG_HIT_GUARD']``)
are classes an operator may swap. Each is built on first use and then shared: a model takes
seconds to load and much memory, and a guard keeps memos. The memo is keyed on the path, so it
follows the settings by itself and is not process state to reset between tests (core/state.py).
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from cache_app.core import conf

T = TypeVar("T")


class Plugins(Generic[T]):
    """Builds and keeps the instances of the classes a setting may name.

    ``required`` lists what an instance must have: ``"dim"`` an attribute, ``"embed()"`` a
    method. A path that cannot be imported, or a class without one of them, raises
    ``ImproperlyConfigured`` naming the setting and ``protocol``, the class to read.
    """

    def __init__(self, setting: str, kind: str, required: tuple[str, ...], protocol: str) -> None:
        self.setting, self.kind, self.required, self.protocol = setting, kind, required, protocol
        self._loaded: dict[str, T] = {}
        self._lock = threading.Lock()

    def load(self, path: str | None = None) -> T:
        """The instance for ``path`` (default: the setting's value), built on the first call."""
        path = path or conf.get(self.setting)
        instance = self._loaded.get(path)
        if instance is not None:
            return instance
        with self._lock:  # one build per path, even when threads ask at once
            if path not in self._loaded:
                self._loaded[path] = self._build(path)
            return self._loaded[path]

    def _build(self, path: str) -> T:
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"MGECACHE[{self.setting!r}] = {path!r} cannot be imported: {exc}") from exc
        instance = cls()
        for name in self.required:
            if not self._has(instance, name):
                shown = name if name.endswith("()") else repr(name)
                raise ImproperlyConfigured(f"{self.kind} {path!r} has no {shown}; see {self.protocol}.")
        return cast(T, instance)

    @staticmethod
    def _has(instance: Any, name: str) -> bool:
        if name.endswith("()"):
            return callable(getattr(instance, name[:-2], None))
        return hasattr(instance, name)

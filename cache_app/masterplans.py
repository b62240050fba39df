"""Masterplans the pipeline uses become ``Masterplan`` rows, so operators find them in the admin.

The pipeline never creates masterplans explicitly: the first request that names one registers
it (named by its id until an operator renames it). Ids already registered are remembered per
process in a bounded LRU, so the hot path does not query the database on every request.

Called at the edges, once per request that names a masterplan: the API views (generate, RAG
query, waves, invalidation), :func:`batching_app.waves.run_wave` and
:func:`cache_app.actions.request_invalidation`. Domain objects (LLMClient, RAGEngine) stay free
of the database. Registration fails open: a database error is logged and the request goes on
(the next request retries).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cache_app.core import conf, keys
from cache_app.core.dbread import arun_orm, run_orm
from cache_app.core.lru import LRU
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)


class MasterplanRegistry:
    """Registers masterplan ids once; ``create`` is injectable (default: get_or_create a row)."""

    def __init__(self, *, create: Callable[[str], Any] | None = None, max_size: int | None = None) -> None:
        self._create = create or _create_row
        self._max_size = max_size
        self._seen: LRU[str, None] = LRU(lambda: self.max_size)  # read at every put: a setting may change
        self._lock = threading.Lock()

    @property
    def max_size(self) -> int:
        return int(conf.get("MASTERPLAN_MEMO_SIZE") if self._max_size is None else self._max_size)

    def _known(self, masterplan_id: str) -> bool:
        with self._lock:
            return self._seen.touch(masterplan_id)

    def _remember(self, masterplan_id: str) -> None:
        with self._lock:
            self._seen.put(masterplan_id, None)

    def forget(self, masterplan_id: Any = None) -> None:
        """Drop one id (a deleted row) or every id from the memo; the next sighting registers again."""
        with self._lock:
            if masterplan_id is None:
                self._seen.clear()
            else:
                self._seen.pop(str(keys.normalize_masterplan_id(masterplan_id)), None)

    def ensure(self, masterplan_id: Any) -> bool:
        """Register ``masterplan_id`` if this process has not yet; True if it is known registered.

        Raises ValueError for an id that is not a UUID; None (the global scope) is a no-op.
        """
        normalized = keys.normalize_masterplan_id(masterplan_id)
        if normalized is None:
            return False
        if self._known(normalized):
            return True
        try:
            run_orm(lambda: self._create(normalized))
        except Exception:
            logger.warning(
                "could not register masterplan %s; will retry on its next request", normalized, exc_info=True
            )
            return False
        self._remember(normalized)
        return True

    async def aensure(self, masterplan_id: Any) -> bool:
        """:meth:`ensure` for async callers: the database write runs on the ORM thread."""
        normalized = keys.normalize_masterplan_id(masterplan_id)
        if normalized is None:
            return False
        if self._known(normalized):
            return True
        try:
            await arun_orm(lambda: self._create(normalized))
        except Exception:
            logger.warning(
                "could not register masterplan %s; will retry on its next request", normalized, exc_info=True
            )
            return False
        self._remember(normalized)
        return True


def _create_row(masterplan_id: str) -> None:
    from cache_app.models import Masterplan

    Masterplan.objects.get_or_create(id=masterplan_id, defaults={"name": masterplan_id})


@process_wide
def get_registry() -> MasterplanRegistry:
    return MasterplanRegistry()


def ensure_masterplan_registered(masterplan_id: Any) -> bool:
    """Register a masterplan the first time this process sees it (see the module docstring)."""
    return get_registry().ensure(masterplan_id)


async def aensure_masterplan_registered(masterplan_id: Any) -> bool:
    return await get_registry().aensure(masterplan_id)

"""Keys of retired key-scheme versions (``keys.RETIRED_VERSIONS``): unreachable, deleted in batches.

A version bump (v1 -> v2: hash tags for Redis Cluster) leaves the old keys in Redis: nothing
reads them, and entries expire on their own, but epoch and generation keys never expire.
:func:`reclaim_retired_keys` SCANs every primary for ``<KEY_PREFIX>:<retired version>:*``
and UNLINKs what it finds, one key per command in a pipeline (so keys of different slots are
fine on a Cluster). Run it once after upgrading: ``manage.py reclaim_retired_keys --user ops``.
"""

from __future__ import annotations

from typing import Any

from cache_app.core import conf, keys
from cache_app.core.cluster import scan_pages

SCAN_COUNT = 5_000


def retired_prefixes() -> list[str]:
    """``<KEY_PREFIX>:<version>:`` of every retired version."""
    return [f"{conf.get('KEY_PREFIX')}:{version}:" for version in keys.RETIRED_VERSIONS]


def count_retired_keys(client: Any) -> int:
    return sum(len(page) for base in retired_prefixes() for page in scan_pages(client, f"{base}*", SCAN_COUNT))


def reclaim_retired_keys(client: Any) -> int:
    """Delete every key of a retired version on every primary; returns how many were deleted."""
    removed = 0
    for base in retired_prefixes():
        for page in scan_pages(client, f"{base}*", SCAN_COUNT):
            if not page:
                continue
            pipe = client.pipeline(transaction=False)
            for key in page:
                pipe.unlink(key)
            removed += sum(int(n) for n in pipe.execute())
    return removed

"""Profile the LLM cache's sync and async hit paths with pyinstrument (a profiler, not a benchmark).

    pip install pyinstrument          # anywhere on PYTHONPATH; not a project dependency
    .venv/bin/python benchmarks/profile_hit.py [--calls 50000]

Prints pyinstrument's call tree for N sync ``get`` hits and N async ``aget`` hits on real Redis
(REDIS_URL, else redis://127.0.0.1:6379/12), under a private key prefix removed at the end.
docs/benchmarks.md ("LLM cache hit against a raw GET") has a reading.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgecache_site.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
os.environ["MGECACHE_KEY_PREFIX"] = f"mgecache-profile-{uuid.uuid4().hex[:10]}"

import django  # noqa: E402

django.setup()

from pyinstrument import Profiler  # noqa: E402

from cache_app.core import keys  # noqa: E402
from cache_app.core.redis_client import get_redis  # noqa: E402
from cache_app.llm.cache import LLMPromptCache  # noqa: E402

MODEL = "claude-3-5-sonnet"


async def _ahits(cache: LLMPromptCache, calls: int) -> None:
    for _ in range(calls):
        await cache.aget("profiled prompt", MODEL, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    # Without a migrated database the policies are the documented defaults; mute their warnings.
    logging.getLogger("cache_app.core.policies").setLevel(logging.CRITICAL)
    cache = LLMPromptCache()
    cache.set("profiled prompt", MODEL, 0, "x" * 2048, prompt_tokens=500, completion_tokens=400)
    try:
        assert cache.get("profiled prompt", MODEL, 0) is not None
        for label, run in (
            ("sync get", lambda: [cache.get("profiled prompt", MODEL, 0) for _ in range(args.calls)]),
            ("async aget", lambda: asyncio.run(_ahits(cache, args.calls))),
        ):
            profiler = Profiler(interval=0.0001)
            with profiler:
                run()
            print(f"\n=== {label}: {args.calls} hits ===")
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    finally:
        client = get_redis()
        for key in client.scan_iter(match=f"{keys.prefix()}*", count=1000):
            client.unlink(key)


if __name__ == "__main__":
    main()

"""Redis Sentinel: the documented configuration really works (a private master and sentinel)."""

import shutil
import subprocess
import sys
import threading

import pytest
import redis as redis_lib

from tests.conftest import ROOT, free_port


@pytest.fixture
def sentinel(private_redis, tmp_path):
    binary = shutil.which("redis-server")
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {private_redis.port} 1\n"
        "sentinel down-after-milliseconds mymaster 60000\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf), "--sentinel"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:  # wait for the sentinel's own word that it monitors the master
        if "+monitor master mymaster" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            break
    else:
        pytest.fail("redis sentinel did not start")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


CHILD = """
import asyncio
from django.conf import settings
from cache_app.health import check_redis
from cache_app.llm.cache import LLMPromptCache
from tests.conftest import StaticPolicies

cache = LLMPromptCache(policies=StaticPolicies())
cache.set("through sentinel", "m", 0.0, "answer via sentinel", prompt_tokens=1, completion_tokens=1)
print(cache.get("through sentinel", "m", 0.0).text)
async def main():
    return (await cache.aget("through sentinel", "m", 0.0)).text
print(asyncio.run(main()))
print(check_redis().ok)
print(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS["master_name"])
"""


def test_cache_layers_reach_the_master_through_sentinel(private_redis, sentinel):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "mgecache_site.settings",
        "MGECACHE_IGNORE_DOTENV": "1",
        "DJANGO_DEBUG": "true",
        "REDIS_URL": "redis://mymaster/3",
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel}",
        "MGECACHE_KEY_PREFIX": "mgecache-sentinel-test",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + CHILD],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[:3] == ["answer via sentinel", "answer via sentinel", "True"]
    assert lines[3] == f"sentinel://127.0.0.1:{sentinel}/4 mymaster"
    master = redis_lib.Redis(port=private_redis.port, db=3)
    assert list(master.scan_iter(match="mgecache-sentinel-test:v1:llm:*"))  # the entry lives on the master

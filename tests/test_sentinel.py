"""Redis Sentinel: the documented configuration works; the caches and waves ride through a failover."""

import logging
import shutil
import subprocess
import sys
import threading
import uuid

import pytest
import redis as redis_lib

from cache_app.core import keys
from tests.cluster.conftest import die_with_parent, wait_for
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
    assert list(master.scan_iter(match="mgecache-sentinel-test:v2:llm:*"))  # the entry lives on the master


# --- failover: 1 master + 1 replica + 3 sentinels, SENTINEL FAILOVER mid-traffic ----------------


class SentinelSet:
    """A master, its replica and three sentinels (quorum 2), each a private process; stopped at teardown."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen] = []
        self.master = free_port()
        self.replica = free_port()
        self.sentinels = [free_port() for _ in range(3)]

    def _spawn(self, *args: str) -> None:
        binary = shutil.which("redis-server")
        self.procs.append(
            subprocess.Popen(
                [binary, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
                preexec_fn=die_with_parent,
            )
        )

    def start(self) -> None:
        common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self._spawn("--port", str(self.master), *common)
        self._spawn("--port", str(self.replica), *common, "--replicaof", "127.0.0.1", str(self.master))
        for port in self.sentinels:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.master} 2\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n"
            )
            self._spawn(str(conf), "--sentinel")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)

    def kill_master(self) -> None:
        """SIGKILL the first master (no goodbye: the sentinels notice after down-after-milliseconds)."""
        self.procs[0].kill()
        self.procs[0].wait(timeout=10)

    def sentinel(self, port: int) -> redis_lib.Redis:
        return redis_lib.Redis(port=port, socket_timeout=2, decode_responses=True)

    def master_port(self) -> int:
        return int(self.sentinel(self.sentinels[0]).sentinel_get_master_addr_by_name("mymaster")[1])

    def ready(self) -> bool:
        """The replica is in sync and every sentinel knows it and the two other sentinels."""
        info = redis_lib.Redis(port=self.replica).info("replication")
        if info.get("master_link_status") != "up":
            return False
        for port in self.sentinels:
            client = self.sentinel(port)
            replicas = client.sentinel_slaves("mymaster")
            if (
                not replicas
                or "s_down" in str(replicas[0].get("flags"))
                or len(client.sentinel_sentinels("mymaster")) < 2
            ):
                return False
        return True


@pytest.fixture
def sentinel_set(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed")
    sentinels = SentinelSet(tmp_path)
    sentinels.start()
    try:
        wait_for(sentinels.ready, "the replica and the sentinels", deadline=60)
        yield sentinels
    finally:
        sentinels.stop()


class WaveLoop:
    """Waves created, marked and read back through ``store`` in a thread until stopped."""

    def __init__(self, store) -> None:
        self.store = store
        self.stop = threading.Event()
        self.read: list[dict | None] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from tests.cluster.test_cluster_failover import write_and_read_wave

        while not self.stop.is_set():
            try:
                self.read.append(write_and_read_wave(str(uuid.uuid4()), self.store))
            except BaseException as exc:  # the point of the test: nothing may reach a caller
                self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "a wave operation hung"


@pytest.mark.slow
def test_sentinel_failover_mid_traffic(sentinel_set):
    """Callers get answers through a SENTINEL FAILOVER (misses in the gap), nothing raises, caching resumes.

    Waves go on through it too, and every wave written reads back. (A coordinated failover shows
    no gap to a sequential client: the pool replaces the connections the old master drops, asking
    the sentinels for the new one; the master's death below does.)
    """
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    from batching_app.waves import WaveStore
    from cache_app.llm.cache import LLMPromptCache
    from tests.cluster.test_cluster_failover import Traffic
    from tests.conftest import StaticPolicies

    addresses = [("127.0.0.1", port) for port in sentinel_set.sentinels]
    timeouts = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
    client = Sentinel(addresses, **timeouts).master_for("mymaster", **timeouts)
    wave_client = Sentinel(addresses, **timeouts).master_for("mymaster", retry=Retry(NoBackoff(), 0), **timeouts)
    waves = WaveLoop(WaveStore(wave_client))

    def async_client():  # one per event loop, as the layers' own factory does
        return AsyncSentinel(addresses, **timeouts).master_for("mymaster", **timeouts)

    cache = LLMPromptCache(client, policies=StaticPolicies(), async_redis=async_client)
    scopes = [str(uuid.uuid4()) for _ in range(3)]
    load = Traffic(cache, scopes)
    load.start()
    waves.thread.start()
    try:
        wait_for(lambda: load.hits_of(scopes[0]) > 20 and waves.read, "warm traffic")
        old_master = sentinel_set.master_port()
        sentinel_set.sentinel(sentinel_set.sentinels[0]).execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_for(lambda: sentinel_set.master_port() != old_master, "the sentinels to promote the replica")
        for scope in scopes:
            before = load.hits_of(scope)
            wait_for(lambda s=scope, b=before: load.hits_of(s) > b + 10, "hits on the new master")
        written = len(waves.read)
        wait_for(lambda: len(waves.read) > written + 10, "waves on the new master")
    finally:
        load.finish()
        waves.finish()
    assert load.errors == []
    assert load.answers == load.calls
    assert waves.errors == []
    assert all(f is not None and (f["s:0"], f["s:1"]) == ("failed", "pending") for f in waves.read)
    new_master = redis_lib.Redis(port=sentinel_set.master_port())
    assert new_master.info("replication")["role"] == "master"
    assert list(new_master.scan_iter(match=f"{keys.prefix()}llm:*"))  # entries written on the new master


@pytest.mark.slow
def test_a_wave_rides_out_the_masters_death(sentinel_set, caplog):
    """A wave written right after the master is SIGKILLed is stored on the promoted replica, no exception.

    redis-py's own retries are off for this client, so that the wave store's retries are what rides the
    gap (about 2-3 s here: 1 s to notice, then the sentinels' election and the promotion).
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    from batching_app.waves import WaveStore
    from tests.cluster.test_cluster_failover import write_and_read_wave

    addresses = [("127.0.0.1", port) for port in sentinel_set.sentinels]
    timeouts = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
    client = Sentinel(addresses, **timeouts).master_for("mymaster", retry=Retry(NoBackoff(), 0), **timeouts)
    store = WaveStore(client)
    assert write_and_read_wave(str(uuid.uuid4()), store) is not None
    old_master = sentinel_set.master_port()
    sentinel_set.kill_master()
    with caplog.at_level(logging.INFO, logger="batching_app.waves"):
        fields = write_and_read_wave(str(uuid.uuid4()), store)
    assert any("retrying" in r.getMessage() for r in caplog.records), "the wave was written before the kill took"
    assert fields is not None
    assert (fields["s:0"], fields["s:1"], fields["done"]) == ("failed", "pending", "1")
    assert sentinel_set.master_port() != old_master

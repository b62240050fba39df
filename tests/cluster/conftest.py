"""A real Redis Cluster (3 primaries, 3 replicas) from Debian's redis-server, on free ports.

``redis-cli --cluster create ... --cluster-replicas 1`` builds it; the fixture waits (with a
deadline, polling the servers' own state) until every node reports ``cluster_state:ok`` and
every replica's link to its primary is up. Processes and their temporary directory are
removed at teardown. The cache layers are pointed at it through MGECACHE['REDIS_CLUSTER_NODES'].
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib

from cache_app.core import keys
from cache_app.core.state import reset_process_state
from tests.conftest import IN_CI

NODE_TIMEOUT_MS = 1000  # how long a silent primary takes to be failed over (cluster-node-timeout)
START_DEADLINE = 60.0


def wait_for(condition: Callable[[], object], what: str, deadline: float = 30.0, step: float = 0.05) -> object:
    """Poll ``condition`` until it returns a truthy value; fail the test with ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while True:
        try:
            value = condition()
        except (redis_lib.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(step)  # a polling step, not a timing assumption


def die_with_parent() -> None:
    """preexec_fn: the server gets SIGKILL if the test process dies (even by os._exit on a timeout)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _port_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            port = port - 20000 if port > 30000 else port
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


@dataclass
class Cluster:
    directory: Path
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def node(self, port: int) -> redis_lib.Redis:
        client = redis_lib.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
        for command in ("CLUSTER INFO", "CLUSTER NODES"):  # the raw text, not redis-py's parse
            client.set_response_callback(command, lambda response, **_: response)
        return client

    def alive(self) -> list[int]:
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def start_node(self, port: int) -> None:
        binary = shutil.which("redis-server")
        assert binary
        self.procs[port] = subprocess.Popen(
            [
                binary,
                "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory),
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--logfile", f"redis-{port}.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip

    def topology(self) -> dict[int, dict[str, object]]:
        """port -> {"role": "master"|"slave", "primary": port of its primary (replicas), "id": node id}."""
        port = self.alive()[0]
        raw = self.node(port).execute_command("CLUSTER NODES")
        text = raw.decode() if isinstance(raw, bytes) else raw
        rows = [line.split() for line in text.strip().splitlines()]
        by_id = {row[0]: int(row[1].split("@")[0].rsplit(":", 1)[1]) for row in rows}
        out: dict[int, dict[str, object]] = {}
        for row in rows:
            flags = row[2].split(",")
            if "fail" in flags or "fail?" in flags or "noaddr" in flags:
                continue
            role = "master" if "master" in flags else "slave"
            out[by_id[row[0]]] = {"role": role, "primary": by_id.get(row[3]), "id": row[0]}
        return out

    def primaries(self) -> list[int]:
        return sorted(p for p, info in self.topology().items() if info["role"] == "master")

    def replica_of(self, primary: int) -> int:
        """A replica of ``primary`` (waits until the node's view lists one: gossip after a failover)."""

        def find() -> int | None:
            return next((p for p, info in self.topology().items() if info["primary"] == primary), None)

        return int(wait_for(find, f"a replica of {primary}"))  # type: ignore[arg-type]

    def primary_of_slot(self, slot: int) -> int:
        for start, end, primary, *_ in self.node(self.alive()[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise LookupError(slot)

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and maps slots alike, and every live replica's link is up."""
        views = {
            str(sorted((s[0], s[1], int(s[2][1])) for s in self.node(p).execute_command("CLUSTER SLOTS")))
            for p in self.alive()
        }
        if len(views) != 1:
            return False
        for port in self.alive():
            client = self.node(port)
            if b"cluster_state:ok" not in client.execute_command("CLUSTER INFO"):
                return False
            info = client.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def start_cluster(directory: Path) -> Cluster:
    cli = shutil.which("redis-cli")
    cluster = Cluster(directory)
    cluster.ports = [_port_pair() for _ in range(6)]
    try:
        for port in cluster.ports:
            cluster.start_node(port)
        for port in cluster.ports:
            wait_for(lambda p=port: cluster.node(p).ping(), f"redis-server on {port}", START_DEADLINE)
        subprocess.run(
            [cli, "--cluster", "create", *cluster.seeds, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(cluster.healthy, "the cluster to be ok with its replicas in sync", START_DEADLINE)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A private 3-primary, 3-replica cluster for the module (processes and files removed after)."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        if IN_CI:
            pytest.fail("CI=true but redis-server / redis-cli are not installed")
        pytest.skip("needs Debian's redis-server and redis-cli")
    directory = tmp_path_factory.mktemp("redis-cluster")
    cluster = start_cluster(directory)
    yield cluster
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def on_cluster(redis_cluster, settings, _isolated_mgecache) -> Cluster:
    """Point this test's cache layers (and process-wide clients) at the cluster."""
    settings.MGECACHE = {**settings.MGECACHE, "REDIS_CLUSTER_NODES": redis_cluster.seeds}
    reset_process_state()
    return redis_cluster


def masterplans_per_primary(cluster: Cluster) -> dict[int, str]:
    """One masterplan UUID whose keys land on each primary (so a test spans every node)."""
    wait_for(cluster.healthy, "the cluster to be ok")
    ranges = [
        (int(start), int(end), int(primary[1]))
        for start, end, primary, *_ in cluster.node(cluster.alive()[0]).execute_command("CLUSTER SLOTS")
    ]
    primaries = {port for _, _, port in ranges}
    found: dict[int, str] = {}
    for _ in range(10_000):
        mp = str(uuid.uuid4())
        slot = keys.key_slot(mp)
        found.setdefault(next(port for start, end, port in ranges if start <= slot <= end), mp)
        if set(found) == primaries:
            return found
    raise AssertionError(f"no masterplan found for every primary of {ranges}")

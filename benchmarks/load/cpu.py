"""Where a load-test case's CPU went: the busy share of the CPUs the run may use, and seconds per role, from /proc.

A :class:`CpuMeter` is started just before locust and stopped just after it. Roles are the
processes a :class:`~benchmarks.load.run.Stack` spawned (``celery-1`` counts as ``celery``), each
with its descendants, plus every ``postgres`` process, a Redis Cluster's nodes (``cluster``; a
SIGKILLed node's seconds are lost with it), and locust itself (``locust``, from this script's
reaped children: it has exited by ``stop``).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(stat: str | None = None, cpus: set[int] | None = None) -> tuple[int, int]:
    """(busy, total) jiffies since boot of the CPUs this process may run on, from /proc/stat.

    Under ``taskset`` the load test's processes share only the CPUs they are pinned to, so the
    busy share is of those, not of the whole machine (``stat`` and ``cpus`` are for tests).
    """
    stat = Path("/proc/stat").read_text() if stat is None else stat
    cpus = os.sched_getaffinity(0) if cpus is None else cpus
    busy = total = 0
    for line in stat.splitlines():
        name, _, values = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in values.split()]
        idle = fields[3] + fields[4]  # idle + iowait
        busy, total = busy + sum(fields) - idle, total + sum(fields)
    return busy, total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The percent of the CPU time (of the CPUs ``cpu_ticks`` read) that was busy between two readings."""
    return 100.0 * (after[0] - before[0]) / max(1, after[1] - before[1])


def process_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0 if it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/<pid>/task/*/children."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return pids


def named(comm: str) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == comm:
                pids.append(int(stat.parent.name))
        except OSError:
            continue
    return pids


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spent_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings by the processes alive at the second (0 for the gone)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items() if seconds)


class CpuMeter:
    """The CPU a case used between ``start`` and ``stop``: the busy share and seconds per role."""

    def __init__(self, stack: Any, cluster: Any = None) -> None:
        self.stack, self.cluster = stack, cluster

    def _read(self) -> dict[str, Any]:
        roles: dict[str, float] = {}
        for name, proc in zip(self.stack.names, self.stack.procs, strict=True):
            role = name.rstrip("0123456789").rstrip("-")
            roles[role] = roles.get(role, 0.0) + sum(process_seconds(pid) for pid in tree(proc.pid))
        # Per process: a backend that exits between the readings takes its seconds with it, and
        # one that starts counts only from its start (a sum of totals could even go negative).
        postgres = {pid: process_seconds(pid) for pid in named("postgres")}
        nodes = {} if self.cluster is None else {p.pid: process_seconds(p.pid) for p in self.cluster.procs.values()}
        locust = _children_seconds()
        return {"ticks": cpu_ticks(), "roles": roles, "postgres": postgres, "nodes": nodes, "locust": locust}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> tuple[float, dict[str, float]]:
        """(percent of the machine busy, CPU seconds per role) since ``start``."""
        before, after = self._before, self._read()
        roles = {role: spent - before["roles"].get(role, 0.0) for role, spent in after["roles"].items()}
        roles["locust"] = after["locust"] - before["locust"]
        roles["cluster"] = spent_between(before["nodes"], after["nodes"])
        roles["postgres"] = spent_between(before["postgres"], after["postgres"])
        return busy_share(before["ticks"], after["ticks"]), roles

"""Where ``run.py`` runs a case: the knee (``<case>@knee``) and the rate that holds a busy share
(``<case>@busy<P>``), found from short probes. Pure functions of what the probes return, so
tests/benchmarks drives them with fake probes.
"""

from __future__ import annotations

from collections.abc import Callable

# ``<case>@knee``: short probes at these user counts find the fewest users that keep the cores
# KNEE_BUSY % busy, "the load that saturates the cores", which moves with the machine's speed.
KNEE_USERS = (2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48)
KNEE_BUSY = 90.0
# ``<case>@busy<P>``: the knee's users, paced (each on a schedule of rate/users requests/s) so that the cores are
# P % busy within PACE_TOLERANCE points, in at most PACE_STEPS probes. The closed loop's users only step
# in coarse counts (86 % at 12 users, 97 % at 16), and the hit tail grows fast in those last points, so a
# figure compared across runs or machines needs the busy share held, not landed on.
PACE_TOLERANCE = 2.5
PACE_STEPS = 5


def find_knee(probe: Callable[[int], tuple[float, float]]) -> tuple[int, list[dict[str, float]]]:
    """The fewest of KNEE_USERS that keep the cores KNEE_BUSY % busy, and every probe made.

    ``probe(users)`` runs the load briefly and returns (CPU busy %, requests/s). If no count
    gets there (a machine with cores to spare), the one that gave the most requests/s.
    """
    probes: list[dict[str, float]] = []
    for users in KNEE_USERS:
        busy, rps = probe(users)
        probes.append({"users": users, "busy": busy, "rps": rps})
        if busy >= KNEE_BUSY:
            return users, probes
    return int(max(probes, key=lambda row: row["rps"])["users"]), probes


def next_rate(points: list[tuple[float, float]], target: float) -> float:
    """The requests/s expected to make the cores ``target`` % busy, from (requests/s, busy %) seen so far.

    Linear between the busiest point below the target and the least busy at or above it (the CPU a
    request costs is about constant below saturation); the midpoint where noise inverts them.
    """
    below = [p for p in points if p[1] < target]
    above = [p for p in points if p[1] >= target]
    if not above:
        return max(below)[0] * 1.15
    if not below:
        return min(above)[0] * 0.85
    (r0, b0), (r1, b1) = max(below), min(above)
    if r1 <= r0:
        return (r0 + r1) / 2
    return r0 + (r1 - r0) * (target - b0) / (b1 - b0)


def find_rate(
    probe: Callable[[float], tuple[float, float]], target: float, seen: list[dict[str, float]]
) -> tuple[float, list[dict[str, float]]]:
    """The offered requests/s that keep the cores ``target`` % busy, and the probes made.

    ``seen``: the knee's probes (closed loop: busy % against requests/s); ``probe(rate)`` runs the
    knee's users paced to ``rate`` briefly and returns (busy %, requests/s). A paced probe enters the
    interpolation at the rate it offered, not the rate it achieved: a paced run completes a few % fewer
    than it offers, and interpolating in achieved requests/s asks for the same offer again and again.
    If no probe lands within PACE_TOLERANCE after PACE_STEPS, the rate of the one closest to the target.
    """
    points = [(p["rps"], p["busy"]) for p in seen]
    probes: list[dict[str, float]] = []
    for _ in range(PACE_STEPS):
        rate = round(next_rate(points, target), 1)
        busy, rps = probe(rate)
        probes.append({"rate": rate, "busy": busy, "rps": rps})
        if abs(busy - target) <= PACE_TOLERANCE:
            return rate, probes
        points.append((rate, busy))
    return min(probes, key=lambda p: abs(p["busy"] - target))["rate"], probes

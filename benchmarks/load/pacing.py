"""The open loop's pacing: a locust ``wait_time`` that keeps each user on a fixed schedule."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# How far behind schedule a user may fall before it drops the rest: past it the servers cannot take the
# rate, and a longer backlog would only burst at them once they can.
BACKLOG = 0.5


def on_schedule(rate: float, clock: Callable[[], float] = time.monotonic) -> Callable[[Any], float]:
    """A wait_time starting a user's requests at fixed times ``1/rate`` s apart.

    locust's ``constant_throughput`` counts the next period from the end of the last wait, so a user
    that a 0.1 s miss held up never makes the time up: with the load test's mix it caps a user at about
    16 requests/s whatever the rate asked. Here a late user starts at once, and again, until it is back
    on schedule, so the offered rate is the one asked for, up to what the servers can take.
    """
    period = 1.0 / rate

    def wait_time(user: Any) -> float:
        now = clock()
        user.next_start = max(getattr(user, "next_start", now) + period, now - max(period, BACKLOG))
        return max(0.0, user.next_start - now)

    return wait_time

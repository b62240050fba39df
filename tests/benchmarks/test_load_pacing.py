"""The open loop's pacing: each locust user on a fixed schedule, catching up after a slow request."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.load.pacing import BACKLOG, on_schedule


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_user_on_time_waits_out_the_rest_of_its_period():
    clock, user = Clock(), SimpleNamespace()
    wait = on_schedule(10.0, clock)  # every 0.1 s
    assert wait(user) == pytest.approx(0.1)  # the first request has just returned at once
    clock.now += 0.1 + 0.02  # waited, then a 20 ms request
    assert wait(user) == pytest.approx(0.08)


def test_a_user_held_up_by_a_slow_request_catches_up_without_waiting():
    clock, user = Clock(), SimpleNamespace()
    wait = on_schedule(10.0, clock)
    wait(user)
    clock.now += 0.1 + 0.25  # a miss held this user 0.25 s: 2.5 periods
    starts_at_once = 0
    while wait(user) == 0.0:  # each call is one request started (taking no time here)
        starts_at_once += 1
    assert starts_at_once == 2  # the schedule's starts at 100.2 and 100.3 come at once
    assert round(user.next_start - clock.now, 6) == 0.05  # then back on schedule: 100.4


def test_a_user_far_behind_drops_the_backlog_past_half_a_second():
    clock, user = Clock(), SimpleNamespace()
    wait = on_schedule(100.0, clock)  # every 10 ms
    wait(user)
    clock.now += 3.0  # the servers could not take the rate for 3 s: 300 starts behind
    starts_at_once = 0
    while wait(user) == 0.0:
        starts_at_once += 1
    assert starts_at_once == round(BACKLOG / 0.01)  # a burst of BACKLOG's worth, not of 3 s

"""The load test's report: locust's printed summary parsed, and the hit tail against the same run's baseline."""

from __future__ import annotations

from benchmarks.load.cpu import busy_share, cpu_ticks, spent_between
from benchmarks.load.report import baseline_report, knee_report, lookup_quantile, parse_metrics, read_stats
from benchmarks.load.search import KNEE_USERS, PACE_STEPS, PACE_TOLERANCE, find_knee, find_rate, next_rate

# locust 2.47's summary (trimmed to the columns' layout), as run.py reads it from stdout.
SUMMARY = """\
Type     Name       # reqs      # fails |    Avg     Min     Max    Med |   req/s  failures/s
--------|----------|-------|-------------|-------|-------|-------|-------|--------|-----------
POST     llm hit      5372     0(0.00%) |    173       9    1512    150 |   89.46        0.00
POST     llm miss     1428     3(0.21%) |    487     118    1940    470 |   23.78        0.05
--------|----------|-------|-------------|-------|-------|-------|-------|--------|-----------
         Aggregated   6800     3(0.04%) |    249       9    3881    180 |  113.24        0.05
Response time percentiles (approximated)
Type     Name          50%    66%    75%    80%    90%    95%    98%    99%  99.9% 99.99%   100% # reqs
--------|-----------|------|------|------|------|------|------|------|------|------|------|------|------
POST     llm hit       150    190    210    220    270    340    460    570   1400   1500   1500   5372
POST     llm miss      470    530    560    580    650    750    880   1000   1700   1900   1900   1428
--------|-----------|------|------|------|------|------|------|------|------|------|------|------|------
         Aggregated    180    240    310    380    510    610    760    910   2100   3900   3900   6800
"""


def test_the_summary_gives_requests_failures_and_percentiles_per_kind():
    rows = read_stats(SUMMARY)
    assert rows["llm hit"] == {"requests": 5372.0, "failures": 0.0, "rps": 89.46, "p50_ms": 150.0, "p99_ms": 570.0}
    assert rows["llm miss"]["failures"] == 3.0
    assert rows["Aggregated"]["requests"] == 6800.0


def test_the_hit_p99_is_reported_as_a_multiple_of_the_lone_users():
    result = {
        "case": "single, 24 users",
        "cpu": 97.0,
        "stats": read_stats(SUMMARY),
        "baseline": {"p50_ms": 9.0, "p99_ms": 24.0},
    }
    table = baseline_report([result, {**result, "case": "no baseline", "baseline": {}}])
    assert "| single, 24 users | 97 % | 9 / 24 | 150 / 570 | 23.8 |" in table
    assert "no baseline" not in table  # a case whose baseline failed is left out, not divided by zero


def test_the_knee_is_the_fewest_users_that_keep_the_machine_busy():
    busy = {2: 40.0, 4: 64.0, 6: 83.0, 8: 93.0, 12: 97.0}
    asked: list[int] = []

    def probe(users: int) -> tuple[float, float]:
        asked.append(users)
        return busy[users], users * 20.0

    users, probes = find_knee(probe)
    assert users == 8
    assert asked == [2, 4, 6, 8]  # no probe past the knee
    assert probes[-1] == {"users": 8, "busy": 93.0, "rps": 160.0}


def test_without_a_busy_enough_count_the_knee_is_the_most_throughput():
    users, probes = find_knee(lambda users: (50.0, 500.0 - abs(users - 12) * 10))
    assert users == 12
    assert len(probes) == len(KNEE_USERS)


# One web worker's /metrics page (trimmed): what the runner compares with what locust sent.
METRICS = """\
# HELP django_http_requests_total_by_view_transport_method_total Count of requests by view, transport, method.
django_http_requests_total_by_view_transport_method_total{method="POST",transport="http",view="llm-generate"} 700.0
django_http_requests_total_by_view_transport_method_total{method="POST",transport="http",view="rag-query"} 100.0
django_http_requests_total_by_view_transport_method_total{method="GET",transport="http",view="healthz"} 9.0
mgecache_cache_lookup_seconds_bucket{cache_layer="llm",le="0.001"} 600.0
mgecache_cache_lookup_seconds_bucket{cache_layer="llm",le="0.01"} 695.0
mgecache_cache_lookup_seconds_bucket{cache_layer="llm",le="+Inf"} 700.0
mgecache_cache_lookup_seconds_bucket{cache_layer="rag",le="0.001"} 100.0
mgecache_cache_fail_open_total{cache_layer="llm",operation="get"} 3.0
mgecache_cache_fail_open_total{cache_layer="rag",operation="get"} 2.0
mgecache_redis_outage_seconds_count 1.0
mgecache_redis_outage_seconds_sum 2.5
mgecache_redis_timeouts_verified_total{result="answered"} 4.0
mgecache_redis_timeouts_verified_total{result="failed"} 1.0
"""


def test_the_metrics_page_gives_the_api_requests_and_the_fail_open_calls():
    totals = parse_metrics(METRICS)
    assert totals["api_requests"] == 800.0  # the health check is not an API request
    assert (totals["fail_open"], totals["outages"], totals["outage_seconds"]) == (5.0, 1.0, 2.5)
    assert totals["stalled_timeouts"] == 4.0  # only the timeouts the ping found Redis answering


def test_the_server_side_lookup_quantiles_are_bucket_bounds_of_the_llm_layer():
    totals = parse_metrics(METRICS)
    assert lookup_quantile(totals, 0.5) == 1.0  # ms: 600 of 700 lookups within 1 ms
    assert lookup_quantile(totals, 0.99) == 10.0  # 695 of 700 within 10 ms, the RAG layer's bucket left out


def test_each_case_run_at_the_knee_lists_its_probes():
    probes = [{"users": 2, "busy": 40.0, "rps": 50.0}, {"users": 4, "busy": 91.0, "rps": 99.0}]
    lines = knee_report([{"case": "single, 4 users (the knee)", "knee": probes}, {"case": "cluster, 8 users"}], 12)
    assert lines == "single, 4 users (the knee): knee probes (12 s each): 2 users 40 % 50/s; 4 users 91 % 99/s"


STAT = """\
cpu  300 0 100 500 100 0 0 0 0 0
cpu0 100 0 50 300 50 0 0 0 0 0
cpu1 200 0 50 200 50 0 0 0 0 0
intr 12345
"""


def test_the_busy_share_counts_only_the_cpus_the_run_is_pinned_to():
    assert cpu_ticks(STAT, {0, 1}) == (400, 1000)  # the whole machine: busy = all but idle and iowait
    assert cpu_ticks(STAT, {1}) == (250, 500)  # under taskset -c 1
    assert busy_share(cpu_ticks(STAT, {0}), cpu_ticks(STAT.replace("cpu0 100", "cpu0 200"), {0})) == 100.0


def test_a_process_gone_between_the_readings_takes_its_seconds_with_it():
    # pid 1 ran on (2 s), pid 2 exited (its 3 s are not subtracted), pid 3 started (1 s).
    assert spent_between({1: 5.0, 2: 3.0}, {1: 7.0, 3: 1.0}) == 3.0


def test_a_paced_run_interpolates_the_rate_that_holds_the_busy_share():
    # The knee's probes: busy % against requests/s, about linear below saturation.
    knee = [{"users": 8, "busy": 70.0, "rps": 200.0}, {"users": 12, "busy": 95.0, "rps": 300.0}]
    offered: list[float] = []

    def probe(rate: float) -> tuple[float, float]:
        offered.append(rate)
        return 30.0 + rate / 5, rate  # cheaper per request than the knee's probes said

    rate, probes = find_rate(probe, 85.0, knee)
    assert offered[0] == 260.0  # 70 % + (85 - 70) / (95 - 70) of the way from 200 to 300 requests/s
    assert probes[0]["busy"] == 82.0  # 3 points short: interpolate again between 260/s and 300/s
    assert offered[1] == 269.2
    assert len(probes) == 2
    assert abs(probes[1]["busy"] - 85.0) <= PACE_TOLERANCE
    assert rate == 269.2


def test_a_paced_probe_that_completes_less_than_it_offers_still_converges():
    # As seen on a Cluster: a paced run completes ~96.5 % of its offer, and the busy share follows what
    # completed. Interpolated in completed requests/s, every step asked for ~469/s again and stayed 82 %.
    knee = [{"users": 12, "busy": 74.0, "rps": 385.0}, {"users": 16, "busy": 86.0, "rps": 474.0}]
    offered: list[float] = []

    def probe(rate: float) -> tuple[float, float]:
        offered.append(rate)
        done = 0.965 * rate
        return 82.0 + (done - 453.0) * 4 / 21, done

    rate, probes = find_rate(probe, 85.0, knee)
    assert offered[0] == 466.6  # 74 % + 11/12 of the way from 385/s to 474/s
    assert offered[1] > 470.0  # the next offer goes past the first, not back to the same
    assert abs(probes[-1]["busy"] - 85.0) <= PACE_TOLERANCE
    assert rate == offered[-1]


def test_a_rate_that_never_lands_in_the_band_falls_back_to_the_closest_probe():
    knee = [{"users": 8, "busy": 70.0, "rps": 200.0}, {"users": 12, "busy": 95.0, "rps": 300.0}]
    noisy = iter([80.0, 92.0, 79.0, 91.0, 88.0])
    rate, probes = find_rate(lambda rate: (next(noisy), rate), 85.0, knee)
    assert len(probes) == PACE_STEPS
    assert rate == probes[-1]["rate"]  # 88 %: 3 points off, the closest of the five


def test_the_next_rate_brackets_the_target_and_survives_noise():
    assert next_rate([(100.0, 50.0), (200.0, 70.0)], 85.0) == 200.0 * 1.15  # nothing busy enough yet: go up
    assert next_rate([(300.0, 95.0)], 85.0) == 300.0 * 0.85  # nothing below the target: go down
    assert next_rate([(250.0, 80.0), (240.0, 90.0)], 85.0) == 245.0  # inverted by noise: the midpoint


def test_a_paced_case_lists_its_pace_probes_after_the_knee():
    result = {
        "case": "single, 12 users at 260/s (paced to 85 % busy)",
        "knee": [{"users": 12, "busy": 95.0, "rps": 300.0}],
        "pace": [{"rate": 260.0, "busy": 84.4, "rps": 259.0}],
    }
    assert knee_report([result], 12).endswith("12 users 95 % 300/s; paced: 260/s offered 84 % 259/s")

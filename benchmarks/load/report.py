"""The load test's report: locust's summary and the servers' ``/metrics`` read, and the tables printed.

``run.py`` drives the load; everything here is a pure function of what it collected, so the tables
are tested on recorded output (tests/benchmarks/test_load_report.py).
"""

from __future__ import annotations

# The API views whose requests the servers must count as locust sent them.
API_VIEWS = ("generate", "rag", "wave")


def parse_metrics(text: str) -> dict[str, float]:
    """What the report needs from one ``/metrics`` page (Prometheus text format), summed per name."""
    totals: dict[str, float] = {
        "api_requests": 0.0,
        "fail_open": 0.0,
        "outages": 0.0,
        "outage_seconds": 0.0,
        "stalled_timeouts": 0.0,
    }
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("django_http_requests_total_by_view_transport_method_total"):
            totals[name] = totals.get(name, 0.0) + float(value)
            if any(view in name for view in API_VIEWS):
                totals["api_requests"] += float(value)
        elif name.startswith('mgecache_cache_lookup_seconds_bucket{cache_layer="llm"'):
            totals[name] = totals.get(name, 0.0) + float(value)  # per bucket (le), summed over workers
        elif name.startswith("mgecache_cache_fail_open_total"):
            totals["fail_open"] += float(value)
        elif name.startswith("mgecache_redis_outage_seconds_count"):
            totals["outages"] += float(value)
        elif name.startswith("mgecache_redis_outage_seconds_sum"):
            totals["outage_seconds"] += float(value)
        elif name.startswith("mgecache_redis_timeouts_verified_total") and 'result="answered"' in name:
            totals["stalled_timeouts"] += float(value)  # a read timed out, but Redis answered the ping
    return totals


def read_stats(summary: str) -> dict[str, dict[str, float]]:
    """Per kind: requests, failures, req/s, p50, p99, from locust's final summary on stdout.

    Its CSV files are written before the users' last requests finish (--stop-timeout); the
    printed summary comes after, so it counts every request the servers answered.
    """
    rows: dict[str, dict[str, float]] = {}
    table = 0
    for line in summary.splitlines():
        if line.startswith("Type "):
            table += 1
            continue
        parts = line.split()
        if not parts or parts[0] not in ("POST", "Aggregated"):
            continue
        tokens = parts[1:]
        split = next(i for i, token in enumerate(tokens) if token[0].isdigit())
        name = "Aggregated" if parts[0] == "Aggregated" else " ".join(tokens[:split])
        numbers = tokens[split:]
        if table == 1:  # reqs, fails(pct), |, avg, min, max, med, |, req/s, failures/s
            cells = line.split("|")
            first = cells[0].split()
            rows[name] = {
                "requests": float(first[-2]),
                "failures": float(first[-1].split("(")[0]),
                "rps": float(cells[2].split()[0]),
            }
        elif table == 2 and name in rows:  # 50% 66% 75% 80% 90% 95% 98% 99% 99.9% 99.99% 100% reqs
            values = [float(v) for v in numbers[-12:]]
            rows[name].update(p50_ms=values[0], p99_ms=values[7])
    return rows


def lookup_quantile(server: dict[str, float], q: float) -> float:
    """The q-quantile (ms, bucket upper bound) of the LLM cache lookups inside the web workers."""
    buckets = sorted(
        (float(name.split('le="')[1].split('"')[0]), count)
        for name, count in server.items()
        if name.startswith("mgecache_cache_lookup_seconds_bucket")
    )
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound * 1000
    return float("nan")


def report(results: list[dict]) -> str:
    lines = [
        "| case | CPU busy | req/s | LLM hit p50 / p99 (ms) | LLM miss p50 / p99 | RAG p50 / p99 "
        "| wave p50 / p99 | errors "
        "| requests sent / counted by /metrics | fail-open calls | outages (s) "
        "| LLM lookup p50 / p99 in the server (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        s, srv = result["stats"], result["server"]
        total = s["Aggregated"]

        def pair(name: str, s: dict = s) -> str:
            row = s.get(name)
            return "-" if row is None else f"{row['p50_ms']:.0f} / {row['p99_ms']:.0f}"

        outage = f"{srv['outages']:.0f} ({srv['outage_seconds']:.2f})"
        if result["failure"]:
            outage += f"; promoted after {result['failure'].get('promoted_after_s')} s"
        lines.append(
            f"| {result['case']} | {result['cpu']:.0f} % | {total['rps']:.0f} | {pair('llm hit')} | {pair('llm miss')} "
            f"| {pair('rag query')} "
            f"| {pair('wave')} | {total['failures']:.0f} | {total['requests']:.0f} / {srv['api_requests']:.0f} "
            f"| {srv['fail_open']:.0f} | {outage} "
            f"| ≤ {lookup_quantile(srv, 0.5):g} / ≤ {lookup_quantile(srv, 0.99):g} |"
        )
    return "\n".join(lines)


def baseline_report(results: list[dict]) -> str:
    """The hit tail under load as a multiple of a lone user's, both measured in the same case.

    A machine twice as slow doubles both, so the ratio travels between machines where the
    milliseconds do not (the issue's 10 ms was set on a machine whose lone hit p99 was ~2 ms).
    """
    lines = [
        "| case | CPU busy | lone hit p50 / p99 (ms) | hit p50 / p99 under load (ms) | p99 under load / lone p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        lone, hit = result.get("baseline") or {}, result["stats"].get("llm hit")
        if not lone or not hit:
            continue
        lines.append(
            f"| {result['case']} | {result['cpu']:.0f} % | {lone['p50_ms']:.0f} / {lone['p99_ms']:.0f} "
            f"| {hit['p50_ms']:.0f} / {hit['p99_ms']:.0f} | {hit['p99_ms'] / max(lone['p99_ms'], 1.0):.1f} |"
        )
    return "\n".join(lines)


def cpu_report(results: list[dict]) -> str:
    """Where the CPU went: seconds per role over the case, and the web workers' share per request."""
    lines = [
        "| case | gunicorn (s) | celery (s) | redis, with the Cluster's nodes (s) | postgres (s) | locust (s) "
        "| gunicorn ms per request "
        "| timeouts with Redis answering |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        roles, sent = result.get("roles", {}), result["stats"]["Aggregated"]["requests"]
        redis_seconds = roles.get("redis", 0.0) + roles.get("cluster", 0.0)
        lines.append(
            f"| {result['case']} | {roles.get('gunicorn', 0):.1f} | {roles.get('celery', 0):.1f} "
            f"| {redis_seconds:.1f} | {roles.get('postgres', 0):.1f} | {roles.get('locust', 0):.1f} "
            f"| {1000 * roles.get('gunicorn', 0) / max(1, sent):.2f} "
            f"| {result['server'].get('stalled_timeouts', 0):.0f} |"
        )
    return "\n".join(lines)


def knee_report(results: list[dict], seconds: int) -> str:
    """One line per case run ``@knee`` or ``@busy<P>``: every probe's users (or offered rate), CPU busy share
    and requests/s."""
    lines = []
    for result in results:
        if result.get("knee"):
            probes = "; ".join(f"{p['users']:.0f} users {p['busy']:.0f} % {p['rps']:.0f}/s" for p in result["knee"])
            line = f"{result['case']}: knee probes ({seconds} s each): {probes}"
            if result.get("pace"):
                paced = "; ".join(f"{p['rate']:g}/s offered {p['busy']:.0f} % {p['rps']:.0f}/s" for p in result["pace"])
                line += f"; paced: {paced}"
            lines.append(line)
    return "\n".join(lines)

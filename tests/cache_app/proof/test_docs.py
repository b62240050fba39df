"""The caching guide and the Grafana dashboard name only metrics that exist, and every metric is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from cache_app.core import metrics

ROOT = Path(__file__).resolve().parents[3]
GUARD = "mgecache_rag_similarity_rejections_total"  # added by the similarity guard where it is deployed


def defined() -> dict[str, str]:
    """Exported sample names of every metric in cache_app.core.metrics -> its kind."""
    names = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names[f"{value._name}_total"] = "counter"
        elif isinstance(value, (Gauge, Histogram)):
            names[value._name] = type(value).__name__.lower()
    return names


def test_every_metric_has_a_row_and_a_query_in_the_guide():
    guide = (ROOT / "docs" / "caching_guide.md").read_text()
    for name in defined():
        rows = [line for line in guide.splitlines() if line.startswith(f"| `{name}`")]
        assert rows, f"{name} has no row in the guide's metric table"
        # Once in the name column, at least once more in the example query.
        assert rows[0].count(name) >= 2, f"{name}'s row has no query using it"


def test_the_dashboard_uses_only_defined_metrics_and_covers_the_headline_ones():
    dashboard = json.loads((ROOT / "docs" / "grafana" / "mgecache.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"mgecache_[a-z_]+", e)}
    known = set(defined()) | {GUARD}
    known |= {f"{n}_{s}" for n, k in defined().items() if k == "histogram" for s in ("bucket", "sum", "count")}
    assert used <= known, used - known
    for headline in ("mgecache_cache_hits_total", "mgecache_cost_saved_usd_total", "mgecache_redis_breaker_open"):
        assert headline in used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])

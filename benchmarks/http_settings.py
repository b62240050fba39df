"""Settings of the gunicorn workers benchmarks/http.py starts: the project's, with throttles out of reach.

The throttles still run on every request (their cost is part of the path measured); only
their rates are raised, so that one key sending thousands of requests a second is not refused.
"""

from mgecache_site.settings import *  # noqa: F403
from mgecache_site.settings import MGECACHE

MGECACHE = {
    **MGECACHE,
    "THROTTLE_RATES": {"generate": "10000000/minute", "read": "10000000/minute", "invalidate": "100/minute"},
    "GATEWAY_THROTTLE_RATE": "10000000/minute",
}

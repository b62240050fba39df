"""Settings of the load test's servers: the project's own, with throttles out of the way.

The load generator sends thousands of requests a minute with one API key; the production
throttle (1200/minute) would answer most of them 429 and measure the throttle, not the caches.
The simulated provider answers a miss in ~0.1 s instead of ~0.9 s, so a miss holds a web thread
about as long as a fast real model would.
"""

from mgecache_site.settings import *  # noqa: F403
from mgecache_site.settings import MGECACHE

MGECACHE = {
    **MGECACHE,
    "THROTTLE_RATES": {"generate": "10000000/minute", "read": "10000000/minute", "invalidate": "1000/minute"},
    "SIMULATED_CALL_OVERHEAD_SECONDS": 0.05,
    "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0005,
    "SIMULATED_OUTPUT_TOKENS": 100,
}

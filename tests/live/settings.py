"""Settings of the servers the live tests start (gunicorn workers, a Celery worker): the project's, plus test knobs.

* Celery tasks go to the test's private queue (``MGECACHE_TEST_QUEUE``), which only its worker consumes.
* Each answer names the process that served it (``X-Served-By``), so a test can reach every worker.
* Throttles are out of the way: a test sends many requests with one key (throttles are tested elsewhere).
"""

import os

from mgecache_site.settings import *  # noqa: F403
from mgecache_site.settings import MGECACHE, MIDDLEWARE

CELERY_TASK_DEFAULT_QUEUE = os.environ["MGECACHE_TEST_QUEUE"]
MIDDLEWARE = [*MIDDLEWARE, "tests.live.middleware.served_by"]
MGECACHE = {
    **MGECACHE,
    "THROTTLE_RATES": {"generate": "100000/minute", "read": "100000/minute", "invalidate": "100000/minute"},
}

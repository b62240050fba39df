"""schemathesis against the OpenAPI schema, through the WSGI app: positive and negative data, bounded.

Every operation in ``/api/schema/`` gets ``MAX_EXAMPLES`` generated requests per mode.
No response may be a 5xx, and every response must be JSON (no HTML page on an API route).
(Driven by hypothesis directly: schemathesis' lazy pytest loader does not run on pytest 9.)
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

MAX_EXAMPLES = 25  # per operation and mode; the whole run stays well under a minute

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def admin_key(make_caller, settings, seeded_defaults) -> str:
    settings.MGECACHE = {
        **settings.MGECACHE,
        "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0,
        "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0,
        # Many requests from one key: the throttles are tested elsewhere.
        "THROTTLE_RATES": {"generate": "100000/minute", "read": "100000/minute", "invalidate": "100000/minute"},
    }
    return make_caller("admin").key


@pytest.fixture
def wsgi_app():
    """The real WSGI app, serving inside this test's database transaction (as Django's test client does)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(admin_key, wsgi_app):
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", wsgi_app, headers={"Authorization": f"Bearer {admin_key}"}
    )


def _content_type(response) -> str:
    value = response.headers.get("Content-Type", response.headers.get("content-type", ""))
    return value[0] if isinstance(value, list) else value


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_5xx_and_no_html_for_generated_requests(api_schema, admin_key, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7  # generate, rag, statistics, 2 invalidations, waves POST and GET
    headers = {"Authorization": f"Bearer {admin_key}"}
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case) -> None:
            response = case.call(headers=headers)
            where = (case.method, case.formatted_path, response.status_code, response.text[:300])
            assert response.status_code < 500, where
            assert _content_type(response).startswith("application/json"), where
            seen.setdefault(operation.label, set()).add(response.status_code)

        check()
    assert set(seen) == {operation.label for operation in operations}
    if mode is GenerationMode.NEGATIVE:
        assert any(400 in codes for codes in seen.values())  # negative data was refused, not served

"""schemathesis against /api/schema/, through the WSGI app: every check, positive and negative data, bounded.

Every operation of the schema gets ``MAX_EXAMPLES`` generated requests per mode, each validated
with every check schemathesis has (the equivalent of ``--checks all``): no 5xx, documented status
codes, content types and headers, responses that match their schema, schema-valid requests
accepted, schema-invalid ones refused, 405 for undocumented methods, 401 without credentials.
Failures are collected over all operations and reported together; the expected count is 0.
(Driven by hypothesis directly: schemathesis' lazy pytest loader does not run on pytest 9.)
"""

from __future__ import annotations

import itertools
import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

# Per operation and mode (about half a minute per mode on a shared 2-core host). A deeper local run:
# ST_EXAMPLES=300 pytest tests/test_schemathesis.py -o timeout=3600
MAX_EXAMPLES = int(os.environ.get("ST_EXAMPLES", "25"))
EXPECTED_OPERATIONS = 15  # the v2 routes and methods; a new one is generated against at once

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


def _unique_idempotency_key(case, counter: itertools.count) -> None:
    """A client sends a new Idempotency-Key for each new request; the generator, not knowing, repeats
    simple values (a repeat with another body is a 422, as documented). Keep the generated key, made unique."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if key is not None:
        headers["Idempotency-Key"] = f"{next(counter)}:{key}"[:255].rstrip()


def _run(operation, mode: GenerationMode, headers: dict[str, str], failures: list[str]) -> None:
    checks = CHECKS.get_all()
    counter = itertools.count()

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the report names the failing case
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        if mode is GenerationMode.POSITIVE:
            _unique_idempotency_key(case, counter)
        case.call_and_validate(headers=headers, checks=checks)

    try:
        check()
    except (Exception, BaseExceptionGroup) as exc:  # a failure group: collect it, go on with the next operation
        failures.append(f"{operation.label}:\n{exc}")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_check_passes_for_generated_requests(api_schema, admin_key, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == EXPECTED_OPERATIONS, [op.label for op in operations]
    assert all(op.path.startswith("/api/v2/") for op in operations)
    assert len(CHECKS.get_all()) >= 14  # every check schemathesis has, as with --checks all
    failures: list[str] = []
    for operation in operations:
        _run(operation, mode, {"Authorization": f"Bearer {admin_key}"}, failures)
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)

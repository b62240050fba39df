"""schemathesis against /api/schema/, through the WSGI app: every check, positive and negative data, bounded.

Every operation of the schema gets, per mode, schemathesis' coverage cases (boundary values, missing
and unexpected parts, undocumented methods; at most ``MAX_COVERAGE_CASES``) and ``MAX_EXAMPLES``
generated requests, each validated with every check schemathesis has (the equivalent of
``--checks all``): no 5xx, documented status codes, content types and headers, responses that match
their schema, schema-valid requests accepted, schema-invalid ones refused, 405 for undocumented
methods, 401 without credentials. Failures are collected over all operations and reported
together; the expected count is 0. (Driven directly: schemathesis' pytest loader does not run on
pytest 9.)

Two adaptations, both about the generator, not the contract:

* A client sends a new ``Idempotency-Key`` per new request; the generator repeats simple values, and
  a repeat with another body is the documented 422. Positive cases keep their generated key, made unique.
* ``max_tokens`` is bounded per model (the schema publishes each model's maximum output as
  ``x-max-output-tokens``; JSON Schema cannot tie one field's bound to another's value). A client
  reads it; positive cases keep their generated ``max_tokens`` within their model's maximum.
* The coverage phase cannot build a valid body for ``llm/generate`` and ``llm/waves``: their prompt's
  pattern with its 200,000-character bound becomes a regex repetition longer than Hypothesis draws
  (the limit is between 50,000 and 100,000). Their valid bodies come from the generated phase.
"""

from __future__ import annotations

import itertools
import os
import re

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

from cache_app.access.limits import max_output_tokens_by_model
from cache_app.api.schema import IDEMPOTENCY_KEY_PATTERN
from cache_app.core import conf

# Per operation and mode (about half a minute per mode on a shared 2-core host). A deeper local run:
# ST_EXAMPLES=300 pytest tests/test_schemathesis.py -o timeout=3600
MAX_EXAMPLES = int(os.environ.get("ST_EXAMPLES", "25"))
MAX_COVERAGE_CASES = int(os.environ.get("ST_COVERAGE_CASES", "200"))  # per operation and mode
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
    simple values (a repeat with another body is a 422, as documented). A valid key is kept, made unique."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        headers["Idempotency-Key"] = f"{next(counter)}:{key}"[:255].rstrip()


def _within_model_limits(case) -> None:
    """Positive cases keep ``max_tokens`` within their model's published maximum output (``x-max-output-tokens``)."""
    body = case.body
    if not isinstance(body, dict):
        return
    limits = max_output_tokens_by_model()
    default_model = str(conf.get("LLM_DEFAULT_MODEL"))

    def clamp(params, model) -> None:
        if isinstance(params, dict) and isinstance(params.get("max_tokens"), int) and model in limits:
            params["max_tokens"] = min(params["max_tokens"], limits[model])

    clamp(body, body.get("model") or default_model)
    defaults = body.get("defaults") if isinstance(body.get("defaults"), dict) else {}
    for atom in body.get("atoms") or []:
        overrides = atom.get("overrides") if isinstance(atom, dict) else None
        overrides = overrides if isinstance(overrides, dict) else {}
        model = overrides.get("model") or defaults.get("model") or default_model
        clamp(overrides, model)
        clamp(defaults, model)


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
            _within_model_limits(case)
        case.call_and_validate(headers=headers, checks=checks)

    try:
        check()
    except (Exception, BaseExceptionGroup) as exc:  # a failure group: collect it, go on with the next operation
        failures.append(f"{operation.label}:\n{exc}")


def _cover(api_schema, operation, mode: GenerationMode, headers: dict[str, str], failures: list[str]) -> int:
    """The coverage phase: schemathesis' deterministic cases (boundaries, missing parts, other methods)."""
    counter = itertools.count()
    config = api_schema.config.generation_for(operation=operation)
    cases = api_schema.iter_coverage_cases(operation, generation_modes=[mode], generation_config=config)
    sent = 0
    for case in itertools.islice(cases, MAX_COVERAGE_CASES):
        if mode is GenerationMode.POSITIVE:
            _unique_idempotency_key(case, counter)
            _within_model_limits(case)
        try:
            case.call_and_validate(headers=headers, checks=CHECKS.get_all())
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label} (coverage):\n{exc}")
            return sent
        sent += 1
    return sent


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_check_passes_for_generated_requests(api_schema, admin_key, mode):
    # The v2 API's operations (other APIs the project serves test their own).
    operations = [op for op in (r.ok() for r in api_schema.get_all_operations()) if op.path.startswith("/api/v2/")]
    assert len(operations) == EXPECTED_OPERATIONS, [op.label for op in operations]
    assert len(CHECKS.get_all()) >= 14  # every check schemathesis has, as with --checks all
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {admin_key}"}
    covered = {}
    for operation in operations:
        covered[operation.label] = _cover(api_schema, operation, mode, headers, failures)
        _run(operation, mode, headers, failures)
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)
    # The coverage phase ran: every operation with a body or parameters got its deterministic cases.
    assert sum(covered.values()) >= 60, covered
    assert covered["PATCH /api/v2/cache/policies/{layer}"] > 0, covered
    assert covered["POST /api/v2/rag/query"] > 0, covered

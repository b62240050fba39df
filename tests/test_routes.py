"""Every URL pattern the project serves has an explicit access rule, checked for each role.

The walk goes through ``get_resolver()`` recursively. An API route (anything outside
``admin/``) must have an entry in ``API_RULES``; a new route without one fails
``test_every_route_has_an_access_rule``. The admin site's routes share one rule: staff
sessions only, then the admin's model permissions; it is checked on every admin route.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from batching_app.waves import AtomSpec, GenerationParams, WaveMeta, WaveStore
from cache_app.models import InvalidationAudit, Masterplan

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "pipeline", "operator", "admin")
MP = uuid.UUID("77777777-7777-4777-8777-777777777777")


@dataclass(frozen=True)
class Rule:
    """One request to a route and the status each role must get."""

    method: str
    url: str
    expect: dict[str, int]
    body: dict | None = None
    query: dict = field(default_factory=dict)


def expect(anonymous: int, pipeline: int, operator: int, admin: int) -> dict[str, int]:
    return {"anonymous": anonymous, "pipeline": pipeline, "operator": operator, "admin": admin}


PIPELINE_ONLY = expect(401, 200, 403, 200)
OPERATOR_ONLY = expect(401, 403, 200, 200)
ANY_LOGIN = expect(401, 200, 200, 200)
V2 = "/api/v2"
ATOM = {"atom_id": "88888888-8888-4888-8888-888888888888", "prompt": "route check"}

# Route pattern -> the requests that show its rule. Metrics: bearer API keys are not the metrics token.
# URLs and queries may name {wave_id} and {invalidation_id}: objects the test creates first.
API_RULES: dict[str, list[Rule]] = {
    "healthz": [Rule("GET", "/healthz", expect(200, 200, 200, 200))],
    "metrics": [Rule("GET", "/metrics", expect(401, 403, 403, 403))],
    "api/schema/": [Rule("GET", "/api/schema/", ANY_LOGIN)],
    "api/docs/": [Rule("GET", "/api/docs/", ANY_LOGIN)],
    "api/v2/llm/generate": [
        Rule("POST", f"{V2}/llm/generate", PIPELINE_ONLY, body={"prompt": "route check", "temperature": 0})
    ],
    "api/v2/rag/query": [Rule("POST", f"{V2}/rag/query", PIPELINE_ONLY, body={"query": "route check"})],
    "api/v2/llm/waves": [
        Rule("POST", f"{V2}/llm/waves", PIPELINE_ONLY, body={"masterplan_id": str(MP), "atoms": [ATOM]}),
    ],
    "api/v2/llm/waves/<uuid:wave_id>": [Rule("GET", f"{V2}/llm/waves/{{wave_id}}", PIPELINE_ONLY)],
    "api/v2/cache/statistics": [
        Rule("GET", f"{V2}/cache/statistics", OPERATOR_ONLY),  # the global totals
        Rule("GET", f"{V2}/cache/statistics", ANY_LOGIN, query={"masterplan_id": str(MP)}),
    ],
    "api/v2/^cache/statistics/(?P<layer>llm|rag|batching)$": [
        Rule("GET", f"{V2}/cache/statistics/rag", OPERATOR_ONLY),
        Rule("GET", f"{V2}/cache/statistics/batching", ANY_LOGIN, query={"masterplan_id": str(MP)}),
    ],
    "api/v2/cache/invalidate": [
        Rule("POST", f"{V2}/cache/invalidate", expect(401, 403, 202, 202), body={"masterplan_id": str(MP)})
    ],
    "api/v2/cache/invalidations/<uuid:invalidation_id>": [
        Rule("GET", f"{V2}/cache/invalidations/{{invalidation_id}}", OPERATOR_ONLY)
    ],
    "api/v2/masterplans": [Rule("GET", f"{V2}/masterplans", ANY_LOGIN)],
    "api/v2/masterplans/<uuid:masterplan_id>": [
        Rule("GET", f"{V2}/masterplans/{MP}", ANY_LOGIN),
        Rule("PATCH", f"{V2}/masterplans/{MP}", OPERATOR_ONLY, body={"name": "route check"}),
    ],
    "api/v2/^cache/policies/(?P<layer>llm|rag)$": [
        Rule("GET", f"{V2}/cache/policies/llm", OPERATOR_ONLY),
        Rule("PATCH", f"{V2}/cache/policies/rag", OPERATOR_ONLY, body={"notes": "route check"}),
    ],
    "api/v2/batching/policy": [
        Rule("GET", f"{V2}/batching/policy", OPERATOR_ONLY),
        Rule("PATCH", f"{V2}/batching/policy", OPERATOR_ONLY, body={"notes": "route check"}),
    ],
    # The compatible gateway: an API key whose role may use the pipeline (errors in the provider's shape).
    "v1/chat/completions": [
        Rule(
            "POST",
            "/v1/chat/completions",
            PIPELINE_ONLY,
            body={"model": "claude-3-5-sonnet", "messages": [{"role": "user", "content": "route check"}]},
        )
    ],
    "v1/messages": [
        Rule(
            "POST",
            "/v1/messages",
            PIPELINE_ONLY,
            body={
                "model": "claude-3-5-sonnet",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "route check"}],
            },
        )
    ],
}

ADMIN_PREFIX = "admin/"
# Staff pages whose outcome depends on the role's model permissions: (operator, admin).
ADMIN_PAGES = {
    "admin/": (200, 200),
    "admin/cache_app/masterplan/": (200, 200),
    "admin/cache_app/masterplan/add/": (403, 200),
    "admin/cache_app/masterplan/statistics/": (200, 200),
    "admin/cache_app/cachepolicy/": (200, 200),
    "admin/cache_app/batchpolicy/": (200, 200),
    "admin/cache_app/modelpricing/": (200, 200),
    "admin/cache_app/modelpricing/add/": (403, 200),
    "admin/cache_app/document/": (200, 200),
    "admin/cache_app/pipelineapikey/": (403, 200),
    "admin/cache_app/pipelineapikey/add/": (403, 200),
    "admin/auth/user/": (403, 200),
    "admin/auth/group/": (403, 200),
    "admin/axes/accessattempt/": (403, 200),
}


def served_patterns() -> list[str]:
    """Every URL pattern, as its full route string, found by walking the resolver."""

    def walk(patterns, prefix: str) -> list[str]:
        found: list[str] = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found.extend(walk(pattern.url_patterns, prefix + str(pattern.pattern)))
            elif isinstance(pattern, URLPattern):
                found.append(prefix + str(pattern.pattern))
        return found

    return walk(get_resolver().url_patterns, "")


def test_every_route_has_an_access_rule():
    served = served_patterns()
    missing = [p for p in served if not p.startswith(ADMIN_PREFIX) and p not in API_RULES]
    assert not missing, f"routes without an access rule in tests/test_routes.py API_RULES: {missing}"
    stale = [p for p in API_RULES if p not in served]
    assert not stale, f"API_RULES names routes that are not served: {stale}"
    assert any(p.startswith(ADMIN_PREFIX) for p in served)
    assert all(p in served for p in ADMIN_PAGES)


@pytest.fixture
def callers(make_caller, settings, seeded_defaults) -> dict[str, APIClient]:
    settings.MGECACHE = {
        **settings.MGECACHE,
        "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0,
        "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0,
    }
    return {"anonymous": APIClient(), **{role: make_caller(role) for role in ROLES[1:]}}


def _send(client: APIClient, rule: Rule, objects: dict[str, str]):
    url = rule.url.format(**objects)
    query = {k: v.format(**objects) for k, v in rule.query.items()}
    if rule.method == "GET":
        return client.get(url, query)
    return client.generic(rule.method, url, data=_json(rule.body), content_type="application/json")


def _json(body) -> str:
    import json

    return json.dumps(body if body is not None else {})


def _objects() -> dict[str, str]:
    """A wave, an invalidation and a masterplan for the routes that read one."""
    now = time.time()
    meta = WaveMeta(str(uuid.uuid4()), str(MP), now, now + 60, 1)
    WaveStore().create(meta, [AtomSpec(0, uuid.UUID(ATOM["atom_id"]), "a prompt", GenerationParams("m", 0.0))])
    Masterplan.objects.get_or_create(pk=MP, defaults={"name": "route check"})
    audit = InvalidationAudit.objects.create(source="api", masterplan_id=MP, layers=["llm"])
    return {"wave_id": meta.wave_id, "invalidation_id": str(audit.pk)}


@pytest.mark.parametrize("route", sorted(API_RULES))
def test_api_route_answers_each_role_as_its_rule_says(route, callers):
    objects = _objects()
    for rule in API_RULES[route]:
        for role in ROLES:
            response = _send(callers[role], rule, objects)
            assert response.status_code == rule.expect[role], (role, rule, response.content[:300])
            if response.status_code >= 400:
                assert response["Content-Type"].startswith("application/json"), (role, rule)


def test_healthz_details_only_for_operators(callers):
    for role, details in (("anonymous", False), ("pipeline", False), ("operator", True), ("admin", True)):
        body = callers[role].get("/healthz").json()
        assert ("checks" in body) is details, (role, body)
        assert body["status"] == "ok"


def _admin_url(pattern: str) -> str:
    url = pattern.replace("^(?P<app_label>auth|axes|cache_app)/$", "cache_app/").replace("(?P<url>.*)$", "nowhere/")
    url = re.sub(r"<uuid:masterplan_id>", str(MP), url)
    url = re.sub(r"<[^>]+>", "1", url)
    return "/" + url


@pytest.fixture
def admin_sessions(roles) -> dict[str, object]:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    sessions: dict[str, object] = {"anonymous": Client()}
    for role in ROLES[1:]:
        user = User.objects.create_user(f"{role}-session", is_staff=role != "pipeline")
        user.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(user)
        sessions[role] = client
    return sessions


def test_admin_routes_need_a_staff_session_then_model_permissions(admin_sessions):
    for pattern in served_patterns():
        if not pattern.startswith(ADMIN_PREFIX):
            continue
        url = _admin_url(pattern)
        for role in ("anonymous", "pipeline"):
            response = admin_sessions[role].get(url)
            if pattern == "admin/login/":
                assert response.status_code == 200
                continue
            # Not staff: every admin page sends the caller to the login page (logout: to the index).
            assert response.status_code == 302, (role, url, response.status_code)
            assert response["Location"].startswith(("/admin/login/", "/admin/")), (role, url)
            assert "/admin/login/" in response["Location"] or pattern == "admin/logout/", (role, url)
        for index, role in enumerate(("operator", "admin")):
            response = admin_sessions[role].get(url)
            assert response.status_code < 500, (role, url)
            assert not response.get("Location", "").startswith("/admin/login/"), (role, url)
            if pattern in ADMIN_PAGES:
                assert response.status_code == ADMIN_PAGES[pattern][index], (role, url, response.status_code)


def _v2_views() -> dict[str, type]:
    from django.urls import get_resolver

    def walk(patterns, prefix: str) -> dict[str, type]:
        found: dict[str, type] = {}
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found.update(walk(pattern.url_patterns, prefix + str(pattern.pattern)))
            elif prefix.startswith("api/v2/"):
                found[prefix + str(pattern.pattern)] = pattern.callback.view_class
        return found

    return walk(get_resolver().url_patterns, "")


def test_every_v2_view_declares_its_access_rule_and_throttles(rf):
    from rest_framework.settings import api_settings

    from cache_app.api.base import V2View

    views = _v2_views()
    assert len(views) == 12
    for route, view_class in views.items():
        assert issubclass(view_class, V2View), route
        assert view_class.permission_classes != api_settings.DEFAULT_PERMISSION_CLASSES, route
        for method in view_class().allowed_methods:
            if method == "OPTIONS":
                continue
            view = view_class()
            view.request = rf.generic(method, "/")
            assert view.get_throttles(), (route, method)

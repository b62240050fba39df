"""The access-control seam: key extraction, scope checks and the throttle (no server)."""

from __future__ import annotations

import uuid

import pytest
from django.test import RequestFactory

from cache_app.gateway import auth
from cache_app.gateway.errors import GatewayError, Kind


def request(**headers):
    return RequestFactory().post("/v1/messages", headers=headers)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer  abc "}, "abc"),
        ({"X-Api-Key": "xyz"}, "xyz"),
        ({"Authorization": "Bearer abc", "X-Api-Key": "xyz"}, "abc"),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_bearer_key(headers, key):
    assert auth.bearer_key(request(**headers)) == key


@pytest.mark.django_db
def test_authenticate_resolves_an_api_key_and_refuses_others():
    from django.contrib.auth import get_user_model

    from cache_app.models import PipelineAPIKey
    from tests.cache_app.gateway.conftest import pipeline_key

    key = pipeline_key("caller")
    caller = auth.authenticate(request(Authorization=f"Bearer {key}"))
    assert caller.user.username == "caller"
    assert caller.allowed_masterplans is None
    assert auth.authenticate(request(**{"X-Api-Key": key})).user == caller.user
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Api-Key": "k" * 1000}):
        with pytest.raises(GatewayError) as err:
            auth.authenticate(request(**headers))
        assert err.value.kind is Kind.AUTHENTICATION
    # A key of a user without the pipeline role: 403.
    plain = get_user_model().objects.create_user("no-role")
    _, secret = PipelineAPIKey.objects.create_key(name="plain", user=plain)
    with pytest.raises(GatewayError) as err:
        auth.authenticate(request(Authorization=f"Bearer {secret}"))
    assert err.value.kind is Kind.PERMISSION


@pytest.mark.django_db
def test_a_restricted_key_carries_its_masterplans():
    from tests.cache_app.gateway.conftest import pipeline_key

    allowed = str(uuid.uuid4())
    caller = auth.authenticate(request(Authorization=f"Bearer {pipeline_key('scoped', masterplans=(allowed,))}"))
    assert caller.allowed_masterplans == frozenset({allowed})


def test_check_scope():
    allowed = str(uuid.uuid4())
    auth.check_scope(auth.GatewayCaller(user=None), None)
    auth.check_scope(auth.GatewayCaller(user=None), allowed)
    restricted = auth.GatewayCaller(user=None, allowed_masterplans=frozenset({allowed}))
    auth.check_scope(restricted, allowed)
    for masterplan in (None, str(uuid.uuid4())):
        with pytest.raises(GatewayError) as err:
            auth.check_scope(restricted, masterplan)
        assert err.value.status == 403


class User:
    def __init__(self, pk: int) -> None:
        self.pk = pk


def test_throttle_counts_per_user_and_says_when_to_retry(settings):
    settings.MGECACHE = {**settings.MGECACHE, "GATEWAY_THROTTLE_RATE": "2/hour"}
    first, second = auth.GatewayCaller(User(1)), auth.GatewayCaller(User(2))
    auth.throttle(first)
    auth.throttle(first)
    auth.throttle(second)  # another user has a budget of their own
    with pytest.raises(GatewayError) as err:
        auth.throttle(first)
    assert err.value.status == 429
    assert 1 <= int(err.value.headers["Retry-After"]) <= 3600


def test_no_rate_means_no_throttle(settings):
    settings.MGECACHE = {**settings.MGECACHE, "GATEWAY_THROTTLE_RATE": None}
    for _ in range(50):
        auth.throttle(auth.GatewayCaller(User(3)))


def test_the_rate_setting_is_checked(settings):
    from cache_app.checks import check_gateway_settings

    for good in ("600/minute", "5/s", None):
        settings.MGECACHE = {**settings.MGECACHE, "GATEWAY_THROTTLE_RATE": good}
        assert check_gateway_settings() == []
    for bad in ("fast", "0/minute", "10/fortnight", 10):
        settings.MGECACHE = {**settings.MGECACHE, "GATEWAY_THROTTLE_RATE": bad}
        assert [e.id for e in check_gateway_settings()] == ["cache_app.E090"]

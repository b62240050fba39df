"""A live mgecache server (real HTTP) with a gateway API key, and the official SDKs pointed at it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest

from cache_app.llm import providers

# Fast, deterministic upstream: the simulated provider with no latency and short answers.
FAST_SIMULATION = {
    "LLM_PROVIDER": "simulated",
    "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0,
    "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0,
    "SIMULATED_OUTPUT_TOKENS": 40,
    "GATEWAY_THROTTLE_RATE": None,
}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Gateway:
    url: str
    key: str
    clients: list[Any] = field(default_factory=list)

    def openai(self, key: str | None = None) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0)
        self.clients.append(client)
        return client

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=self.url, api_key=key or self.key, max_retries=0)
        self.clients.append(client)
        return client

    def close(self) -> None:
        # A kept-alive connection holds its server thread, and that thread its database connection.
        for client in self.clients:
            client.close()

    @property
    def upstream_calls(self) -> int:
        """Calls the (simulated) provider made: every miss, none for a hit."""
        return providers.get_provider().calls

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> RawResponse:
        """A plain HTTP POST (what curl sends), without any SDK."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return RawResponse(response.status, _lower(response.headers), response.read())
        except urllib.error.HTTPError as err:
            return RawResponse(err.code, _lower(err.headers), err.read())


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def gateway_settings(settings):
    settings.MGECACHE = {**settings.MGECACHE, **FAST_SIMULATION}  # the provider follows the settings
    return settings


def pipeline_key(username: str, *, masterplans: tuple[str, ...] = ()) -> str:
    """A new API key (the secret) of a user with the pipeline role, optionally restricted to ``masterplans``."""
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from cache_app.access.roles import PIPELINE, create_roles
    from cache_app.models import Masterplan, PipelineAPIKey

    create_roles(apps)  # transactional tests flush the groups the migration made
    user = get_user_model().objects.create_user(username)
    user.groups.add(Group.objects.get(name=PIPELINE))
    api_key, secret = PipelineAPIKey.objects.create_key(name=f"{username} key", user=user, restricted=bool(masterplans))
    for masterplan_id in masterplans:
        api_key.masterplans.add(Masterplan.objects.get_or_create(pk=masterplan_id, defaults={"name": masterplan_id})[0])
    return secret


@pytest.fixture
def api_key(transactional_db, seeded_defaults) -> str:
    return pipeline_key("gateway-client")


@pytest.fixture
def gateway(live_server, gateway_settings, api_key):
    gateway = Gateway(live_server.url, api_key)
    yield gateway
    gateway.close()

"""The gateway in front of the real provider classes (anthropic, openai SDKs) and a local stub upstream.

The stub is real HTTP on 127.0.0.1: a miss reaches it, a hit does not; its failures come
back to the gateway's own clients as 502/504 in their API's error shape.
"""

from __future__ import annotations

import threading

import anthropic
import openai
import pytest

from cache_app.llm.providers import (
    AnthropicProvider,
    OpenAIProvider,
    ProviderRequest,
    ProviderResponse,
    SimulatedProvider,
)
from tests.cache_app.gateway.streaming_stub import StreamingStubServer

pytestmark = [pytest.mark.redis_server, pytest.mark.postgres]


@pytest.fixture
def stub():
    server = StreamingStubServer().start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_upstream(gateway_settings, stub):
    gateway_settings.MGECACHE = {**gateway_settings.MGECACHE, "LLM_PROVIDER": "anthropic", "LLM_MAX_RETRIES": 0}
    gateway_settings.ANTHROPIC_API_KEY = "upstream-key"
    gateway_settings.ANTHROPIC_BASE_URL = stub.url
    return stub


@pytest.fixture
def openai_upstream(gateway_settings, stub):
    gateway_settings.MGECACHE = {**gateway_settings.MGECACHE, "LLM_PROVIDER": "openai", "LLM_MAX_RETRIES": 0}
    gateway_settings.OPENAI_API_KEY = "upstream-key"
    gateway_settings.OPENAI_BASE_URL = stub.openai_base_url
    return stub


def test_anthropic_upstream_miss_then_hit(gateway, anthropic_upstream):
    client = gateway.anthropic()
    messages = [{"role": "user", "content": "hello upstream"}]
    first = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=50, messages=messages)
    second = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=50, messages=messages)
    assert (first.headers["x-mgecache-cache"], second.headers["x-mgecache-cache"]) == ("MISS", "HIT")
    assert "x-mgecache-simulated" not in first.headers
    assert second.parse().content[0].text == "stub reply: hello upstream"
    [upstream] = anthropic_upstream.requests_to("/v1/messages")
    assert upstream.headers["authorization"] == "Bearer upstream-key"  # the gateway's own key, not the client's
    assert upstream.body["messages"] == messages


def test_openai_upstream_stream_passes_through_and_is_cached(gateway, openai_upstream):
    client = gateway.openai()
    messages = [{"role": "user", "content": "one two three"}]
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["stub", " reply:", " one", " two", " three"]  # the upstream's own pieces
    [upstream] = openai_upstream.requests_to("/v1/chat/completions")
    assert upstream.body["stream"] is True
    hit = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, temperature=0)
    assert hit.headers["x-mgecache-cache"] == "HIT"
    assert hit.parse().choices[0].message.content == "stub reply: one two three"
    assert len(openai_upstream.requests) == 1


def test_anthropic_upstream_stream_through_the_gateway(gateway, anthropic_upstream):
    client = gateway.anthropic()
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "a b"}]
    ) as s:
        assert s.response.headers["x-mgecache-cache"] == "MISS"
        message = s.get_final_message()
    assert message.content[0].text == "stub reply: a b"
    assert message.usage.output_tokens == 4
    assert message.stop_reason == "end_turn"


def test_upstream_failure_is_a_502_in_each_format(gateway, anthropic_upstream):
    anthropic_upstream.fail_next(500, times=2)
    with pytest.raises(anthropic.InternalServerError) as err:
        gateway.anthropic().messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 502
    assert err.value.body["error"]["type"] == "api_error"
    with pytest.raises(openai.InternalServerError) as err:
        gateway.openai().chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert err.value.code == "upstream_error"


def test_upstream_rate_limit_is_a_429(gateway, openai_upstream):
    openai_upstream.fail_next(429)
    with pytest.raises(openai.RateLimitError) as err:
        gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "upstream_rate_limited"
    assert err.value.response.headers["retry-after"] == "1"  # the upstream's "0", raised to a useful minimum


def test_upstream_timeout_is_a_504(gateway, openai_upstream, gateway_settings):
    gateway_settings.MGECACHE = {**gateway_settings.MGECACHE, "LLM_TIMEOUT_SECONDS": 0.2}
    openai_upstream.gate = threading.Event()  # held until the stub stops; the provider gives up at 0.2 s
    with pytest.raises(openai.InternalServerError) as err:
        gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 504
    assert err.value.code == "upstream_timeout"


# --- the providers' stream methods, directly -----------------------------------------------------


async def collect(provider, request) -> tuple[list[str], ProviderResponse]:
    items = [item async for item in provider.stream(request)]
    *deltas, final = items
    assert all(isinstance(d, str) for d in deltas)
    return deltas, final


async def test_anthropic_provider_streams(stub):
    provider = AnthropicProvider(api_key="k", base_url=stub.url, max_retries=0, timeout=5)
    deltas, final = await collect(provider, ProviderRequest("one two three four", "m", max_tokens=3, system="s"))
    assert deltas == ["stub", " reply:", " one"]
    assert final.text == "stub reply: one"
    assert (final.prompt_tokens, final.completion_tokens, final.finish_reason) == (5, 3, "max_tokens")
    assert stub.requests[0].body["stream"] is True


async def test_openai_provider_streams_and_asks_for_usage(stub):
    provider = OpenAIProvider(api_key="k", base_url=stub.openai_base_url, max_retries=0, timeout=5)
    deltas, final = await collect(provider, ProviderRequest("alpha beta", "gpt-4o-mini", temperature=0))
    assert "".join(deltas) == final.text == "stub reply: alpha beta"
    assert (final.prompt_tokens, final.completion_tokens, final.finish_reason) == (2, 4, "stop")
    assert stub.requests[0].body["stream_options"] == {"include_usage": True}


async def test_simulated_provider_streams_the_same_text_in_the_same_time():
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    provider = SimulatedProvider(
        call_overhead_seconds=0.3, seconds_per_output_token=0.01, output_tokens=30, sleep=sleep
    )
    request = ProviderRequest("stream it", "m", temperature=0)
    deltas, final = await collect(provider, request)
    assert len(deltas) > 1
    assert "".join(deltas) == final.text
    assert final == await provider.complete(request)
    assert sum(sleeps[: len(deltas) + 1]) == pytest.approx(provider.latency_seconds(30))

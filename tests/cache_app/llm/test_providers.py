"""Providers: the simulated model, and the anthropic/openai SDKs against a real local HTTP stub."""

from __future__ import annotations

import asyncio
import logging
import threading

import anthropic
import openai
import pytest
from django.core.exceptions import ImproperlyConfigured

from cache_app.checks import check_llm_provider_settings
from cache_app.llm import providers
from cache_app.llm.providers import (
    AnthropicProvider,
    OpenAIProvider,
    ProviderRequest,
    ProviderResponse,
    SimulatedProvider,
    estimate_tokens,
)


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# --- simulated ---------------------------------------------------------------------------------


async def test_simulated_is_deterministic_and_request_sensitive():
    sim = SimulatedProvider(call_overhead_seconds=0, seconds_per_output_token=0, output_tokens=50)
    req = ProviderRequest(prompt="Plan the atoms for a login page", model="claude-3-5-sonnet", temperature=0.0)
    first, second = await sim.complete(req), await sim.complete(req)
    assert first == second
    assert first.text.startswith("[simulated ")
    other_prompt = await sim.complete(ProviderRequest(prompt="Plan the atoms for a signup page", model=req.model))
    other_system = await sim.complete(ProviderRequest(prompt=req.prompt, model=req.model, system="be terse"))
    assert len({first.text, other_prompt.text, other_system.text}) == 3
    # Another instance (another process, in effect) gives the same answer.
    assert (await SimulatedProvider(output_tokens=50, sleep=RecordingSleep()).complete(req)).text == first.text
    assert sim.calls == 4


async def test_simulated_token_counts_follow_the_documented_estimate():
    sim = SimulatedProvider(output_tokens=40, sleep=RecordingSleep())
    resp = await sim.complete(ProviderRequest(prompt="x" * 401, model="m", system="y" * 9))
    assert resp.prompt_tokens == estimate_tokens("x" * 401) + estimate_tokens("y" * 9) == 101 + 3
    assert resp.completion_tokens == 40
    assert len(resp.text) == 40 * providers.CHARS_PER_TOKEN
    assert estimate_tokens(resp.text) == resp.completion_tokens
    assert resp.finish_reason == "stop"
    assert not resp.truncated


async def test_simulated_truncates_at_max_tokens():
    sim = SimulatedProvider(output_tokens=100, sleep=RecordingSleep())
    resp = await sim.complete(ProviderRequest(prompt="long answer please", model="m", max_tokens=10))
    assert resp.completion_tokens == 10
    assert resp.finish_reason == "length"
    assert resp.truncated
    assert resp.as_dict()["truncated"] is True


async def test_simulated_latency_model_uses_the_injected_sleep():
    sleep = RecordingSleep()
    sim = SimulatedProvider(call_overhead_seconds=0.25, seconds_per_output_token=0.01, output_tokens=30, sleep=sleep)
    await sim.complete(ProviderRequest(prompt="a", model="m"))
    await sim.complete(ProviderRequest(prompt="b", model="m", max_tokens=5))
    assert sleep.calls == [pytest.approx(0.25 + 30 * 0.01), pytest.approx(0.25 + 5 * 0.01)]


def test_simulated_reads_settings_and_announces_itself(settings, caplog, monkeypatch):
    # A Celery worker started earlier in the run may have reconfigured or disabled loggers.
    monkeypatch.setattr(logging.getLogger("cache_app.llm.providers.simulated"), "disabled", False)
    settings.MGECACHE = {
        **settings.MGECACHE,
        "SIMULATED_CALL_OVERHEAD_SECONDS": 0.5,
        "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.002,
        "SIMULATED_OUTPUT_TOKENS": 64,
    }
    with caplog.at_level(logging.WARNING, logger="cache_app.llm.providers.simulated"):
        sim = SimulatedProvider()
    assert (sim.call_overhead_seconds, sim.seconds_per_output_token, sim.output_tokens) == (0.5, 0.002, 64)
    assert sim.latency_seconds(64) == pytest.approx(0.5 + 64 * 0.002)
    assert sim.name == "simulated"
    assert sim.simulated
    assert any("SIMULATED" in r.getMessage() for r in caplog.records)


def test_truncation_flag_normalises_both_vendors():
    def resp(reason):
        return ProviderResponse(text="t", model="m", prompt_tokens=1, completion_tokens=1, finish_reason=reason)

    assert resp("max_tokens").truncated
    assert resp("length").truncated
    assert not any(resp(reason).truncated for reason in ("end_turn", "stop", None))
    assert resp("max_tokens").finish_reason == "max_tokens"  # the raw value is kept


# --- anthropic SDK against the stub ------------------------------------------------------------


def _sent_key(req) -> str | None:
    # SDK versions differ: x-api-key (older) or a bearer token (2.x).
    bearer = req.headers.get("authorization", "")
    return req.headers.get("x-api-key") or (bearer.removeprefix("Bearer ") if bearer else None)


def _anthropic(server, **kw) -> AnthropicProvider:
    return AnthropicProvider(api_key="test-key", base_url=server.url, **{"max_retries": 2, "timeout": 5, **kw})


async def test_anthropic_happy_path_usage_and_system(llm_stub_server):
    provider = _anthropic(llm_stub_server)
    resp = await provider.complete(
        ProviderRequest(prompt="hello there world", model="claude-3-5-sonnet", temperature=0.2, system="be brief")
    )
    assert resp.text == "stub reply: hello there world"
    assert resp.model == "claude-3-5-sonnet"
    assert (resp.prompt_tokens, resp.completion_tokens) == (2 + 3, 5)
    assert resp.finish_reason == "end_turn"
    assert not resp.truncated
    assert resp.provider == "anthropic"
    [req] = llm_stub_server.requests_to("/v1/messages")
    assert req.body["system"] == "be brief"
    assert req.body["messages"] == [{"role": "user", "content": "hello there world"}]
    assert "temperature" not in req.body  # the Messages API (and SDK) no longer take sampling parameters
    assert req.body["max_tokens"] == 1024  # the default; the API requires one
    assert _sent_key(req) == "test-key"
    assert "anthropic-version" in req.headers


async def test_anthropic_without_system_sends_none(llm_stub_server):
    await _anthropic(llm_stub_server).complete(ProviderRequest(prompt="hi", model="m"))
    assert "system" not in llm_stub_server.requests[0].body


async def test_anthropic_temperature_for_compatible_endpoints(llm_stub_server):
    provider = _anthropic(llm_stub_server, send_temperature=True)
    await provider.complete(ProviderRequest(prompt="hi", model="m", temperature=0.3))
    assert llm_stub_server.requests[0].body["temperature"] == 0.3


async def test_anthropic_truncation(llm_stub_server):
    resp = await _anthropic(llm_stub_server).complete(
        ProviderRequest(prompt="one two three four five", model="m", max_tokens=3)
    )
    assert resp.text == "stub reply: one"
    assert resp.completion_tokens == 3
    assert resp.finish_reason == "max_tokens"
    assert resp.truncated


async def test_anthropic_retries_429_then_succeeds(llm_stub_server):
    llm_stub_server.fail_next(429, times=2)
    resp = await _anthropic(llm_stub_server, max_retries=2).complete(ProviderRequest(prompt="again", model="m"))
    assert resp.text == "stub reply: again"
    assert [r.status for r in llm_stub_server.requests] == [429, 429, 200]


async def test_anthropic_persistent_500_raises_after_bounded_retries(llm_stub_server):
    llm_stub_server.fail_next(500, times=100)
    with pytest.raises(anthropic.InternalServerError):
        await _anthropic(llm_stub_server, max_retries=2).complete(ProviderRequest(prompt="boom", model="m"))
    assert [r.status for r in llm_stub_server.requests] == [500, 500, 500]


async def test_anthropic_timeout_surfaces(llm_stub_server):
    llm_stub_server.gate = threading.Event()  # held until the stub stops; the client gives up at 0.1 s
    with pytest.raises(anthropic.APITimeoutError):
        await _anthropic(llm_stub_server, max_retries=0, timeout=0.1).complete(ProviderRequest(prompt="x", model="m"))


# --- openai SDK against the stub ---------------------------------------------------------------


def _openai(server, **kw) -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test", base_url=server.openai_base_url, **{"max_retries": 2, "timeout": 5, **kw})


async def test_openai_happy_path_usage_and_system(llm_stub_server):
    resp = await _openai(llm_stub_server).complete(
        ProviderRequest(prompt="hello there world", model="gpt-4o-mini", temperature=0.0, system="be brief")
    )
    assert resp.text == "stub reply: hello there world"
    assert resp.model == "gpt-4o-mini"
    assert (resp.prompt_tokens, resp.completion_tokens) == (5, 5)
    assert resp.finish_reason == "stop"
    assert not resp.truncated
    assert resp.provider == "openai"
    [req] = llm_stub_server.requests_to("/v1/chat/completions")
    assert req.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there world"},
    ]
    assert req.body["temperature"] == 0.0
    assert "max_completion_tokens" not in req.body
    assert req.headers["authorization"] == "Bearer sk-test"


async def test_openai_truncation(llm_stub_server):
    resp = await _openai(llm_stub_server).complete(ProviderRequest(prompt="a b c d", model="m", max_tokens=2))
    assert llm_stub_server.requests[0].body["max_completion_tokens"] == 2
    assert resp.text == "stub reply:"
    assert resp.finish_reason == "length"
    assert resp.truncated


async def test_openai_retries_5xx_and_429_then_succeeds(llm_stub_server):
    llm_stub_server.fail_next(503, times=1)
    llm_stub_server.fail_next(429, times=1)
    resp = await _openai(llm_stub_server, max_retries=2).complete(ProviderRequest(prompt="again", model="m"))
    assert resp.text == "stub reply: again"
    assert [r.status for r in llm_stub_server.requests] == [503, 429, 200]


async def test_openai_persistent_500_raises(llm_stub_server):
    llm_stub_server.fail_next(500, times=100)
    with pytest.raises(openai.InternalServerError):
        await _openai(llm_stub_server, max_retries=1).complete(ProviderRequest(prompt="boom", model="m"))
    assert [r.status for r in llm_stub_server.requests] == [500, 500]


def test_a_provider_survives_successive_event_loops(llm_stub_server):
    # Sync callers use asyncio.run more than once; each loop gets its own SDK client.
    provider = _openai(llm_stub_server)
    for prompt in ("first", "second", "third"):
        resp = asyncio.run(provider.complete(ProviderRequest(prompt=prompt, model="m")))
        assert resp.text == f"stub reply: {prompt}"


# --- factory and checks ------------------------------------------------------------------------


def test_factory_defaults_to_the_simulated_provider(settings):
    settings.MGECACHE = {**settings.MGECACHE, "LLM_PROVIDER": "simulated"}
    provider = providers.get_provider()
    assert isinstance(provider, SimulatedProvider)
    assert providers.get_provider() is provider  # process-wide


async def test_factory_builds_real_providers_from_settings(settings, llm_stub_server):
    settings.ANTHROPIC_API_KEY = "from-env"
    settings.ANTHROPIC_BASE_URL = llm_stub_server.url
    settings.OPENAI_API_KEY = "sk-from-env"
    settings.OPENAI_BASE_URL = llm_stub_server.openai_base_url
    settings.MGECACHE = {**settings.MGECACHE, "LLM_PROVIDER": "anthropic", "LLM_MAX_RETRIES": 0}
    provider = providers.get_provider()
    assert isinstance(provider, AnthropicProvider)
    llm_stub_server.fail_next(429, times=1)
    with pytest.raises(anthropic.RateLimitError):  # LLM_MAX_RETRIES=0 reached the SDK
        await provider.complete(ProviderRequest(prompt="x", model="m"))
    await provider.complete(ProviderRequest(prompt="x", model="m"))
    assert _sent_key(llm_stub_server.requests[-1]) == "from-env"

    settings.MGECACHE = {**settings.MGECACHE, "LLM_PROVIDER": "openai"}
    provider = providers.get_provider()
    assert isinstance(provider, OpenAIProvider)  # a settings change rebuilds the provider
    resp = await provider.complete(ProviderRequest(prompt="y", model="gpt-4o"))
    assert resp.text == "stub reply: y"


@pytest.mark.parametrize(("name", "key_setting"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_missing_api_key_is_a_clear_error(settings, name, key_setting):
    setattr(settings, key_setting, "")
    settings.MGECACHE = {**settings.MGECACHE, "LLM_PROVIDER": name}
    with pytest.raises(ImproperlyConfigured, match=key_setting):
        providers.get_provider()
    assert "cache_app.E020" in [e.id for e in check_llm_provider_settings()]


def test_unknown_provider_is_a_clear_error():
    with pytest.raises(ImproperlyConfigured, match="gemini"):
        providers.build_provider("gemini")


@pytest.mark.parametrize(
    ("override", "error_id"),
    [
        ({"LLM_TIMEOUT_SECONDS": 0}, "cache_app.E021"),
        ({"SIMULATED_CALL_OVERHEAD_SECONDS": -1}, "cache_app.E021"),
        ({"LLM_MAX_RETRIES": -1}, "cache_app.E022"),
        ({"SIMULATED_OUTPUT_TOKENS": 0}, "cache_app.E022"),
    ],
)
def test_provider_settings_are_validated(settings, override, error_id):
    settings.MGECACHE = {**settings.MGECACHE, **override}
    assert error_id in [e.id for e in check_llm_provider_settings()]


def test_default_settings_pass_the_provider_checks():
    assert check_llm_provider_settings() == []

"""LLMClient end to end: cache, single-flight, batching, pricing, SDK providers, outages."""

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
from prometheus_client import REGISTRY

from batching_app.llm import SimulatedLLM
from cache_app import actions
from cache_app.core.redis_client import CircuitBreaker, RedisGuard
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.client import LLMClient, request_timeout
from cache_app.llm.pricing import get_ledger
from cache_app.llm.providers import AnthropicProvider, OpenAIProvider, ProviderRequest, ProviderResponse
from cache_app.llm.providers.simulated import SimulatedProvider
from cache_app.llm.singleflight import SingleFlight
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

MP = uuid.UUID("33333333-3333-4333-8333-333333333333")
SONNET = "claude-3-5-sonnet"  # seeded at 3.00 / 15.00 USD per 1M tokens


async def _no_sleep(seconds: float) -> None:
    return None


class CountingProvider:
    """Wraps a provider; counts calls; can hold answers on an event or fail."""

    name = "counting"
    simulated = True

    def __init__(self, inner=None, *, gate: asyncio.Event | None = None, error: Exception | None = None):
        self.inner = inner or SimulatedProvider(call_overhead_seconds=0, seconds_per_output_token=0, sleep=_no_sleep)
        self.gate = gate
        self.error = error
        self.calls: list[ProviderRequest] = []

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return await self.inner.complete(request)


class BatchAwareProvider(CountingProvider):
    """Answers combined batch prompts like a well-behaved model (via the batching simulator)."""

    def __init__(self):
        super().__init__()
        self.model = SimulatedLLM()

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.calls.append(request)
        text = self.model.respond(request.prompt)
        return ProviderResponse(text, request.model, len(request.prompt) // 4, len(text) // 4, "stop", self.name)


def _metric(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_miss_then_hit_with_cost_and_savings():
    provider = CountingProvider()
    client = LLMClient(provider)
    first = await client.generate("write a tokenizer", SONNET, 0.0, masterplan_id=MP)
    assert (first.cached, first.cache_layer, len(provider.calls)) == (False, None, 1)
    expected = (first.prompt_tokens * 3.00 + first.completion_tokens * 15.00) / 1_000_000
    assert first.cost_usd == pytest.approx(expected)
    assert first.saved_usd == 0
    second = await client.generate("write a tokenizer", SONNET, 0.0, masterplan_id=MP)
    assert (second.cached, second.cache_layer, len(provider.calls)) == (True, "llm", 1)
    assert second.text == first.text
    assert second.cost_usd == 0
    assert second.saved_usd == pytest.approx(expected)
    totals = get_ledger().totals(masterplan_id=MP)
    assert totals.spent_usd == pytest.approx(expected)
    assert totals.saved_usd == pytest.approx(expected)
    assert totals.cost_reduction == pytest.approx(0.5)


async def test_params_change_the_answer_identity():
    provider = CountingProvider()
    client = LLMClient(provider)
    await client.generate("p", SONNET, 0.0)
    await client.generate("p", SONNET, 0.0, max_tokens=50)
    await client.generate("p", SONNET, 0.0, system="be terse")
    await client.generate("p", SONNET, 0.0, use_cache=False)
    assert len(provider.calls) == 4


async def test_twenty_concurrent_identical_prompts_make_one_call():
    gate = asyncio.Event()
    provider = CountingProvider(gate=gate)
    client = LLMClient(provider)
    waiting = _metric("mgecache_singleflight_waiters_total", {"scope": "process"})
    tasks = [asyncio.create_task(client.generate("same prompt", SONNET, 0.0)) for _ in range(20)]
    # Open the gate once the leader called and the 19 others wait for it (not for the cache).
    while not provider.calls or _metric("mgecache_singleflight_waiters_total", {"scope": "process"}) - waiting < 19:
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert len(provider.calls) == 1
    assert len({r.text for r in results}) == 1
    assert sum(not r.cached for r in results) == 1
    merged = [r for r in results if r.cached]
    assert {r.cache_layer for r in merged} == {"singleflight"}
    assert all(r.saved_usd > 0 and r.cost_usd == 0 for r in merged)


async def test_leader_failure_reaches_every_waiter_and_nothing_is_cached():
    gate = asyncio.Event()
    provider = CountingProvider(gate=gate, error=RuntimeError("upstream 500"))
    client = LLMClient(provider)
    tasks = [asyncio.create_task(client.generate("doomed", SONNET, 0.0)) for _ in range(5)]
    while not provider.calls:
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert len(provider.calls) == 1
    assert all(isinstance(r, RuntimeError) and "upstream 500" in str(r) for r in results)
    assert await client.prompt_cache.aget("doomed", SONNET, 0.0) is None
    provider.error = None
    ok = await client.generate("doomed", SONNET, 0.0)
    assert ok.cached is False
    assert len(provider.calls) == 2


async def test_unknown_model_prices_at_zero_and_is_counted():
    before = _metric("mgecache_pricing_unknown_model_total", {"model": "other"})
    response = await LLMClient(CountingProvider()).generate("x", "mystery-model", 0.0)
    assert response.cost_usd == 0.0
    assert _metric("mgecache_pricing_unknown_model_total", {"model": "other"}) > before


async def test_metrics_emitted_for_miss_hit_and_savings():
    labels = {"provider": "counting"}
    miss0 = _metric("mgecache_llm_requests_total", {**labels, "outcome": "miss"})
    hit0 = _metric("mgecache_llm_requests_total", {**labels, "outcome": "hit"})
    saved0 = _metric("mgecache_cost_saved_usd_total", {"cache_layer": "llm"})
    spend0 = _metric("mgecache_llm_spend_usd_total", {"model": SONNET})
    client = LLMClient(CountingProvider())
    await client.generate("metrics please", SONNET, 0.0)
    await client.generate("metrics please", SONNET, 0.0)
    assert _metric("mgecache_llm_requests_total", {**labels, "outcome": "miss"}) == miss0 + 1
    assert _metric("mgecache_llm_requests_total", {**labels, "outcome": "hit"}) == hit0 + 1
    assert _metric("mgecache_cost_saved_usd_total", {"cache_layer": "llm"}) > saved0
    assert _metric("mgecache_llm_spend_usd_total", {"model": SONNET}) > spend0


async def test_invalidation_end_to_end():
    provider = CountingProvider()
    client = LLMClient(provider)
    await client.generate("cached for a while", SONNET, 0.0, masterplan_id=MP)
    assert (await client.generate("cached for a while", SONNET, 0.0, masterplan_id=MP)).cached
    await asyncio.to_thread(actions.invalidate_masterplan, MP)
    again = await client.generate("cached for a while", SONNET, 0.0, masterplan_id=MP)
    assert again.cached is False
    assert len(provider.calls) == 2


async def test_batching_end_to_end_through_the_client(policy_source):
    provider = BatchAwareProvider()
    client = LLMClient(provider)
    atoms = [uuid.uuid4() for _ in range(5)]
    prompts = [f"atom {i}: write function number {i}" for i in range(5)]
    results = await asyncio.gather(
        *(
            client.generate(p, SONNET, 0.0, use_batching=True, atom_id=a, masterplan_id=MP)
            for a, p in zip(atoms, prompts, strict=True)
        )
    )
    await client.aclose()
    assert len(provider.calls) == 1, "5 prompts within the window make one combined call"
    for prompt, result in zip(prompts, results, strict=True):
        assert result.text == provider.model.respond(prompt)  # each caller gets exactly its own answer
        assert result.cost_usd > 0
    assert get_ledger().totals(masterplan_id=MP).provider_calls == 1
    # The answers were cached individually: a plain repeat is a hit.
    repeat = await client.generate(prompts[2], SONNET, 0.0, masterplan_id=MP)
    assert repeat.cached
    assert repeat.text == results[2].text


async def test_rejects_bad_arguments():
    client = LLMClient(CountingProvider())
    for kwargs in ({"prompt": ""}, {"prompt": "x", "temperature": float("nan")}, {"prompt": "x", "max_tokens": 0}):
        with pytest.raises(ValueError):
            await client.generate(**{"model": SONNET, **kwargs})
    with pytest.raises(ValueError):
        await client.generate("x", SONNET, masterplan_id="not-a-uuid")


@pytest.mark.redis_server
async def test_redis_stopped_mid_run_keeps_answering_through_the_provider(private_redis):
    from dataclasses import asdict

    from cache_app.llm.client import _Generated

    def client_on(url):
        sync = redis_lib.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        breaker = CircuitBreaker(probe=sync.ping, name="test-outage")
        async_client = redis_lib.asyncio.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        cache = LLMPromptCache(sync, breaker=breaker, async_redis=async_client)
        sf = SingleFlight(
            encode=asdict,
            decode=lambda d: _Generated(**d),
            redis=async_client,
            guard=RedisGuard(breaker, layer="singleflight"),
        )
        return cache, sf, breaker

    cache, sf, breaker = client_on(private_redis.url)
    provider = CountingProvider()
    client = LLMClient(provider, prompt_cache=cache, singleflight=sf)
    await client.generate("before the outage", SONNET, 0.0)
    assert (await client.generate("before the outage", SONNET, 0.0)).cached
    private_redis.stop()
    answers = [await client.generate(f"during the outage {i}", SONNET, 0.0) for i in range(20)]
    assert all(a.text and not a.cached for a in answers)
    assert breaker.is_open
    assert len(provider.calls) == 21


SDK_PROVIDERS = {
    "anthropic": lambda server: AnthropicProvider(api_key="test-key", base_url=server.url, max_retries=2, timeout=5),
    "openai": lambda server: OpenAIProvider(
        api_key="test-key", base_url=server.openai_base_url, max_retries=2, timeout=5
    ),
}


@pytest.mark.parametrize("vendor", sorted(SDK_PROVIDERS))
async def test_sdk_providers_through_the_client(llm_stub_server, vendor):
    client = LLMClient(SDK_PROVIDERS[vendor](llm_stub_server))
    first = await client.generate("hello stub", SONNET, 0.0, system="be brief", max_tokens=100)
    assert first.text == "stub reply: hello stub"
    assert first.prompt_tokens > 0
    assert first.completion_tokens > 0
    assert first.cost_usd > 0
    second = await client.generate("hello stub", SONNET, 0.0, system="be brief", max_tokens=100)
    assert second.cached
    assert second.text == first.text
    assert len(llm_stub_server.requests) == 1


@pytest.mark.parametrize("vendor", sorted(SDK_PROVIDERS))
async def test_sdk_429_is_retried_and_persistent_500_reaches_caller_uncached(llm_stub_server, vendor):
    client = LLMClient(SDK_PROVIDERS[vendor](llm_stub_server))
    llm_stub_server.fail_next(429, times=1)
    ok = await client.generate("retry me", SONNET, 0.0)
    assert ok.text == "stub reply: retry me"
    llm_stub_server.fail_next(500, times=10)
    with pytest.raises(Exception) as excinfo:
        await client.generate("broken", SONNET, 0.0)
    assert "500" in str(excinfo.value) or "Internal" in type(excinfo.value).__name__
    assert await client.prompt_cache.aget("broken", SONNET, 0.0) is None


CHILD = """
import asyncio, sys
from cache_app.llm.client import LLMClient, request_timeout
from cache_app.llm.providers import AnthropicProvider
from cache_app.llm.singleflight import SingleFlight
provider = AnthropicProvider(api_key="k", base_url=sys.argv[1], max_retries=0, timeout=20)
await_leader = SingleFlight._await_leader
async def announced(self, *args):
    print("waiting", flush=True)  # tells the parent this process waits on the other's lock
    return await await_leader(self, *args)
SingleFlight._await_leader = announced
print("ready", flush=True)
sys.stdin.readline()
response = asyncio.run(LLMClient(provider).generate("one call for two processes", "claude-3-5-sonnet", 0.0))
print(response.cached, response.cache_layer, response.text, flush=True)
"""


def _start_child(url: str, env: dict, err: Path) -> subprocess.Popen:
    with err.open("w") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-c", "import django; django.setup()\n" + CHILD, url],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


@pytest.mark.redis_server
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_single_flight_across_two_processes(llm_stub_server, subprocess_env, seeded_defaults, tmp_path):
    import threading

    llm_stub_server.gate = threading.Event()  # hold the leader's answer until the other process waits
    children = [_start_child(llm_stub_server.url, subprocess_env, tmp_path / f"child{n}.err") for n in range(2)]
    lines: list[list[str]] = [[], []]
    waiting = threading.Event()

    def read(n: int) -> None:
        for line in children[n].stdout:
            lines[n].append(line.strip())
            if line.strip() == "waiting":
                waiting.set()

    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(2)]
        for reader in readers:
            reader.start()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        # One process waits on the Redis lock, so the other holds it; only then may the leader answer.
        assert waiting.wait(30), [(tmp_path / f"child{n}.err").read_text() for n in range(2)]
        llm_stub_server.gate.set()
        for child in children:
            child.wait(60)
        for reader in readers:
            reader.join(10)
    finally:
        for child in children:
            child.kill()
            child.stdin.close()
            child.stdout.close()
    errors = [(tmp_path / f"child{n}.err").read_text() for n in range(2)]
    assert len(llm_stub_server.requests) == 1, (lines, errors)
    results = {out[0] == "waiting": out[-1] for out in lines}  # waiter -> its answer
    assert results[True].split()[0] == "True"  # the waiter was served the leader's answer
    assert results[False].split()[0] == "False"
    assert results[True].split(" ", 2)[2] == results[False].split(" ", 2)[2]


async def test_simulated_provider_answers_a_combined_batch_in_one_call():
    provider = CountingProvider()  # the SimulatedProvider, counted
    client = LLMClient(provider)
    atoms = [uuid.uuid4() for _ in range(4)]
    results = await asyncio.gather(
        *(client.generate(f"step {i}", SONNET, 0.0, use_batching=True, atom_id=a) for i, a in enumerate(atoms))
    )
    await client.aclose()
    assert len(provider.calls) == 1  # parsed completely: no per-atom fallback calls
    assert len({r.text for r in results}) == 4
    assert all(r.text.startswith("[simulated") for r in results)


def test_a_synchronous_caller_waits_for_every_provider_attempt_and_one_more(settings):
    settings.MGECACHE = {**settings.MGECACHE, "LLM_TIMEOUT_SECONDS": 10.0, "LLM_MAX_RETRIES": 2}
    assert request_timeout() == 40.0
    client = LLMClient(CountingProvider())
    response = client.generate_sync("answered from a WSGI thread", SONNET, 0.0)
    assert (response.cached, response.model) == (False, SONNET)
    assert client.generate_sync("answered from a WSGI thread", SONNET, 0.0).cached


def test_a_synchronous_hit_never_waits_for_the_client_loop(monkeypatch):
    from cache_app.llm import client as client_module

    client = LLMClient(CountingProvider())
    client.generate_sync("asked twice", SONNET, 0.0)

    def no_loop(*args, **kwargs):
        raise AssertionError("a hit went through the client loop")

    monkeypatch.setattr(client_module, "run_sync", no_loop)
    again = client.generate_sync("asked twice", SONNET, 0.0)
    assert (again.cached, again.cache_layer, again.cost_usd) == (True, "llm", 0.0)
    assert again.saved_usd > 0


class InvalidatingProvider(CountingProvider):
    """Invalidates the masterplan while the call is in flight (between the lookup and the write)."""

    def __init__(self, masterplan_id) -> None:
        super().__init__()
        self.masterplan_id = masterplan_id

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        LLMPromptCache().invalidate_masterplan(self.masterplan_id)
        return await super().complete(request)


def test_a_synchronous_miss_carries_its_lookup_token_to_the_write():
    mp = uuid.uuid4()
    provider = InvalidatingProvider(mp)
    client = LLMClient(provider)
    first = client.generate_sync("answered across an invalidation", SONNET, 0.0, masterplan_id=mp)
    assert not first.cached
    # The answer was computed before the invalidation: the token refused it, so it was not stored.
    assert not client.generate_sync("answered across an invalidation", SONNET, 0.0, masterplan_id=mp).cached
    assert len(provider.calls) == 2

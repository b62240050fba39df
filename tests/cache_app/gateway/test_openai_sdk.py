"""The official openai SDK against a live mgecache gateway, changed only in base_url and api_key."""

from __future__ import annotations

import asyncio
import threading
import uuid

import openai
import pytest

from cache_app.llm import client as llm_client
from cache_app.llm.client import LLMClient
from cache_app.llm.providers import ProviderResponse

pytestmark = [pytest.mark.redis_server, pytest.mark.postgres]

MODEL = "gpt-4o-mini"  # priced at $0.15 / $0.60 per million tokens by the seeded ModelPricing


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def ask(client: openai.OpenAI, content: str = "What is a masterplan?", **kwargs):
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.with_raw_response.create(model=MODEL, messages=user(content), **kwargs)


def streamed_text(chunks) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_miss_then_hit_with_headers_usage_and_savings(gateway):
    client = gateway.openai()
    first, second = ask(client), ask(client)
    assert (first.headers["x-mgecache-cache"], second.headers["x-mgecache-cache"]) == ("MISS", "HIT")
    assert gateway.upstream_calls == 1
    a, b = first.parse(), second.parse()
    assert a.object == "chat.completion"
    assert a.choices[0].message.role == "assistant"
    assert a.choices[0].message.content.startswith("[simulated ")
    assert b.choices[0].message.content == a.choices[0].message.content
    assert a.choices[0].finish_reason == "stop"
    assert a.usage.completion_tokens == 40
    assert a.usage.total_tokens == a.usage.prompt_tokens + 40
    assert float(first.headers["x-mgecache-saved-usd"]) == 0
    expected = (a.usage.prompt_tokens * 0.15 + a.usage.completion_tokens * 0.60) / 1e6
    assert float(second.headers["x-mgecache-saved-usd"]) == pytest.approx(expected, abs=1e-8)
    assert first.headers["x-mgecache-simulated"] == "true"


def test_generation_parameters_are_part_of_the_identity(gateway):
    client = gateway.openai()
    ask(client, temperature=0)
    assert ask(client, temperature=0.5).headers["x-mgecache-cache"] == "MISS"
    truncated = ask(client, temperature=0, max_completion_tokens=5)
    assert truncated.headers["x-mgecache-cache"] == "MISS"
    assert truncated.parse().choices[0].finish_reason == "length"
    assert ask(client, temperature=0, max_tokens=5).headers["x-mgecache-cache"] == "MISS"  # not stored: truncated
    assert gateway.upstream_calls == 4


def test_conversations_never_collide(gateway):
    client = gateway.openai()

    def conversation(first_answer: str):
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": first_answer},
            {"role": "user", "content": "Another one?"},
        ]
        return client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, temperature=0)

    red, blue = conversation("Red."), conversation("Blue.")
    assert (red.headers["x-mgecache-cache"], blue.headers["x-mgecache-cache"]) == ("MISS", "MISS")
    assert red.parse().choices[0].message.content != blue.parse().choices[0].message.content
    assert conversation("Red.").headers["x-mgecache-cache"] == "HIT"
    # The same last message without the history is another request again.
    assert ask(client, "Another one?").headers["x-mgecache-cache"] == "MISS"


def test_masterplan_header_scopes_the_cache(gateway):
    client = gateway.openai()
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert ask(client, extra_headers={"X-Mgecache-Masterplan": a}).headers["x-mgecache-cache"] == "MISS"
    assert ask(client, extra_headers={"X-Mgecache-Masterplan": b}).headers["x-mgecache-cache"] == "MISS"
    assert ask(client).headers["x-mgecache-cache"] == "MISS"  # the global scope
    hit = ask(client, extra_headers={"X-Mgecache-Masterplan": a, "X-Mgecache-Atom": str(uuid.uuid4())})
    assert hit.headers["x-mgecache-cache"] == "HIT"
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, extra_headers={"X-Mgecache-Masterplan": "not-a-uuid"})
    assert err.value.body["param"] == "X-Mgecache-Masterplan"


def test_no_cache_skips_the_lookup_but_stores(gateway):
    client = gateway.openai()
    fresh = ask(client, "no-cache first", extra_headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-mgecache-cache"] == "BYPASS"
    assert ask(client, "no-cache first").headers["x-mgecache-cache"] == "HIT"
    assert gateway.upstream_calls == 1
    again = ask(client, "no-cache first", extra_headers={"Cache-Control": "no-cache"})
    assert again.headers["x-mgecache-cache"] == "BYPASS"
    assert gateway.upstream_calls == 2


def test_no_store_neither_looks_up_nor_stores(gateway):
    client = gateway.openai()
    ask(client, "no-store")
    bypass = ask(client, "no-store", extra_headers={"Cache-Control": "no-store"})
    assert bypass.headers["x-mgecache-cache"] == "BYPASS"
    assert gateway.upstream_calls == 2
    assert ask(client, "never stored", extra_headers={"Cache-Control": "no-store"}).headers["x-mgecache-cache"] == (
        "BYPASS"
    )
    assert ask(client, "never stored").headers["x-mgecache-cache"] == "MISS"
    assert gateway.upstream_calls == 4


# --- streaming ---------------------------------------------------------------------------------


def test_stream_miss_is_cached_once_complete_then_replayed(gateway):
    client = gateway.openai()
    kwargs = {"model": MODEL, "messages": user("stream me"), "temperature": 0, "stream": True}
    miss = client.chat.completions.with_raw_response.create(**kwargs, stream_options={"include_usage": True})
    assert miss.headers["x-mgecache-cache"] == "MISS"
    assert miss.headers["content-type"].startswith("text/event-stream")
    chunks = list(miss.parse())
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content) > 1
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 40
    text = streamed_text(chunks)

    whole = ask(client, "stream me")
    assert whole.headers["x-mgecache-cache"] == "HIT"
    assert whole.parse().choices[0].message.content == text

    hit = client.chat.completions.with_raw_response.create(**kwargs)
    assert hit.headers["x-mgecache-cache"] == "HIT"
    assert float(hit.headers["x-mgecache-saved-usd"]) > 0
    replayed = list(hit.parse())
    assert streamed_text(replayed) == text
    assert all(chunk.usage is None for chunk in replayed)  # no include_usage this time
    assert gateway.upstream_calls == 1


def test_stream_ends_with_done_on_the_wire(gateway):
    body = {"model": MODEL, "messages": user("raw stream"), "stream": True}
    raw = gateway.post("/v1/chat/completions", body, {"Authorization": f"Bearer {gateway.key}"})
    assert raw.status == 200
    events = raw.body.decode().split("\n\n")
    assert events[-2] == "data: [DONE]"
    assert events[-1] == ""
    assert all(event.startswith("data: ") for event in events[:-1])


class GatedProvider:
    """Streams one piece, then waits for the test's go-ahead before the rest."""

    name = "gated"
    simulated = False

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        self.fail = fail

    async def complete(self, request):
        raise AssertionError("a streamed request must stream")

    async def stream(self, request):
        yield "first piece. "
        await asyncio.to_thread(self.release.wait, 30)
        if self.fail:
            raise RuntimeError("upstream broke mid-stream")
        yield "second piece."
        self.finished.set()
        yield ProviderResponse("first piece. second piece.", request.model, 3, 6, "stop", self.name)


def test_a_miss_streams_through_before_the_provider_finishes(gateway):
    provider = GatedProvider()
    llm_client.get_llm_client.set(LLMClient(provider=provider))
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("gated"), temperature=0, stream=True
    )
    assert raw.headers["x-mgecache-cache"] == "MISS"
    chunks = iter(raw.parse())
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.content == "first piece. "
    assert not provider.finished.is_set()  # the client has the first piece while the provider still works
    provider.release.set()
    assert streamed_text(chunks) == "second piece."
    assert ask(client, "gated").parse().choices[0].message.content == "first piece. second piece."


def test_a_stream_that_fails_midway_raises_and_is_not_cached(gateway):
    provider = GatedProvider(fail=True)
    provider.release.set()
    llm_client.get_llm_client.set(LLMClient(provider=provider))
    client = gateway.openai()
    stream = client.chat.completions.create(model=MODEL, messages=user("breaks"), temperature=0, stream=True)
    with pytest.raises(openai.APIError, match="error"):
        list(stream)
    with pytest.raises(openai.InternalServerError):  # not cached: the provider is asked again (and refuses)
        ask(client, "breaks")


# --- errors ------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_an_authentication_error(gateway):
    with pytest.raises(openai.AuthenticationError) as err:
        ask(gateway.openai(key="not-a-key"))
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    raw = gateway.post("/v1/chat/completions", {"model": MODEL, "messages": user("hi")})
    assert raw.status == 401
    assert raw.json()["error"]["code"] == "missing_api_key"
    assert gateway.upstream_calls == 0


def test_an_inactive_users_key_is_refused(gateway):
    from cache_app.models import PipelineAPIKey

    user = PipelineAPIKey.objects.get_from_key(gateway.key).user
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(openai.AuthenticationError):
        ask(gateway.openai())


def test_a_masterplan_outside_the_keys_scope_is_permission_denied(gateway, monkeypatch):
    from cache_app.gateway import auth

    allowed = str(uuid.uuid4())
    real = auth.authenticate
    monkeypatch.setattr(
        auth, "authenticate", lambda request: auth.GatewayCaller(real(request).user, frozenset({allowed}))
    )
    client = gateway.openai()
    with pytest.raises(openai.PermissionDeniedError) as err:
        ask(client, extra_headers={"X-Mgecache-Masterplan": str(uuid.uuid4())})
    assert err.value.code == "masterplan_forbidden"
    with pytest.raises(openai.PermissionDeniedError):
        ask(client)  # the global scope is outside a restricted key's scope too
    assert ask(client, extra_headers={"X-Mgecache-Masterplan": allowed}).headers["x-mgecache-cache"] == "MISS"


def test_an_unpriced_model_is_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.openai().chat.completions.create(model="gpt-unknown", messages=user("hi"))
    assert err.value.code == "model_not_found"
    assert "ModelPricing" in err.value.message
    assert gateway.upstream_calls == 0


def test_max_tokens_above_the_models_maximum_output_is_a_bad_request_naming_it(gateway):
    from cache_app.models import ModelPricing

    limit = ModelPricing.objects.get(model=MODEL).max_output_tokens
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=limit + 1)
    assert err.value.body["param"] == "max_tokens"
    assert str(limit) in err.value.message
    assert gateway.upstream_calls == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 2}, "n"),
        ({"stop": ["\n"]}, "stop"),
    ],
)
def test_bad_or_unsupported_input_is_a_bad_request(gateway, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(model=MODEL, messages=user("hi"), **extra)
    assert err.value.body["param"] == param
    assert err.value.body["type"] == "invalid_request_error"


def test_no_op_values_of_unsupported_parameters_are_accepted(gateway):
    response = ask(gateway.openai(), n=1, top_p=1, presence_penalty=0, user="someone", store=False)
    assert response.headers["x-mgecache-cache"] == "MISS"


def test_a_non_json_body_is_a_bad_request_in_openai_shape(gateway):
    raw = gateway.post("/v1/chat/completions", b"{not json", {"Authorization": f"Bearer {gateway.key}"})
    assert raw.status == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"


def test_over_the_rate_is_a_rate_limit_error_with_retry_after(gateway, settings):
    settings.MGECACHE = {**settings.MGECACHE, "GATEWAY_THROTTLE_RATE": "2/minute"}
    client = gateway.openai()
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as err:
        ask(client)
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    assert gateway.upstream_calls == 1

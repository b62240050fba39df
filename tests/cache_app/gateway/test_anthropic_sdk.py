"""The official anthropic SDK against a live mgecache gateway, changed only in base_url and api_key."""

from __future__ import annotations

import uuid

import anthropic
import pytest

from cache_app.llm import client as llm_client
from cache_app.llm.client import LLMClient
from tests.cache_app.gateway.test_openai_sdk import GatedProvider

pytestmark = [pytest.mark.redis_server, pytest.mark.postgres]

MODEL = "claude-haiku-4-5"  # priced at $1 / $5 per million tokens by the seeded ModelPricing


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def ask(client: anthropic.Anthropic, content: str = "What is a masterplan?", **kwargs):
    kwargs.setdefault("max_tokens", 100)
    return client.messages.with_raw_response.create(model=MODEL, messages=user(content), **kwargs)


def test_miss_then_hit_with_headers_usage_and_savings(gateway):
    client = gateway.anthropic()
    first, second = ask(client, system="Be brief."), ask(client, system="Be brief.")
    assert (first.headers["x-mgecache-cache"], second.headers["x-mgecache-cache"]) == ("MISS", "HIT")
    assert gateway.upstream_calls == 1
    a, b = first.parse(), second.parse()
    assert a.type == "message"
    assert a.role == "assistant"
    assert a.content[0].type == "text"
    assert a.content[0].text.startswith("[simulated ")
    assert b.content[0].text == a.content[0].text
    assert a.stop_reason == "end_turn"
    assert a.usage.output_tokens == 40
    expected = (a.usage.input_tokens * 1.0 + a.usage.output_tokens * 5.0) / 1e6
    assert float(second.headers["x-mgecache-saved-usd"]) == pytest.approx(expected, abs=1e-8)
    assert ask(client).headers["x-mgecache-cache"] == "MISS"  # without the system prompt: another request


def test_system_blocks_and_content_blocks_are_text(gateway):
    client = gateway.anthropic()
    blocks = [{"type": "text", "text": "What is a masterplan?", "cache_control": {"type": "ephemeral"}}]
    first = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": blocks}],
    )
    assert first.headers["x-mgecache-cache"] == "MISS"
    # The same text as plain strings is the same upstream request: a hit.
    assert ask(client, system="Be brief.").headers["x-mgecache-cache"] == "HIT"


def test_one_answer_for_the_same_upstream_request_whichever_api_asks(gateway):
    """An OpenAI-format and an Anthropic-format request that send the model the same thing share an entry."""
    ask(gateway.anthropic(), "shared across APIs", max_tokens=64)
    openai_client = gateway.openai()
    raw = openai_client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("shared across APIs"), max_tokens=64, temperature=1
    )
    assert raw.headers["x-mgecache-cache"] == "HIT"


def test_stream_miss_is_cached_once_complete_then_replayed(gateway):
    client = gateway.anthropic()
    miss = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=user("stream me"), stream=True
    )
    assert miss.headers["x-mgecache-cache"] == "MISS"
    assert miss.headers["content-type"].startswith("text/event-stream")
    events = list(miss.parse())
    types = [event.type for event in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    assert len(types[2:-3]) > 1
    text = "".join(event.delta.text for event in events if event.type == "content_block_delta")
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == 40

    assert ask(client, "stream me").parse().content[0].text == text  # stored once complete
    with client.messages.stream(model=MODEL, max_tokens=100, messages=user("stream me")) as stream:
        assert stream.response.headers["x-mgecache-cache"] == "HIT"
        final = stream.get_final_message()
    assert final.content[0].text == text
    assert final.usage.output_tokens == 40
    assert gateway.upstream_calls == 1


def test_stream_events_on_the_wire(gateway):
    body = {"model": MODEL, "max_tokens": 50, "messages": user("raw stream"), "stream": True}
    raw = gateway.post("/v1/messages", body, {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"})
    assert raw.status == 200
    names = [block.split("\n", 1)[0] for block in raw.body.decode().strip().split("\n\n")]
    assert names[0] == "event: message_start"
    assert names[-1] == "event: message_stop"


def test_a_miss_streams_through_before_the_provider_finishes(gateway):
    provider = GatedProvider()
    llm_client.get_llm_client.set(LLMClient(provider=provider))
    client = gateway.anthropic()
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=user("gated"), stream=True)
    assert raw.headers["x-mgecache-cache"] == "MISS"
    events = iter(raw.parse())
    assert [next(events).type, next(events).type] == ["message_start", "content_block_start"]
    assert next(events).delta.text == "first piece. "
    assert not provider.finished.is_set()
    provider.release.set()
    rest = list(events)
    assert "".join(e.delta.text for e in rest if e.type == "content_block_delta") == "second piece."


def test_a_stream_that_fails_midway_raises(gateway):
    provider = GatedProvider(fail=True)
    provider.release.set()
    llm_client.get_llm_client.set(LLMClient(provider=provider))
    stream = gateway.anthropic().messages.create(model=MODEL, max_tokens=100, messages=user("breaks"), stream=True)
    with pytest.raises(anthropic.APIStatusError) as err:
        list(stream)
    assert err.value.body["error"]["type"] == "api_error"


def test_cache_control_headers(gateway):
    client = gateway.anthropic()
    assert ask(client, "cc", extra_headers={"Cache-Control": "no-cache"}).headers["x-mgecache-cache"] == "BYPASS"
    assert ask(client, "cc").headers["x-mgecache-cache"] == "HIT"
    assert ask(client, "cc", extra_headers={"Cache-Control": "no-store"}).headers["x-mgecache-cache"] == "BYPASS"
    assert gateway.upstream_calls == 2
    assert ask(client, "ns", extra_headers={"Cache-Control": "no-store"}).headers["x-mgecache-cache"] == "BYPASS"
    assert ask(client, "ns").headers["x-mgecache-cache"] == "MISS"


def test_the_x_api_key_header_authenticates(gateway):
    body = {"model": MODEL, "max_tokens": 50, "messages": user("hi")}
    assert gateway.post("/v1/messages", body, {"x-api-key": gateway.key}).status == 200
    refused = gateway.post("/v1/messages", body, {"x-api-key": "wrong"})
    assert refused.status == 401
    assert refused.json() == {"type": "error", "error": {"type": "authentication_error", "message": "Invalid API key."}}


# --- errors ------------------------------------------------------------------------------------


def test_wrong_key_is_an_authentication_error(gateway):
    with pytest.raises(anthropic.AuthenticationError) as err:
        ask(gateway.anthropic(key="not-a-key"))
    assert err.value.body["error"]["type"] == "authentication_error"


def test_a_masterplan_outside_the_keys_scope_is_permission_denied(gateway, monkeypatch):
    from cache_app.gateway import auth

    allowed = str(uuid.uuid4())
    real = auth.authenticate
    monkeypatch.setattr(
        auth, "authenticate", lambda request: auth.GatewayCaller(real(request).user, frozenset({allowed}))
    )
    client = gateway.anthropic()
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        ask(client, extra_headers={"X-Mgecache-Masterplan": str(uuid.uuid4())})
    assert err.value.body["error"]["type"] == "permission_error"
    assert ask(client, extra_headers={"X-Mgecache-Masterplan": allowed}).headers["x-mgecache-cache"] == "MISS"


def test_an_unpriced_model_is_not_found(gateway):
    with pytest.raises(anthropic.NotFoundError) as err:
        gateway.anthropic().messages.create(model="claude-unknown", max_tokens=10, messages=user("hi"))
    assert err.value.body["error"]["type"] == "not_found_error"
    assert "ModelPricing" in err.value.body["error"]["message"]


@pytest.mark.parametrize(
    "extra",
    [
        {"stop_sequences": ["\n"]},
        {"tools": [{"name": "f", "input_schema": {"type": "object"}}]},
        {"extra_body": {"temperature": 1.5}},
        {"max_tokens": 0},
    ],
)
def test_bad_or_unsupported_input_is_a_bad_request(gateway, extra):
    kwargs = {"max_tokens": 10, **extra}
    with pytest.raises(anthropic.BadRequestError) as err:
        gateway.anthropic().messages.create(model=MODEL, messages=user("hi"), **kwargs)
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_image_content_is_a_bad_request(gateway):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with pytest.raises(anthropic.BadRequestError, match="only text"):
        gateway.anthropic().messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": [image]}])


def test_over_the_rate_is_a_rate_limit_error_with_retry_after(gateway, settings):
    settings.MGECACHE = {**settings.MGECACHE, "GATEWAY_THROTTLE_RATE": "1/minute"}
    client = gateway.anthropic()
    ask(client)
    with pytest.raises(anthropic.RateLimitError) as err:
        ask(client)
    assert err.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60

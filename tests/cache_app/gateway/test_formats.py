"""The canonical conversation, the two request parsers and the cache-control header (no server)."""

from __future__ import annotations

import pytest

from cache_app.gateway.conversation import ChatRequest, Turn, serialize_turns
from cache_app.gateway.errors import GatewayError, Kind
from cache_app.gateway.formats import AnthropicFormat, OpenAIFormat
from cache_app.gateway.service import cache_mode

OPENAI, ANTHROPIC = OpenAIFormat(), AnthropicFormat()


def openai_body(**kwargs):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **kwargs}


def anthropic_body(**kwargs):
    return {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **kwargs}


def refused(wire, body) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        wire.parse(body)
    assert err.value.kind is Kind.INVALID_REQUEST
    assert err.value.status == 400
    return err.value


# --- the canonical conversation ----------------------------------------------------------------


def test_a_single_user_turn_is_the_prompt_itself():
    assert serialize_turns((Turn("user", "What is 2+2?"),)) == "What is 2+2?"


def test_a_longer_conversation_is_a_length_framed_transcript():
    prompt = serialize_turns((Turn("user", "Hello"), Turn("assistant", "Hi there!"), Turn("user", "What is 2+2?")))
    assert prompt == (
        '<conversation turns="3">\n'
        '<turn role="user" chars="5">\nHello\n</turn>\n'
        '<turn role="assistant" chars="9">\nHi there!\n</turn>\n'
        '<turn role="user" chars="12">\nWhat is 2+2?\n</turn>\n'
        "</conversation>"
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # A text that imitates the framing cannot pass for another conversation.
        (
            (Turn("user", 'a\n</turn>\n<turn role="assistant" chars="1">\nb'), Turn("assistant", "c")),
            (Turn("user", "a"), Turn("assistant", "b"), Turn("assistant", "c")),
        ),
        ((Turn("user", "a"), Turn("assistant", "b")), (Turn("assistant", "a"), Turn("user", "b"))),
        ((Turn("user", "ab"), Turn("user", "c")), (Turn("user", "a"), Turn("user", "bc"))),
        ((Turn("assistant", "x"),), (Turn("user", "x"),)),
    ],
)
def test_different_conversations_never_share_a_prompt(a, b):
    assert serialize_turns(a) != serialize_turns(b)


def test_chat_request_prompt_is_the_serialisation():
    chat = ChatRequest(model="m", turns=(Turn("user", "x"), Turn("assistant", "y")))
    assert chat.prompt == serialize_turns(chat.turns)


# --- OpenAI ------------------------------------------------------------------------------------


def test_openai_parse_maps_system_turns_and_parameters():
    chat = OPENAI.parse(
        openai_body(
            messages=[
                {"role": "developer", "content": "Rule one."},
                {"role": "system", "content": [{"type": "text", "text": "Rule two."}]},
                {"role": "user", "content": [{"type": "text", "text": "part 1"}, {"type": "text", "text": "part 2"}]},
            ],
            temperature=0.2,
            max_completion_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
            user="someone",
        )
    )
    assert chat.system == "Rule one.\n\nRule two."
    assert chat.turns == (Turn("user", "part 1\n\npart 2"),)
    assert (chat.temperature, chat.max_tokens, chat.stream, chat.stream_usage) == (0.2, 50, True, True)


def test_openai_defaults():
    chat = OPENAI.parse(openai_body())
    assert (chat.system, chat.temperature, chat.max_tokens, chat.stream) == (None, 1.0, None, False)
    assert OPENAI.parse(openai_body(max_tokens=7)).max_tokens == 7


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "system", "content": "only a system message"}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
        ),
        ({"model": ""}, "model"),
        ({"model": "m" * 101}, "model"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"seed": 1}, "seed"),
        ({"top_p": 0.5}, "top_p"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"something_new": 1}, "something_new"),
    ],
)
def test_openai_refuses_what_it_cannot_honour(body, param):
    assert refused(OPENAI, openai_body(**body)).param == param


def test_openai_message_count_is_bounded():
    messages = [{"role": "user", "content": "x"}] * 1001
    assert "at most 1000" in refused(OPENAI, openai_body(messages=messages)).message


def test_openai_error_shape():
    err = GatewayError(Kind.RATE_LIMIT, "slow down", code="rate_limit_exceeded")
    assert OPENAI.error_body(err) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    }


# --- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_parse_maps_system_turns_and_parameters():
    chat = ANTHROPIC.parse(
        anthropic_body(
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "user", "content": "Again"},
            ],
            metadata={"user_id": "u"},
            stream=True,
        )
    )
    assert chat.system == "Be brief."
    assert chat.turns == (Turn("user", "Hello"), Turn("assistant", "Hi"), Turn("user", "Again"))
    assert (chat.temperature, chat.max_tokens, chat.stream) == (1.0, 10, True)


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": None},
        {"messages": [{"role": "system", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "1"}]}]},
        {"temperature": 1.5},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"stop_sequences": ["x"]},
        {"system": 5},
    ],
)
def test_anthropic_refuses_what_it_cannot_honour(body):
    refused(ANTHROPIC, anthropic_body(**body))


def test_anthropic_error_shape():
    err = GatewayError(Kind.NOT_FOUND, "no such model")
    assert ANTHROPIC.error_body(err) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }


# --- Cache-Control -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "mode"),
    [
        ("", "use"),
        ("max-age=0", "use"),
        ("no-cache", "refresh"),
        ("No-Cache", "refresh"),
        ("no-store", "bypass"),
        ("no-cache, no-store", "bypass"),
        ("private, no-store", "bypass"),
    ],
)
def test_cache_control(header, mode):
    assert cache_mode(header) == mode

"""response_from_openai: chat.completion -> Anthropic message (table tests)."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message

from core.errors import ProxyError, TranslationError
from core.translate.openai_backend import RAW_ARGUMENTS_KEY, request_to_openai, response_from_openai, usage_from_openai

MODEL = "claude-sonnet-4-5"


def completion(
    message: dict[str, Any], finish: str | None = "stop", usage: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A chat.completion as OpenAI sends it (protocols.md §1.3)."""
    body = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1732600000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": None, "refusal": None} | message,
            }
        ],
        "usage": usage or {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
    }
    return body | extra


def translate(body: dict[str, Any]) -> dict[str, Any]:
    message = response_from_openai(body, model=MODEL, message_id="msg_fallback")
    Message.model_validate(message)  # the anthropic SDK's own model accepts it
    return message


def call(arguments: Any, id: str | None = "call_1", name: str = "get_weather") -> dict[str, Any]:
    return ({"id": id} if id else {}) | {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_text_answer():
    assert translate(completion({"content": "Hi there!"})) == {
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hi there!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_message_id_falls_back_and_is_not_double_prefixed():
    body = completion({"content": "x"})
    del body["id"]
    assert translate(body)["id"] == "msg_fallback"
    assert translate(completion({"content": "x"}, id="msg_01XYZ"))["id"] == "msg_01XYZ"


def test_tool_calls_become_tool_use_blocks_after_text():
    body = completion(
        {
            "content": "Checking both.",
            "tool_calls": [call('{"city": "Paris"}'), call('{"city":"London"}', id="call_2")],
        },
        "tool_calls",
    )
    message = translate(body)
    assert message["content"] == [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "London"}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_tool_calls_with_finish_reason_stop_still_mean_tool_use():
    assert translate(completion({"content": "", "tool_calls": [call("{}")]}, "stop"))["stop_reason"] == "tool_use"


def test_tool_call_cut_by_the_token_limit_is_max_tokens():
    assert translate(completion({"tool_calls": [call('{"city": "Pa')]}, "length"))["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Paris", "days": [1, 2]}', {"city": "Paris", "days": [1, 2]}),
        ("", {}),
        (None, {}),
        ({"city": "Rome"}, {"city": "Rome"}),  # servers that send the object itself
        ('{"city": "Pa', {RAW_ARGUMENTS_KEY: '{"city": "Pa'}),
        ("[1, 2]", {RAW_ARGUMENTS_KEY: "[1, 2]"}),
    ],
)
def test_tool_arguments_are_parsed_or_kept_raw(arguments, expected):
    assert translate(completion({"tool_calls": [call(arguments)]}, "tool_calls"))["content"][0]["input"] == expected


def test_raw_arguments_survive_a_round_trip_through_the_request_translator():
    message = translate(completion({"tool_calls": [call('{"command": "ls')]}, "tool_calls"))
    request = request_to_openai({"messages": [{"role": "assistant", "content": message["content"]}]}, model="gpt-4o")
    assert request["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"command": "ls'


def test_tool_call_without_id_gets_a_deterministic_one():
    block = translate(completion({"tool_calls": [call("{}", id=None)]}, "tool_calls"))["content"][0]
    assert block["id"] == "toolu_msg_chatcmpl-abc_0"


def test_legacy_function_call():
    message = translate(completion({"function_call": {"name": "lookup", "arguments": '{"q": "cat"}'}}, "function_call"))
    assert message["content"] == [
        {"type": "tool_use", "id": "toolu_msg_chatcmpl-abc_0", "name": "lookup", "input": {"q": "cat"}}
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("eos", "end_turn"),
    ],
)
def test_finish_reason_table(finish, stop_reason):
    assert translate(completion({"content": "x"}, finish))["stop_reason"] == stop_reason


def test_refusal_is_text_with_refusal_stop_reason():
    message = translate(completion({"content": None, "refusal": "I can't help with that."}))
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


def test_empty_content_makes_no_empty_text_block():
    assert translate(completion({"content": ""}))["content"] == []


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_a_thinking_block_first(field):
    message = translate(completion({"content": "42", field: "6 times 7"}))
    assert message["content"] == [
        {"type": "thinking", "thinking": "6 times 7", "signature": ""},
        {"type": "text", "text": "42"},
    ]


def test_litellm_thinking_blocks_restore_signatures():
    kept = [
        {"type": "thinking", "thinking": "plan", "signature": "EuYB"},
        {"type": "redacted_thinking", "data": "EmwK"},
    ]
    message = translate(completion({"content": "ok", "reasoning_content": "plan", "thinking_blocks": kept}))
    assert message["content"] == [*kept, {"type": "text", "text": "ok"}]


def test_text_parts_list_content_is_joined():
    assert translate(completion({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}))[
        "content"
    ] == [{"type": "text", "text": "ab"}]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 120, "completion_tokens": 18, "prompt_tokens_details": {"cached_tokens": 64}},
            (56, 18, 0, 64),
        ),
        (
            {
                "prompt_tokens": 2006,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 64},
            },
            (22, 3, 64, 1920),
        ),
        (
            {"prompt_tokens": 100, "completion_tokens": 1, "prompt_tokens_details": {"cache_creation_tokens": 40}},
            (60, 1, 40, 0),
        ),
        (
            {
                "prompt_tokens": 9120,
                "completion_tokens": 31,
                "prompt_cache_hit_tokens": 8960,
                "prompt_cache_miss_tokens": 160,
            },
            (160, 31, 0, 8960),
        ),
        ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}, (10, 2, 0, 0)),
        ({"prompt_tokens": 5, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 9}}, (0, 0, 0, 9)),
        (None, (0, 0, 0, 0)),
    ],
    ids=[
        "openai-cached",
        "openai-cache-write",
        "litellm-cache-creation",
        "deepseek",
        "null-details",
        "inconsistent",
        "missing",
    ],
)
def test_usage(usage, expected):
    got = usage_from_openai(usage)
    assert (
        got["input_tokens"],
        got["output_tokens"],
        got["cache_creation_input_tokens"],
        got["cache_read_input_tokens"],
    ) == expected


def test_total_input_is_preserved_across_the_translation():
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 64},
    }
    got = usage_from_openai(usage)
    assert got["input_tokens"] + got["cache_creation_input_tokens"] + got["cache_read_input_tokens"] == 2006


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "choices": []},
        {"id": "x"},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},
        {
            "choices": [
                {
                    "index": 0,
                    "message": {"tool_calls": [{"function": {"arguments": "{}"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
        {"choices": [{"index": 0, "message": {"content": 5}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": {"content": "partial"}, "finish_reason": "error"}]},
        "not an object",
    ],
    ids=[
        "no-choices",
        "missing-choices",
        "no-message",
        "tool-without-name",
        "content-number",
        "finish-error",
        "string",
    ],
)
def test_bodies_that_are_not_completions_are_bad_gateway(body):
    with pytest.raises(TranslationError) as info:
        response_from_openai(body, model=MODEL, message_id="msg_fallback")
    assert info.value.status == 502


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, 429, "requests"),
        ({"message": "boom", "type": "server_error"}, 500, "server_error"),
        ("model not found", 502, None),
    ],
)
def test_error_body_with_a_2xx_status_is_raised(error, status, kind):
    with pytest.raises(ProxyError) as info:
        response_from_openai({"error": error}, model=MODEL, message_id="msg_fallback")
    assert (info.value.status, info.value.type) == (status, kind)

"""OpenAI chat request -> Anthropic Messages request (core.translate.anthropic_request)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ProxyError
from core.translate.anthropic_backend import (
    THINKING_BUDGET_BY_EFFORT,
    request_to_anthropic,
    response_from_anthropic,
    sanitize_tool_id,
)

MODEL = "claude-sonnet-4-5-20250929"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}
HI = [{"role": "user", "content": "hi"}]


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o")
    body.setdefault("messages", HI)
    return request_to_anthropic(body, model=MODEL, default_max_tokens=4096)


def rejected(**body: Any) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        translate(**body)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# -- system / developer -------------------------------------------------------------


def test_system_and_developer_messages_anywhere_become_top_level_system_in_order() -> None:
    out = translate(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [text("Use metric units."), text("   ")]},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": ""},
            {"role": "user", "content": "weather?"},
        ]
    )
    assert out["system"] == [text("Be terse."), text("Use metric units.")]
    assert out["messages"] == [
        {"role": "user", "content": [text("hi")]},
        {"role": "assistant", "content": [text("hello")]},
        {"role": "user", "content": [text("weather?")]},
    ]


def test_no_system_key_when_every_system_message_is_empty() -> None:
    assert "system" not in translate(messages=[{"role": "system", "content": ""}, *HI])


def test_cache_control_on_a_part_is_kept() -> None:
    part = {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}
    out = translate(messages=[{"role": "system", "content": [part]}, {"role": "user", "content": [part]}])
    assert out["system"] == [part] and out["messages"][0]["content"] == [part]


def test_system_message_with_an_image_is_rejected() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert rejected(messages=[{"role": "system", "content": [image]}, *HI]).param == "messages[0].content[0]"


# -- images and files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "block"),
    [
        (
            "data:image/png;base64,iVBORw0KGgo=",
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ),
        (
            "data:image/jpg;base64,/9j/4AAQ",
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        ),
        (
            "data:;base64,R0lGODlh",
            {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlh"}},
        ),
        (
            "data:application/pdf;base64,JVBERi0x",
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        ),
        (
            "https://example.com/cat.png",
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        ),
        (
            "https://example.com/paper.PDF?x=1",
            {"type": "document", "source": {"type": "url", "url": "https://example.com/paper.PDF?x=1"}},
        ),
    ],
)
def test_image_url_parts(url: str, block: dict[str, Any]) -> None:
    parts = [text("What is this?"), {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]
    out = translate(messages=[{"role": "user", "content": parts}])
    assert out["messages"][0]["content"] == [text("What is this?"), block]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "data:image/png,rawbytes", "data:text/plain;base64,aGk=", "", "/local.png"]
)
def test_unusable_image_urls_are_rejected_naming_the_part(url: str) -> None:
    parts = [text("look"), {"type": "image_url", "image_url": {"url": url}}]
    error = rejected(messages=[{"role": "user", "content": "hi"}, {"role": "user", "content": parts}])
    assert error.param is not None and error.param.startswith("messages[1].content[1]")


def test_file_parts_with_inline_data() -> None:
    pdf_url = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
    bare_pdf = {"type": "file", "file": {"filename": "b.pdf", "file_data": "JVBERi0x"}}
    bare_png = {"type": "file", "file": {"file_data": "iVBORw0KGgo="}}
    out = translate(messages=[{"role": "user", "content": [pdf_url, bare_pdf, bare_png]}])
    sources = [block["source"] for block in out["messages"][0]["content"]]
    assert [block["type"] for block in out["messages"][0]["content"]] == ["document", "document", "image"]
    assert sources[0] == {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}
    assert sources[1] == sources[0]
    assert sources[2]["media_type"] == "image/png"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "file", "file": {"file_data": "not base64!"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "video", "video": {}},
    ],
)
def test_unsupported_user_parts_are_rejected(part: dict[str, Any]) -> None:
    assert rejected(messages=[{"role": "user", "content": [part]}]).param.startswith("messages[0].content[0]")


# -- assistant tool calls and tool results ------------------------------------------


def test_tool_round_trip_from_the_openai_sdk_capture() -> None:
    out = translate(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "tool_calls": [call("call_0af441c6c597")]},
            {"role": "tool", "tool_call_id": "call_0af441c6c597", "content": '{"temp_c": 21}'},
        ],
        tools=[WEATHER],
    )
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_0af441c6c597", "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_0af441c6c597", "content": '{"temp_c": 21}'}],
        },
    ]


def test_consecutive_tool_and_user_messages_make_one_user_turn_with_results_first() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "compare Paris and Rome"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [call("call_1"), call("call_2", arguments='{"city": "Rome"}')],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
            {"role": "user", "content": "also, be brief"},
            {"role": "tool", "tool_call_id": "call_2", "content": [text("25C"), text("sunny")]},
        ]
    )
    assert len(out["messages"]) == 3
    assert out["messages"][1]["content"] == [
        text("Checking."),
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "21C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [text("25C"), text("sunny")]},
            text("also, be brief"),
        ],
    }


def test_consecutive_same_role_messages_are_merged_and_empty_ones_vanish() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": [text("b")]},
            {"role": "user", "content": "three"},
        ]
    )
    assert out["messages"] == [
        {"role": "user", "content": [text("one"), text("two")]},
        {"role": "assistant", "content": [text("a"), text("b")]},
        {"role": "user", "content": [text("three")]},
    ]


def test_tool_ids_are_sanitised_consistently_on_tool_use_and_tool_result() -> None:
    odd = "call:abc.1/x"
    out = translate(
        messages=[
            *HI,
            {"role": "assistant", "tool_calls": [call(odd), call("call_abc_1_x")]},
            {"role": "tool", "tool_call_id": odd, "content": "21C"},
            {"role": "tool", "tool_call_id": "call_abc_1_x", "content": "22C"},
        ]
    )
    uses = [block["id"] for block in out["messages"][1]["content"]]
    results = [block["tool_use_id"] for block in out["messages"][2]["content"]]
    assert uses == results
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", tool_id) for tool_id in uses)
    assert uses[0] != uses[1]  # a sanitised id never collides with a valid one it resembles
    assert uses[1] == "call_abc_1_x"  # valid ids pass unchanged


@given(st.text(min_size=1, max_size=40))
def test_sanitize_tool_id_always_gives_a_valid_deterministic_id(raw: str) -> None:
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", sanitize_tool_id(raw))
    assert sanitize_tool_id(raw) == sanitize_tool_id(raw)


@pytest.mark.parametrize(
    ("arguments", "parsed"), [("", {}), ("  ", {}), ('{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]})]
)
def test_tool_call_arguments_are_parsed_into_objects(arguments: str, parsed: dict[str, Any]) -> None:
    out = translate(messages=[*HI, {"role": "assistant", "tool_calls": [call("c1", arguments=arguments)]}])
    assert out["messages"][1]["content"][0]["input"] == parsed


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"text"'])
def test_invalid_tool_call_arguments_are_a_400_naming_the_message(arguments: str) -> None:
    messages = [
        *HI,
        {"role": "assistant", "content": "ok"},
        *HI,
        {"role": "assistant", "tool_calls": [call("c1", arguments=arguments)]},
    ]
    error = rejected(messages=messages)
    assert error.param == "messages[3].tool_calls[0].function.arguments"
    assert "messages[3]" in error.message


def test_trailing_assistant_prefill_is_rstripped() -> None:
    out = translate(messages=[*HI, {"role": "assistant", "content": [text("Sure: "), text("  \n")]}])
    assert out["messages"][-1] == {"role": "assistant", "content": [text("Sure:")]}
    out = translate(messages=[*HI, {"role": "assistant", "content": "Answer:\n"}, {"role": "user", "content": "go"}])
    assert out["messages"][1]["content"] == [text("Answer:\n")]  # not the final turn: untouched


def test_thinking_blocks_go_first_and_round_trip_with_signatures() -> None:
    assistant = {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "need the tool",
        "thinking_blocks": [
            {"index": 0, "type": "thinking", "thinking": "need the tool", "signature": "sig-1"},
            {"index": 1, "type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "unsigned: Anthropic would reject it"},
        ],
        "tool_calls": [call("toolu_01")],
    }
    out = translate(messages=[*HI, assistant, {"role": "tool", "tool_call_id": "toolu_01", "content": "21C"}])
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "need the tool", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
        text("Let me check."),
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
    ]


def test_thinking_stays_first_when_assistant_messages_merge() -> None:
    signed = {"type": "thinking", "thinking": "plan", "signature": "sig"}
    messages = [
        *HI,
        {"role": "assistant", "content": "Part one. "},
        {"role": "assistant", "content": "Part two ", "thinking_blocks": [signed]},
    ]
    out = translate(messages=messages)
    assert out["messages"][1]["content"] == [signed, text("Part one. "), text("Part two")]


def test_reasoning_content_without_signed_blocks_is_dropped() -> None:
    out = translate(messages=[*HI, {"role": "assistant", "content": "yes", "reasoning_content": "hmm"}, *HI])
    assert out["messages"][1]["content"] == [text("yes")]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "function", "name": "f", "content": "x"}, "messages[1].role"),
        ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
        (
            {"role": "assistant", "tool_calls": [{"type": "custom", "id": "c", "custom": {}}]},
            "messages[1].tool_calls[0]",
        ),
        (
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
            "messages[1].tool_calls[0].id",
        ),
        (
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            "messages[1].content[0]",
        ),
    ],
)
def test_malformed_messages_are_a_400_naming_the_field(message: dict[str, Any], param: str) -> None:
    assert rejected(messages=[*HI, message]).param == param


def test_a_conversation_with_nothing_to_send_is_rejected() -> None:
    assert rejected(messages=[{"role": "system", "content": "only a system prompt"}]).param == "messages"
    assert rejected(messages="hi").param == "messages"


# -- tools and tool_choice ----------------------------------------------------------


def test_tool_definitions() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    untyped = {
        "type": "function",
        "function": {"name": "f", "parameters": {"properties": {"x": {"type": "integer"}}}, "strict": True},
    }
    out = translate(tools=[WEATHER, bare, untyped])
    assert out["tools"] == [
        {"name": "get_weather", "description": "Get weather", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        {"name": "f", "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}}, "strict": True},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "custom", "custom": {"name": "free_text"}},
        {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}},
        {"type": "function", "function": {"parameters": {}}},
    ],
)
def test_untranslatable_tools_are_rejected(tool: dict[str, Any]) -> None:
    assert rejected(tools=[tool]).param.startswith("tools[0]")


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "search"}}, None, {"type": "tool", "name": "search"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "search"}},
            False,
            {"type": "tool", "name": "search", "disable_parallel_tool_use": True},
        ),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_forms(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"tools": [WEATHER, SEARCH]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = translate(**body)
    assert out["tool_choice"] == expected
    assert [tool["name"] for tool in out["tools"]] == ["get_weather", "search"]


@pytest.mark.parametrize(("mode", "kind"), [("auto", "auto"), ("required", "any")])
def test_allowed_tools_sends_only_the_allowed_tools(mode: str, kind: str) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": mode, "tools": [{"type": "function", "function": {"name": "search"}}]},
    }
    out = translate(tools=[WEATHER, SEARCH], tool_choice=choice)
    assert [tool["name"] for tool in out["tools"]] == ["search"]
    assert out["tool_choice"] == {"type": kind}


@pytest.mark.parametrize(
    ("tools", "choice"),
    [
        ([WEATHER], {"type": "function", "function": {"name": "unknown"}}),
        ([WEATHER], {"type": "custom", "custom": {"name": "x"}}),
        ([WEATHER], "any"),
        ([], "required"),
        (
            [WEATHER],
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]},
            },
        ),
    ],
)
def test_impossible_tool_choices_are_rejected(tools: list[Any], choice: Any) -> None:
    assert rejected(tools=tools, tool_choice=choice).param == "tool_choice"


def test_tool_choice_without_tools_that_changes_nothing_is_dropped() -> None:
    for choice in ("none", "auto"):
        out = translate(tool_choice=choice, parallel_tool_calls=False)
        assert "tools" not in out and "tool_choice" not in out


# -- parameters ---------------------------------------------------------------------


def test_max_tokens_sources_and_default() -> None:
    assert translate()["max_tokens"] == 4096
    assert translate(max_tokens=300)["max_tokens"] == 300
    assert translate(max_completion_tokens=200, max_tokens=300)["max_tokens"] == 200
    for bad in (0, -1, 1.5, "10", True):
        assert rejected(max_tokens=bad).param == "max_tokens"


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["\n\nHuman:", " ", "", "\n"], ["\n\nHuman:"]), (["  "], None), ([], None)],
)
def test_stop_becomes_stop_sequences_without_whitespace_only_entries(stop: Any, expected: list[str] | None) -> None:
    assert translate(stop=stop).get("stop_sequences") == expected


def test_sampling_parameters() -> None:
    out = translate(temperature=1.6, top_p=0.9, top_k=40, seed=7, frequency_penalty=0.5, presence_penalty=0.1)
    assert (out["temperature"], out["top_p"], out["top_k"]) == (1.0, 0.9, 40)
    assert translate(temperature=0.3)["temperature"] == 0.3
    assert not {"seed", "frequency_penalty", "presence_penalty"} & set(out)
    for field, bad in (("temperature", -0.1), ("top_p", 1.5), ("top_k", 0), ("stop", 5)):
        assert rejected(**{field: bad}).param == field


def test_user_becomes_metadata_user_id() -> None:
    assert translate(user="u-123")["metadata"] == {"user_id": "u-123"}
    assert translate(safety_identifier="s-9")["metadata"] == {"user_id": "s-9"}
    assert "metadata" not in translate(metadata={"tag": "x"})


def test_stream_is_kept_and_stream_options_dropped() -> None:
    out = translate(stream=True, stream_options={"include_usage": True})
    assert out["stream"] is True and "stream_options" not in out
    assert "stream" not in translate()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("web_search_options", {}),
        ("stream", "yes"),
    ],
)
def test_parameters_whose_loss_would_change_the_reply_are_rejected(field: str, value: Any) -> None:
    assert rejected(**{field: value}).param == field


def test_n_1_and_logprobs_false_are_fine() -> None:
    translate(n=1, logprobs=False, modalities=["text"])


@pytest.mark.parametrize("effort", sorted(THINKING_BUDGET_BY_EFFORT))
def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens(effort: str) -> None:
    budget = THINKING_BUDGET_BY_EFFORT[effort]
    out = translate(reasoning_effort=effort, max_completion_tokens=100, temperature=0.2, top_k=5, top_p=0.5)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == budget + 100  # the client's 100 tokens stay available for the answer
    assert budget >= 1024  # Anthropic's minimum
    assert not {"temperature", "top_k", "top_p"} & set(out)


def test_thinking_keeps_a_large_enough_max_tokens_and_a_high_top_p() -> None:
    out = translate(reasoning_effort="low", max_tokens=8000, top_p=0.97)
    assert (out["max_tokens"], out["top_p"], out["thinking"]["budget_tokens"]) == (8000, 0.97, 1024)


def test_reasoning_effort_none_or_with_a_forced_tool_enables_no_thinking() -> None:
    assert "thinking" not in translate(reasoning_effort="none", temperature=0.5)
    out = translate(reasoning_effort="high", tools=[WEATHER], tool_choice="required", temperature=0.5)
    assert "thinking" not in out and out["temperature"] == 0.5
    assert rejected(reasoning_effort="extreme").param == "reasoning_effort"


def test_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    out = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in translate(response_format={"type": "json_object"})
    assert "output_config" not in translate(response_format={"type": "text"})
    assert rejected(response_format={"type": "json_schema"}).param == "response_format"


def test_unknown_fields_are_dropped_and_the_body_is_not_mutated() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "store": True, "x_future": 1}
    snapshot = json.dumps(body, sort_keys=True)
    out = request_to_anthropic(body, model=MODEL, default_max_tokens=64)
    assert set(out) == {"model", "max_tokens", "messages"}
    assert json.dumps(body, sort_keys=True) == snapshot


# -- property: an Anthropic answer survives the trip through an OpenAI client -------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(min_size=1, max_size=20).filter(str.strip)),
    st.builds(
        lambda t, s: {"type": "thinking", "thinking": t, "signature": s},
        st.text(max_size=20),
        st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=12),
    ),
    st.builds(lambda d: {"type": "redacted_thinking", "data": d}, st.text(alphabet="abc=", min_size=1, max_size=8)),
    st.builds(
        lambda name, args: {"type": "tool_use", "name": name, "input": args},
        st.sampled_from(["get_weather", "search"]),
        st.dictionaries(st.text(max_size=6), _json_values, max_size=3),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_blocks, min_size=1, max_size=6))
def test_assistant_turn_round_trips_through_the_openai_message(blocks: list[dict[str, Any]]) -> None:
    """Anthropic answer -> OpenAI message (what the client stores) -> next request:
    thinking (with signatures), text and tool_use come back as Anthropic had them,
    thinking first, text joined, so multi-turn tool use with thinking works."""
    tool_ids = iter(f"toolu_{i:02d}" for i in range(10))
    blocks = [{**b, "id": next(tool_ids)} if b["type"] == "tool_use" else b for b in blocks]
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": blocks,
        "stop_reason": "end_turn",
        "usage": {},
    }
    message = response_from_anthropic(answer, model="gpt-4o", created=0)["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": b["id"], "content": "ok"} for b in blocks if b["type"] == "tool_use"]
    out = translate(messages=[*HI, message, *results, *([] if results else HI)])
    turn = out["messages"][1]
    assert turn["role"] == "assistant"
    thinking = [b for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
    texts = "".join(b["text"] for b in blocks if b["type"] == "text")
    tools = [b for b in blocks if b["type"] == "tool_use"]
    assert turn["content"] == thinking + ([text(texts)] if texts else []) + tools

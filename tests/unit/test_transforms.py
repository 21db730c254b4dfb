"""Body transforms (core.transforms): regex over JSON text, JSONPath drop and add, chains, errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ProxyError, openai_error_body
from core.transforms import (
    EMPTY_TRANSFORMS,
    JsonPathAdd,
    JsonPathDrop,
    RegexTransform,
    TransformChain,
    TransformError,
    TransformSpecError,
)

# An OpenAI request as openai-python 3.57 sends it (captures/openai-python-3.57.0.json), after a tool round trip.
REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse.", "name": "ops"},
        {"role": "user", "content": "weather in Paris? my key is sk-abc123XYZ", "name": "alice"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_0af441c6c597", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_0af441c6c597", "content": "{\"temp_c\": 21}"},
    ],
    "metadata": {"trace": "t-1"},
    "stream": True,
    "stream_options": {"include_usage": True},
}


def run(*steps: Any, body: Any = None, side: str = "request") -> Any:
    return TransformChain(steps, side=side).apply(copy.deepcopy(REQUEST if body is None else body))


# -- regex ----------------------------------------------------------------------------------------


def test_regex_scrubs_a_key_everywhere() -> None:
    out = run(RegexTransform(r"sk-[A-Za-z0-9]+", "[key]"))
    assert out["messages"][1]["content"] == "weather in Paris? my key is [key]"


def test_regex_groups() -> None:
    out = run(RegexTransform(r'"model":"gpt-(\w+)-mini"', r'"model":"gpt-\1"'))
    assert out["model"] == "gpt-4o"
    out = run(RegexTransform(r"(?P<city>Paris)", r"\g<city>, France"))
    assert out["messages"][1]["content"].startswith("weather in Paris, France?")


def test_regex_sees_compact_json_text_with_escapes() -> None:
    # The tool arguments are a JSON string inside JSON: its quotes appear escaped as \".
    out = run(RegexTransform(r'\\"city\\": \\"Paris\\"', r'\\"city\\": \\"Lyon\\"'))
    assert json.loads(out["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Lyon"}


def test_regex_non_ascii_text_is_matched_as_text() -> None:
    out = run(RegexTransform("café", "tea"), body={"q": "un café"})
    assert out == {"q": "un tea"}


def test_regex_without_match_changes_nothing() -> None:
    assert run(RegexTransform(r"nothing-like-this", "x")) == REQUEST


def test_regex_producing_invalid_json_is_a_transform_error_naming_the_entry() -> None:
    chain = TransformChain(
        [JsonPathDrop("$.metadata"), RegexTransform(r'"stream":true', '"stream":')], side="response",
        where="models.gpt-4o.transforms.response",
    )
    with pytest.raises(TransformError) as info:
        chain.apply(copy.deepcopy(REQUEST))
    err = info.value
    assert isinstance(err, ProxyError) and err.status == 502
    assert err.message.startswith("models.gpt-4o.transforms.response[1] (regex): result is not valid JSON")
    assert openai_error_body(err)["error"]["code"] == "transform_failed"


def test_request_side_failures_are_500() -> None:
    with pytest.raises(TransformError) as info:
        run(RegexTransform(r"\{", "["))
    assert info.value.status == 500
    assert info.value.message.startswith("transforms.request[0] (regex)")


@pytest.mark.parametrize(
    ("pattern", "replacement", "field", "message"),
    [
        ("(", "", "pattern", "invalid regex: missing ), unterminated subpattern at position 0"),
        ("(a)", r"\2", "replacement", "invalid replacement: invalid group reference 2 at position 1"),
        ("(?P<x>a)", r"\g<y>", "replacement", "invalid replacement: unknown group name 'y'"),
        ("a", "\\", "replacement", "invalid replacement: bad escape (end of pattern) at position 0"),
    ],
)
def test_bad_regex_is_refused_at_construction(pattern: str, replacement: str, field: str, message: str) -> None:
    with pytest.raises(TransformSpecError) as info:
        RegexTransform(pattern, replacement)
    assert (info.value.field, info.value.message) == (field, message)


def test_valid_templates_with_named_and_numbered_groups() -> None:
    RegexTransform(r"(?P<a>x)(y)", r"\g<a>\2\g<0>")


# -- jsonpath_drop ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("$.metadata", lambda o: "metadata" not in o),
        ("$.messages[*].name", lambda o: all("name" not in m for m in o["messages"])),  # array path, 2 matches
        ("$.stream_options.include_usage", lambda o: o["stream_options"] == {}),
        ("$.messages[?role=='tool']", lambda o: [m["role"] for m in o["messages"]] == ["system", "user", "assistant"]),
        ("$.messages[0]", lambda o: o["messages"][0]["role"] == "user"),
        ("$..name", lambda o: "name" not in o["messages"][1]
         and "name" not in o["messages"][2]["tool_calls"][0]["function"]),
        ("$.no_such_key", lambda o: o == REQUEST),  # no match: unchanged
        ("$.messages[9]", lambda o: o == REQUEST),
    ],
)
def test_jsonpath_drop(path: str, check: Any) -> None:
    assert check(run(JsonPathDrop(path)))


def test_drop_on_an_unexpected_shape_is_harmless() -> None:
    assert run(JsonPathDrop("$.messages[*].name"), body={"messages": "not a list"}) == {"messages": "not a list"}


def test_dropping_the_whole_body_is_refused() -> None:
    with pytest.raises(TransformSpecError) as info:
        JsonPathDrop("$")
    assert info.value.field == "path"


@pytest.mark.parametrize("path", ["$.[", "$.a`", "$.#", "$.messages[?role=="])
def test_bad_jsonpath_is_refused_at_construction(path: str) -> None:
    with pytest.raises(TransformSpecError) as info:
        JsonPathDrop(path)
    assert info.value.field == "path" and info.value.message.startswith("invalid JSONPath: ")


# -- jsonpath_add -----------------------------------------------------------------------------------


def test_add_creates_a_missing_top_level_key() -> None:
    assert run(JsonPathAdd("$.user", "team-a"))["user"] == "team-a"


def test_add_replaces_an_existing_value() -> None:
    assert run(JsonPathAdd("$.metadata", {"team": "a"}))["metadata"] == {"team": "a"}


def test_add_creates_a_missing_last_key_in_a_nested_object() -> None:
    assert run(JsonPathAdd("$.metadata.user_id", "u-42"))["metadata"] == {"trace": "t-1", "user_id": "u-42"}
    assert run(JsonPathAdd("$.stream_options.include_usage", False))["stream_options"] == {"include_usage": False}


def test_add_does_not_create_intermediate_objects() -> None:
    assert run(JsonPathAdd("$.absent.user_id", "u-42")) == REQUEST


def test_add_sets_at_every_match_of_an_array_path() -> None:
    out = run(JsonPathAdd("$.messages[*].name", "bob"))
    assert [m["name"] for m in out["messages"]] == ["bob"] * 4


def test_add_with_a_filter() -> None:
    out = run(JsonPathAdd("$.messages[?role=='user'].name", "carol"))
    assert [m.get("name") for m in out["messages"]] == ["ops", "carol", None, None]


def test_add_each_match_gets_its_own_copy() -> None:
    out = run(JsonPathAdd("$.messages[*].meta", {"tags": []}))
    out["messages"][0]["meta"]["tags"].append("x")
    assert out["messages"][1]["meta"] == {"tags": []}


def test_add_at_an_index_or_wildcard_only_replaces_existing_matches() -> None:
    out = run(JsonPathAdd("$.messages[0].content", "be brief"))
    assert out["messages"][0]["content"] == "be brief"
    assert run(JsonPathAdd("$.messages[7]", {}))["messages"] == REQUEST["messages"]
    assert run(JsonPathAdd("$.stream_options.*", False))["stream_options"] == {"include_usage": False}


def test_add_skips_matches_that_are_not_objects() -> None:
    body = {"messages": ["just a string", {"role": "user"}]}
    out = run(JsonPathAdd("$.messages[*].name", "x"), body=body)
    assert out == {"messages": ["just a string", {"role": "user", "name": "x"}]}


def test_add_null_and_nested_values() -> None:
    assert run(JsonPathAdd("$.user", None))["user"] is None
    assert run(JsonPathAdd("$.tools", [{"type": "function"}]))["tools"] == [{"type": "function"}]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: "a"}, {"a": {b"x"}}, object()])
def test_add_refuses_non_json_values(value: Any) -> None:
    with pytest.raises(TransformSpecError) as info:
        JsonPathAdd("$.x", value)
    assert info.value.field == "value"


# -- chains -----------------------------------------------------------------------------------------


def test_steps_apply_in_order() -> None:
    out = run(
        JsonPathAdd("$.user", "sk-secret1"),
        RegexTransform(r"sk-[a-z0-9]+", "[key]"),
        JsonPathDrop("$.stream_options"),
    )
    assert out["user"] == "[key]" and "stream_options" not in out


def test_empty_chain_is_empty_and_returns_its_argument() -> None:
    body = {"a": 1}
    assert EMPTY_TRANSFORMS.request.is_empty and EMPTY_TRANSFORMS.response.is_empty
    assert EMPTY_TRANSFORMS.request.apply(body) is body
    assert EMPTY_TRANSFORMS.response.side == "response"
    assert not TransformChain([JsonPathDrop("$.a")]).is_empty


def test_a_filter_regex_failing_at_runtime_becomes_a_transform_error() -> None:
    chain = TransformChain([JsonPathDrop('$.messages[?content=~"("]')], side="response")
    with pytest.raises(TransformError) as info:
        chain.apply(copy.deepcopy(REQUEST))
    assert info.value.status == 502 and "transforms.response[0] (jsonpath_drop)" in info.value.message


def test_response_side_on_a_streamed_chunk() -> None:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "token sk-LEAK9"}, "finish_reason": None}]}
    chain = TransformChain([RegexTransform(r"sk-[A-Za-z0-9]+", "[key]"), JsonPathAdd("$.system_fingerprint", "proxy")],
                           side="response")
    assert chain.apply(chunk) == {**chunk, "choices": [{"index": 0, "delta": {"content": "token [key]"},
                                                        "finish_reason": None}], "system_fingerprint": "proxy"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=100)
@given(JSON)
def test_a_regex_that_matches_nothing_is_identity(value: Any) -> None:
    assert TransformChain([RegexTransform("\x00never\x00", "x")]).apply(copy.deepcopy(value)) == value

"""Anthropic SSE events -> OpenAI chunks, and Anthropic message -> chat.completion.

The property test at the end is the contract between the two: a generated
Anthropic answer, streamed as events split at random points and reassembled by
the openai SDK's own accumulator, equals the non-streaming translation of the
same answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from core.errors import TranslationError
from core.translate.anthropic_backend import (
    FINISH_REASON_BY_STOP_REASON,
    AnthropicToOpenAIStream,
    response_from_anthropic,
)

USAGE = {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}


def start(message_id: str | None = "msg_1", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    message = {
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude",
        "stop_reason": None,
        "usage": usage or USAGE,
    }
    if message_id is not None:
        message["id"] = message_id
    return {"type": "message_start", "message": message}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": 5, **usage},
    }


TEXT = {"type": "text", "text": ""}
MESSAGE_STOP = {"type": "message_stop"}


def tool(tool_id: str, name: str = "get_weather") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {}}


def machine(include_usage: bool = False) -> AnthropicToOpenAIStream:
    return AnthropicToOpenAIStream(
        model="gpt-4o", created=123, message_id="chatcmpl-fallback", include_usage=include_usage
    )


def run(events: list[dict[str, Any]], include_usage: bool = False) -> list[Any]:
    stream = machine(include_usage)
    out: list[Any] = []
    for event in events:
        out += stream.feed(event)
    return out + stream.finish()


def deltas(out: list[Any]) -> list[dict[str, Any]]:
    return [item["choices"][0]["delta"] for item in out if isinstance(item, dict) and item.get("choices")]


def text_stream(*pieces: str) -> list[dict[str, Any]]:
    return [start(), block_start(0, TEXT), *(delta(0, "text_delta", text=p) for p in pieces), stop(0)]


# -- the happy path -----------------------------------------------------------------


def test_text_stream_shape() -> None:
    out = run([*text_stream("Hel", "lo"), message_delta(), MESSAGE_STOP])
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert [item["choices"][0]["finish_reason"] for item in out[:-1]] == [None, None, None, "stop"]
    assert out[-1] == "[DONE]"
    for item in out[:-1]:
        assert {k: item[k] for k in ("id", "object", "created", "model")} == {
            "id": "chatcmpl-msg_1",
            "object": "chat.completion.chunk",
            "created": 123,
            "model": "gpt-4o",
        }
        ChatCompletionChunk.model_validate(item)


def test_each_event_is_translated_at_once() -> None:
    stream = machine()
    assert deltas(stream.feed(start())) == [{"role": "assistant", "content": ""}]
    assert stream.feed(block_start(0, TEXT)) == []
    assert deltas(stream.feed(delta(0, "text_delta", text="a"))) == [{"content": "a"}]


def test_fallback_id_is_used_verbatim_when_the_upstream_has_none() -> None:
    out = run([start(message_id=None), message_delta(), MESSAGE_STOP])
    assert out[0]["id"] == "chatcmpl-fallback"


def test_tool_calls_get_their_own_index_independent_of_block_indices() -> None:
    events = [
        start(),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, "thinking_delta", thinking="hmm"),
        delta(0, "signature_delta", signature="sig"),
        stop(0),
        block_start(1, TEXT),
        delta(1, "text_delta", text="Checking."),
        stop(1),
        block_start(2, tool("toolu_a")),
        delta(2, "input_json_delta", partial_json=""),
        delta(2, "input_json_delta", partial_json='{"city": "Pa'),
        delta(2, "input_json_delta", partial_json='ris"}'),
        stop(2),
        block_start(3, TEXT),
        delta(3, "text_delta", text=" And"),
        stop(3),
        block_start(4, tool("toolu_b", "search")),
        stop(4),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ]
    calls = [d["tool_calls"][0] for d in deltas(run(events)) if "tool_calls" in d]
    assert calls == [
        {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": "Pa'}},
        {"index": 0, "function": {"arguments": 'ris"}'}},
        {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "search", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},  # no input_json_delta at all: an empty input
    ]


def test_thinking_becomes_reasoning_content_and_thinking_blocks() -> None:
    events = [
        start(),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, "thinking_delta", thinking="Let me"),
        delta(0, "signature_delta", signature="EuYB"),
        stop(0),
        block_start(1, {"type": "redacted_thinking", "data": "opaque"}),
        stop(1),
        block_start(2, {"type": "thinking", "thinking": "", "signature": ""}),  # display: "omitted"
        delta(2, "signature_delta", signature="Eq"),
        stop(2),
    ]
    assert deltas(run(events))[1:] == [
        {"reasoning_content": "Let me", "thinking_blocks": [{"index": 0, "type": "thinking", "thinking": "Let me"}]},
        {"thinking_blocks": [{"index": 0, "type": "thinking", "signature": "EuYB"}]},
        {"thinking_blocks": [{"index": 1, "type": "redacted_thinking", "data": "opaque"}]},
        {"thinking_blocks": [{"index": 2, "type": "thinking", "thinking": "", "signature": "Eq"}]},
    ]


def test_server_tool_blocks_and_unknown_things_are_skipped() -> None:
    events = [
        start(),
        {"type": "ping"},
        {"type": "some_future_event", "x": 1},
        block_start(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        delta(0, "input_json_delta", partial_json='{"query": "x"}'),
        stop(0),
        block_start(1, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}),
        stop(1),
        block_start(2, TEXT),
        delta(2, "citations_delta", citation={"type": "char_location"}),
        delta(2, "some_future_delta", x=1),
        delta(2, "text_delta", text="Found it."),
        stop(2),
        block_start(3, tool("toolu_1")),
        stop(3),
        message_delta("tool_use"),
        {"type": "ping"},
        MESSAGE_STOP,
    ]
    assert deltas(run(events))[1:] == [
        {"content": "Found it."},
        {
            "tool_calls": [
                {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        {},
    ]


def test_usage_chunk_only_when_asked_and_with_cumulative_counts() -> None:
    usage = {"input_tokens": 7, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 900, "output_tokens": 1}
    events = [
        start(usage=usage),
        *text_stream("x")[1:],
        message_delta(output_tokens=20),
        message_delta(None, output_tokens=42, input_tokens=8),
        MESSAGE_STOP,
    ]
    out = run(events, include_usage=True)
    assert [item["choices"][0]["finish_reason"] for item in out if isinstance(item, dict) and item["choices"]][
        -1
    ] == "stop"
    assert sum(1 for d in deltas(out) if d == {}) == 1  # one finish chunk, however many message_delta events
    assert out[-2]["choices"] == [] and out[-1] == "[DONE]"
    assert out[-2]["usage"] == {
        "prompt_tokens": 8 + 100 + 900,
        "completion_tokens": 42,
        "total_tokens": 1050,
        "prompt_tokens_details": {"cached_tokens": 900, "cache_write_tokens": 100},
    }
    assert not any("usage" in item for item in run(events) if isinstance(item, dict))


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [*FINISH_REASON_BY_STOP_REASON.items(), ("a_future_reason", "stop"), (None, "stop")],
)
def test_stop_reasons_map_the_same_streaming_and_not(stop_reason: str | None, finish_reason: str) -> None:
    out = run([*text_stream("x"), message_delta(stop_reason), MESSAGE_STOP])
    assert out[-2]["choices"][0]["finish_reason"] == finish_reason
    body = {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
        "usage": USAGE,
    }
    assert response_from_anthropic(body, model="m", created=0)["choices"][0]["finish_reason"] == finish_reason


def test_stop_reason_table_matches_protocols_md() -> None:
    assert FINISH_REASON_BY_STOP_REASON == {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
        "pause_turn": "stop",
        "model_context_window_exceeded": "length",
    }


# -- failures -----------------------------------------------------------------------


def test_error_event_becomes_one_error_chunk_and_nothing_after() -> None:
    stream = machine(include_usage=True)
    stream.feed(start())
    out = stream.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert out == [{"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}}]
    assert stream.finish() == []
    with pytest.raises(TranslationError):
        stream.feed(MESSAGE_STOP)


def test_error_event_before_message_start() -> None:
    out = run([{"type": "error", "error": {"type": "api_error", "message": "boom"}}])
    assert out == [{"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}]


@pytest.mark.parametrize("cut", range(len(text_stream("a")) + 2))
def test_body_ending_before_message_stop_is_an_error_chunk(cut: int) -> None:
    events = [*text_stream("a"), message_delta(), MESSAGE_STOP][:cut]
    out = run(events, include_usage=True)
    assert out[-1] == {
        "error": {
            "message": "upstream stream ended before message_stop",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }
    assert "[DONE]" not in out


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([block_start(0, TEXT)], id="block before message_start"),
        pytest.param([start(), start()], id="message_start twice"),
        pytest.param([start(), delta(0, "text_delta", text="x")], id="delta for a block never started"),
        pytest.param(
            [start(), block_start(0, TEXT), stop(0), delta(0, "text_delta", text="x")], id="delta after block stop"
        ),
        pytest.param([start(), stop(0)], id="stop for a block never started"),
        pytest.param([start(), block_start(0, TEXT), stop(0), block_start(0, TEXT)], id="block index reused"),
        pytest.param(
            [start(), block_start(0, TEXT), delta(0, "input_json_delta", partial_json="{")],
            id="json delta in a text block",
        ),
        pytest.param(
            [start(), block_start(0, tool("t")), delta(0, "text_delta", text="x")], id="text delta in a tool block"
        ),
        pytest.param([start(), block_start(0, TEXT), message_delta()], id="message_delta with an open block"),
        pytest.param([start(), message_delta(), block_start(0, TEXT)], id="block after message_delta"),
        pytest.param([start(), MESSAGE_STOP], id="message_stop without message_delta"),
        pytest.param([start(), message_delta(), MESSAGE_STOP, {"type": "ping"}], id="anything after message_stop"),
        pytest.param(
            [start(), block_start(0, {"type": "tool_use", "name": "f", "input": {}})], id="tool_use without id"
        ),
        pytest.param([start(), block_start(0, TEXT), delta(0, "text_delta")], id="text_delta without text"),
        pytest.param([start(), "not an event"], id="not an object"),
    ],
)
def test_nonsense_is_a_translation_error_and_the_machine_stays_broken(events: list[Any]) -> None:
    stream = machine()
    with pytest.raises(TranslationError) as info:
        for event in events:
            stream.feed(event)
    assert info.value.status == 502
    with pytest.raises(TranslationError):
        stream.feed({"type": "ping"})
    with pytest.raises(TranslationError):
        stream.finish()


# -- non-streaming ------------------------------------------------------------------


def test_response_with_everything() -> None:
    body = {
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "EuYB"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Looking it up."},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "dog"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": " Found."},
            {"type": "tool_use", "id": "toolu_02", "name": "lookup", "input": {"q": "dög"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "output_tokens": 60,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 1800,
        },
    }
    out = response_from_anthropic(body, model="gpt-4o", created=99)
    ChatCompletion.model_validate(out)
    assert (out["id"], out["object"], out["created"], out["model"]) == (
        "chatcmpl-msg_01XYZ",
        "chat.completion",
        99,
        "gpt-4o",
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Looking it up. Found.",
        "refusal": None,
        "tool_calls": [
            {"id": "toolu_02", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "dög"}'}}
        ],
        "reasoning_content": "…",
        "thinking_blocks": [
            {"type": "thinking", "thinking": "…", "signature": "EuYB"},
            {"type": "redacted_thinking", "data": "opaque"},
        ],
    }
    assert out["usage"] == {
        "prompt_tokens": 1830,
        "completion_tokens": 60,
        "total_tokens": 1890,
        "prompt_tokens_details": {"cached_tokens": 1800, "cache_write_tokens": 5},
    }


def test_response_with_only_a_tool_call_has_null_content() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
        "usage": USAGE,
    }
    message = response_from_anthropic(body, model="m", created=0)["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "error", "error": {"type": "api_error", "message": "x"}},
        {"type": "message", "content": "text"},
        {"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]},
        {"type": "message", "content": ["text"]},
    ],
)
def test_malformed_responses_are_translation_errors(body: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        response_from_anthropic(body, model="m", created=0)


# -- property: the stream reassembles to the non-streaming translation --------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_block = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=30)),
    st.builds(
        lambda t, s: {"type": "thinking", "thinking": t, "signature": s},
        st.text(max_size=30),
        st.text("abcXYZ09+/=", min_size=1, max_size=10),
    ),
    st.builds(lambda d: {"type": "redacted_thinking", "data": d}, st.text("abc=", min_size=1, max_size=8)),
    st.builds(
        lambda n, i: {"type": "tool_use", "name": n, "input": i},
        st.sampled_from(["get_weather", "search", "f"]),
        st.dictionaries(st.text(max_size=5), _json_values, max_size=3),
    ),
    st.builds(
        lambda i: {"type": "server_tool_use", "name": "web_search", "input": i},
        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    ),
)
_usage = st.fixed_dictionaries(
    {
        "input_tokens": st.integers(0, 10**6),
        "cache_creation_input_tokens": st.integers(0, 10**5),
        "cache_read_input_tokens": st.integers(0, 10**6),
        "output_tokens": st.integers(0, 10**5),
    }
)


def _split(data: st.DataObject, value: str) -> list[str]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(value)), max_size=4)))
    bounds = [0, *cuts, len(value)]
    return [value[a:b] for a, b in zip(bounds, bounds[1:])]


def _events_for(message: dict[str, Any], data: st.DataObject) -> list[dict[str, Any]]:
    """The SSE events an Anthropic server could send for `message`, split at random points."""
    usage = message["usage"]
    events = [start(message["id"], {**usage, "output_tokens": 1})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(block_start(index, TEXT))
            events += [delta(index, "text_delta", text=piece) for piece in _split(data, block["text"])]
        elif kind == "thinking":
            events.append(block_start(index, {"type": "thinking", "thinking": "", "signature": ""}))
            events += [delta(index, "thinking_delta", thinking=piece) for piece in _split(data, block["thinking"])]
            events.append(delta(index, "signature_delta", signature=block["signature"]))
        elif kind == "redacted_thinking":
            events.append(block_start(index, block))
        else:
            events.append(block_start(index, {**block, "input": {}}))
            arguments = json.dumps(block["input"]) if block["input"] or data.draw(st.booleans()) else ""
            events += [delta(index, "input_json_delta", partial_json=piece) for piece in _split(data, arguments)]
        events.append(stop(index))
        if data.draw(st.booleans()):
            events.append({"type": "ping"})
    events.append(message_delta(message["stop_reason"], output_tokens=usage["output_tokens"]))
    return [*events, MESSAGE_STOP]


def _reassemble(out: list[Any]) -> dict[str, Any]:
    """Accumulate chunks exactly as the openai SDK's stream helper does."""
    assert out[-1] == "[DONE]"
    state = ChatCompletionStreamState()
    for item in out[:-1]:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(item)))
    return state.current_completion_snapshot.model_dump()


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(_block, max_size=6),
    stop_reason=st.sampled_from([*FINISH_REASON_BY_STOP_REASON, "something_new"]),
    usage=_usage,
    data=st.data(),
)
def test_stream_reassembles_to_the_non_streaming_translation(
    blocks: list[dict[str, Any]], stop_reason: str, usage: dict[str, int], data: st.DataObject
) -> None:
    ids = iter(f"toolu_{i}" for i in range(10))
    blocks = [{**b, "id": next(ids)} if "input" in b else b for b in blocks]
    message = {
        "id": "msg_p",
        "type": "message",
        "role": "assistant",
        "content": blocks,
        "stop_reason": stop_reason,
        "usage": usage,
    }
    expected = response_from_anthropic(message, model="gpt-4o", created=123)
    got = _reassemble(run(_events_for(message, data), include_usage=True))

    want_choice, got_choice = expected["choices"][0], got["choices"][0]
    assert got_choice["finish_reason"] == want_choice["finish_reason"]
    assert (got_choice["message"]["content"] or None) == (want_choice["message"]["content"] or None)
    want_calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in want_choice["message"].get("tool_calls", [])
    ]
    got_calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in got_choice["message"]["tool_calls"] or []
    ]
    assert got_calls == want_calls
    assert got_choice["message"].get("reasoning_content") == want_choice["message"].get("reasoning_content")
    got_thinking = [
        {k: v for k, v in b.items() if k != "index"} for b in got_choice["message"].get("thinking_blocks") or []
    ]
    assert got_thinking == want_choice["message"].get("thinking_blocks", [])
    assert _usage_of(got) == expected["usage"]


def _usage_of(completion: dict[str, Any]) -> dict[str, Any]:
    usage = {k: v for k, v in completion["usage"].items() if v is not None}
    usage["prompt_tokens_details"] = {k: v for k, v in usage["prompt_tokens_details"].items() if v is not None}
    return usage
